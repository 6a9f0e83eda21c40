"""
What the app's routes share: the :class:`Web` context, and refusals answered with an HTTP status.

The context holds the engine, who may do what and the templates; ``ApiError``
is a refusal with its status, and ``orch_status`` the status of each of the
engine's typed errors.
"""

from __future__ import annotations

import sys
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final, Protocol, TypeVar

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

from statemachine_orch._engine import Engine
from statemachine_orch._errors import (
    InstanceExists,
    InstanceNotFound,
    InstanceStateError,
    OrchError,
    SignalTypeError,
    StoreError,
    TaskAlreadyCompleted,
    TaskClaimed,
    TaskFormError,
    TaskNotAuthorized,
    TaskNotFound,
    UnknownWorkflowVersion,
    WorkflowInputError,
)
from statemachine_orch._workflow import Workflow, spec_of, version_key

from ._auth import Authenticator, Identity
from ._csrf import Csrf
from ._inbox_cache import InboxCache

_T = TypeVar("_T")

HERE: Final = Path(__file__).parent
"""The web package's folder (its templates and static files)."""


class Web:
    """
    What the routes share: the engine, who may do what, and how pages are made.

    Attributes:
        engine: The client engine the app reads and writes through.
        workflows: The workflow classes the app may start, by name (newest version last).
        authenticator: Who makes a request.
        development: Whether development mode is on (a banner on every page).
        operators: The groups whose members may start, cancel, signal and retry instances.
        csrf: The form posts' CSRF tokens.
        templates: The pages' templates (every value escaped).
        wait: How long a cancel or retry waits for the instance's end before it answers "accepted".
        inbox_cache: The inbox answers kept until a task changes (:class:`InboxCache`), or ``None``:
            only on a PostgreSQL store, when asked for.
    """

    def __init__(
        self,
        engine: Engine,
        workflows: Iterable[type[Workflow]],
        authenticator: Authenticator,
        *,
        development: bool,
        operators: Iterable[str],
        secret: bytes,
        secure_cookies: bool,
        wait: float,
        inbox_cache: bool = False,
    ) -> None:
        self.engine = engine
        self.workflows: dict[str, list[type[Workflow]]] = {}
        for cls in workflows:
            self.workflows.setdefault(spec_of(cls).name, []).append(cls)
            engine.registry.register(cls)
        self.authenticator = authenticator
        self.development = development
        self.operators = frozenset(operators)
        self.csrf = Csrf(secret, secure=secure_cookies)
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.wait = wait
        self.threaded_reads = _reads_from_threads(engine.store)
        self.inbox_cache: InboxCache | None = None
        if inbox_cache and self.threaded_reads:
            self.inbox_cache = InboxCache()
            # The store's listener calls back; the store's close() stops it.
            typing.cast("_WatchesTasks", engine.store).watch_tasks(self.inbox_cache.changed)

    async def read(self, fn: Callable[[], _T]) -> _T:
        """
        Run *fn*, which reads the store: in a worker thread when the store serves threads.

        A pool of connections (PostgreSQL) does: a request waiting for the database
        then never holds up the others. SQLite answers at once, through its one
        connection, so its reads run here.
        """
        if self.threaded_reads:
            return await run_in_threadpool(fn)
        return fn()

    def identify(self, request: HTTPConnection) -> Identity | None:
        """Who makes *request*, as the authenticator says (``None``: nobody it vouches for)."""
        return self.authenticator.identify(request)

    def is_operator(self, identity: Identity) -> bool:
        """Whether *identity* may start, cancel, signal and retry instances."""
        return not self.operators.isdisjoint(identity.groups)

    def workflow_class(self, name: str, version: str | None) -> type[Workflow] | None:
        """The class the app starts for *name* (at *version*, else the newest given to the app)."""
        classes = self.workflows.get(name, [])
        if version is None:
            return max(classes, key=lambda c: version_key(spec_of(c).version), default=None)
        return next((c for c in classes if spec_of(c).version == version), None)


class _WatchesTasks(Protocol):
    """A store that says when task rows change (a PostgresStore)."""

    def watch_tasks(self, changed: Callable[[bool], None]) -> Callable[[], None]:
        """Call *changed* on every change (and loss of hearing them)."""
        ...


def _reads_from_threads(store: object) -> bool:
    """Whether *store* may be read from several threads at once (a PostgresStore: a pool of connections)."""
    postgres = sys.modules.get("statemachine_orch._store_postgres")  # loaded if it is one
    return postgres is not None and isinstance(store, postgres.PostgresStore)


def web_of(connection: HTTPConnection) -> Web:
    """The app's :class:`Web`."""
    web = connection.app.state.web
    assert isinstance(web, Web)  # noqa: S101 - create_app put it there
    return web


class ApiError(Exception):
    """A refusal with its HTTP status (raised by the endpoints' helpers, answered as JSON)."""

    def __init__(self, status: int, kind: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.field = field


def error_response(status: int, kind: str, message: str, *, field: str | None = None) -> JSONResponse:
    """The JSON of a refusal."""
    fields = {field: message} if field else {}
    return JSONResponse({"error": {"type": kind, "message": message, "field": field, "fields": fields}}, status)


def orch_status(exc: OrchError) -> int:
    """The HTTP status of an engine's typed error."""
    if isinstance(exc, (TaskNotFound, InstanceNotFound)):
        return 404
    if isinstance(exc, (TaskClaimed, TaskAlreadyCompleted, InstanceStateError, InstanceExists)):
        return 409
    if isinstance(exc, TaskNotAuthorized):
        return 403
    if isinstance(exc, (TaskFormError, WorkflowInputError, SignalTypeError)):
        return 422
    if isinstance(exc, UnknownWorkflowVersion):
        return 409
    if isinstance(exc, StoreError):
        return 503
    return 400


def field_of(exc: OrchError) -> str | None:
    """The form's or input's field an engine error names, if any."""
    path: object = getattr(exc, "field_path", None)
    if not isinstance(path, str) or not path:
        return None
    # "Approval.amount" names the form's field "amount"; a workflow input names it plainly.
    return path.split(".", 1)[1] if "." in path else path
