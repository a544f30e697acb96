"""`GET /openapi.json`: the OpenAPI 3.1 description of every route.

The routes are written here as data; the job's schemas (what `POST /jobs` accepts, what it
answers, what `GET /jobs/{id}` shows) are generated from the job model, freight/jobspec.py, the
one the API validates with and the SDK is built on. tests/unit/test_openapi.py holds the
document to the app's routes both ways, so a new route fails the suite until it is described
here."""

from __future__ import annotations

from typing import Any

import falcon
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from freight.jobspec import Job, JobSpec, Submitted
from freight_server.services.api.idempotency import HEADER as IDEMPOTENCY_HEADER
from freight_server.services.api.idempotency import KEY_LIFETIME, REPLAYED_HEADER
from freight_server.services.api.tes_openapi import tes_paths, tes_schemas

JSON = "application/json"


REF_TEMPLATE = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(model=name)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


ERRORS = {
    400: "The request is malformed; `message` names the field to fix.",
    401: "No valid API token (missing, malformed or unknown: the answer is the same). "
    "Send `Authorization: Bearer <token>`.",
    404: "No such job (or file).",
    409: "The job is in a state that forbids this.",
    413: "The request is larger than the server accepts.",
    415: "Unsupported Content-Type.",
    503: "Freight can't serve this now: its broker, a runner or the filestore is away "
    "(`unavailable`), or the API is at capacity (`overloaded`: more than "
    "FREIGHT_API_MAX_CONCURRENT requests at once for FREIGHT_API_ADMISSION_WAIT seconds); "
    "nothing was changed. Retry after `Retry-After` seconds.",
}


def _errors(*codes: int) -> dict[str, Any]:
    # Every route but the probes needs a token, so every one may answer 401; and every one may
    # be shed past capacity with 503 (freight_server/services/api/admission.py).
    named = {
        str(code): {"$ref": f"#/components/responses/E{code}"}
        for code in sorted({401, 503, *codes})
    }
    # Any other error (405, 500...) has the same shape.
    return named | {"default": {"$ref": "#/components/responses/Error"}}


JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The id `POST /jobs` returned.",
}

NULLABLE_STR = {"type": ["string", "null"]}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "examples": ["not_found", "invalid_request"]},
            "message": {"type": "string", "description": "What happened and what to do."},
            "job_id": {
                "type": "string",
                "description": "A submission's 503 and 422 only: the job the request names.",
            },
        },
    },
    "JobList": {
        "type": "object",
        "required": ["count", "results", "next"],
        "properties": {
            "count": {"type": "integer", "description": "Jobs matching, over all pages."},
            "results": {"type": "array", "items": _ref("Job")},
            "next": {
                "type": ["string", "null"],
                "description": "Relative URL of the next page, null on the last.",
            },
        },
    },
    "Cancellation": {
        "type": "object",
        "required": ["id", "message"],
        "properties": {"id": {"type": "string"}, "message": {"type": "string"}},
    },
    "Event": {
        "type": "object",
        "required": ["event_id", "type", "occurred_at", "producer", "schema_version", "data"],
        "properties": {
            "event_id": {"type": "string", "format": "uuid"},
            "type": {"type": "string", "examples": ["JobSubmitted", "JobFinished"]},
            "job_id": NULLABLE_STR,
            "occurred_at": {"type": "string", "format": "date-time"},
            "producer": {"type": "string"},
            "schema_version": {"type": "integer"},
            "data": {"type": "object"},
        },
    },
    "EventList": {
        "type": "object",
        "required": ["job_id", "count", "events"],
        "properties": {
            "job_id": {"type": "string"},
            "count": {"type": "integer"},
            "events": {"type": "array", "items": _ref("Event")},
        },
    },
    "FileEntry": {
        "type": "object",
        "required": ["name", "path", "type"],
        "properties": {
            "name": {"type": "string"},
            "path": {"type": "string"},
            "type": {"type": "string", "enum": ["file", "dir", "symlink", "other"]},
            "size": {"type": "integer"},
            "mode": {"type": "string", "description": "Permission bits in octal, e.g. 0644."},
            "modified": NULLABLE_TIME,
            "target": {"type": "string", "description": "A symlink's target."},
        },
    },
    "Runner": {
        "type": "object",
        "properties": {
            "runner_id": {"type": "string"},
            "state": {"type": "string", "enum": ["live", "silent", "lost"]},
            "last_heartbeat": {"type": "string", "format": "date-time"},
            "slots": {"type": "integer"},
            "slots_free": {"type": "integer"},
            "gpus": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": ["integer", "null"]},
                        "uuid": {"type": ["string", "null"]},
                        "name": {"type": ["string", "null"]},
                        "memory_mb": {"type": ["integer", "null"]},
                        "held": {"type": "boolean"},
                    },
                },
            },
            "cpus": {"type": ["number", "null"]},
            "cpus_free": {"type": ["number", "null"]},
            "memory_mb": {"type": ["integer", "null"]},
            "memory_free_mb": {"type": ["integer", "null"]},
            "jobs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"job_id": {"type": "string"}, "attempt": {"type": "integer"}},
                },
            },
        },
    },
    "RunnerList": {
        "type": "object",
        "required": ["count", "results"],
        "properties": {
            "count": {"type": "integer"},
            "results": {"type": "array", "items": _ref("Runner")},
        },
    },
    "UsageList": {
        "type": "object",
        "required": ["results"],
        "properties": {
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["owner", "jobs", "run_seconds", "gpu_seconds", "cpu_seconds"],
                    "properties": {
                        "owner": {"type": "string"},
                        "jobs": {"type": "integer", "description": "Jobs ended."},
                        "run_seconds": {"type": "number"},
                        "gpu_seconds": {"type": "number", "description": "Run × GPUs given."},
                        "cpu_seconds": {
                            "type": "number",
                            "description": "Run × CPUs asked for (one if none).",
                        },
                    },
                },
            }
        },
    },
    "FileListing": {
        "type": "object",
        "required": ["path", "entries"],
        "properties": {
            "path": {"type": "string"},
            "entries": {"type": "array", "items": _ref("FileEntry")},
        },
    },
}


