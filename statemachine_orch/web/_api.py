"""
The JSON API: one table of endpoints, from which both the routes and the OpenAPI description are made.

Every endpoint but the description needs an identity from the authenticator
(401 without one); starting, signalling, cancelling and retrying instances need
an operator (403 otherwise); tasks follow the engine's rule (assignee, claimant,
candidate group). Bodies are JSON objects (``Content-Type: application/json``,
415 otherwise), and every refusal is ``{"error": {"type", "message", "field",
"fields"}}`` with its status: 400 malformed, 404 unknown, 409 conflicting
(claimed, completed, finished), 413 too large, 422 a value of the wrong type,
503 the store (or Graphviz) cannot be used.
"""

from __future__ import annotations

import asyncio
import json
import math
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from statemachine_orch._errors import (
    StoreError,
    UnknownWorkflowVersion,
)
from statemachine_orch._status import InstanceStatus
from statemachine_orch._tasks import Task, TaskStatus
from statemachine_orch._typed_json import form_for, input_for, message_for

from ._auth import Identity
from ._context import ApiError, Web
from ._diagram import diagram_svg
from ._endpoints import Endpoint
from ._forms import describe
from ._inbox_cache import Kept, etag_of
from ._openapi import document
from ._views import event_json, instance_json, progress_json, task_json, variables_json

ID_MAX: Final = 512
"""The longest instance or task id a path takes (child ids grow with their parents')."""

LIMIT_MAX: Final = 500
"""The most items one list answers with."""


# ----------------------------------------------------------------- reading requests


def path_id(request: Request, name: str) -> str:
    """A path parameter that names an instance or a task (printable, at most ``ID_MAX`` characters)."""
    value = str(request.path_params[name])
    if not value or len(value) > ID_MAX or not value.isprintable():
        raise ApiError(404, "NotFound", f"no such {name.removesuffix('_id')}: the id is not one this store gives")
    return value


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter between *low* and *high*."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > len(str(high)) or not low <= int(raw) <= high:
        raise ApiError(400, "BadParameter", f"{name} must be a whole number from {low} to {high}", field=name)
    return int(raw)


def query_bool(request: Request, name: str) -> bool:
    """A ``true``/``false`` query parameter (default false)."""
    raw = request.query_params.get(name, "false")
    if raw not in ("true", "false"):
        raise ApiError(400, "BadParameter", f"{name} must be true or false", field=name)
    return raw == "true"


