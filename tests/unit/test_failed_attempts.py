"""
A failed attempt changes no variable (issue 10, item 11).

Whatever an attempt of a step or compensation assigned, or changed in place
(appended to a list, set in a dict, a field of a mutable attrs object), before
it raised or was cancelled is undone: the next attempt, the ``on_error`` route,
and the saga all see the variables the last commit left. The same on the memory
store (which keeps the objects themselves) and on SQLite (which writes JSON).
Inside a fork, a branch's failed attempt is undone only when no sibling
branch's step ran meanwhile: the branches share the variables, so a change made
then may be the sibling's, and is kept.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statemachine_orch import (
    Ctx,
    Engine,
    InstanceStatus,
    MemoryStore,
    Retry,
    SqliteStore,
    Store,
    VirtualClock,
    Workflow,
    after,
    step,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.conftest import EngineFactory, Runner


@attrs.define
class Box:
    """A mutable record inside a variable."""

    label: str = ""
    weight: int = 0


Seen = tuple[int, list[str], dict[str, int], Box]

MUTATIONS = ("assign", "append", "set_key", "box_field", "replace_box")
"""What one attempt may do to the variables before it fails."""

_ids = itertools.count()


class Packing(Workflow):
    """
    ``prepare`` commits some variables; ``pack`` changes them as planned, and fails until its last planned attempt.

    What each attempt of ``pack`` saw when it began is noted in ``seen`` (a class
    attribute, outside the variables), by instance id.
    """

    seen: ClassVar[dict[str, list[Seen]]] = {}
    plans: ClassVar[dict[str, list[list[str]]]] = {}

    count: int = 0
    items: list[str] = attrs.field(factory=list[str])
    tags: dict[str, int] = attrs.field(factory=dict[str, int])
    box: Box = attrs.field(factory=Box)

    def state(self) -> Seen:
        return (self.count, list(self.items), dict(self.tags), copy.copy(self.box))

    @step(initial=True)
    def prepare(self, ctx: Ctx) -> None:
        self.count = 1
        self.items.append("base")
        self.tags["base"] = 1
        self.box.label = "base"

    @after(prepare)
    @step(final=True, retry=Retry(attempts=None, initial=1))
    def pack(self, ctx: Ctx) -> None:
        self.seen.setdefault(ctx.instance_id, []).append(self.state())
        plans = self.plans[ctx.instance_id]
        for change in plans[ctx.attempt - 1]:
            mutate(self, change, ctx.attempt)
        if ctx.attempt < len(plans):
            msg = f"attempt {ctx.attempt} fails after {plans[ctx.attempt - 1]}"
            raise RuntimeError(msg)


def mutate(wf: Packing, change: str, attempt: int) -> None:
    """Apply one planned change."""
    if change == "assign":
        wf.count += 100
    elif change == "append":
        wf.items.append(f"attempt {attempt}")
    elif change == "set_key":
        wf.tags[f"k{attempt}"] = attempt
        wf.tags["base"] = -1
    elif change == "box_field":
        wf.box.weight += 7
    else:
        wf.box = Box("other", 99)


COMMITTED: Seen = (1, ["base"], {"base": 1}, Box("base", 0))
"""The variables ``prepare`` commits."""


@pytest.fixture(scope="module")
def sqlite_file() -> Iterator[SqliteStore]:
    """One SQLite store for every example (each runs an instance of its own on it)."""
    with (
        tempfile.TemporaryDirectory() as folder,
        SqliteStore(Path(folder) / "packing.db", synchronous="NORMAL") as store,
    ):
        yield store


async def pack_with(store: Store, plans: list[list[str]]) -> tuple[InstanceStatus, list[Seen], Seen]:
    """Run one Packing instance with *plans* on *store*; what each attempt saw, and the end."""
    instance_id = f"P-{next(_ids)}"
    Packing.plans[instance_id] = plans
    async with Engine(store, clock=VirtualClock()) as engine:
        handle = await engine.start(Packing(), instance_id=instance_id)
        status = await engine.wait_instance(instance_id)
        end = handle.workflow
        assert isinstance(end, Packing)
        return status, Packing.seen.pop(instance_id), end.state()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@settings(max_examples=40, deadline=None)
@given(plans=st.lists(st.lists(st.sampled_from(MUTATIONS), max_size=4), min_size=1, max_size=4))
def test_every_attempt_begins_from_the_committed_variables(
    run: Runner, sqlite_file: SqliteStore, kind: str, plans: list[list[str]]
) -> None:
    """Issue 10: whatever failed attempts assigned or changed in place, the next attempt sees the last commit's values."""
    store = MemoryStore() if kind == "memory" else sqlite_file
    status, seen, end = run(pack_with(store, plans))
    assert InstanceStatus.COMPLETED == status
    assert [COMMITTED] * len(plans) == seen
    expected = Packing(count=1, items=["base"], tags={"base": 1}, box=Box("base", 0))
    for change in plans[-1]:
        mutate(expected, change, len(plans))
    assert expected.state() == end, "only the attempt that completed changed anything"


class Routed(Workflow):
    """A failure routed by on_error: the handler sees the variables as the last commit left them."""

    handled: ClassVar[list[tuple[str, list[str]]]] = []

    status: str = "new"
    notes: list[str] = attrs.field(factory=list[str])

    @step(initial=True, retry=Retry(attempts=2, initial=1))
    def charge(self, ctx: Ctx) -> None:
        self.status = f"charging {ctx.attempt}"
        self.notes.append(f"charge {ctx.attempt}")
        msg = "card declined"
        raise ValueError(msg)

    @after(charge, on_error=ValueError)
    @step(final=True)
    def apologise(self, ctx: Ctx) -> None:
        self.handled.append((self.status, list(self.notes)))

    @after(charge)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None: ...


