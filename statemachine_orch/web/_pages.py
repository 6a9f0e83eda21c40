"""
The pages: the inbox, a task with its form, the instance list and an instance, server-rendered.

No JavaScript: links, and form posts that carry a CSRF token. A posted task form
that does not fit its form class is shown again with each message beside its
field, and nothing changes. Every value reaches the page through Jinja2's
autoescaping.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import quote, urlencode

from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ExceptionHandler

from statemachine_orch._errors import OrchError, StoreError, TaskError, TaskFormError, UnknownWorkflowVersion
from statemachine_orch._history import HistoryEvent
from statemachine_orch._instance import InstanceInfo
from statemachine_orch._status import InstanceStatus
from statemachine_orch._tasks import Task, TaskStatus

from ._api import ID_MAX, path_id, task_for
from ._auth import COOKIE, DevelopmentLogin, Identity
from ._context import ApiError, Web, orch_status, web_of
from ._csrf import FIELD
from ._forms import FormField, fields_of, parse
from ._views import key_variables, overdue, shown_time, variables_json

_TITLES: Final = {400: "Bad request", 403: "Not allowed", 404: "Not found", 405: "Not allowed"}
"""The heading of a page that says why another could not be shown, by its status."""

PAGE_SIZE: Final = 50
"""Rows per page of the instance list."""

INBOX_SIZE: Final = 100
"""The most tasks the inbox lists."""

_DONE: Final = {
    "cancelled": "The instance was cancelled.",
    "cancel-requested": "The cancel was handed to the workers; the instance ends when one applies it.",
    "retried": "The compensations ran again.",
    "retry-requested": "The retry was handed to the workers.",
}


def task_url(task_id: str) -> str:
    """A task page's address."""
    return "/tasks/" + quote(task_id, safe="")


def instance_url(instance_id: str) -> str:
    """An instance page's address."""
    return "/instances/" + quote(instance_id, safe="")


def diagram_url(instance_id: str) -> str:
    """An instance's diagram (the API's SVG)."""
    return "/api/instances/" + quote(instance_id, safe="") + "/diagram"


class _Refused(Exception):
    """A page that cannot be shown: its status and what to say."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


def render(
    request: Request,
    identity: Identity | None,
    template: str,
    *,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A page: *template* with *context*, the identity, the banner and a CSRF token for its forms."""
    web = web_of(request)
    nonce, new = web.csrf.nonce(request)
    token = web.csrf.token(nonce, identity.user if identity is not None else "")
    context.setdefault("section", "")
    context.setdefault("notice", None)
    context.setdefault("problem", None)
    html = web.templates.get_template(template).render(
        identity=identity, development=web.development, csrf_token=token, **context
    )
    response = HTMLResponse(html, status)
    response.headers["cache-control"] = "no-store"
    if new:
        web.csrf.remember(response, nonce)
    return response


def refused_page(request: Request, identity: Identity | None, refused: _Refused) -> HTMLResponse:
    """The page saying why another could not be shown."""
    return render(request, identity, "error.html", status=refused.status, title=refused.title, message=refused.message)


def signed_in(request: Request) -> Identity | Response:
    """The request's identity; else, in development mode, the way to the login page (else a 401 page)."""
    web = web_of(request)
    identity = web.identify(request)
    if identity is not None:
        return identity
    if web.development:
        return RedirectResponse("/login?" + urlencode({"next": request.url.path}), 303)
    return refused_page(
        request, None, _Refused(401, "Not signed in", "Come through the sign-in of your organisation's proxy.")
    )


PageHandler = Callable[[Request, Identity], Awaitable[Response]]
"""A page's function: the request and who makes it."""


def page(handler: PageHandler) -> Callable[[Request], Awaitable[Response]]:
    """
    A route of *handler*, given the request's identity (else the way to sign in).

    What it raises as :class:`_Refused`, or as the engine's typed error, is a page
    saying so with its status.
    """

    @functools.wraps(handler)
    async def call(request: Request) -> Response:
        identity = signed_in(request)
        if isinstance(identity, Response):
            return identity
        try:
            return await handler(request, identity)
        except _Refused as refused:
            return refused_page(request, identity, refused)
        except ApiError as exc:
            title = "Not your task" if exc.kind == "TaskNotAuthorized" else _TITLES.get(exc.status, "Not done")
            return refused_page(request, identity, _Refused(exc.status, title, exc.message))
        except OrchError as exc:
            status = orch_status(exc)
            return refused_page(request, identity, _Refused(status, _TITLES.get(status, "Not done"), str(exc)))

    return call


