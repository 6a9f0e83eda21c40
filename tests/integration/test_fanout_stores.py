"""
Fan-outs in a SQLite file and in PostgreSQL, across engine restarts (issue 10, item 1).

A restart here is what a deployment does: the engine stops, the store is closed,
and a new store and engine open the same database and ``recover()``. The children
a fan-out has not started yet are stored with their parent: after each restart
the next one starts, once, and the results still come in item order. A fan-out
that is undoing its completed children when the engine stops goes on undoing
them after the restart, each once. A fan-out inside a fork branch does the same
beside a human task in the other branch.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import pytest

from statemachine_orch import (
    Ctx,
    Engine,
    EventKind,
    InstanceStatus,
    SqliteStore,
    Store,
    VirtualClock,
    Workflow,
    after,
    fan_out,
    human_task,
    step,
)
from tests.fanout_legs import HOLD, LOG, Leg, Verdict
from tests.integration.helpers import eventually

if TYPE_CHECKING:
    from statemachine_orch import HistoryEvent
    from tests.conftest import Runner

K = EventKind
S = InstanceStatus


class FsOrder(Workflow, name="FsOrder"):
    """A leg per item, one at a time."""

    items: list[str] = attrs.field(factory=list[str])
    results: list[str] = attrs.field(factory=list[str])

    @step(initial=True)
    def plan(self, ctx: Ctx) -> None: ...

    @after(plan)
    @fan_out(Leg, limit=1)
    def legs(self, ctx: Ctx) -> list[Leg]:
        return [Leg(item=i) for i in self.items]

    @legs.on_result
    def booked(self, ctx: Ctx, legs: Sequence[Leg]) -> None:
        self.results = [leg.result for leg in legs]

    @after(legs)
    @step(final=True)
    def close(self, ctx: Ctx) -> None: ...


class FsEager(Workflow, name="FsEager"):
    """Every leg at once; a refusal unwinds the others."""

    items: list[str] = attrs.field(factory=list[str])

    @step(initial=True)
    def plan(self, ctx: Ctx) -> None: ...

    @after(plan)
    @fan_out(Leg)
    def legs(self, ctx: Ctx) -> list[Leg]:
        return [Leg(item=i) for i in self.items]

    @after(legs)
    @step(final=True)
    def close(self, ctx: Ctx) -> None: ...


class FsForked(Workflow, name="FsForked"):
    """Two branches: the legs, two at a time; a clerk's sign-off."""

    items: list[str] = attrs.field(factory=list[str])
    results: list[str] = attrs.field(factory=list[str])

    @step(initial=True, fork=True)
    def split(self, ctx: Ctx) -> None: ...

    @after(split)
    @fan_out(Leg, limit=2)
    def legs(self, ctx: Ctx) -> list[Leg]:
        return [Leg(item=i) for i in self.items]

    @legs.on_result
    def booked(self, ctx: Ctx, legs: Sequence[Leg]) -> None:
        self.results = [leg.result for leg in legs]

    @after(split)
    @human_task(assignee="clerk")
    def sign_off(self, ctx: Ctx) -> None: ...

    @after(legs, sign_off)
    @step(final=True)
    def close(self, ctx: Ctx) -> None: ...


WORKFLOWS = [Leg, FsOrder, FsEager, FsForked]
Opener = Callable[[], Store]


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the test's database again and again: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "fanout.db"
        return lambda: SqliteStore(path)
    dsn: str = request.getfixturevalue("pg_store_dsn")
    from statemachine_orch import PostgresStore

    return lambda: PostgresStore(dsn)


class Deployment:
    """One engine at a time on the test's database: each ``open()`` is a restart."""

    def __init__(self, opener: Opener) -> None:
        self.opener = opener
        self.clock = VirtualClock(autojump=True)

    async def turn(self, work: Callable[[Engine], object]) -> None:
        """Open the store and an engine, recover, let *work* act on it, then stop both."""
        store = self.opener()
        try:
            async with Engine(store, clock=self.clock, workflows=WORKFLOWS) as engine:
                await engine.recover()
                await engine.wait_idle()
                done = work(engine)
                if asyncio.iscoroutine(done):
                    await done
        finally:
            store.close()


def waiting_legs(engine: Engine, parent: str) -> list[str]:
    return sorted(c.id for c in engine.children(parent) if engine.info(c.id).status is S.WAITING)


def of(history: list[HistoryEvent], kind: EventKind) -> list[str]:
    return [str(e.detail) for e in history if e.kind is kind]


