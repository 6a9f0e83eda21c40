"""
The OpenAPI 3.1 description of the JSON API, written from its table of endpoints (``_api.ENDPOINTS``).

The schemas below are the JSON the views write (``_views.py``); a test runs
schemathesis against the app with this description, so a drift between the two
fails it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from statemachine_orch._history import EventKind
from statemachine_orch._status import InstanceStatus
from statemachine_orch._tasks import TaskStatus

if TYPE_CHECKING:
    from ._endpoints import Endpoint

_TEXT: Final = {"type": "string"}
_MAYBE_TEXT: Final = {"type": ["string", "null"]}
_TIME: Final = {"type": "string", "format": "date-time"}
_MAYBE_TIME: Final = {"type": ["string", "null"], "format": "date-time"}
_TEXTS: Final = {"type": "array", "items": _TEXT}


def _object(
    properties: dict[str, Any], *, required: Iterable[str] | None = None, closed: bool = True
) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties if required is None else required),
        "additionalProperties": not closed,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_TASK: Final = {
    "id": _TEXT,
    "instance_id": _TEXT,
    "workflow": _TEXT,
    "step": _TEXT,
    "status": {"type": "string", "enum": [s.value for s in TaskStatus]},
    "assignee": _MAYBE_TEXT,
    "candidate_groups": _TEXTS,
    "claimed_by": _MAYBE_TEXT,
    "created_at": _TIME,
    "due_at": _MAYBE_TIME,
    "overdue": {"type": "boolean"},
    "form_type": _MAYBE_TEXT,
    "completed_by": _MAYBE_TEXT,
    "completed_at": _MAYBE_TIME,
    "form": {},
}

_FORM_FIELD: Final = _object(
    {
        "name": _TEXT,
        "kind": {
            "type": "string",
            "enum": ["text", "integer", "number", "decimal", "checkbox", "select", "date", "datetime", "json"],
        },
        "type": _TEXT,
        "required": {"type": "boolean"},
        "default": _TEXT,
        "choices": _TEXTS,
    }
)

_INSTANCE: Final = {
    "id": _TEXT,
    "workflow": _TEXT,
    "version": _TEXT,
    "status": {"type": "string", "enum": [s.value for s in InstanceStatus]},
    "step": _MAYBE_TEXT,
    "steps": _TEXTS,
    "created_at": _TIME,
    "error": _MAYBE_TEXT,
    "open_task": _MAYBE_TEXT,
    "wake_at": _MAYBE_TIME,
    "parent": _MAYBE_TEXT,
    "quarantined": _MAYBE_TEXT,
}

SCHEMAS: Final[dict[str, Any]] = {
    "Any": {},
    "Error": _object(
        {
            "error": _object(
                {
                    "type": _TEXT,
                    "message": _TEXT,
                    "field": _MAYBE_TEXT,
                    "fields": {"type": "object", "additionalProperties": _TEXT},
                }
            )
        }
    ),
    "Me": _object({"user": _TEXT, "groups": _TEXTS, "operator": {"type": "boolean"}}),
    "Task": _object(_TASK),
    "TaskList": _object({"tasks": {"type": "array", "items": _ref("Task")}}),
    "FormFields": {
        "oneOf": [
            {"type": "null"},
            _object({"type": _TEXT, "fields": {"type": "array", "items": _FORM_FIELD}}),
        ]
    },
    "TaskDetail": _object(
        {
            **_TASK,
            "form_fields": _ref("FormFields"),
            "may_complete": {"type": "boolean"},
            "may_claim": {"type": "boolean"},
            "may_unclaim": {"type": "boolean"},
        }
    ),
    "Completion": _object(
        {"form": {"description": "The form's fields as JSON (null: a task without a form)."}}, required=()
    ),
    "Instance": _object(_INSTANCE),
    "InstanceList": _object({"total": {"type": "integer"}, "instances": {"type": "array", "items": _ref("Instance")}}),
    "InstanceDetail": _object(
        {
            "instance": _ref("Instance"),
            "variables": {"type": ["object", "null"]},
            "progress": {
                "oneOf": [
                    {"type": "null"},
                    _object(
                        {
                            "steps_done": {"type": "integer"},
                            "steps_left": {"type": "integer"},
                            "fraction": {"type": "number"},
                        }
                    ),
                ]
            },
            "children": {"type": "array", "items": _ref("Instance")},
            "tasks": {"type": "array", "items": _ref("Task")},
        }
    ),
    "Event": _object(
        {
            "at": _TIME,
            "kind": {"type": "string", "enum": [k.value for k in EventKind]},
            "step": _MAYBE_TEXT,
            "attempt": {"type": "integer"},
            "detail": _MAYBE_TEXT,
        }
    ),
    "History": _object({"events": {"type": "array", "items": _ref("Event")}}),
    "Start": _object(
        {
            "workflow": {"type": "string", "minLength": 1, "maxLength": 1000},
            "version": {"type": "string", "maxLength": 1000},
            "id": {"type": "string", "minLength": 1, "maxLength": 200},
            "input": {"type": "object"},
        },
        required=("workflow",),
    ),
    "SignalBody": _object(
        {"type": {"type": "string", "minLength": 1, "maxLength": 1000}, "message": {}}, required=("type",)
    ),
    "Cancel": _object(
        {"reason": {"type": "string", "maxLength": 1000}, "compensate": {"type": "boolean"}}, required=()
    ),
    "Empty": _object({}, required=()),
    "Settled": _object({"instance": _ref("Instance"), "done": {"type": "boolean"}}),
}
"""The schemas of the API's bodies, by name."""