def _model_schemas() -> dict[str, Any]:
    """Submission, MultipartSubmission, Submitted, Job and what they refer to (Status,
    AssignedGpu), from the models: a request as validated, an answer as serialized."""
    models: dict[str, tuple[type[BaseModel], JsonSchemaMode]] = {
        "Submission": (JobSpec, "validation"),
        "Submitted": (Submitted, "serialization"),
        "Job": (Job, "serialization"),
    }
    schemas: dict[str, Any] = {}
    for name, (model, mode) in models.items():
        schema = model.model_json_schema(mode=mode, ref_template=REF_TEMPLATE)
        schemas |= schema.pop("$defs", {})
        schemas[name] = schema
    submission = schemas["Submission"]
    schemas["MultipartSubmission"] = {
        **submission,
        "title": "MultipartSubmission",
        # A form's file parts sit beside the model's fields, not in them.
        "properties": {**submission["properties"], "file[]": FILE_PARTS},
    }
    return schemas


FILE_PARTS = {
    "type": "array",
    "items": {"type": "string", "contentMediaType": "application/octet-stream"},
    "description": "Input files; each part's filename is its destination path in the job "
    "(relative paths land under /job).",
}
SCHEMAS |= _model_schemas()
SCHEMAS |= tes_schemas()  # GA4GH TES (docs/tes.md)

IDEMPOTENCY_KEY = {
    "name": IDEMPOTENCY_HEADER,
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
    "description": f"Makes retrying a submission harmless: the same key from the same user "
    f"within {KEY_LIFETIME.days * 24} hours answers with the job the first request made "
    f"(`{REPLAYED_HEADER}: true`), never a second one. 1 to 255 printable ASCII characters.",
}

SUBMIT = {
    "summary": "Submit a job",
    "description": "Answers 201 once the JobSubmitted event is confirmed in the log.",
    "parameters": [IDEMPOTENCY_KEY],
    "requestBody": {
        "required": True,
        "content": {
            JSON: {"schema": _ref("Submission")},
            "multipart/form-data": {"schema": _ref("MultipartSubmission")},
            "application/x-www-form-urlencoded": {"schema": _ref("Submission")},
        },
    },
    "responses": {
        "201": {
            **_json(_ref("Submitted"), "The job is in the log."),
            "headers": {
                "Location": {"schema": {"type": "string"}},
                REPLAYED_HEADER: {
                    "schema": {"type": "string", "enum": ["true"]},
                    "description": f"The {IDEMPOTENCY_HEADER} already made this job: the answer "
                    "is the first request's.",
                },
            },
        },
        **_errors(400, 413, 415),
        "422": _json(
            _ref("Error"),
            f"`idempotency_key_reused`: the {IDEMPOTENCY_HEADER} already made a job (`job_id`) "
            "that differs from this request.",
        ),
        "503": _json(
            _ref("Error"),
            "Not accepted now (`overloaded`), or the log did not confirm the job in time "
            f"(`unavailable`): it may still have been accepted as `job_id`. With an "
            f"{IDEMPOTENCY_HEADER}, retry with the same key; without one, look at the job first.",
        ),
    },
}