async def posted(request: Request, identity: Identity | None) -> dict[str, str]:
    """A form post's fields (the first value of each name), after its CSRF token is checked."""
    try:
        form = await request.form(max_files=0, max_fields=200, max_part_size=64 * 1024)
    except MultiPartException as exc:
        raise _Refused(400, "Bad form", f"The form could not be read: {exc.message}") from None
    data: dict[str, str] = {}
    for key, value in form.multi_items():
        if isinstance(value, str) and key not in data:
            data[key] = value
    await form.close()
    web = web_of(request)
    if not web.csrf.valid(request, data.get(FIELD), identity.user if identity is not None else ""):
        msg = "This form has expired or came from another site. Load the page again and send it from there."
        raise _Refused(403, "Form refused", msg)
    return data


def events(history: list[HistoryEvent]) -> list[dict[str, Any]]:
    """History entries as the timeline shows them."""
    return [
        {"kind": e.kind, "step": e.step, "attempt": e.attempt, "detail": e.detail, "shown": shown_time(e.at)}
        for e in history
    ]


def variables_rows(web: Web, instance_id: str) -> list[tuple[str, str]] | None:
    """An instance's variables as ``(name, JSON)`` rows; ``None`` when its class is not known here."""
    try:
        values = variables_json(web.engine.workflow(instance_id))
    except (UnknownWorkflowVersion, StoreError):
        return None
    return [(name, json.dumps(value, ensure_ascii=False)) for name, value in values.items()]


def instance_context(web: Web, instance_id: str) -> dict[str, Any]:
    """What the task and instance pages show of an instance."""
    engine = web.engine
    info = engine.info(instance_id)
    try:
        progress: object = engine.progress(instance_id)
    except (UnknownWorkflowVersion, StoreError):
        progress = None
    return {
        "info": info,
        "progress": progress,
        "variables": variables_rows(web, instance_id),
        "events": events(engine.history(instance_id)),
        "diagram_url": diagram_url(instance_id),
        "instance_url": instance_url(instance_id),
    }


def task_row(web: Web, task: Task, now: float, wf_cache: dict[str, list[tuple[str, str]]]) -> dict[str, Any]:
    """A task as the inbox lists it, with its instance's key variables."""
    shown = wf_cache.get(task.instance_id)
    if shown is None:
        try:
            shown = key_variables(web.engine.workflow(task.instance_id))
        except (UnknownWorkflowVersion, StoreError):
            shown = []
        wf_cache[task.instance_id] = shown
    return {
        "task": task,
        "url": task_url(task.id),
        "instance_url": instance_url(task.instance_id),
        "variables": shown,
        "due": shown_time(task.due_at),
        "overdue": overdue(task, now),
    }


# ----------------------------------------------------------------- sign-in (development mode)


