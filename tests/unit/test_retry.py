"""
``Retry`` (issue 10, item 6): unlimited retries, and policies checked when the class is created.

``Retry(attempts=None)`` retries until the step succeeds, fails with a
non-retryable error, or the instance is cancelled, every ``max_interval`` at
most, however many attempts that takes; a bad argument (``attempts=math.inf``,
``backoff=0.5``...) is a ``bad-retry`` definition error naming the step and the
argument. The toolkit (fault plans, ``WorkflowMachine``) takes unlimited
policies too. The SQLite crash test is ``tests/crash/test_retry_kill9.py``.
"""

# Workflow classes that must fail compilation are defined only to be refused.
# pyright: reportUnusedClass=false

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from typing import TYPE_CHECKING, ClassVar, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statemachine_orch import (
    Ctx,
    Engine,
    EventKind,
    InstanceStatus,
    MemoryStore,
    NonRetryableError,
    Retry,
    VirtualClock,
    Workflow,
    WorkflowDefinitionError,
    after,
    step,
    subflow,
)
from statemachine_orch.testing import WorkflowMachine
from tests.testing.helpers import fresh

if TYPE_CHECKING:
    from tests.conftest import EngineFactory, Runner

K = EventKind

# --------------------------------------------------------------------------- the policy


policies = st.builds(
    Retry,
    attempts=st.none() | st.integers(1, 10**6),
    initial=st.floats(0.001, 1e4),
    backoff=st.floats(1, 10),
    max_interval=st.floats(0, 1e6),
)


@settings(max_examples=300)
@given(policy=policies, failed=st.integers(1, 10**7), later=st.integers(0, 10**7))
def test_every_wait_is_finite_capped_and_never_shrinks(policy: Retry, failed: int, later: int) -> None:
    """Issue 10: any attempt number, even the ten millionth of an unlimited policy, has a wait within the cap."""
    assert [] == policy.problems()
    wait = policy.delay(failed)
    assert 0.0 <= wait <= max(policy.max_interval, 0.0)
    assert wait <= policy.delay(failed + later)


def test_an_unlimited_policy_retries_any_attempt_but_never_a_non_retryable_error() -> None:
    """Issue 10: attempts=None retries the millionth attempt; NonRetryableError and non_retryable types still stop it."""
    policy = Retry(attempts=None, non_retryable=KeyError)
    assert policy.retries(ConnectionError("down"), 1_000_000)
    assert not policy.retries(KeyError("sku"), 1)
    assert not policy.retries(NonRetryableError("declined"), 1)
    assert (100.0, 60.0) == (Retry(attempts=None).max_interval, Retry(max_interval=timedelta(minutes=1)).max_interval)


BAD_ARGUMENTS = [
    ("attempts", {"attempts": 0}, "Retry(attempts=0) is invalid: attempts counts the first try too"),
    ("attempts", {"attempts": -1}, "Retry(attempts=-1) is invalid"),
    ("attempts", {"attempts": math.inf}, "Retry(attempts=inf) is invalid"),
    ("attempts", {"attempts": 2.5}, "Retry(attempts=2.5) is invalid"),
    ("attempts", {"attempts": True}, "Retry(attempts=True) is invalid"),
    ("attempts", {"attempts": "3"}, "Retry(attempts='3') is invalid"),
    ("initial", {"initial": -1}, "Retry(initial=-1.0) is invalid: initial must be a finite number >= 0"),
    ("initial", {"initial": math.nan}, "Retry(initial=nan) is invalid"),
    ("initial", {"initial": "1s"}, "Retry(initial='1s') is invalid"),
    ("initial", {"initial": timedelta(seconds=-5)}, "Retry(initial=-5.0) is invalid"),
    ("backoff", {"backoff": 0.5}, "Retry(backoff=0.5) is invalid: backoff must be a finite number >= 1"),
    ("backoff", {"backoff": math.inf}, "Retry(backoff=inf) is invalid"),
    ("max_interval", {"max_interval": math.inf}, "Retry(max_interval=inf) is invalid"),
    ("max_interval", {"max_interval": -2}, "Retry(max_interval=-2.0) is invalid"),
    ("non_retryable", {"non_retryable": (KeyError, "ValueError")}, "'ValueError' is not an exception class"),
    ("initial", {"attempts": None, "initial": 0}, "Retry(attempts=None, initial=0) is invalid: retrying without limit"),
]


