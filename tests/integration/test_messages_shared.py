"""
Issue 10, item 8, on the stores several processes share (a SQLite file, a PostgreSQL database).

Two worker engines and a client engine on three store objects of one database,
as three processes would be: a step run by one worker signals an instance the
other worker holds (the message and a wake-up command go with the step's
commit; the other worker claims and runs it); a client's ``signal_with_start``
starts an instance a worker then runs, or signals the one that exists; a client
asks queries (``engine.query``) from the stored variables; and schedules run by
both workers start each due time once.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from statemachine_orch import (
    CatchUp,
    Engine,
    InstanceStatus,
    Overlap,
    Schedule,
    Store,
    VirtualClock,
)
from tests.integration.test_client_commands import open_store
from tests.unit.test_messages import MsgInbox, MsgLauncher, MsgOutbox, MsgPing
from tests.unit.test_query import QCart
from tests.unit.test_schedules import T0, SchReport, report

if TYPE_CHECKING:
    from tests.conftest import Runner

T = TypeVar("T")
Opener = Callable[[], Store]
__all__ = ["open_store"]  # the fixture: a store object per "process" on one SQLite file or PostgreSQL database
WORKFLOWS = [MsgInbox, MsgLauncher, MsgOutbox, QCart, SchReport]
WAIT = 30.0


def _worker(store: Store) -> Engine:
    return Engine(store, workflows=WORKFLOWS, lease=5.0, poll=0.02)


def test_a_step_signals_an_instance_another_worker_holds(open_store: Opener, run: Runner) -> None:
    """Issue 10: the message and its wake-up commit with the sender's step; the holder's fleet runs the target."""

    async def scenario() -> tuple[int, InstanceStatus]:
        one, two, reader = open_store(), open_store(), open_store()
        try:
            async with _worker(one) as first, _worker(two) as second:
                inbox = await first.start(MsgInbox(), instance_id="held")
                await inbox.wait_idle()
                sender = await second.start(MsgOutbox(target="held", n=11))
                status = await asyncio_wait(second.wait_instance(sender.instance_id))
                done = await asyncio_wait(first.wait_instance("held"))
                assert InstanceStatus.COMPLETED == done
            loaded = reader.load("held")
            assert loaded is not None
            return loaded.wf.got, status
        finally:
            for store in (one, two, reader):
                store.close()

    assert (11, InstanceStatus.COMPLETED) == run(scenario())


def test_a_clients_signal_with_start_and_query(open_store: Opener, run: Runner) -> None:
    """Issue 10: a client starts an instance with its first message (a worker runs it), signals it again, queries."""

    async def scenario() -> tuple[int, list[str], int, list[str]]:
        worker_store, client_store = open_store(), open_store()
        try:
            async with _worker(worker_store) as worker:
                client = Engine(client_store, workflows=WORKFLOWS, concurrency=0, poll=0.02)
                first = await client.signal_with_start(MsgInbox(), MsgPing(4), instance_id="from-client")
                got = (await asyncio_wait(first.result())).got
                await client.start(QCart(), instance_id="cart")
                await asyncio_wait(client.wait_instance("cart", terminal=False))
                total = client.query("cart", QCart.total)
                again: list[str] = []
                try:
                    await client.signal_with_start(MsgInbox(), MsgPing(5), instance_id="from-client")
                except Exception as exc:
                    again.append(type(exc).__name__)
                await client.aclose()
                kinds = [e.kind.value for e in worker.history("from-client") if "message" in e.kind.value]
            return got, kinds, total, again
        finally:
            worker_store.close()
            client_store.close()

    got, kinds, total, again = run(scenario())
    assert 4 == got
    assert ["message_received"] == kinds
    assert 4600 == total
    assert ["InstanceFinished"] == again


def test_two_workers_start_each_due_time_once(open_store: Opener, run: Runner) -> None:
    """Issue 10: two workers declaring one schedule: each due time started once (ids), the count exact."""
    every = Schedule("ten", report, every=600, catch_up=CatchUp.ALL, overlap=Overlap.ALLOW)

    async def scenario() -> tuple[list[str], int]:
        clock = VirtualClock(T0, autojump=False)
        one, two = open_store(), open_store()
        try:
            async with (
                Engine(one, clock=clock, workflows=WORKFLOWS, schedules=[every], poll=0.02) as first,
                Engine(two, clock=clock, workflows=WORKFLOWS, schedules=[every], poll=0.02) as second,
            ):
                for _ in range(4):
                    clock.advance(600)
                    await first.wait_idle()
                    await second.wait_idle()
                started = sorted(i.id for i in first.instances(workflow=SchReport))
                state = one.schedule("ten")
                assert state is not None
                return started, state.started
        finally:
            one.close()
            two.close()

    started, count = run(scenario())
    assert [f"ten@2026-01-01T00:{m}0:00Z" for m in range(1, 5)] == started
    assert 4 == count


async def asyncio_wait(awaitable: Awaitable[T]) -> T:
    """Await *awaitable* with the module's time limit."""
    return await asyncio.wait_for(awaitable, WAIT)
