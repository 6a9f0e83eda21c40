"""
The app factory: the JSON API and the pages on one client engine, behind an authenticator.

The app holds no state of its own beyond the engine: the web server is one more
process beside the workers (``Engine(store, concurrency=0)``), and everything it
shows it reads from the store; every change it makes is a command the workers
apply. Every response carries the security headers; request bodies are limited
in size before they are read.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Final, TypeVar

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from statemachine_orch._engine import Engine
from statemachine_orch._workflow import Workflow, spec_of, version_key

from ._auth import Authenticator, Identity
from ._csrf import Csrf

_T = TypeVar("_T")

HERE: Final = Path(__file__).parent

MAX_BODY: Final = 64 * 1024
"""The largest request body taken by default (bytes): forms and JSON are small."""

_SECURITY_HEADERS: Final = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (
        b"content-security-policy",
        (
            b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
            b"frame-ancestors 'none'; base-uri 'none'"
        ),
    ),
]


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


def _reads_from_threads(store: object) -> bool:
    """Whether *store* may be read from several threads at once (a PostgresStore: a pool of connections)."""
    postgres = sys.modules.get("statemachine_orch._store_postgres")  # loaded if it is one
    return postgres is not None and isinstance(store, postgres.PostgresStore)


class LimitBody:
    """
    ASGI middleware refusing request bodies larger than *limit* bytes with 413, before the app reads them.

    A declared ``Content-Length`` over the limit is refused at once; a body sent
    without one (chunked) is counted as it arrives and cut off at the limit.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, with its body counted."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(send, self.limit)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLargeError
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _BodyTooLargeError:
            if not started:
                await _too_large(send, self.limit)


class _BodyTooLargeError(Exception):
    """The body grew past the limit while it was read."""


async def _too_large(send: Send, limit: int) -> None:
    body = b'{"error":{"type":"RequestTooLarge","message":"the request body is larger than %d bytes"}}' % limit
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers + _SECURITY_HEADERS})
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """ASGI middleware adding the security headers (no sniffing, no framing, a strict CSP) to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the headers to its response."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in _SECURITY_HEADERS if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(
    engine: Engine,
    *,
    authenticator: Authenticator,
    workflows: Sequence[type[Workflow]] = (),
    development: bool = False,
    operators: Iterable[str] = ("operators",),
    secret: bytes | None = None,
    secure_cookies: bool = False,
    max_body: int = MAX_BODY,
    wait: float = 5.0,
) -> Starlette:
    """
    The web app: the JSON API under ``/api`` (described at ``/api/openapi.json``) and the pages.

    The caller owns *engine* (normally a client, ``Engine(store, concurrency=0)``,
    beside workers in other processes): the app neither starts nor stops it.

    Args:
        engine: The engine the app reads and writes through.
        authenticator: Who makes each request (:class:`TrustedHeader` behind an
            authenticating proxy; :class:`DevelopmentLogin` only with *development*).
        workflows: The workflow classes whose forms, variables and diagrams the app
            shows and which the API may start.
        development: Switch development mode on: required for a development
            authenticator; every page shows a banner.
        operators: Groups whose members may start, cancel, signal and retry
            instances (everyone signed in may read them and work on their tasks).
        secret: The key signing CSRF tokens (default: random, per app).
        secure_cookies: Send the app's cookies over HTTPS only.
        max_body: The largest request body taken, in bytes.
        wait: How long a cancel or retry waits for the instance's end before it
            answers 202 (the command is kept and a worker applies it).

    Raises:
        ValueError: A development authenticator without ``development=True``, or
            limits that are not positive.

    .. versionadded:: 0.1.0
    """
    if authenticator.development and not development:
        msg = (
            f"{type(authenticator).__name__} lets anyone be anyone: it is refused unless development mode "
            "is switched on (create_app(..., development=True), orch serve --dev-login)"
        )
        raise ValueError(msg)
    if max_body <= 0 or wait <= 0:
        msg = f"create_app(max_body={max_body!r}, wait={wait!r}): both must be positive"
        raise ValueError(msg)
    from . import _api, _pages  # noqa: PLC0415 - they import this module's Web

    web = Web(
        engine,
        workflows,
        authenticator,
        development=development,
        operators=operators,
        secret=secret if secret is not None else secrets.token_bytes(32),
        secure_cookies=secure_cookies,
        wait=wait,
    )
    routes: list[BaseRoute] = [
        *_api.routes(),
        *_pages.routes(),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders), Middleware(LimitBody, limit=max_body)],
        exception_handlers=_pages.exception_handlers(),
    )
    app.state.web = web
    return app


def web_of(connection: HTTPConnection) -> Web:
    """The app's :class:`Web`."""
    web = connection.app.state.web
    assert isinstance(web, Web)  # noqa: S101 - create_app put it there
    return web