def _local(target: str) -> str:
    """*target* if it is a path of this site, else the inbox (no open redirects)."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target and target.isprintable():
        return target
    return "/tasks"


async def login_page(request: Request) -> Response:
    """The development login form."""
    web = web_of(request)
    if not isinstance(web.authenticator, DevelopmentLogin):
        raise HTTPException(404)
    nxt = _local(request.query_params.get("next", "/tasks"))
    return render(request, None, "login.html", next=nxt, user="", groups="")


async def login(request: Request) -> Response:
    """Sign in as the user and groups given (development mode only)."""
    web = web_of(request)
    authenticator = web.authenticator
    if not isinstance(authenticator, DevelopmentLogin):
        raise HTTPException(404)
    try:
        data = await posted(request, None)
    except _Refused as refused:
        return refused_page(request, None, refused)
    user = data.get("user", "").strip()
    groups = [g.strip() for g in data.get("groups", "").split(",") if g.strip()]
    nxt = _local(data.get("next", "/tasks"))
    try:
        identity = Identity.of(user, groups)
    except (TypeError, ValueError) as exc:
        return render(
            request,
            None,
            "login.html",
            status=422,
            problem=str(exc),
            next=nxt,
            user=user,
            groups=data.get("groups", ""),
        )
    response = RedirectResponse(nxt, 303)
    response.set_cookie(COOKIE, authenticator.cookie_for(identity), httponly=True, samesite="lax", path="/")
    return response


async def logout(request: Request) -> Response:
    """Sign out (development mode only)."""
    web = web_of(request)
    if not isinstance(web.authenticator, DevelopmentLogin):
        raise HTTPException(404)
    identity = web.identify(request)
    try:
        await posted(request, identity)
    except _Refused as refused:
        return refused_page(request, identity, refused)
    response = RedirectResponse("/login", 303)
    response.delete_cookie(COOKIE, path="/")
    return response


# ----------------------------------------------------------------- tasks


async def home(_request: Request) -> Response:
    """The inbox is the home page."""
    return RedirectResponse("/tasks", 303)


@page
async def inbox(request: Request, identity: Identity) -> Response:
    """The tasks the user may complete: overdue first, then theirs, then their groups'."""
    web = web_of(request)
    engine = web.engine
    now = engine.clock.now()

    def read() -> list[tuple[str, list[dict[str, Any]], str]]:
        tasks = engine.tasks(identity.user, identity.groups, limit=INBOX_SIZE)
        late = engine.tasks(identity.user, identity.groups, due_before=now, limit=INBOX_SIZE)
        cache: dict[str, list[tuple[str, str]]] = {}
        late_ids = {t.id for t in late}
        rest = [t for t in tasks if t.id not in late_ids]
        mine = [t for t in rest if identity.user in (t.assignee, t.claimed_by)]
        groups = [t for t in rest if identity.user not in (t.assignee, t.claimed_by)]
        return [
            ("Overdue", [task_row(web, t, now, cache) for t in late], "Nothing is overdue."),
            ("Mine", [task_row(web, t, now, cache) for t in mine], "Nothing is assigned to you or claimed by you."),
            ("My groups'", [task_row(web, t, now, cache) for t in groups], "Nothing waits for your groups."),
        ]

    return render(request, identity, "inbox.html", section="tasks", sections=await web.read(read))


def _refusal(task: Task, identity: Identity) -> str | None:
    if task.status is not TaskStatus.OPEN:
        by = f" by {task.completed_by}" if task.completed_by else ""
        return f"This task is {task.status.value}{by}."
    if task.claimed_by is not None and task.claimed_by != identity.user:
        return f"Claimed by {task.claimed_by}: only they may complete it, until they unclaim it."
    return None


def task_page(
    request: Request,
    identity: Identity,
    task: Task,
    *,
    status: int = 200,
    fields: list[FormField] | None = None,
    form_error: str | None = None,
    problem: str | None = None,
) -> HTMLResponse:
    """A task's page: its facts, claim, form (as given, with errors), and its instance."""
    web = web_of(request)
    now = web.engine.clock.now()
    may_complete = task.status is TaskStatus.OPEN and task.may_complete(identity.user, identity.groups)
    if fields is None:
        fields = fields_of(task.form_type) if task.form_type is not None else []
    return render(
        request,
        identity,
        "task.html",
        status=status,
        section="tasks",
        problem=problem,
        task=task,
        task_url=task_url(task.id),
        overdue=overdue(task, now),
        created=shown_time(task.created_at),
        due=shown_time(task.due_at),
        completed=shown_time(task.completed_at),
        may_complete=may_complete,
        may_claim=task.status is TaskStatus.OPEN
        and task.claimed_by is None
        and task.may_claim(identity.user, identity.groups),
        may_unclaim=task.status is TaskStatus.OPEN and task.claimed_by == identity.user,
        refusal=_refusal(task, identity),
        form_name=task.form_type.__name__ if task.form_type is not None else None,
        fields=fields,
        form_error=form_error,
        **instance_context(web, task.instance_id),
    )


