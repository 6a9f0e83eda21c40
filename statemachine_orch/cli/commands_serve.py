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
import secrets
import socket
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from statemachine_orch import Engine

from .client import POLL, opened
from .failures import Problem, UsageProblem, guarded
from .loading import import_all, workflows_in
from .options import StoreOption

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


def _authenticator(dev_login: bool, user_header: str, groups_header: str, host: str) -> Authenticator:
    from statemachine_orch.web import DevelopmentLogin, TrustedHeader  # noqa: PLC0415 - the web extra is optional

    if not dev_login:
        return TrustedHeader(user_header=user_header, groups_header=groups_header)
    where = "" if host in _LOOPBACK else f" ON {host}, NOT ONLY THIS MACHINE"
    sys.stderr.write(f"orch serve: DEVELOPMENT LOGIN{where}: anyone who reaches the server can sign in as anyone\n")
    return DevelopmentLogin(secrets.token_bytes(32))


def _listening(host: str, port: int) -> socket.socket:
    """A socket bound to *host*:*port* (0: a free port), for uvicorn to serve on."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], info[1])
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
) -> None:
    """Serve the task list (inbox, task forms, instances) and its JSON API for the workflows of MODULE...."""
    _require_web()
    from statemachine_orch.web import create_app  # noqa: PLC0415 - the web extra is optional

    loaded = import_all(modules)
    classes = [cls for m in loaded for cls in workflows_in(m)]
    if not classes:
        msg = f"no workflow classes in {', '.join(modules)}"
        raise UsageProblem(msg)
    authenticator = _authenticator(dev_login, user_header, groups_header, host)
    sock = _listening(host, port)
    with contextlib.closing(sock), opened(store, create=True) as st:
        engine = Engine(st, concurrency=0, workflows=classes, poll=POLL)
        app = create_app(
            engine,
            authenticator=authenticator,
            workflows=classes,
            development=dev_login,
            operators=operators if operators is not None else ("operators",),
            max_body=max_body,
            secure_cookies=secure_cookies,
        )
        asyncio.run(_run(app, sock))


async def _run(app: Starlette, sock: socket.socket) -> None:
    import uvicorn  # noqa: PLC0415 - the web extra is optional

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", server_header=False)
    server = uvicorn.Server(config)
    address = sock.getsockname()
    shown_host = f"[{address[0]}]" if ":" in address[0] else address[0]
    # One line for people and scripts waiting for the server (port 0 chose its port).
    sys.stderr.write(f"orch serve listening on http://{shown_host}:{address[1]}\n")
    sys.stderr.flush()
    await server.serve(sockets=[sock])
