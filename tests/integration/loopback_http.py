"""
A real HTTP server on loopback for the HTTP service tests (issue 10, item 9).

``LoopbackServer`` is the standard library's threading HTTP server on
``127.0.0.1`` and a port the system picks: it listens as soon as it is made, so a
client may connect at once (no waiting for it to be "up"). It records every
request (method, path, query, headers, JSON body) and answers from a script per
path: each request to a path takes the next scripted :class:`Reply`; a path with
no reply left is echoed back as JSON (200). A reply may *hold* its answer until
an event is set: the tests' way to make a call outlast its timeout without a
sleep. Every held reply is released when the server closes.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Generator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs

HOLD_LIMIT = 30.0
"""Seconds a held reply waits for its event at most (a test that forgot to release it still ends)."""


@attrs.frozen
class Reply:
    """One scripted answer: a status, a JSON body (or raw bytes), headers, maybe held until an event is set."""

    status: int = 200
    body: object = None
    raw: bytes | None = None
    headers: dict[str, str] = attrs.field(factory=dict[str, str])
    hold: threading.Event | None = None


@attrs.frozen
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


class LoopbackServer:
    """The server, its recorded requests and its script."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._script: dict[str, deque[Reply]] = {}
        self._holds: list[threading.Event] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.handle(self)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET  # noqa: N815 - the names the base class calls

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass  # the tests read the recorded requests, not stderr

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def script(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to *path* with *replies*, in order."""
        with self._lock:
            self._script.setdefault(path, deque()).extend(replies)
            self._holds.extend(r.hold for r in replies if r.hold is not None)

    def to(self, path: str) -> list[Request]:
        """The requests received for *path*, in order."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        request = Request(
            method=handler.command,
            path=parts.path,
            query=parse_qs(parts.query),
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=json.loads(raw) if raw else None,
        )
        with self._lock:
            self.requests.append(request)
            queued = self._script.get(parts.path)
            reply = queued.popleft() if queued else None
        if reply is None:
            reply = Reply(200, attrs.asdict(request))
        if reply.hold is not None:
            reply.hold.wait(HOLD_LIMIT)
        payload = reply.raw if reply.raw is not None else b"" if reply.body is None else json.dumps(reply.body).encode()
        try:
            handler.send_response_only(reply.status)
            if "Date" not in reply.headers:  # a scripted Date replaces the server's own
                handler.send_header("Date", handler.date_time_string())
            if reply.raw is None and reply.body is not None:
                handler.send_header("Content-Type", "application/json")
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(payload)
        except OSError:
            pass  # the client gave up (a timeout): nothing to answer

    def close(self) -> None:
        """Release held replies, stop serving, close the socket."""
        for event in self._holds:
            event.set()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(5)


@contextmanager
def loopback_server() -> Generator[LoopbackServer]:
    """A :class:`LoopbackServer`, closed at the end."""
    server = LoopbackServer()
    try:
        yield server
    finally:
        server.close()
