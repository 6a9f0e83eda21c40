"""
Helpers of the web tests (issue 13): the app on a client engine beside a real worker, on a SQLite file.

``site(tmp_path)`` opens two stores on one file, as two processes would: a worker
(``Engine`` with workers) and the web app's client (``Engine(store,
concurrency=0)``), and an ``httpx.AsyncClient`` on the app through its ASGI
transport. Identities come from the trusted headers (``as_user``); pages' forms
carry the CSRF token a page gave (``csrf_of``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import attrs
import httpx
import structlog.testing

from statemachine_orch import Engine, InstanceStatus, SqliteStore
from statemachine_orch.web import TrustedHeader, create_app
from tests.web.flows import FLOWS, Bank

WAIT = 20.0
"""Seconds a test waits for the worker at most (far more than it takes)."""

OPERATORS = ("ops",)


def as_user(user: str, *groups: str) -> dict[bytes, bytes]:
    """The trusted proxy's headers for *user* in *groups* (UTF-8, as a proxy sends them)."""
    headers = {b"X-Forwarded-User": user.encode()}
    if groups:
        headers[b"X-Forwarded-Groups"] = ",".join(groups).encode()
    return headers


BOSS = as_user("boss")
BUYER = as_user("bea", "buyers")
CLERK = as_user("clerk", "clerks")
OPS = as_user("olga", "ops")


@attrs.define
class Site:
    """The app, its client engine, the worker beside it, and an HTTP client on the app."""

    http: httpx.AsyncClient
    client: Engine
    worker: Engine
    bank: Bank

    async def started(self, workflow: str, instance_id: str, **data: Any) -> str:
        """Start an instance through the API (as an operator) and wait until it waits or ends; its id."""
        response = await self.http.post(
            "/api/instances", json={"workflow": workflow, "id": instance_id, "input": data}, headers=OPS
        )
        assert 201 == response.status_code, response.text
        await self.client.wait_instance(instance_id, terminal=False)
        return instance_id

    async def ended(self, instance_id: str) -> InstanceStatus:
        """Wait until the worker ended the instance."""
        return await self.client.wait_instance(instance_id)


@contextlib.asynccontextmanager
async def site(tmp_path: Path, **app_options: Any) -> AsyncGenerator[Site]:
    """The app on a client engine beside a worker, both on one SQLite file; ``app_options`` go to ``create_app``."""
    path = tmp_path / "web.db"
    SqliteStore(path).close()
    worker_store, client_store = SqliteStore(path), SqliteStore(path)
    bank = Bank()
    options: dict[str, Any] = {"authenticator": TrustedHeader(), "workflows": FLOWS, "operators": OPERATORS}
    options.update(app_options)
    try:
        with structlog.testing.capture_logs():
            async with Engine(worker_store, workflows=FLOWS, services={"bank": bank}, poll=0.02) as worker:
                client = Engine(client_store, concurrency=0, workflows=FLOWS, poll=0.02)
                app = create_app(client, **options)
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://orch.test") as http:
                    yield Site(http, client, worker, bank)
    finally:
        worker_store.close()
        client_store.close()


_TOKEN = re.compile(r'<meta name="csrf-token" content="([0-9a-f]+)">')


def csrf_of(page: httpx.Response) -> str:
    """The CSRF token *page* gives its forms."""
    found = _TOKEN.search(page.text)
    assert found is not None, page.text[:500]
    return found.group(1)