def test_the_children_not_started_yet_survive_restarts(opener: Opener, run: Runner) -> None:
    """One leg at a time, a restart after each start: each started once, the results in item order."""
    LOG.clear()
    deployment = Deployment(opener)
    ids: list[str] = []
    seen: list[list[str]] = []

    async def start(engine: Engine) -> None:
        ids.append((await engine.start(FsOrder(items=["a", "b", "c"]))).instance_id)
        await engine.wait_idle()

    async def answer(engine: Engine) -> None:
        legs = waiting_legs(engine, ids[0])
        seen.append(legs)
        await engine.signal(legs[0], Verdict(ok=True))
        await engine.wait_idle()

    async def scenario() -> tuple[S, list[str], list[HistoryEvent]]:
        await deployment.turn(start)
        for _ in range(3):
            await deployment.turn(answer)
        outcome: list[tuple[S, list[str], list[HistoryEvent]]] = []

        async def read(engine: Engine) -> None:
            info = engine.info(ids[0])
            outcome.append((info.status, engine.workflow(ids[0]).results, engine.history(ids[0])))

        await deployment.turn(read)
        return outcome[0]

    status, results, history = run(scenario())
    parent = ids[0]
    assert [[f"{parent}/1/0"], [f"{parent}/1/1"], [f"{parent}/1/2"]] == seen
    assert (S.COMPLETED, ["A", "B", "C"]) == (status, results)
    assert [f"{parent}/1/{i}" for i in range(3)] == of(history, K.CHILD_STARTED)
    assert ["book a", "book b", "book c"] == LOG, "each leg started once"


def test_an_unwinding_fan_out_goes_on_undoing_after_a_restart(opener: Opener, run: Runner) -> None:
    """b is refused while a's undo is held: after the restart a is undone once, and the order fails."""
    LOG.clear()
    deployment = Deployment(opener)
    ids: list[str] = []

    async def start(engine: Engine) -> None:
        ids.append((await engine.start(FsEager(items=["a", "b"]))).instance_id)
        await engine.wait_idle()
        legs = waiting_legs(engine, ids[0])
        await engine.signal(legs[0], Verdict(ok=True))
        await engine.wait_idle()
        HOLD["a"] = asyncio.Event()  # a's undo waits for it: the restart comes first
        await engine.signal(legs[1], Verdict(ok=False))
        await eventually(lambda: engine.info(legs[0]).status is S.COMPENSATING)

    outcome: list[tuple[S, list[HistoryEvent], list[S]]] = []

    async def finish(engine: Engine) -> None:
        await engine.wait_instance(ids[0])
        children = [c.status for c in engine.children(ids[0])]
        outcome.append((engine.info(ids[0]).status, engine.history(ids[0]), children))

    async def scenario() -> None:
        try:
            await deployment.turn(start)
        finally:
            HOLD.clear()
        await deployment.turn(finish)

    run(scenario())
    status, history, children = outcome[0]
    parent = ids[0]
    assert S.FAILED == status
    assert [S.CANCELLED, S.FAILED] == children
    assert [f"{parent}/1/0"] == of(history, K.COMPENSATION_STARTED), "a's undo started once"
    assert ["book a", "book b", "unbook b", "unbook a"] == LOG


def test_a_fan_out_in_a_fork_branch_survives_a_restart(opener: Opener, run: Runner) -> None:
    LOG.clear()
    deployment = Deployment(opener)
    ids: list[str] = []

    async def start(engine: Engine) -> None:
        ids.append((await engine.start(FsForked(items=["a", "b", "c"]))).instance_id)
        await engine.wait_idle()

    async def answer_first(engine: Engine) -> None:
        await engine.signal(waiting_legs(engine, ids[0])[1], Verdict(ok=True))
        await engine.wait_idle()

    async def the_rest(engine: Engine) -> None:
        for leg in waiting_legs(engine, ids[0]):
            await engine.signal(leg, Verdict(ok=True))
            await engine.wait_idle()
        [task] = engine.tasks(user="clerk")
        await engine.complete_task(task.id, user="clerk")
        await engine.wait_idle()
        for leg in waiting_legs(engine, ids[0]):
            await engine.signal(leg, Verdict(ok=True))
            await engine.wait_idle()

    outcome: list[tuple[S, list[str], list[HistoryEvent]]] = []

    async def read(engine: Engine) -> None:
        await engine.wait_instance(ids[0])
        outcome.append((engine.info(ids[0]).status, engine.workflow(ids[0]).results, engine.history(ids[0])))

    async def scenario() -> None:
        for work in (start, answer_first, the_rest, read):
            await deployment.turn(work)

    run(scenario())
    status, results, history = outcome[0]
    parent = ids[0]
    assert (S.COMPLETED, ["A", "B", "C"]) == (status, results)
    assert 3 == len(of(history, K.CHILD_STARTED)) == len(set(of(history, K.CHILD_STARTED)))
    assert all(c.startswith(f"{parent}/") for c in of(history, K.CHILD_STARTED))
    assert ["book a", "book b", "book c"] == sorted(e for e in LOG if e.startswith("book"))