LIST = {
    "summary": "List jobs, newest first",
    "parameters": [
        {
            "name": "status",
            "in": "query",
            "schema": {"type": "string"},
            "description": "Comma-separated statuses, or `all`. Default: the unfinished ones.",
        },
        {
            "name": "owner",
            "in": "query",
            "schema": {"type": "string"},
            "description": "Only this user's jobs (an admin may name anyone; a user, themself).",
        },
        {
            "name": "id_prefix",
            "in": "query",
            "schema": {"type": "string", "pattern": "^[0-9a-fA-F-]{1,36}$"},
            "description": "Only jobs whose id starts with this (`freight logs 0d6c` finds one).",
        },
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        {
            "name": "cursor",
            "in": "query",
            "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
        },
    ],
    "responses": {"200": _json(_ref("JobList"), "One page of jobs."), **_errors(400)},
}

PATH = {
    "name": "path",
    "in": "query",
    "required": True,
    "schema": {"type": "string"},
    "description": "Absolute path in the job's file system, e.g. /job/out.txt.",
}

FILES: dict[str, Any] = {
    "summary": "A file's bytes, or a directory's top-level entries",
    "description": "Read live from the container while the job runs, from what it saved once "
    "it has ended. A file comes with Content-Length and Content-Disposition; a directory as "
    "JSON without Content-Disposition.",
    "parameters": [PATH],
    "responses": {
        "200": {
            "description": "The file, or the directory listing.",
            "content": {
                "application/octet-stream": {
                    "schema": {"type": "string", "contentMediaType": "application/octet-stream"}
                },
                JSON: {"schema": _ref("FileListing")},
            },
        },
        "409": _json(_ref("Error"), "The job has not started: no files to read yet."),
        "410": _json(_ref("Error"), "The file was deleted after FREIGHT_FILE_RETENTION."),
        **_errors(400, 404, 503),
    },
}