@page
async def show_task(request: Request, identity: Identity) -> Response:
    """A task's page."""
    return task_page(request, identity, task_for(web_of(request), request, identity))


async def _claim(request: Request, identity: Identity, *, claim: bool) -> Response:
    web = web_of(request)
    task = task_for(web, request, identity)
    await posted(request, identity)
    change = web.engine.claim_task if claim else web.engine.unclaim_task
    try:
        await change(task.id, user=identity.user, groups=identity.groups)
    except TaskError as exc:
        current = web.engine.store.task(task.id) or task
        return task_page(request, identity, current, status=orch_status(exc), problem=str(exc))
    return RedirectResponse(task_url(task.id), 303)


@page
async def claim(request: Request, identity: Identity) -> Response:
    """Claim the task."""
    return await _claim(request, identity, claim=True)


@page
async def unclaim(request: Request, identity: Identity) -> Response:
    """Give the claim on the task back."""
    return await _claim(request, identity, claim=False)


@page
async def complete(request: Request, identity: Identity) -> Response:
    """Complete the task with the posted form; a form that does not fit is shown again with its errors."""
    web = web_of(request)
    engine = web.engine
    task = task_for(web, request, identity)
    data = await posted(request, identity)
    form: object = None
    if task.form_type is not None and task.status is TaskStatus.OPEN:
        made, errors = parse(task.form_type, data)
        if errors:
            fields = fields_of(task.form_type, data, errors)
            return task_page(request, identity, task, status=422, fields=fields, form_error=errors.get(""))
        form = made
    try:
        await engine.complete_task(task.id, user=identity.user, groups=identity.groups, form=form)
    except TaskFormError as exc:
        field = (exc.field_path or "").split(".", 1)[-1].split(".")[0].split("[")[0]
        assert task.form_type is not None  # noqa: S101 - a form error is of a task with a form
        fields = fields_of(task.form_type, data, {field: str(exc)})
        return task_page(request, identity, task, status=422, fields=fields)
    except TaskError as exc:
        current = engine.store.task(task.id) or task
        return task_page(request, identity, current, status=orch_status(exc), problem=str(exc))
    return RedirectResponse(instance_url(task.instance_id) + "?" + urlencode({"completed": task.id}), 303)


# ----------------------------------------------------------------- instances


def _row(info: InstanceInfo) -> dict[str, Any]:
    return {"info": info, "url": instance_url(info.id), "started": shown_time(info.created_at)}


@page
async def list_instances(request: Request, identity: Identity) -> Response:
    """The instance list, newest first, filtered by status and workflow."""
    web = web_of(request)
    statuses = [s.value for s in InstanceStatus]
    status = request.query_params.get("status", "")
    status = status if status in statuses else ""
    workflow = request.query_params.get("workflow", "")[:200]
    raw_offset = request.query_params.get("offset", "0")
    offset = int(raw_offset) if raw_offset.isdigit() and len(raw_offset) < 10 else 0  # noqa: PLR2004
    found = await web.read(lambda: web.engine.instances(InstanceStatus(status) if status else None, workflow or None))
    found.sort(key=lambda i: (-i.created_at, i.id))
    page = found[offset : offset + PAGE_SIZE]

    def at(start: int) -> str:
        query = {k: v for k, v in (("status", status), ("workflow", workflow)) if v}
        return "/instances?" + urlencode({**query, "offset": start})

    known = sorted({*web.workflows, *(i.workflow for i in found)})
    return render(
        request,
        identity,
        "instances.html",
        section="instances",
        rows=[_row(i) for i in page],
        total=len(found),
        offset=offset,
        statuses=statuses,
        status_filter=status,
        workflows=known,
        workflow=workflow,
        previous_url=at(max(offset - PAGE_SIZE, 0)) if offset > 0 else None,
        next_url=at(offset + PAGE_SIZE) if offset + PAGE_SIZE < len(found) else None,
    )


