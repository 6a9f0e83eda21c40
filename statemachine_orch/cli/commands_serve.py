"""
``orch serve``: the task list on the web (``statemachine_orch.web``), served by uvicorn until stopped.

The server is a client of the store (``Engine(store, concurrency=0)``): workers
in other processes (``orch worker``) run the instances. Identity comes from a
trusted proxy's headers by default; ``--dev-login`` switches development mode on
(a login page where anyone is anyone) and says so on every page.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import secrets
import socket
import sys
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from statemachine_orch import Engine, Store

from .client import POLL, opened
from .failures import Problem, UsageProblem, guarded
from .loading import import_all, workflows_in
from .options import StoreOption
from .store_url import open_store, resolve

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from statemachine_orch.web import Authenticator

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


_WEB_EXTRA = ("starlette", "uvicorn", "jinja2", "multipart")
"""The packages of the ``web`` extra."""


def _require_web() -> None:
    missing = [name for name in _WEB_EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        msg = f"orch serve needs the web extra (missing: {', '.join(missing)}); pip install 'statemachine-orch[web]'"
        raise Problem(msg)


SETTINGS_ENV: Final = "ORCH_SERVE_SETTINGS"
"""Where ``orch serve --workers N`` hands its settings to the server processes it starts (JSON)."""


def _authenticator(settings: Mapping[str, Any]) -> Authenticator:
    from statemachine_orch.web import DevelopmentLogin, TrustedHeader  # noqa: PLC0415 - the web extra is optional

    secret = settings["dev_secret"]
    if secret is None:
        return TrustedHeader(user_header=settings["user_header"], groups_header=settings["groups_header"])
    return DevelopmentLogin(bytes.fromhex(secret))


def _app(settings: Mapping[str, Any], store: Store) -> Starlette:
    """The web app of *settings* on *store* (its workflow modules imported)."""
    from statemachine_orch.web import create_app  # noqa: PLC0415 - the web extra is optional

    classes = [cls for m in import_all(settings["modules"]) for cls in workflows_in(m)]
    return create_app(
        Engine(store, concurrency=0, workflows=classes, poll=POLL),
        authenticator=_authenticator(settings),
        workflows=classes,
        development=settings["dev_secret"] is not None,
        operators=settings["operators"],
        max_body=settings["max_body"],
        secure_cookies=settings["secure_cookies"],
    )


def app_from_environment() -> Starlette:
    """
    The app of one of the server processes of ``orch serve --workers N`` (its settings in ``$ORCH_SERVE_SETTINGS``).

    The process opens a store of its own, closed when the server stops.
    """
    settings = json.loads(os.environ[SETTINGS_ENV])
    store = open_store(settings["store"])
    app = _app(settings, store)

    @contextlib.asynccontextmanager
    async def lifespan(_: object) -> AsyncGenerator[None]:
        try:
            yield
        finally:
            store.close()

    app.router.lifespan_context = lifespan
    return app


def listening(host: str, port: int) -> socket.socket:
    """A socket bound to *host*:*port* (0: a free port), for uvicorn to serve on."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # With its protocol (TCP): asyncio turns Nagle's algorithm off only on a socket that says
        # it is TCP, and with it on, every answer on a kept-alive connection waited for a delayed ACK.
        sock = socket.socket(info[0], info[1], info[2])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(2048)  # connections wait in the backlog from now on, before uvicorn accepts them
    except OSError as exc:
        msg = f"cannot listen on {host}:{port} ({exc.strerror or exc})"
        raise Problem(msg) from None
    return sock


@guarded
def serve(
    modules: Annotated[list[str], typer.Argument(metavar="MODULE...", help="Modules holding the workflow classes.")],
    store: StoreOption = None,
    host: Annotated[str, typer.Option(help="The address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="The port (0: a free one, named on stderr).")] = 8000,
    dev_login: Annotated[
        bool, typer.Option("--dev-login", help="Development mode: a login page where anyone is anyone.")
    ] = False,
    user_header: Annotated[
        str, typer.Option("--user-header", help="The trusted proxy's header naming the user.")
    ] = "X-Forwarded-User",
    groups_header: Annotated[
        str, typer.Option("--groups-header", help="The trusted proxy's header listing the groups (comma-separated).")
    ] = "X-Forwarded-Groups",
    operators: Annotated[
        list[str] | None,
        typer.Option("--operators", help="A group whose members may start, cancel, signal, retry (repeatable)."),
    ] = None,
    max_body: Annotated[int, typer.Option("--max-body", min=1024, help="The largest request body, in bytes.")] = 65536,
    secure_cookies: Annotated[
        bool, typer.Option("--secure-cookies", help="Send cookies over HTTPS only (behind a TLS proxy).")
    ] = False,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Server processes accepting on the one socket (for several cores).")
    ] = 1,
) -> None:
    """Serve the task list (inbox, task forms, instances) and its JSON API for the workflows of MODULE...."""
    _require_web()
    classes = [cls for m in import_all(modules) for cls in workflows_in(m)]
    if not classes:
        msg = f"no workflow classes in {', '.join(modules)}"
        raise UsageProblem(msg)
    if dev_login:
        where = "" if host in _LOOPBACK else f" ON {host}, NOT ONLY THIS MACHINE"
        sys.stderr.write(f"orch serve: DEVELOPMENT LOGIN{where}: anyone who reaches the server can sign in as anyone\n")
    settings: dict[str, Any] = {
        "store": resolve(store),
        "modules": modules,
        # One key for every server process: a login cookie made by one is good for the others.
        "dev_secret": secrets.token_hex(32) if dev_login else None,
        "user_header": user_header,
        "groups_header": groups_header,
        "operators": operators if operators is not None else ["operators"],
        "max_body": max_body,
        "secure_cookies": secure_cookies,
    }
    sock = listening(host, port)
    with contextlib.closing(sock):
        if workers > 1:
            _run_processes(settings, sock, workers)
            return
        with opened(store, create=True) as st:
            asyncio.run(_run(_app(settings, st), sock))


def _announce(sock: socket.socket) -> None:
    address = sock.getsockname()
    shown_host = f"[{address[0]}]" if ":" in address[0] else address[0]
    # One line for people and scripts waiting for the server (port 0 chose its port).
    sys.stderr.write(f"orch serve listening on http://{shown_host}:{address[1]}\n")
    sys.stderr.flush()


def _run_processes(settings: Mapping[str, Any], sock: socket.socket, workers: int) -> None:
    """Serve from *workers* processes accepting on *sock*, supervised by uvicorn (restarted if one dies)."""
    import uvicorn  # noqa: PLC0415 - the web extra is optional
    from uvicorn.supervisors import Multiprocess  # noqa: PLC0415

    open_store(settings["store"], create=True).close()  # the schema, once, before the processes open it
    os.environ[SETTINGS_ENV] = json.dumps(settings)
    config = uvicorn.Config(
        f"{__name__}:app_from_environment",
        factory=True,
        workers=workers,
        log_level="warning",
        access_log=False,
        lifespan="on",
        server_header=False,
    )
    _announce(sock)
    Multiprocess(config, sockets=[sock]).run()


async def _run(app: Starlette, sock: socket.socket) -> None:
    import uvicorn  # noqa: PLC0415 - the web extra is optional

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", server_header=False)
    server = uvicorn.Server(config)
    _announce(sock)
    await server.serve(sockets=[sock])