_REASONS: Final = {
    400: "Malformed: a parameter or the JSON body.",
    401: "No identity: sign in, or come through the authenticating proxy.",
    403: "Not allowed: not one the task is for, or not an operator.",
    404: "No such task or instance (or a task that is not yours).",
    409: "Conflicts with the state: claimed by another, completed, finished, another version.",
    413: "The body is too large.",
    415: "The body is not application/json.",
    422: "A value of the wrong type (a form's field, a workflow's input, a message).",
    503: "The store (or Graphviz, for a diagram) cannot be used now.",
}

_ID_DESCRIPTIONS: Final = {
    "task_id": "A task's id (as the task lists give it).",
    "instance_id": "An instance's id (a child's holds '/').",
}


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "description": text, "schema": {"type": "string"}}
        for name, text in _ID_DESCRIPTIONS.items()
        if f"{{{name}" in endpoint.path
    ]
    parameters += [
        {"name": name, "in": "query", "required": False, "description": text, "schema": dict(schema)}
        for name, schema, text in endpoint.query
    ]
    responses: dict[str, Any] = {}
    for status, schema in endpoint.ok:
        if schema == "unchanged":
            responses[str(status)] = {"description": "Not modified: the If-None-Match tag is the answer's ETag"}
            continue
        if schema == "svg":
            content: dict[str, Any] = {"image/svg+xml": {"schema": {"type": "string"}}}
        else:
            content = {"application/json": {"schema": _ref(schema)}}
        responses[str(status)] = {"description": "OK", "content": content}
    for status in endpoint.errors:
        responses[str(status)] = {
            "description": _REASONS[status],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
    operation: dict[str, Any] = {
        "operationId": endpoint.operation,
        "summary": endpoint.summary,
        "parameters": parameters,
        "responses": responses,
    }
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(endpoint.body)}},
        }
    if endpoint.public:
        operation["security"] = []
    return operation


def document(endpoints: Iterable[Endpoint], user_header: str = "X-Forwarded-User") -> dict[str, Any]:
    """The OpenAPI 3.1 document of *endpoints* (*user_header*: the trusted proxy's user header)."""
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.openapi_path, {})[endpoint.method.lower()] = _operation(endpoint)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "statemachine-orch task list",
            "version": "1",
            "description": "Tasks and instances of statemachine-orch workflows. Identity comes from the "
            "authenticator (a trusted proxy's headers, or development login), never from a body.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "proxyUser": {
                    "type": "apiKey",
                    "in": "header",
                    "name": user_header,
                    "description": "The user, set by the authenticating reverse proxy.",
                },
            },
        },
        "security": [{"proxyUser": []}],
    }