def query_choice(request: Request, name: str, choices: tuple[str, ...], default: str | None) -> str | None:
    """A query parameter that must be one of *choices* (missing: *default*)."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if raw not in choices:
        raise ApiError(400, "BadParameter", f"{name} must be one of {', '.join(choices)}", field=name)
    return raw


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object (415 for another media type, 400 for anything but an object)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise ApiError(415, "UnsupportedMediaType", "send the body as application/json")
    raw = await request.body()
    try:
        data: object = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "BadJson", f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "BadJson", "the body must be a JSON object")
    return typing.cast("dict[str, Any]", data)


def _no_constant(name: str) -> float:
    msg = f"{name} is not JSON"
    raise ValueError(msg)


def text_member(body: Mapping[str, Any], name: str, *, required: bool, limit: int = 1000) -> str | None:
    """A string member of a JSON body."""
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value) or len(value) > limit:
        need = "a non-empty string" if required else "a string"
        raise ApiError(422, "BadMember", f"{name} must be {need} of at most {limit} characters", field=name)
    return value


# ----------------------------------------------------------------- tasks


def visible(web: Web, task: Task, identity: Identity) -> bool:
    """Whether *identity* may see *task*: one it is (or was) for, its claimant or completer, or an operator."""
    user = identity.user
    return (
        task.may_claim(user, identity.groups)
        or user in (task.claimed_by, task.completed_by)
        or web.is_operator(identity)
    )


def for_whom(task: Task) -> str:
    """Whom *task* is for: ``assignee boss`` or ``members of buyers, leads``."""
    return f"assignee {task.assignee}" if task.assignee else "members of " + ", ".join(task.candidate_groups)


def task_for(web: Web, request: Request, identity: Identity) -> Task:
    """The task of the path, if *identity* may see it (404: no such task; 403: not one of theirs)."""
    task_id = path_id(request, "task_id")
    task = web.engine.store.task(task_id)
    if task is None:
        raise ApiError(404, "TaskNotFound", f"task {task_id}: no such task")
    if not visible(web, task, identity):
        msg = f"task {task_id}: it is for {for_whom(task)}; {identity.user!r} may not see nor complete it"
        raise ApiError(403, "TaskNotAuthorized", msg)
    return task


def task_detail(web: Web, task: Task, identity: Identity) -> dict[str, Any]:
    """A task with its form and what *identity* may do with it."""
    may = task.status is TaskStatus.OPEN and task.may_complete(identity.user, identity.groups)
    return {
        **task_json(task, web.engine.clock.now()),
        "form_fields": describe(task.form_type),
        "may_complete": may,
        "may_claim": task.status is TaskStatus.OPEN
        and task.claimed_by is None
        and task.may_claim(identity.user, identity.groups),
        "may_unclaim": task.status is TaskStatus.OPEN and task.claimed_by == identity.user,
    }


async def list_tasks(web: Web, request: Request, identity: Identity) -> Response:
    """The open tasks *identity* may complete (``scope=mine``: assigned to or claimed by them)."""
    scope = query_choice(request, "scope", ("all", "mine"), "all")
    limit = query_int(request, "limit", 50, 1, LIMIT_MAX)
    overdue = query_bool(request, "overdue")
    instance_id = request.query_params.get("instance_id")
    engine = web.engine
    now = engine.clock.now()
    groups = identity.groups if scope == "all" else ()
    due_before = now if overdue else None
    cache = web.inbox_cache if not overdue else None  # the overdue ones change with the clock: not kept
    key = (identity.user, groups, instance_id, limit)

    async def read() -> tuple[bytes, float]:
        tasks = await web.read(
            lambda: engine.tasks(identity.user, groups, instance_id=instance_id, due_before=due_before, limit=limit)
        )
        body = json.dumps(
            {"tasks": [task_json(t, now) for t in tasks]}, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode()  # as JSONResponse encodes
        coming = [t.due_at for t in tasks if t.due_at is not None and t.due_at > now]
        return body, min(coming, default=math.inf)  # until the first of them falls due

    if cache is not None:
        kept = await cache.answer(key, now, read)
    else:
        body, _ = await read()
        kept = Kept(body, etag_of(body), -1, now, 0.0)
    if kept.etag in _etags(request):
        return Response(status_code=304, headers={"etag": kept.etag})
    return Response(kept.body, media_type="application/json", headers={"etag": kept.etag})


def _etags(request: Request) -> list[str]:
    """The entity tags of the request's ``If-None-Match`` (weak ones compared as strong)."""
    header = request.headers.get("if-none-match", "")
    return [tag.strip().removeprefix("W/") for tag in header.split(",")] if header else []


async def show_task(web: Web, request: Request, identity: Identity) -> Response:
    """One task, its form's fields and what the caller may do with it."""
    detail = await web.read(lambda: task_detail(web, task_for(web, request, identity), identity))
    return JSONResponse(detail)


async def claim_task(web: Web, request: Request, identity: Identity) -> Response:
    """Claim the task for the caller."""
    task = task_for(web, request, identity)
    claimed = await web.engine.claim_task(task.id, user=identity.user, groups=identity.groups)
    return JSONResponse(task_json(claimed, web.engine.clock.now()))


async def unclaim_task(web: Web, request: Request, identity: Identity) -> Response:
    """Give the caller's claim back."""
    task = task_for(web, request, identity)
    released = await web.engine.unclaim_task(task.id, user=identity.user, groups=identity.groups)
    return JSONResponse(task_json(released, web.engine.clock.now()))


async def complete_task(web: Web, request: Request, identity: Identity) -> Response:
    """Complete the task with the body's form (``{"form": {...}}``)."""
    task = task_for(web, request, identity)
    body = await json_body(request)
    unknown = sorted(set(body) - {"form"})
    if unknown:
        raise ApiError(422, "BadMember", f'unknown member {unknown[0]!r}: the body is {{"form": ...}}')
    engine = web.engine
    if task.status is not TaskStatus.OPEN or not task.may_complete(identity.user, identity.groups):
        # Refused before the form is read, with the engine's own error (closed, claimed, not yours).
        done = await engine.complete_task(task.id, user=identity.user, groups=identity.groups, form=None)
        return JSONResponse(task_json(done, engine.clock.now()))
    form = form_for(task, body.get("form"))
    done = await engine.complete_task(task.id, user=identity.user, groups=identity.groups, form=form)
    return JSONResponse(task_json(done, engine.clock.now()))


