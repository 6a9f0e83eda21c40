"""
The pages: the inbox, a task with its form, the instance list and an instance, server-rendered.

No JavaScript: links, and form posts that carry a CSRF token. A posted task form
that does not fit its form class is shown again with each message beside its
field, and nothing changes. Every value reaches the page through Jinja2's
autoescaping.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
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

from ._api import ID_MAX, orch_status, visible
from ._app import Web, web_of
from ._auth import COOKIE, DevelopmentLogin, Identity
from ._csrf import FIELD
from ._forms import FormField, fields_of, parse
from ._views import key_variables, overdue, shown_time, variables_json

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


def path_id(request: Request, name: str) -> str:
    """A task or instance id from the path (a 404 page for one no store gives)."""
    value = str(request.path_params[name])
    if not value or len(value) > ID_MAX or not value.isprintable():
        raise _Refused(404, "Not found", "There is no such page.")
    return value


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


async def inbox(request: Request) -> Response:
    """The tasks the user may complete: overdue first, then theirs, then their groups'."""
    identity = signed_in(request)
    if isinstance(identity, Response):
        return identity
    web = web_of(request)
    engine = web.engine
    now = engine.clock.now()
    tasks = engine.tasks(identity.user, identity.groups, limit=INBOX_SIZE)
    late = engine.tasks(identity.user, identity.groups, due_before=now, limit=INBOX_SIZE)
    cache: dict[str, list[tuple[str, str]]] = {}
    late_ids = {t.id for t in late}
    rest = [t for t in tasks if t.id not in late_ids]
    mine = [t for t in rest if identity.user in (t.assignee, t.claimed_by)]
    groups = [t for t in rest if identity.user not in (t.assignee, t.claimed_by)]
    sections = [
        ("Overdue", [task_row(web, t, now, cache) for t in late], "Nothing is overdue."),
        ("Mine", [task_row(web, t, now, cache) for t in mine], "Nothing is assigned to you or claimed by you."),
        ("My groups'", [task_row(web, t, now, cache) for t in groups], "Nothing waits for your groups."),
    ]
    return render(request, identity, "inbox.html", section="tasks", sections=sections)


def _task(web: Web, request: Request, identity: Identity) -> Task:
    task_id = path_id(request, "task_id")
    task = web.engine.store.task(task_id)
    if task is None:
        raise _Refused(404, "No such task", f"There is no task {task_id}.")
    if not visible(web, task, identity):
        who = f"assignee {task.assignee}" if task.assignee else "members of " + ", ".join(task.candidate_groups)
        raise _Refused(
            403, "Not your task", f"Task {task_id} is for {who}; {identity.user} may not see or complete it."
        )
    return task


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


async def show_task(request: Request) -> Response:
    """A task's page."""
    identity = signed_in(request)
    if isinstance(identity, Response):
        return identity
    try:
        return task_page(request, identity, _task(web_of(request), request, identity))
    except _Refused as refused:
        return refused_page(request, identity, refused)


async def _claim(request: Request, *, claim: bool) -> Response:
    identity = signed_in(request)
    if isinstance(identity, Response):
        return identity
    web = web_of(request)
    try:
        task = _task(web, request, identity)
        await posted(request, identity)
    except _Refused as refused:
        return refused_page(request, identity, refused)
    change = web.engine.claim_task if claim else web.engine.unclaim_task
    try:
        await change(task.id, user=identity.user, groups=identity.groups)
    except TaskError as exc:
        current = web.engine.store.task(task.id) or task
        return task_page(request, identity, current, status=orch_status(exc), problem=str(exc))
    return RedirectResponse(task_url(task.id), 303)


async def claim(request: Request) -> Response:
    """Claim the task."""
    return await _claim(request, claim=True)


async def unclaim(request: Request) -> Response:
    """Give the claim on the task back."""
    return await _claim(request, claim=False)


async def complete(request: Request) -> Response:
    """Complete the task with the posted form; a form that does not fit is shown again with its errors."""
    identity = signed_in(request)
    if isinstance(identity, Response):
        return identity
    web = web_of(request)
    engine = web.engine
    try:
        task = _task(web, request, identity)
        data = await posted(request, identity)
    except _Refused as refused:
        return refused_page(request, identity, refused)
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


async def list_instances(request: Request) -> Response:
    """The instance list, newest first, filtered by status and workflow."""
    identity = signed_in(request)
    if isinstance(identity, Response):
        return identity
    web = web_of(request)
    statuses = [s.value for s in InstanceStatus]
    status = request.query_params.get("status", "")
    status = status if status in statuses else ""
    workflow = request.query_params.get("workflow", "")[:200]
    raw_offset = request.query_params.get("offset", "0")
    offset = int(raw_offset) if raw_offset.isdigit() and len(raw_offset) < 10 else 0  # noqa: PLR2004
    found = web.engine.instances(InstanceStatus(status) if status else None, workflow or None)
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


async def show_instance(request: Request) -> Response:
    """An instance's page."""
    identity = signed_in(request)
    if isinstance(identity, Response):
        return identity
    web = web_of(request)
    try:
        instance_id = path_id(request, "instance_id")
        context = instance_context(web, instance_id)
    except _Refused as refused:
        return refused_page(request, identity, refused)
    except OrchError as exc:
        return refused_page(request, identity, _Refused(orch_status(exc), "Not shown", str(exc)))
    engine = web.engine
    info: InstanceInfo = context["info"]
    now = engine.clock.now()
    cache: dict[str, list[tuple[str, str]]] = {}
    return render(
        request,
        identity,
        "instance.html",
        section="instances",
        notice=_notice(web, request, instance_id),
        operator=web.is_operator(identity),
        children=[_row(c) for c in engine.children(instance_id)],
        tasks=[task_row(web, t, now, cache) for t in engine.tasks(instance_id=instance_id)],
        parent_url=instance_url(info.parent) if info.parent else None,
        **context,
    )


async def _operate(request: Request, action: str) -> Response:
    identity = signed_in(request)
    if isinstance(identity, Response):
        return identity
    web = web_of(request)
    engine = web.engine
    try:
        instance_id = path_id(request, "instance_id")
        data = await posted(request, identity)
        if not web.is_operator(identity):
            raise _Refused(403, "Not an operator", "Only members of the operator groups may change instances.")
        info = engine.info(instance_id)
    except _Refused as refused:
        return refused_page(request, identity, refused)
    except OrchError as exc:
        return refused_page(request, identity, _Refused(orch_status(exc), "Not changed", str(exc)))
    if info.status.is_terminal and action == "cancel":
        msg = f"Instance {instance_id} is {info.status.value} already."
        return refused_page(request, identity, _Refused(409, "Not changed", msg))
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
    except OrchError as exc:
        return refused_page(request, identity, _Refused(orch_status(exc), "Not changed", str(exc)))
    return RedirectResponse(instance_url(instance_id) + "?" + urlencode({"done": done}), 303)


async def cancel(request: Request) -> Response:
    """Cancel the instance (operators)."""
    return await _operate(request, "cancel")


async def retry(request: Request) -> Response:
    """Retry the instance's failed compensations (operators)."""
    return await _operate(request, "retry")


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
    titles: Mapping[int, str] = {404: "Not found", 405: "Not allowed"}
    refused = _Refused(exc.status_code, titles.get(exc.status_code, "Error"), exc.detail)
    response = refused_page(request, web.identify(request), refused)
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


def exception_handlers() -> dict[Any, ExceptionHandler]:
    """The app's handlers of HTTP errors."""
    return {HTTPException: _http_error}