def test_the_error_route_sees_the_committed_variables(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 10: the on_error step does not see what the failed attempts changed."""
    Routed.handled.clear()

    async def scenario() -> InstanceStatus:
        async with new_engine() as engine:
            handle = await engine.start(Routed())
            return await engine.wait_instance(handle.instance_id)

    assert InstanceStatus.COMPLETED == run(scenario())
    assert [("new", [])] == Routed.handled


class Refund(Workflow):
    """The compensation of ``pay`` fails its first attempt after noting something; the second sees no trace of it."""

    seen: ClassVar[list[list[str]]] = []

    ledger: list[str] = attrs.field(factory=list[str])

    @step(initial=True)
    def pay(self, ctx: Ctx) -> None:
        self.ledger.append("paid")

    @pay.compensation(retry=Retry(attempts=2, initial=1))
    def refund(self, ctx: Ctx) -> None:
        self.seen.append(list(self.ledger))
        self.ledger.append(f"refund attempt {ctx.attempt}")
        if ctx.attempt == 1:
            msg = "bank offline"
            raise ConnectionError(msg)

    @after(pay)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None:
        self.ledger.append("shipping")
        msg = "no courier"
        raise RuntimeError(msg)


def test_a_failed_compensation_attempt_is_undone_and_the_failed_step_leaves_nothing_for_the_saga(
    run: Runner, new_engine: EngineFactory
) -> None:
    """Issue 10: the saga sees no 'shipping' (ship failed), and refund's second attempt no trace of its first."""
    Refund.seen.clear()

    async def scenario() -> tuple[InstanceStatus, list[str]]:
        async with new_engine() as engine:
            handle = await engine.start(Refund())
            status = await engine.wait_instance(handle.instance_id)
            wf = handle.workflow
            assert isinstance(wf, Refund)
            return status, wf.ledger

    status, ledger = run(scenario())
    assert InstanceStatus.FAILED == status
    assert [["paid"], ["paid"]] == Refund.seen
    assert ["paid", "refund attempt 2"] == ledger


class Hold(Workflow):
    """An async step noting a hold, then waiting until the instance is cancelled."""

    released_with: ClassVar[list[list[str]]] = []

    holds: list[str] = attrs.field(factory=list[str])

    @step(initial=True)
    def reserve(self, ctx: Ctx) -> None:
        self.holds.append("seat")

    @reserve.compensation
    def release(self, ctx: Ctx) -> None:
        self.released_with.append(list(self.holds))

    @after(reserve)
    @step(final=True)
    async def wait_for_payment(self, ctx: Ctx) -> None:
        self.holds.append("payment pending")
        await asyncio.Event().wait()


def test_a_cancelled_attempt_is_undone_before_the_compensations(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 10: cancel() interrupts the attempt; the compensation sees the committed variables only."""
    Hold.released_with.clear()

    async def scenario() -> InstanceStatus:
        async with new_engine() as engine:
            handle = await engine.start(Hold())
            wf = handle.workflow
            assert isinstance(wf, Hold)
            while "payment pending" not in wf.holds:  # the run's time limit catches a hang
                await asyncio.sleep(0)
            return await engine.cancel(handle.instance_id, reason="timeout")

    assert InstanceStatus.CANCELLED == run(scenario())
    assert [["seat"]] == Hold.released_with


class Quotes(Workflow):
    """A fork: ``flight`` fails its first attempt after writing; ``hotel`` writes its own variable."""

    seen: ClassVar[list[tuple[str, str]]] = []
    gate: ClassVar[asyncio.Event | None] = None

    flight: str = ""
    hotel: str = ""

    @step(initial=True, fork=True)
    def plan(self, ctx: Ctx) -> None: ...

    @after(plan)
    @step(retry=Retry(attempts=2, initial=1))
    async def quote_flight(self, ctx: Ctx) -> None:
        self.seen.append((self.flight, self.hotel))
        self.flight = f"flight attempt {ctx.attempt}"
        if ctx.attempt == 1:
            if self.gate is not None:
                self.gate.set()  # let the hotel's step finish while this attempt still runs
                await asyncio.sleep(0)
            msg = "airline timeout"
            raise ConnectionError(msg)

    @after(plan)
    @step
    async def quote_hotel(self, ctx: Ctx) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.hotel = "hotel quoted"

    @after(quote_flight, quote_hotel)
    @step(final=True)
    def book(self, ctx: Ctx) -> None: ...


@pytest.mark.parametrize("overlap", [False, True], ids=["alone", "overlapping"])
def test_a_branch_attempt_is_undone_unless_a_sibling_ran_meanwhile(
    run: Runner, new_engine: EngineFactory, overlap: bool
) -> None:
    """Issue 10: alone, the branch's failed attempt is undone; alongside a sibling, nothing is (the sibling's work stays)."""
    Quotes.seen.clear()
    Quotes.gate = asyncio.Event() if overlap else None

    async def scenario() -> tuple[InstanceStatus, str, str]:
        if overlap:
            Quotes.gate = asyncio.Event()  # bound to this scenario's loop
        async with new_engine() as engine:
            handle = await engine.start(Quotes())
            status = await engine.wait_instance(handle.instance_id)
            wf = handle.workflow
            assert isinstance(wf, Quotes)
            return status, wf.flight, wf.hotel

    try:
        status, flight, hotel = run(scenario())
    finally:
        Quotes.gate = None
    assert (InstanceStatus.COMPLETED, "flight attempt 2", "hotel quoted") == (status, flight, hotel)
    second_attempt_saw = Quotes.seen[1][0]
    assert ("flight attempt 1" if overlap else "") == second_attempt_saw