@pytest.mark.parametrize(("argument", "kwargs", "message"), BAD_ARGUMENTS, ids=[m for _, _, m in BAD_ARGUMENTS])
def test_a_bad_argument_is_a_definition_error_naming_the_step_and_the_argument(
    argument: str, kwargs: dict[str, object], message: str
) -> None:
    """Issue 10: Retry(...) takes anything; the class using it is refused, naming the step and the argument."""
    policy = Retry(**kwargs)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    assert [argument] == [name for name, _ in policy.problems()]
    with pytest.raises(WorkflowDefinitionError) as err:

        class Flaky(Workflow):
            @step(initial=True, final=True, retry=policy)
            def call(self, ctx: Ctx) -> None: ...

    [problem] = err.value.problems
    assert ("Flaky", "call", "bad-retry") == (problem.workflow, problem.step, problem.rule)
    assert problem.message.startswith("retry=" + message.partition(" is invalid")[0] if "Retry(" in message else "")
    assert message in problem.message


def test_every_bad_argument_and_a_compensation_policy_are_reported_together() -> None:
    """Issue 10: all bad arguments of all policies (steps and compensations) are listed in one error."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Booking(Workflow):
            @step(initial=True, retry=Retry(attempts=cast("int", math.inf), backoff=0))
            def reserve(self, ctx: Ctx) -> None: ...

            @reserve.compensation(retry=Retry(attempts=0))
            def release(self, ctx: Ctx) -> None: ...

            @after(reserve)
            @step(final=True, retry=cast("Retry", 3))
            def pay(self, ctx: Ctx) -> None: ...

    found = [(p.step, p.rule, p.message.partition(" is invalid")[0]) for p in err.value.problems]
    assert [
        ("release", "bad-retry", "retry=Retry(attempts=0)"),
        ("reserve", "bad-retry", "retry=Retry(attempts=inf)"),
        ("reserve", "bad-retry", "retry=Retry(backoff=0)"),
        ("pay", "bad-retry", "retry= must be a Retry(...), got 3 (int)"),
    ] == found


# --------------------------------------------------------------------------- run by the engine


class Outage(Workflow):
    """A partner that is down for the first ``down_for`` attempts."""

    down_for: int

    @step(initial=True, final=True, retry=Retry(attempts=None, initial=1, backoff=2, max_interval=60))
    def sync(self, ctx: Ctx) -> None:
        if ctx.attempt <= self.down_for:
            msg = f"ledger down (attempt {ctx.attempt})"
            raise ConnectionError(msg)


def test_unlimited_retries_run_until_the_step_succeeds_waiting_at_most_max_interval(
    run: Runner, new_engine: EngineFactory
) -> None:
    """Issue 10: 300 failed attempts are 300 retries; the waits double up to 60 s and stay there."""

    async def scenario() -> tuple[InstanceStatus, list[int], list[str | None], float]:
        async with new_engine() as engine:
            began = engine.clock.now()
            handle = await engine.start(Outage(down_for=300))
            await engine.wait_instance(handle.instance_id)
            history = handle.history()
            started = [e.attempt for e in history if e.kind is K.STEP_STARTED]
            waits = [e.detail for e in history if e.kind is K.RETRY_SCHEDULED]
            return handle.status, started, waits, engine.clock.now() - began

    status, started, waits, waited = run(scenario())
    assert InstanceStatus.COMPLETED == status
    assert list(range(1, 302)) == started
    assert ["in 1s", "in 2s", "in 4s", "in 8s", "in 16s", "in 32s", "in 60s"] == waits[:7]
    assert {"in 60s"} == set(waits[6:])
    assert 63 + 60 * 294 == waited


class Hopeless(Workflow):
    """Unlimited retries of a call whose third attempt says the card is declined for good; the error is routed."""

    @step(initial=True, retry=Retry(attempts=None, initial=5))
    def charge(self, ctx: Ctx) -> None:
        if ctx.attempt < 3:
            msg = "gateway timeout"
            raise ConnectionError(msg)
        msg = "card declined"
        raise NonRetryableError(msg)

    @after(charge, on_error=NonRetryableError)
    @step(final=True)
    def ask_for_another_card(self, ctx: Ctx) -> None: ...

    @after(charge)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None: ...


def test_a_non_retryable_error_ends_unlimited_retries_and_takes_the_error_route(
    run: Runner, new_engine: EngineFactory
) -> None:
    """Issue 10: attempts=None is no infinite loop for an error that must not be retried."""

    async def scenario() -> tuple[InstanceStatus, list[tuple[str | None, str | None]]]:
        async with new_engine() as engine:
            handle = await engine.start(Hopeless())
            await engine.wait_instance(handle.instance_id)
            history = handle.history()
            return handle.status, [(e.step, e.detail) for e in history if e.kind is K.TRANSITION]

    status, moves = run(scenario())
    assert InstanceStatus.COMPLETED == status
    assert [("charge", "ask_for_another_card"), ("ask_for_another_card", "@completed")] == moves


def test_cancelling_an_instance_in_unlimited_backoff_stops_it(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 10: cancel() ends an instance parked between two of its endless attempts; no attempt follows."""

    clock = VirtualClock(autojump=False)

    async def scenario() -> tuple[InstanceStatus, int, int]:
        async with Engine(MemoryStore(), clock=clock) as engine:
            handle = await engine.start(Outage(down_for=10**9))

            def tried() -> int:
                return sum(1 for e in handle.history() if e.kind is K.STEP_STARTED)

            while tried() < 20:  # each turn lets the next backoff fall due (the run's time limit catches a hang)
                clock.advance(60)
                await asyncio.sleep(0)
            status = await engine.cancel(handle.instance_id, reason="partner retired")
            before = tried()
            clock.advance(3600)
            for _ in range(50):
                await asyncio.sleep(0)
            return status, before, tried()

    status, tried, tried_after = run(scenario())
    assert InstanceStatus.CANCELLED == status
    assert tried >= 20
    assert tried == tried_after


