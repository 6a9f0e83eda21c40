"""
Issue 11's defects of the toolkit, found while porting other engines' workflows: one regression test each.

8: strategies given in ``forms=`` and ``messages=`` were tested with ``bool()``;
9: ``Send`` delivered a message to an instance that never waits for it;
10: fault plans grew with ``Retry.attempts``; 11: ``hung`` blamed the wrong
instance; 12: ``require_coverage=1.0`` was flaky on larger workflows; 13:
``handle.wait_idle()`` on a retry backoff (manual clock) and on a parent.
"""

from __future__ import annotations

import asyncio
import warnings
from datetime import timedelta

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from statemachine_orch import (
    Ctx,
    Engine,
    InstanceStatus,
    MemoryStore,
    Retry,
    VirtualClock,
    Workflow,
    after,
    human_task,
    invariant,
    step,
    subflow,
    wait_for,
)
from statemachine_orch.testing import InvariantViolation, WorkflowMachine
from statemachine_orch.testing._machine import Start

from .helpers import find_bug, passes


@attrs.frozen
class Go:
    """The parent's message."""

    speed: int


@attrs.frozen
class Stop:
    """The child's message."""

    reason: str


@attrs.frozen
class Ok:
    """A form."""

    ok: bool


class Brake(Workflow, version="1"):
    """A child that waits for Stop."""

    car: str
    stopped: bool = False

    @step(initial=True)
    def arm(self, ctx: Ctx) -> None: ...

    @after(arm)
    @wait_for(Stop, final=True)
    def halt(self, ctx: Ctx, message: Stop) -> None:
        self.stopped = True


class Drive(Workflow, version="1"):
    """A parent that waits for Go, then has its child wait for Stop, then a driver confirms."""

    car: str
    speed: int = 0

    @step(initial=True)
    def ignite(self, ctx: Ctx) -> None: ...

    @after(ignite)
    @wait_for(Go)
    def go(self, ctx: Ctx, message: Go) -> None:
        self.speed = message.speed

    @after(go)
    @subflow(Brake)
    def brake(self, ctx: Ctx) -> Brake:
        return Brake(car=self.car)

    @after(brake)
    @human_task(assignee="driver", form=Ok, final=True)
    def confirm(self, ctx: Ctx, form: Ok) -> None: ...


def test_strategies_given_for_forms_and_messages_are_used_without_a_warning() -> None:
    """Issue 11, defect 8: no ``bool()`` on a strategy (hypothesis warns, and warnings are errors)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        machine = WorkflowMachine(
            Drive,
            forms={Drive.confirm: st.just(Ok(ok=True))},
            messages={Go: st.builds(Go, speed=st.just(7)), Stop: st.just(Stop(reason="red light"))},
            require_coverage=1.0,
        )
        passes(machine)


def test_messages_go_only_to_instances_that_wait_for_their_type() -> None:
    """Issue 11, defect 9: a parent's Go never goes to its child waiting for Stop, nor Stop to the parent."""
    machine = WorkflowMachine(Drive, require_coverage=1.0)

    passes(machine)  # before the fix: SignalTypeError "... does not wait for Go" escaped runTest

    assert 1.0 == machine.coverage.fraction


class ForeverLedger(Workflow, version="1"):
    """Retries for ever, as users write it; the invariant is broken by a form answer."""

    account: str
    balance: int = 0

    @step(initial=True, retry=Retry(attempts=1_000_000, initial=1))
    def open_account(self, ctx: Ctx) -> None: ...

    @after(open_account)
    @human_task(assignee="clerk", form=Ok, final=True)
    def book(self, ctx: Ctx, form: Ok) -> None:
        self.balance = -1 if not form.ok else 0

    @invariant
    def never_negative(self) -> bool:
        return self.balance >= 0


def test_fault_plans_are_capped_and_the_message_says_so() -> None:
    """Issue 11, defect 10: Retry(attempts=1_000_000) gets at most a few injected faults, and the report says so."""
    err = find_bug(WorkflowMachine(ForeverLedger))

    assert ("invariant", "book") == (err.rule, err.step)
    assert len(str(err)) < 5_000
    assert (
        "fault plans capped: ForeverLedger.open_account: Retry(attempts=1000000), at most 10 faults injected "
        "into one visit, so its retries are never all used up"
    ) in str(err)


class AlwaysDown:
    """A service that never answers."""

    def charge(self, amount: int) -> int:
        raise ConnectionError("service unavailable")


