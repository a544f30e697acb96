"""`GET /openapi.json` describes exactly the routes the app serves: a new route fails here until
it is described in freight_server/services/api/openapi.py, and a described route must exist."""

from __future__ import annotations

import json

import falcon
import falcon.testing
import pytest
from openapi_spec_validator import validate

from freight_server.services.api.openapi import DOCUMENT
from tests.routes import routed, wired_app

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def app() -> falcon.App:
    return wired_app()


def described() -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_every_route_is_described(app):
    missing = routed(app) - described()
    assert not missing, (
        f"describe these routes in freight_server/services/api/openapi.py: {sorted(missing)}"
    )


def test_every_described_operation_is_routed(app):
    ghosts = described() - routed(app)
    assert not ghosts, f"the spec describes routes the app lacks: {sorted(ghosts)}"


def test_the_app_serves_a_valid_openapi_3_1_document(app):
    response = falcon.testing.TestClient(app).simulate_get("/openapi.json")
    assert response.status_code == 200
    assert response.json == json.loads(json.dumps(DOCUMENT))
    assert response.json["openapi"].startswith("3.1")
    validate(response.json)