# ----------------------------------------------------------------- instances


def info_for(web: Web, request: Request) -> str:
    """The id of the instance of the path, which exists (404 otherwise)."""
    instance_id = path_id(request, "instance_id")
    web.engine.info(instance_id)
    return instance_id


async def list_instances(web: Web, request: Request, _identity: Identity) -> Response:
    """The instances, newest first, optionally of one status and workflow, a page at a time."""
    status = query_choice(request, "status", tuple(s.value for s in InstanceStatus), None)
    workflow = request.query_params.get("workflow") or None
    limit = query_int(request, "limit", 50, 1, LIMIT_MAX)
    offset = query_int(request, "offset", 0, 0, 10**9)
    found = await web.read(lambda: web.engine.instances(InstanceStatus(status) if status else None, workflow))
    found.sort(key=lambda i: (-i.created_at, i.id))
    page = found[offset : offset + limit]
    return JSONResponse({"total": len(found), "instances": [instance_json(i) for i in page]})


def instance_detail(web: Web, instance_id: str) -> dict[str, Any]:
    """An instance with its variables, progress, children and open tasks."""
    engine = web.engine
    info = engine.info(instance_id)
    try:
        variables: dict[str, Any] | None = variables_json(engine.workflow(instance_id))
        progress: dict[str, Any] | None = progress_json(engine.progress(instance_id))
    except (UnknownWorkflowVersion, StoreError):
        variables = progress = None  # its class is not known here: the rest is still shown
    now = engine.clock.now()
    return {
        "instance": instance_json(info),
        "variables": variables,
        "progress": progress,
        "children": [instance_json(c) for c in engine.children(instance_id)],
        "tasks": [task_json(t, now) for t in engine.tasks(instance_id=instance_id)],
    }


async def show_instance(web: Web, request: Request, _identity: Identity) -> Response:
    """One instance."""
    return JSONResponse(await web.read(lambda: instance_detail(web, info_for(web, request))))


async def instance_history(web: Web, request: Request, _identity: Identity) -> Response:
    """The instance's history, oldest first."""
    events = await web.read(lambda: web.engine.history(info_for(web, request)))
    return JSONResponse({"events": [event_json(e) for e in events]})


async def instance_diagram(web: Web, request: Request, _identity: Identity) -> Response:
    """The instance's workflow as SVG, its steps coloured by what the instance did."""
    return Response(await diagram_svg(web, info_for(web, request)), media_type="image/svg+xml")


async def start_instance(web: Web, request: Request, _identity: Identity) -> Response:
    """Start an instance: ``{"workflow", "version"?, "id"?, "input": {...}}``."""
    body = await json_body(request)
    name = text_member(body, "workflow", required=True) or ""
    version = text_member(body, "version", required=False)
    instance_id = text_member(body, "id", required=False, limit=200)
    data = body.get("input", {})
    if not isinstance(data, dict):
        raise ApiError(422, "BadMember", "input must be a JSON object of the workflow's fields", field="input")
    cls = web.workflow_class(name, version)
    if cls is None:
        known = ", ".join(sorted(web.workflows)) or "none"
        raise ApiError(404, "UnknownWorkflow", f"no workflow {name!r} to start here (known: {known})", field="workflow")
    handle = await web.engine.start(input_for(cls, typing.cast("dict[str, Any]", data)), instance_id=instance_id)
    return JSONResponse(instance_json(web.engine.info(handle.instance_id)), 201)


async def signal_instance(web: Web, request: Request, _identity: Identity) -> Response:
    """Deliver a message: ``{"type": name, "message": {...}}``."""
    instance_id = info_for(web, request)
    body = await json_body(request)
    type_name = text_member(body, "type", required=True) or ""
    engine = web.engine
    info = engine.info(instance_id)
    cls = engine.registry.resolve(info.workflow, info.version)
    if cls is None:
        raise UnknownWorkflowVersion(instance_id, info.workflow, info.version, engine.registry.versions(info.workflow))
    message = message_for(cls, instance_id, type_name, body.get("message"))
    await engine.signal(instance_id, message)
    return JSONResponse({"instance": instance_json(engine.info(instance_id)), "done": False}, 202)