PATHS: dict[str, Any] = {
    "/jobs": {
        "post": {**SUBMIT, "operationId": "submitJob"},
        "get": {**LIST, "operationId": "listJobs"},
    },
    "/submission": {
        "post": {
            **SUBMIT,
            "operationId": "submitJobLegacy",
            "description": "The original document's name for `POST /jobs`.",
        },
        "get": {**LIST, "operationId": "listJobsLegacy", "description": "Same as `GET /jobs`."},
    },
    "/jobs/{job_id}": {
        "parameters": [JOB_ID],
        "get": {
            "operationId": "getJob",
            "summary": "One job",
            "responses": {"200": _json(_ref("Job"), "The job."), **_errors(404)},
        },
        "delete": {
            "operationId": "cancelJob",
            "summary": "Cancel a job",
            "description": "A queued job ends at once; a running one is stopped. "
            "Either way it ends FAILED with reason `cancelled`.",
            "responses": {
                "202": _json(_ref("Cancellation"), "Termination is scheduled."),
                **_errors(404, 409, 503),
            },
        },
    },
    "/jobs/{job_id}/events": {
        "parameters": [JOB_ID],
        "get": {
            "operationId": "getJobEvents",
            "summary": "The job's history: its events from the log, in order",
            "responses": {"200": _json(_ref("EventList"), "The events."), **_errors(404)},
        },
    },
    "/jobs/{job_id}/logs": {
        "parameters": [JOB_ID],
        "get": {
            "operationId": "getJobLogs",
            "summary": "The job's output",
            "parameters": [
                {
                    "name": "stream",
                    "in": "query",
                    "schema": {"type": "string", "enum": ["stdout", "stderr"]},
                    "description": "Only this stream; both interleaved by default.",
                },
                {"name": "tail", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                {
                    "name": "follow",
                    "in": "query",
                    "schema": {"type": "boolean"},
                    "description": "Stream as the job runs; the response ends when it ends.",
                },
            ],
            "responses": {
                "200": {
                    "description": "The output: text (chunked while following), or with "
                    "`Accept: text/event-stream` one `data:` event per line and a final "
                    "`event: end`.",
                    "content": {
                        "text/plain": {"schema": {"type": "string"}},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                **_errors(400, 404),
            },
        },
    },
    "/jobs/{job_id}/files": {
        "parameters": [JOB_ID],
        "get": {**FILES, "operationId": "getJobFile"},
    },
    "/files": {
        "get": {
            **FILES,
            "operationId": "getFile",
            "description": "The original document's `/files`. With `job_id`, that job's files. "
            "Without, the caller's jobs share one file system: the newest version any of them "
            "saved (inputs, and what ended jobs wrote), a file naming its job in "
            "`X-Freight-Job-Id`, a listing's entries each with their `job_id`.",
            "parameters": [
                {
                    **JOB_ID,
                    "in": "query",
                    "required": False,
                    "description": "The job whose files to read; without it, the caller's.",
                },
                PATH,
                {
                    "name": "owner",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "Without `job_id`: whose jobs (an admin's choice; others get "
                    "403 for anyone but themselves).",
                },
            ],
            "responses": {
                **FILES["responses"],
                "403": _json(_ref("Error"), "`owner` names another user; only an admin may."),
            },
        }
    },
    "/runners": {
        "get": {
            "operationId": "listRunners",
            "summary": "Every runner: state, slots, GPUs, CPUs, memory, last heartbeat",
            "description": "Any token sees every runner; of the jobs running on them, a user "
            "sees their own only, an admin all.",
            "responses": {"200": _json(_ref("RunnerList"), "The runners."), **_errors()},
        }
    },
    "/usage": {
        "get": {
            "operationId": "usage",
            "summary": "What each owner's ended jobs used: run, GPU- and CPU-seconds",
            "description": "A fold of the log, the same after any rebuild. A user sees their own "
            "row; an admin every owner's, or `owner`'s.",
            "parameters": [
                {"name": "owner", "in": "query", "required": False, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": _json(_ref("UsageList"), "Most GPU-seconds first."),
                "403": _json(_ref("Error"), "`owner` names another user; only an admin may."),
                **_errors(),
            },
        }
    },
    "/ui": {
        "get": {
            "operationId": "dashboard",
            "summary": "The dashboard (an HTML page; it asks for a token and sends it itself)",
            "security": [],
            "responses": {
                "200": {"description": "The page.", "content": {"text/html": {}}},
                "304": {"description": "Not modified since the ETag sent."},
            },
        }
    },
    "/ui/{name}": {
        "get": {
            "operationId": "dashboardAsset",
            "summary": "The dashboard's script, style and icon",
            "security": [],
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {"description": "The file."},
                "304": {"description": "Not modified since the ETag sent."},
                "404": _json(_ref("Error"), "No such file."),
            },
        }
    },
    "/healthz": {
        "get": {
            "operationId": "health",
            "summary": "Liveness",
            "security": [],
            "responses": {"200": _json({"type": "object"}, "The API process answers.")},
        }
    },
    "/readyz": {
        "get": {
            "operationId": "ready",
            "summary": "Readiness: database and RabbitMQ answer, the projection is caught up",
            "security": [],
            "responses": {
                "200": _json({"type": "object"}, "Ready; `checks` shows each check."),
                "503": _json(_ref("Error"), "Not ready; `message` says which check fails."),
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics: jobs by state, queue depth, runners, latencies",
            "responses": {
                "200": {
                    "description": "Prometheus text exposition.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **_errors(503),
            },
        }
    },
    "/docs": {
        "get": {
            "operationId": "docs",
            "summary": "This document in Swagger UI, served from the API itself (no CDN); "
            "the page asks for a token to read /openapi.json and try the API with",
            "security": [],
            "responses": {
                "200": {
                    "description": "The page.",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                },
                **_errors(),
            },
        }
    },
    "/docs/{asset}": {
        "get": {
            "operationId": "docsAsset",
            "summary": "A script or style sheet of the /docs page",
            "security": [],
            "parameters": [
                {"name": "asset", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {
                    "description": "The file.",
                    "content": {
                        "text/javascript": {"schema": {"type": "string"}},
                        "text/css": {"schema": {"type": "string"}},
                    },
                },
                **_errors(404),
            },
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {
                "200": _json({"type": "object"}, "The OpenAPI 3.1 document."),
                **_errors(),
            },
        }
    },
}

PATHS |= tes_paths(_errors)

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Freight",
        "version": "1",
        "description": "Run commands as jobs in containers with GPUs. When a job ends a message "
        "{job_id, status, owner, exit_code, reason, finished_at} is published on the topic "
        "exchange `job_response` (routing key: the job id) and lands in the durable queue "
        "`job_response`.",
    },
    "paths": PATHS,
    # Every operation needs a token unless it says `security: []` (the probes).
    "security": [{"bearer": []}, {"basic": []}],
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A token from `freight token add NAME`. Without "
                "FREIGHT_API_TOKENS_FILE (local mode, loopback only) none is needed.",
            },
            "basic": {
                "type": "http",
                "scheme": "basic",
                "description": "The same token as the password (the user name empty or the "
                "token's): for clients that know no bearer scheme, such as TES's (docs/tes.md).",
            },
        },
        "schemas": SCHEMAS,
        "responses": {
            "Error": _json(_ref("Error"), "An error."),
            **{f"E{code}": _json(_ref("Error"), text) for code, text in ERRORS.items()},
        },
    },
}


class OpenApi:
    """`/openapi.json`."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = DOCUMENT