def _notice(web: Web, request: Request, instance_id: str) -> str | None:
    """The line saying what the previous post did (only fixed texts: nothing of the query is shown)."""
    done = request.query_params.get("done")
    if done in _DONE:
        return _DONE[done]
    completed = request.query_params.get("completed")
    if completed:
        task = web.engine.store.task(completed[:ID_MAX])
        if task is not None and task.instance_id == instance_id and task.status is TaskStatus.COMPLETED:
            return f"Task {task.step} completed by {task.completed_by}."
    return None


@page
async def show_instance(request: Request, identity: Identity) -> Response:
    """An instance's page."""
    web = web_of(request)
    engine = web.engine
    instance_id = path_id(request, "instance_id")
    now = engine.clock.now()

    def read() -> dict[str, Any]:
        context = instance_context(web, instance_id)
        info: InstanceInfo = context["info"]
        cache: dict[str, list[tuple[str, str]]] = {}
        return {
            **context,
            "notice": _notice(web, request, instance_id),
            "children": [_row(c) for c in engine.children(instance_id)],
            "tasks": [task_row(web, t, now, cache) for t in engine.tasks(instance_id=instance_id)],
            "parent_url": instance_url(info.parent) if info.parent else None,
        }

    context = await web.read(read)
    operator = web.is_operator(identity)
    return render(request, identity, "instance.html", section="instances", operator=operator, **context)


async def _operate(request: Request, identity: Identity, action: str) -> Response:
    web = web_of(request)
    engine = web.engine
    instance_id = path_id(request, "instance_id")
    data = await posted(request, identity)
    if not web.is_operator(identity):
        raise _Refused(403, "Not an operator", "Only members of the operator groups may change instances.")
    info = engine.info(instance_id)
    if info.status.is_terminal and action == "cancel":
        raise _Refused(409, "Not changed", f"Instance {instance_id} is {info.status.value} already.")
    if action == "cancel":
        reason = data.get("reason", "").strip()[:1000] or f"cancelled by {identity.user}"
        change = engine.cancel(instance_id, reason=reason, compensate=data.get("compensate") == "true")
    else:
        change = engine.retry_compensation(instance_id)
    try:
        await asyncio.wait_for(change, web.wait)
        done = "cancelled" if action == "cancel" else "retried"
    except TimeoutError:
        done = "cancel-requested" if action == "cancel" else "retry-requested"
    return RedirectResponse(instance_url(instance_id) + "?" + urlencode({"done": done}), 303)


@page
async def cancel(request: Request, identity: Identity) -> Response:
    """Cancel the instance (operators)."""
    return await _operate(request, identity, "cancel")


@page
async def retry(request: Request, identity: Identity) -> Response:
    """Retry the instance's failed compensations (operators)."""
    return await _operate(request, identity, "retry")


def routes() -> list[Route]:
    """The pages' routes."""
    return [
        Route("/", home, methods=["GET"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/tasks", inbox, methods=["GET"]),
        Route("/tasks/{task_id:path}/claim", claim, methods=["POST"]),
        Route("/tasks/{task_id:path}/unclaim", unclaim, methods=["POST"]),
        Route("/tasks/{task_id:path}/complete", complete, methods=["POST"]),
        Route("/tasks/{task_id:path}", show_task, methods=["GET"]),
        Route("/instances", list_instances, methods=["GET"]),
        Route("/instances/{instance_id:path}/cancel", cancel, methods=["POST"]),
        Route("/instances/{instance_id:path}/retry", retry, methods=["POST"]),
        Route("/instances/{instance_id:path}", show_instance, methods=["GET"]),
    ]


async def _http_error(request: Request, exc: Exception) -> Response:
    """404, 405...: JSON under /api, a page elsewhere."""
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    if request.url.path.startswith("/api/"):
        fields: dict[str, str] = {}
        body = {"error": {"type": "HTTPError", "message": exc.detail, "field": None, "fields": fields}}
        return JSONResponse(body, exc.status_code, headers=dict(exc.headers or {}))
    web = web_of(request)
    refused = _Refused(exc.status_code, _TITLES.get(exc.status_code, "Error"), exc.detail)
    response = refused_page(request, web.identify(request), refused)
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


def exception_handlers() -> dict[Any, ExceptionHandler]:
    """The app's handlers of HTTP errors."""
    return {HTTPException: _http_error}
