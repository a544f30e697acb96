"""The TES routes in `/openapi.json` (freight_server/services/api/openapi.py merges them in), their
schemas generated from freight_server/services/api/tes_model.py and named as TES names them
(`tesTask`, ...). The GA4GH's own description of TES v1.1 remains the reference; docs/tes.md
says where Freight differs."""

from __future__ import annotations

from typing import Any

from freight_server.services.api.tes_model import ServiceInfo, Task

TEMPLATE = "#/components/schemas/tes{model}"
TAG = ["TES"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": TEMPLATE.format(model=name)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def tes_schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in (Task, ServiceInfo):
        schema = model.model_json_schema(mode="serialization", ref_template=TEMPLATE, by_alias=True)
        schemas |= {f"tes{name}": value for name, value in schema.pop("$defs", {}).items()}
        schemas[f"tes{model.__name__}"] = schema
    schemas["tesCreateTaskResponse"] = {
        "type": "object",
        "required": ["id"],
        "properties": {"id": {"type": "string"}},
    }
    schemas["tesListTasksResponse"] = {
        "type": "object",
        "required": ["tasks"],
        "properties": {
            "tasks": {"type": "array", "items": _ref("Task")},
            "next_page_token": {"type": "string"},
        },
    }
    return schemas


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema or {"type": "string"},
        "description": description,
    }


VIEW = _query(
    "view",
    "MINIMAL (id and state, the default), BASIC (no logs' output, no inputs' content) or FULL.",
    {"type": "string", "enum": ["MINIMAL", "BASIC", "FULL"]},
)


def tes_paths(errors: Any) -> dict[str, Any]:
    """`errors(*codes)`: the document's error responses."""
    return {
        "/ga4gh/tes/v1/service-info": {
            "get": {
                "tags": TAG,
                "operationId": "tesServiceInfo",
                "summary": "TES: this service",
                "responses": {"200": _json(_ref("ServiceInfo"), "TES service-info.")},
            }
        },
        "/ga4gh/tes/v1/tasks": {
            "get": {
                "tags": TAG,
                "operationId": "tesListTasks",
                "summary": "TES: the caller's tasks, newest first",
                "parameters": [
                    _query("name_prefix", "Only tasks whose name starts with this."),
                    _query("state", "Only tasks in this TES state."),
                    _query("tag_key", "Only tasks with this tag (repeatable)."),
                    _query("tag_value", "The value the tag_key of the same rank must have."),
                    _query("page_size", "At most this many.", {"type": "integer"}),
                    _query("page_token", "The next_page_token of the previous page."),
                    VIEW,
                ],
                "responses": {
                    "200": _json(_ref("ListTasksResponse"), "A page of tasks."),
                    **errors(400),
                },
            },
            "post": {
                "tags": TAG,
                "operationId": "tesCreateTask",
                "summary": "TES: create a task (one Freight job)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("Task")}},
                },
                "responses": {
                    "200": _json(_ref("CreateTaskResponse"), "The task's id."),
                    **errors(400, 413),
                },
            },
        },
        "/ga4gh/tes/v1/tasks/{task_ref}": {
            "parameters": [
                {
                    "name": "task_ref",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "A task's id; `{id}:cancel` to cancel it (POST).",
                }
            ],
            "get": {
                "tags": TAG,
                "operationId": "tesGetTask",
                "summary": "TES: one task",
                "parameters": [VIEW],
                "responses": {"200": _json(_ref("Task"), "The task."), **errors(404)},
            },
            "post": {
                "tags": TAG,
                "operationId": "tesCancelTask",
                "summary": "TES: cancel a task (`POST /tasks/{id}:cancel`)",
                "description": "A task that has ended is left as it ended, and answered the same.",
                "responses": {
                    "200": _json({"type": "object"}, "Cancellation is under way."),
                    **errors(404),
                },
            },
        },
    }
