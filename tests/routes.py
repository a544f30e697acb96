"""The API app's routes, read from falcon's router without starting anything."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import falcon

from freight_server.services.api.app import create_app
from freight_server.services.api.jobs import ApiDeps
from freight_server.shared.config import Settings


class Unused:
    """Stands for every collaborator but the settings: wiring routes uses none of them (touching
    one fails), and being there makes optional routes (/readyz, /metrics) appear as in
    production."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"create_app used a collaborator ({name}) while wiring routes")


def wired_app() -> falcon.App:
    collaborators = {f.name: Unused() for f in dataclasses.fields(ApiDeps)}
    return create_app(ApiDeps(**{**collaborators, "settings": Settings()}))


def routed(app: falcon.App) -> set[tuple[str, str]]:
    """(path template, method) for every responder the app's resources implement themselves;
    falcon's default 405 and OPTIONS responders are not the app's routes."""
    found = set()
    for node in _nodes(app._router._roots):
        if node.resource is None:
            continue
        template = re.sub(r"\{(\w+)(?::[^}]*)?\}", r"{\1}", node.uri_template)
        for method, responder in node.method_map.items():
            if getattr(responder, "__self__", None) is node.resource:
                found.add((template, method.lower()))
    return found


def _nodes(nodes: list[Any]) -> Iterator[Any]:
    for node in nodes:
        yield node
        yield from _nodes(node.children)
