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
from collections.abc import Iterable, Sequence
from typing import Final

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from statemachine_orch._engine import Engine
from statemachine_orch._workflow import Workflow

from . import _api, _pages
from ._auth import Authenticator
from ._context import HERE, Web
from ._inbox_cache import ForgetOnWrite

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
    inbox_cache: bool = True,
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
        inbox_cache: On a PostgreSQL store, keep the inbox API's answers in this
            process until a task changes (see ``docs/web.md``); a SQLite or memory
            store has no cache.

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
    web = Web(
        engine,
        workflows,
        authenticator,
        development=development,
        operators=operators,
        secret=secret if secret is not None else secrets.token_bytes(32),
        secure_cookies=secure_cookies,
        wait=wait,
        inbox_cache=inbox_cache,
    )
    routes: list[BaseRoute] = [
        *_api.routes(),
        *_pages.routes(),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(SecurityHeaders), Middleware(LimitBody, limit=max_body)]
    if web.inbox_cache is not None:
        middleware.append(Middleware(ForgetOnWrite, cache=web.inbox_cache))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=_pages.exception_handlers(),
    )
    app.state.web = web
    return app
