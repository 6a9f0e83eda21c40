"""
Issue 13: ``orch serve`` as a real process: its refusals, and two server processes beside a worker.

With ``--workers 2`` two processes accept on one socket, each a client of the
store; an operator starts an order of 5,000 through the JSON API, the manager
completes its approval, and the worker runs the order to its end; a SIGTERM
stops them all.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from statemachine_orch.cli.commands_serve import listening
from tests.cli.conftest import LIMIT, orch_process
from tests.web.processes import Fleet

if TYPE_CHECKING:
    from tests.conftest import Runner


def test_serve_refuses_modules_without_workflows(tmp_path: Path) -> None:
    """Issue 13: a module with no workflow class is a usage error (2), one line, before anything listens."""
    done = orch_process("serve", "json", "--store", f"sqlite:///{tmp_path / 'x.db'}", "--port", "0")
    assert 2 == done.code
    assert "no workflow classes in json" in done.err


def test_two_server_processes_serve_the_api_beside_a_worker(fleet: Fleet, tmp_path: Path) -> None:
    """Issue 13: start, list, complete through --workers 2; the worker ends the order; SIGTERM stops the servers."""
    store = f"sqlite:///{tmp_path / 'orders.db'}"
    fleet.worker(store, "examples.order_process")
    base = fleet.server(store, "examples.order_process", "--workers", "2", "--operators", "sales")
    ops = {"X-Forwarded-User": "olga", "X-Forwarded-Groups": "sales"}
    manager = {"X-Forwarded-User": "manager"}
    order = {"order_id": "W-1", "customer_id": "C-1", "amount": 5000, "items": [{"sku": "BOOK", "quantity": 1}]}
    with httpx.Client(base_url=base, timeout=LIMIT) as http:
        started = http.post(
            "/api/instances", json={"workflow": "OrderProcess", "id": "W-1", "input": order}, headers=ops
        )
        assert 201 == started.status_code, started.text
        deadline = time.monotonic() + LIMIT
        while not (tasks := http.get("/api/tasks", headers=manager).json()["tasks"]):
            assert time.monotonic() < deadline, "the worker never opened the approval"
            time.sleep(0.05)
        [task] = tasks
        done = http.post(f"/api/tasks/{task['id']}/complete", json={"form": {"approved": True}}, headers=manager)
        assert 200 == done.status_code, done.text
        while (shown := http.get("/api/instances/W-1", headers=manager).json())["instance"]["status"] != "completed":
            assert time.monotonic() < deadline, shown
            time.sleep(0.05)
        kinds = [e["kind"] for e in http.get("/api/instances/W-1/history", headers=manager).json()["events"]]
    assert ("W-1.2", "manual_approval") == (task["id"], task["step"])
    assert (True, True) == (shown["variables"]["approved"], shown["variables"]["confirmation_sent"])
    assert kinds.index("task_completed") < kinds.index("step_completed", kinds.index("task_completed"))
    assert [0, 0] == fleet.stop_all()


def test_the_served_connections_do_not_wait_for_delayed_acks(run: Runner) -> None:
    """
    Issue 13: the socket orch serve listens on says it is TCP, so the connections asyncio accepts on it
    have Nagle's algorithm off (TCP_NODELAY); with it on, each answer on a kept-alive connection waited
    for the client's delayed ACK (~40 ms, found by bench_web.py).
    """

    async def scenario() -> int:
        sock = listening("127.0.0.1", 0)
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def connected(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            raw = writer.get_extra_info("socket")
            accepted.set_result(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(connected, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            nodelay = await accepted
            writer.close()
        return nodelay

    assert 0 != run(scenario())