class Parcel(Workflow):
    """A child that fails to label unless it is its parent's third try; its packing is undone when asked."""

    undone: ClassVar[list[str]] = []

    @step(initial=True)
    def pack(self, ctx: Ctx) -> None: ...

    @pack.compensation
    def unpack(self, ctx: Ctx) -> None:
        self.undone.append(ctx.instance_id)

    @after(pack)
    @step(final=True)
    def label(self, ctx: Ctx) -> None:
        if not ctx.instance_id.endswith(".3"):
            msg = "printer jammed"
            raise RuntimeError(msg)


class Shipment(Workflow):
    """Ships through a child with unlimited retries (each attempt a new child), then fails billing."""

    @subflow(Parcel, initial=True, retry=Retry(attempts=None, initial=1))
    def ship(self, ctx: Ctx) -> Parcel:
        return Parcel()

    @after(ship)
    @step(final=True)
    def bill(self, ctx: Ctx) -> None:
        msg = "billing is down"
        raise RuntimeError(msg)


def test_a_subflow_with_unlimited_retries_undoes_the_child_that_completed(
    run: Runner, new_engine: EngineFactory
) -> None:
    """Issue 10: the children of attempts 1 and 2 failed (and undid themselves); the saga undoes attempt 3's child."""
    Parcel.undone.clear()

    async def scenario() -> tuple[InstanceStatus, list[tuple[str, InstanceStatus]], str]:
        async with new_engine() as engine:
            handle = await engine.start(Shipment(), instance_id="S-1")
            status = await engine.wait_instance(handle.instance_id)
            children = [(c.id, c.status) for c in engine.children(handle.instance_id)]
            return status, children, handle.instance_id

    status, children, parent = run(scenario())
    assert InstanceStatus.FAILED == status
    assert [
        (f"{parent}/0", InstanceStatus.FAILED),
        (f"{parent}/0.2", InstanceStatus.FAILED),
        (f"{parent}/0.3", InstanceStatus.CANCELLED),
    ] == children
    assert [f"{parent}/0", f"{parent}/0.2", f"{parent}/0.3"] == Parcel.undone


# --------------------------------------------------------------------------- the toolkit


class Ledger(Workflow):
    """Unlimited retries on a step and on its compensation, then a step that may fail."""

    @step(initial=True, retry=Retry(attempts=None, initial=1))
    def post(self, ctx: Ctx) -> None: ...

    @post.compensation(retry=Retry(attempts=None, initial=1))
    def reverse(self, ctx: Ctx) -> None: ...

    @after(post)
    @step(final=True)
    def notify(self, ctx: Ctx) -> None: ...


def test_the_toolkit_explores_unlimited_policies() -> None:
    """Issue 10: WorkflowMachine's fault plans take attempts=None (at most three faults per visit), and its run passes."""
    machine = fresh(WorkflowMachine(Ledger))
    machine.TestCase.settings = settings(machine.TestCase.settings, max_examples=30)
    machine.TestCase().runTest()
    assert 1.0 == machine.coverage.fraction