async def _settled(web: Web, instance_id: str, change: Awaitable[object]) -> Response:
    """Wait up to ``web.wait`` for a cancel or retry to end the instance: 200 when it did, 202 when a worker will."""
    try:
        await asyncio.wait_for(change, web.wait)
    except TimeoutError:
        return JSONResponse({"instance": instance_json(web.engine.info(instance_id)), "done": False}, 202)
    return JSONResponse({"instance": instance_json(web.engine.info(instance_id)), "done": True})


async def cancel_instance(web: Web, request: Request, identity: Identity) -> Response:
    """Cancel the instance: ``{"reason": str, "compensate": bool}``."""
    instance_id = info_for(web, request)
    body = await json_body(request)
    reason = text_member(body, "reason", required=False) or f"cancelled by {identity.user}"
    compensate = body.get("compensate", True)
    if not isinstance(compensate, bool):
        raise ApiError(422, "BadMember", "compensate must be true or false", field="compensate")
    engine = web.engine
    info = engine.info(instance_id)
    if info.status.is_terminal:
        msg = f"instance {instance_id} is {info.status.value} already: there is nothing to cancel"
        raise ApiError(409, "InstanceFinished", msg)
    return await _settled(web, instance_id, engine.cancel(instance_id, reason=reason, compensate=compensate))


async def retry_instance(web: Web, request: Request, _identity: Identity) -> Response:
    """Run the failed compensations of a ``compensation_failed`` instance again."""
    instance_id = info_for(web, request)
    await json_body(request)
    info = web.engine.info(instance_id)
    if info.status is not InstanceStatus.COMPENSATION_FAILED:
        msg = f"instance {instance_id} is {info.status.value}, not compensation_failed: nothing to retry"
        raise ApiError(409, "InstanceStateError", msg)
    return await _settled(web, instance_id, web.engine.retry_compensation(instance_id))


async def me(web: Web, _request: Request, identity: Identity) -> Response:
    """Who the caller is, as the authenticator says."""
    return JSONResponse({"user": identity.user, "groups": list(identity.groups), "operator": web.is_operator(identity)})


async def openapi(web: Web, _request: Request, _identity: Identity) -> Response:
    """This API's OpenAPI description."""
    header: object = getattr(web.authenticator, "user_header", "X-Forwarded-User")
    return JSONResponse(document(ENDPOINTS, str(header)))


# ----------------------------------------------------------------- the table

_LIMIT: Final = ("limit", {"type": "integer", "minimum": 1, "maximum": LIMIT_MAX, "default": 50}, "At most this many.")