class Desk(Workflow, version="1"):
    """A ticket waits an hour for a clerk, then escalates; a charge retries a service that is always down, for ever."""

    kind: str

    @step(initial=True)
    def open_desk(self, ctx: Ctx) -> None: ...

    @after(open_desk, when=lambda wf: wf.kind == "charge")
    @step(final=True, retry=Retry(attempts=1_000_000, initial=60))
    async def charge(self, ctx: Ctx) -> None:
        await ctx.call("payments", "charge", amount=5)

    @after(open_desk)
    @human_task(assignee="clerk", form=Ok)
    def triage(self, ctx: Ctx, form: Ok) -> None: ...

    @after(triage)
    @after(triage, timeout=timedelta(hours=1))
    @step(final=True)
    def close(self, ctx: Ctx) -> None: ...


def test_hung_names_the_instance_spinning_through_retries() -> None:
    """Issue 11, defect 11: jumping over i2's backoffs fires i1's escalation; the report names i2, quickly."""
    found: list[InvariantViolation] = []

    @settings(max_examples=1, database=None)
    @given(st.none())
    def story(_: None) -> None:
        machine = WorkflowMachine(Desk, services=lambda: {"payments": AlwaysDown()})()
        try:
            machine.apply(Start(Desk(kind="ticket"), {}))
            machine.apply(Start(Desk(kind="charge"), {}))
        except InvariantViolation as err:
            found.append(err)
        finally:
            machine.teardown()

    story()

    err = found[0]
    assert ("hung", "i2", "charge") == (err.rule, err.instance, err.step)
    first = str(err).splitlines()[0]
    assert first.startswith("Desk: i2 was retried 200 times under Retry(attempts=1000000) within one action")
    assert "its last attempt failed with ConnectionError: service unavailable" in first


class Flaky(Workflow, version="1"):
    """Fails its first attempt, then works a minute later."""

    @step(initial=True, final=True, retry=Retry(attempts=2, initial=60))
    def call(self, ctx: Ctx) -> None:
        if ctx.attempt == 1:
            raise ConnectionError("not yet")


class SlowCheck(Workflow, version="1"):
    """A child that takes a few turns of the event loop before its clerk's task opens."""

    item: str

    @step(initial=True)
    async def prepare(self, ctx: Ctx) -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    @after(prepare)
    @human_task(assignee="clerk", form=Ok, final=True)
    def check(self, ctx: Ctx, form: Ok) -> None: ...


class Inspection(Workflow, version="1"):
    """A parent waiting for its child."""

    item: str

    @step(initial=True)
    def receive(self, ctx: Ctx) -> None: ...

    @after(receive)
    @subflow(SlowCheck)
    def inspect(self, ctx: Ctx) -> SlowCheck:
        return SlowCheck(item=self.item)

    @after(inspect)
    @step(final=True)
    def store(self, ctx: Ctx) -> None: ...


def test_wait_idle_returns_on_a_backoff_the_test_clock_has_to_move_past() -> None:
    """Issue 11, defect 13: with VirtualClock(autojump=False), a retry backoff is settled; moving the clock ends it."""
    clock = VirtualClock(autojump=False)
    engine = Engine(MemoryStore(), clock=clock)

    async def scenario() -> tuple[InstanceStatus, InstanceStatus]:
        async with engine:
            handle = await engine.start(Flaky())
            parked = await asyncio.wait_for(handle.wait_idle(), 10)
            clock.advance(60)
            return parked, await asyncio.wait_for(handle.wait_idle(), 10)

    parked, done = asyncio.run(scenario())

    assert (InstanceStatus.RUNNING, InstanceStatus.COMPLETED) == (parked, done)


def test_wait_idle_on_a_parent_waits_for_its_child_to_settle() -> None:
    """Issue 11, defect 13: a parent waiting for its child is idle only once the child waits (or ended)."""
    engine = Engine(MemoryStore(), clock=VirtualClock(autojump=False))

    async def scenario() -> tuple[InstanceStatus, list[str]]:
        async with engine:
            handle = await engine.start(Inspection(item="crate"))
            status = await asyncio.wait_for(handle.wait_idle(), 10)
            return status, [t.step for t in engine.tasks()]

    status, tasks = asyncio.run(scenario())

    assert (InstanceStatus.WAITING, ["check"]) == (status, tasks)