ENDPOINTS: Final = (
    Endpoint("GET", "/api/openapi.json", openapi, "openapi", "This description.", ok=((200, "Any"),), public=True),
    Endpoint("GET", "/api/me", me, "me", "Who you are.", ok=((200, "Me"),), errors=(401,)),
    Endpoint(
        "GET",
        "/api/tasks",
        list_tasks,
        "listTasks",
        "Open tasks you may complete, oldest first (overdue=true: only those past due); with an ETag.",
        query=(
            (
                "scope",
                {"type": "string", "enum": ["all", "mine"], "default": "all"},
                "mine: assigned to or claimed by you.",
            ),
            ("overdue", {"type": "string", "enum": ["true", "false"], "default": "false"}, "Only tasks past due."),
            ("instance_id", {"type": "string"}, "Only this instance's tasks."),
            _LIMIT,
        ),
        ok=((200, "TaskList"), (304, "unchanged")),
        errors=(400, 401, 503),
    ),
    Endpoint(
        "POST",
        "/api/tasks/{task_id:path}/claim",
        claim_task,
        "claimTask",
        "Claim a task: only you may complete it until you unclaim it.",
        ok=((200, "Task"),),
        errors=(401, 403, 404, 409, 503),
    ),
    Endpoint(
        "POST",
        "/api/tasks/{task_id:path}/unclaim",
        unclaim_task,
        "unclaimTask",
        "Give your claim on a task back.",
        ok=((200, "Task"),),
        errors=(401, 403, 404, 409, 503),
    ),
    Endpoint(
        "POST",
        "/api/tasks/{task_id:path}/complete",
        complete_task,
        "completeTask",
        "Complete a task with its form.",
        body="Completion",
        ok=((200, "Task"),),
        errors=(400, 401, 403, 404, 409, 413, 415, 422, 503),
    ),
    Endpoint(
        "GET",
        "/api/tasks/{task_id:path}",
        show_task,
        "showTask",
        "One task, its form's fields and what you may do with it.",
        ok=((200, "TaskDetail"),),
        errors=(401, 403, 404, 503),
    ),
    Endpoint(
        "GET",
        "/api/instances",
        list_instances,
        "listInstances",
        "Instances, newest first, a page at a time.",
        query=(
            ("status", {"type": "string", "enum": [s.value for s in InstanceStatus]}, "Only instances in this status."),
            ("workflow", {"type": "string"}, "Only instances of this workflow."),
            _LIMIT,
            ("offset", {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0}, "Skip this many."),
        ),
        ok=((200, "InstanceList"),),
        errors=(400, 401, 503),
    ),
    Endpoint(
        "POST",
        "/api/instances",
        start_instance,
        "startInstance",
        "Start an instance (operators).",
        body="Start",
        ok=((201, "Instance"),),
        errors=(400, 401, 403, 404, 409, 413, 415, 422, 503),
        operator=True,
    ),
    Endpoint(
        "GET",
        "/api/instances/{instance_id:path}/history",
        instance_history,
        "instanceHistory",
        "An instance's history, oldest first.",
        ok=((200, "History"),),
        errors=(401, 404, 503),
    ),
    Endpoint(
        "GET",
        "/api/instances/{instance_id:path}/diagram",
        instance_diagram,
        "instanceDiagram",
        "An instance's workflow as SVG, coloured by what it did.",
        ok=((200, "svg"),),
        errors=(401, 404, 409, 503),
    ),
    Endpoint(
        "POST",
        "/api/instances/{instance_id:path}/signal",
        signal_instance,
        "signalInstance",
        "Deliver a message to an instance (operators).",
        body="SignalBody",
        ok=((202, "Settled"),),
        errors=(400, 401, 403, 404, 409, 413, 415, 422, 503),
        operator=True,
    ),
    Endpoint(
        "POST",
        "/api/instances/{instance_id:path}/cancel",
        cancel_instance,
        "cancelInstance",
        "Cancel an instance (operators); 202 when a worker has yet to end it.",
        body="Cancel",
        ok=((200, "Settled"), (202, "Settled")),
        errors=(400, 401, 403, 404, 409, 413, 415, 422, 503),
        operator=True,
    ),
    Endpoint(
        "POST",
        "/api/instances/{instance_id:path}/retry",
        retry_instance,
        "retryInstance",
        "Run a compensation_failed instance's compensations again (operators).",
        body="Empty",
        ok=((200, "Settled"), (202, "Settled")),
        errors=(400, 401, 403, 404, 409, 413, 415, 503),
        operator=True,
    ),
    Endpoint(
        "GET",
        "/api/instances/{instance_id:path}",
        show_instance,
        "showInstance",
        "One instance: status, steps, variables, progress, children, open tasks.",
        ok=((200, "InstanceDetail"),),
        errors=(401, 404, 503),
    ),
)
"""Every endpoint, in matching order (those with a suffix before the ones their ids would swallow)."""


def routes() -> list[Route]:
    """The API's routes: one per path, whatever its methods (so that a 405 names them all in ``Allow``)."""
    by_path: dict[str, list[Endpoint]] = {}
    for endpoint in ENDPOINTS:
        by_path.setdefault(endpoint.path, []).append(endpoint)
    out: list[Route] = []
    for path, endpoints in by_path.items():
        handlers = {e.method: e.route().endpoint for e in endpoints}

        async def call(request: Request, handlers: Mapping[str, Any] = handlers) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            handler: Callable[[Request], Awaitable[Response]] = handlers[method]
            return await handler(request)

        out.append(Route(path, call, methods=list(handlers), name=endpoints[0].operation))
    return out
