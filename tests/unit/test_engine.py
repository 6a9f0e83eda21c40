"""
Issue 2: the in-memory engine's guarantees.

Sync and async steps; exclusive choice in declaration order with the default last;
guards must return real bools; a step with no enabled edge fails the instance;
retries with exponential backoff on the engine's clock; non-retryable errors;
per-attempt timeouts; on_error routing; the saga (compensations newest first, once
each, with their own retries, ``compensation_failed`` when one fails for good);
cancellation; input checks at start; the Ctx; history, progress and subscriptions.

Human tasks are in ``test_tasks.py``; the order example end to end in
``test_order_example.py``.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

import attrs
import pytest
import structlog

from examples.order_process import Approval, InventoryService, Item, OrderProcess, PaymentService, UserService
from statemachine_orch import (
    Ctx,
    DeadEdgeWarning,
    Engine,
    EventKind,
    HistoryEvent,
    InstanceFinished,
    InstanceNotFound,
    InstanceStatus,
    MemoryStore,
    NonRetryableError,
    Retry,
    ServiceNotFound,
    VirtualClock,
    Workflow,
    WorkflowFailed,
    WorkflowInputError,
    after,
    goto,
    machine_of,
    step,
)

if TYPE_CHECKING:
    from tests.conftest import EngineFactory, Runner

K = EventKind

ISSUE_2_KINDS = {
    K.INSTANCE_STARTED,
    K.STEP_STARTED,
    K.STEP_COMPLETED,
    K.STEP_FAILED,
    K.STEP_CANCELLED,
    K.RETRY_SCHEDULED,
    K.TRANSITION,
    K.TASK_CREATED,
    K.TASK_COMPLETED,
    K.TASK_CANCELLED,
    K.CANCEL_REQUESTED,
    K.COMPENSATION_STARTED,
    K.COMPENSATION_COMPLETED,
    K.COMPENSATION_FAILED,
    K.STATUS_CHANGED,
}
"""The history kinds issue 2 asks for (timers, signals and migrations come with later issues)."""


# --------------------------------------------------------------------------- history helpers


def kinds(history: Sequence[HistoryEvent]) -> list[EventKind]:
    """The kind of every entry, in order."""
    return [e.kind for e in history]


def of_kind(history: Sequence[HistoryEvent], kind: EventKind) -> list[HistoryEvent]:
    """The entries of one kind, in order."""
    return [e for e in history if e.kind is kind]


def transitions(history: Sequence[HistoryEvent]) -> list[tuple[str | None, str | None]]:
    """``(source, destination)`` of every transition, in order."""
    return [(e.step, e.detail) for e in of_kind(history, K.TRANSITION)]


def compensations_done(history: Sequence[HistoryEvent]) -> list[tuple[str | None, str | None]]:
    """``(undone step, compensation)`` of every completed compensation, in order."""
    return [(e.step, e.detail) for e in of_kind(history, K.COMPENSATION_COMPLETED)]


def attempts(history: Sequence[HistoryEvent], step_name: str) -> list[int]:
    """The attempt numbers of every start of *step_name*."""
    return [e.attempt for e in of_kind(history, K.STEP_STARTED) if e.step == step_name]


async def eventually(condition: Callable[[], bool]) -> None:
    """Let the engine run until *condition* holds (the scenario's time limit catches a hang)."""
    # The engine offers no event for "this step is running", so poll, yielding each time.
    while not condition():
        await asyncio.sleep(0)


async def failure_of(handle_result: Any) -> WorkflowFailed:
    """Await a ``handle.result()`` that must raise WorkflowFailed, and return the error."""
    with pytest.raises(WorkflowFailed) as err:
        await handle_result
    return err.value


def order_services() -> dict[str, object]:
    """The order example's real in-process services, with stock for any test order."""
    return {
        "user-service": UserService(),
        "inventory-service": InventoryService(stock={"BOOK": 100}),
        "payment-service": PaymentService(),
    }


# --------------------------------------------------------------------------- workflows


class Linear(Workflow):
    """A sync step, an async step, a sync final step."""

    trail: list[str] = attrs.field(factory=list[str])

    @step(initial=True)
    def first(self, ctx: Ctx) -> None:
        self.trail.append("first")

    @after(first)
    @step
    async def second(self, ctx: Ctx) -> None:
        await asyncio.sleep(0)
        self.trail.append("second")

    @after(second)
    @step(final=True)
    def third(self, ctx: Ctx) -> None:
        self.trail.append("third")


# The second edge is dead on purpose (the first guard that holds wins): the class says so when it is created.
with pytest.warns(DeadEdgeWarning, match=r"decide -> large \[when wf.x > 10\] is never taken"):

    class Gateway(Workflow):
        """Exclusive choice: two guards that can both hold, then a default."""

        x: int

        @step(initial=True)
        def decide(self, ctx: Ctx) -> None: ...

        @after(decide, when=lambda wf: wf.x > 0)
        @step(final=True)
        def positive(self, ctx: Ctx) -> None: ...

        @after(decide, when=lambda wf: wf.x > 10)
        @step(final=True)
        def large(self, ctx: Ctx) -> None: ...

        @after(decide)
        @step(final=True)
        def otherwise(self, ctx: Ctx) -> None: ...


class SloppyGuard(Workflow):
    """A guard that returns an int where a bool is required."""

    items: list[str] = attrs.field(factory=list[str])
    undone: bool = False

    def has_items(self) -> bool:
        return cast("bool", len(self.items))

    @step(initial=True)
    def collect(self, ctx: Ctx) -> None:
        self.items.append("book")

    @collect.compensation
    def uncollect(self, ctx: Ctx) -> None:
        self.undone = True

    @after(collect, when=has_items)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None: ...


class BrokenGuard(Workflow):
    """A guard that raises."""

    prices: dict[str, float] = attrs.field(factory=dict[str, float])

    def expensive(self) -> bool:
        return self.prices["total"] > 100

    @step(initial=True)
    def price(self, ctx: Ctx) -> None: ...

    @after(price, when=expensive)
    @step(final=True)
    def escalate(self, ctx: Ctx) -> None: ...

    @after(price)
    @step(final=True)
    def accept(self, ctx: Ctx) -> None: ...


class NoWayOn(Workflow):
    """The only edge out of the first step is guarded; when the guard fails nothing is enabled."""

    x: int = 0
    undone: bool = False

    @step(initial=True)
    def reserve(self, ctx: Ctx) -> None: ...

    @reserve.compensation
    def release(self, ctx: Ctx) -> None:
        self.undone = True

    @after(reserve, when=lambda wf: wf.x > 0)
    @step(final=True)
    def go_on(self, ctx: Ctx) -> None: ...


class Flaky(Workflow):
    """Fails its first ``failures`` attempts with a ConnectionError."""

    failures: int

    @step(initial=True, final=True, retry=Retry(attempts=5, initial=1, backoff=3, max_interval=5))
    def call(self, ctx: Ctx) -> None:
        if ctx.attempt <= self.failures:
            msg = f"attempt {ctx.attempt} failed"
            raise ConnectionError(msg)


class Rejected(NonRetryableError):
    """The remote side said no: retrying cannot help."""


class Picky(Workflow):
    """Raises the exception named by ``error`` on every attempt."""

    error: str

    @step(initial=True, final=True, retry=Retry(attempts=4, initial=1, non_retryable=KeyError))
    def go(self, ctx: Ctx) -> None:
        if self.error == "key":
            raise KeyError("sku")
        if self.error == "rejected":
            msg = "card declined"
            raise Rejected(msg)
        msg = "try again"
        raise ValueError(msg)


class Slow(Workflow):
    """An async step whose first ``hangs`` attempts never finish on their own."""

    hangs: int

    @step(initial=True, final=True, retry=Retry(attempts=2, initial=1), timeout=0.05)
    async def fetch(self, ctx: Ctx) -> None:
        if ctx.attempt <= self.hangs:
            await asyncio.sleep(60)


class Routed(Workflow):
    """on_error=ValueError routes a failure of ``risky`` (after its retries) to ``handle``."""

    error: str = ""

    @step(initial=True, retry=Retry(attempts=2, initial=1))
    def risky(self, ctx: Ctx) -> None:
        if self.error == "value":
            msg = "bad input"
            raise ValueError(msg)
        if self.error == "key":
            raise KeyError("missing")

    @after(risky, on_error=ValueError)
    @step(final=True)
    def handle(self, ctx: Ctx) -> None: ...

    @after(risky)
    @step(final=True)
    def done(self, ctx: Ctx) -> None: ...


class Trip(Workflow):
    """Four bookings, three of them compensable, and a final payment; ``fail_at`` fails one step for good."""

    fail_at: str = ""
    log: list[str] = attrs.field(factory=list[str])

    def act(self, ctx: Ctx) -> None:
        self.log.append(ctx.step)
        if ctx.step == self.fail_at:
            msg = f"{ctx.step} is unavailable"
            raise RuntimeError(msg)

    def undo(self, ctx: Ctx) -> None:
        self.log.append(f"{ctx.step} ({ctx.undoing})")

    @step(initial=True)
    def book_flight(self, ctx: Ctx) -> None:
        self.act(ctx)

    @book_flight.compensation
    def cancel_flight(self, ctx: Ctx) -> None:
        self.undo(ctx)

    @after(book_flight)
    @step
    def notify(self, ctx: Ctx) -> None:
        self.act(ctx)

    @after(notify)
    @step
    async def book_hotel(self, ctx: Ctx) -> None:
        self.act(ctx)

    @book_hotel.compensation
    async def cancel_hotel(self, ctx: Ctx) -> None:
        self.undo(ctx)

    @after(book_hotel)
    @step
    def book_car(self, ctx: Ctx) -> None:
        self.act(ctx)

    @book_car.compensation(retry=Retry(attempts=2, initial=7))
    def cancel_car(self, ctx: Ctx) -> None:
        self.undo(ctx)

    @after(book_car)
    @step(final=True)
    def pay(self, ctx: Ctx) -> None:
        self.act(ctx)


class Topup(Workflow):
    """A loop through a compensable step, then a final step that fails."""

    rounds: int = 0
    charge_keys: list[str] = attrs.field(factory=list[str])
    refund_keys: list[str] = attrs.field(factory=list[str])

    @step(initial=True)
    def open_account(self, ctx: Ctx) -> None: ...

    @after(open_account)
    @step
    def charge(self, ctx: Ctx) -> None:
        self.rounds += 1
        self.charge_keys.append(ctx.idempotency_key)

    @charge.compensation
    def refund(self, ctx: Ctx) -> None:
        self.refund_keys.append(ctx.idempotency_key)

    @goto(charge, when=lambda wf: wf.rounds < 2)
    @after(charge)
    @step
    def check(self, ctx: Ctx) -> None: ...

    @after(check)
    @step(final=True)
    def close(self, ctx: Ctx) -> None:
        msg = "ledger closed"
        raise RuntimeError(msg)


class Hanging(Workflow):
    """
    Reserves (compensable), then waits in an async step until cancelled.

    The waiting step notes what it sees in ``outside`` (a class attribute, not a
    variable): a cancelled attempt's changes to the variables are undone (issue 10).
    """

    outside: ClassVar[list[str]] = []
    log: list[str] = attrs.field(factory=list[str])

    @step(initial=True)
    def reserve(self, ctx: Ctx) -> None:
        self.log.append("reserve")

    @reserve.compensation
    def release(self, ctx: Ctx) -> None:
        self.log.append("release")

    @after(reserve)
    @step(final=True)
    async def wait_forever(self, ctx: Ctx) -> None:
        self.log.append("waiting")
        self.outside.append(f"{ctx.instance_id} waiting")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.outside.append(f"{ctx.instance_id} cancelled")
            raise


class Backoff(Workflow):
    """Reserves (compensable), then retries a failing step with a long backoff."""

    log: list[str] = attrs.field(factory=list[str])

    @step(initial=True)
    def reserve(self, ctx: Ctx) -> None:
        self.log.append("reserve")

    @reserve.compensation
    def release(self, ctx: Ctx) -> None:
        self.log.append("release")

    @after(reserve)
    @step(final=True, retry=Retry(attempts=3, initial=3600))
    def call(self, ctx: Ctx) -> None:
        self.log.append(f"call {ctx.attempt}")
        msg = "down"
        raise ConnectionError(msg)


class Visits(Workflow):
    """
    Records what each step's Ctx says; ``a`` fails twice, ``b`` is visited twice.

    In ``seen``, a class attribute: the failed attempts' changes to variables are undone.
    """

    seen: ClassVar[list[tuple[str, str, int, str]]] = []
    b_visits: int = 0

    def record(self, ctx: Ctx) -> None:
        self.seen.append((ctx.instance_id, ctx.step, ctx.attempt, ctx.idempotency_key))

    @step(initial=True, retry=Retry(attempts=3, initial=1))
    def a(self, ctx: Ctx) -> None:
        self.record(ctx)
        if ctx.attempt < 3:
            msg = "flaky"
            raise ConnectionError(msg)

    @after(a)
    @step
    def b(self, ctx: Ctx) -> None:
        self.record(ctx)
        self.b_visits += 1

    @goto(b, when=lambda wf: wf.b_visits < 2)
    @after(b)
    @step
    def c(self, ctx: Ctx) -> None:
        self.record(ctx)

    @after(c)
    @step(final=True)
    def d(self, ctx: Ctx) -> None:
        self.record(ctx)


@attrs.define
class Ledger:
    """An in-process service that remembers the idempotency keys it was called with."""

    keys: list[str] = attrs.field(factory=list[str])

    def post(self, amount: int, idempotency_key: str) -> str:
        self.keys.append(idempotency_key)
        return f"posted {amount}"


class Calls(Workflow):
    """Calls ``service.operation`` and keeps the result, or the ServiceNotFound message."""

    service: str
    operation: str
    result: str = ""
    error: str = ""
    key: str = ""

    @step(initial=True, final=True, retry=Retry(attempts=3, initial=1))
    async def call(self, ctx: Ctx) -> None:
        self.key = ctx.idempotency_key
        try:
            self.result = await ctx.call(self.service, self.operation, amount=5)
        except ServiceNotFound as exc:
            self.error = str(exc)


class CallsBlindly(Workflow):
    """Calls an unknown service without catching anything, with retries configured."""

    @step(initial=True, final=True, retry=Retry(attempts=3, initial=1))
    async def call(self, ctx: Ctx) -> None:
        await ctx.call("nowhere", "post")


class Logs(Workflow):
    """Logs through ctx.log."""

    @step(initial=True, final=True)
    def speak(self, ctx: Ctx) -> None:
        ctx.log.info("spoken", words=3)


# --------------------------------------------------------------------------- steps and choice


def test_sync_and_async_steps_run_in_order(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: sync step methods are called, async ones awaited, in edge order; result() returns the workflow."""

    async def scenario() -> tuple[list[str], InstanceStatus, list[tuple[str | None, str | None]]]:
        async with new_engine() as engine:
            handle = await engine.start(Linear())
            wf = await handle.result()
            return wf.trail, handle.status, transitions(handle.history())

    trail, status, path = run(scenario())
    assert ["first", "second", "third"] == trail
    assert InstanceStatus.COMPLETED == status
    expected_path = [("first", "second"), ("second", "third"), ("third", "@completed")]
    assert expected_path == path


@pytest.mark.parametrize(
    ("x", "taken"),
    [(20, "positive"), (5, "positive"), (0, "otherwise"), (-3, "otherwise")],
)
def test_exclusive_choice_takes_the_first_guard_that_holds_else_the_default(
    run: Runner, new_engine: EngineFactory, x: int, taken: str
) -> None:
    """Issue 2: guarded edges are tried in declaration order (x=20 satisfies both guards); the default is last."""

    async def scenario() -> list[tuple[str | None, str | None]]:
        async with new_engine() as engine:
            handle = await engine.start(Gateway(x=x))
            await handle.result()
            return transitions(handle.history())

    assert [("decide", taken), (taken, "@completed")] == run(scenario())


def test_guard_returning_a_non_bool_fails_the_instance_with_a_guard_error(
    run: Runner, new_engine: EngineFactory
) -> None:
    """Issue 2 / DESIGN §2: a guard must return a real bool; anything else fails (and compensates) the instance."""

    async def scenario() -> tuple[WorkflowFailed, bool, str | None]:
        async with new_engine() as engine:
            handle = await engine.start(SloppyGuard())
            failed = await failure_of(handle.result())
            return failed, handle.workflow.undone, engine.info(handle.instance_id).error

    failed, undone, error = run(scenario())
    assert InstanceStatus.FAILED == failed.status
    expected = (
        "collect: a guard raised GuardError: SloppyGuard: guard has_items of the edge "
        "collect -> ship returned 1 (int), not a bool"
    )
    assert expected == failed.reason
    assert expected == error
    assert undone, "the completed step was compensated"


def test_a_guard_that_raises_fails_the_instance(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: an exception in a guard fails the instance (it is not taken as False), naming the step and error."""

    async def scenario() -> WorkflowFailed:
        async with new_engine() as engine:
            handle = await engine.start(BrokenGuard())
            return await failure_of(handle.result())

    failed = run(scenario())
    assert InstanceStatus.FAILED == failed.status
    assert "price: a guard raised KeyError: 'total'" == failed.reason


def test_no_enabled_edge_fails_the_instance_and_compensates(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: when no guard holds and there is no default, the instance fails with a clear error and compensates."""

    async def scenario() -> tuple[WorkflowFailed, bool, list[tuple[str | None, str | None]]]:
        async with new_engine() as engine:
            handle = await engine.start(NoWayOn(x=0))
            failed = await failure_of(handle.result())
            return failed, handle.workflow.undone, compensations_done(handle.history())

    failed, undone, compensated = run(scenario())
    assert InstanceStatus.FAILED == failed.status
    expected = "NoWayOn.reserve: no outgoing edge could be taken (no guard held and there is no default edge)"
    assert expected == failed.reason
    assert undone
    assert [("reserve", "release")] == compensated


# --------------------------------------------------------------------------- retries and timeouts


def test_retries_back_off_exponentially_on_the_engine_clock(
    run: Runner, new_engine: EngineFactory, clock: VirtualClock
) -> None:
    """Issue 2: the wait before attempt n is initial * backoff**(n-2), capped at max_interval."""
    start = clock.now()

    async def scenario() -> list[HistoryEvent]:
        async with new_engine() as engine:
            handle = await engine.start(Flaky(failures=3))
            await handle.result()
            return handle.history()

    history = run(scenario())
    # Retry(attempts=5, initial=1, backoff=3, max_interval=5): waits 1, 3, then 9 capped to 5.
    retries = [(e.step, e.attempt, e.detail) for e in of_kind(history, K.RETRY_SCHEDULED)]
    assert [("call", 2, "in 1s"), ("call", 3, "in 3s"), ("call", 4, "in 5s")] == retries
    started_at = [e.at - start for e in of_kind(history, K.STEP_STARTED)]
    assert [0.0, 1.0, 4.0, 9.0] == started_at
    failed = [(e.attempt, e.detail) for e in of_kind(history, K.STEP_FAILED)]
    expected_failures = [
        (1, "ConnectionError: attempt 1 failed"),
        (2, "ConnectionError: attempt 2 failed"),
        (3, "ConnectionError: attempt 3 failed"),
    ]
    assert expected_failures == failed
    assert [1, 2, 3, 4] == attempts(history, "call")
    assert 9.0 == clock.now() - start


def test_a_step_that_keeps_failing_fails_the_instance_after_its_last_attempt(
    run: Runner, new_engine: EngineFactory, clock: VirtualClock
) -> None:
    """Issue 2: after `attempts` attempts the failure is final; the error of the last attempt is reported."""
    start = clock.now()

    async def scenario() -> tuple[WorkflowFailed, list[HistoryEvent]]:
        async with new_engine() as engine:
            handle = await engine.start(Flaky(failures=99))
            return await failure_of(handle.result()), handle.history()

    failed, history = run(scenario())
    assert InstanceStatus.FAILED == failed.status
    assert "call: ConnectionError: attempt 5 failed" == failed.reason
    assert [1, 2, 3, 4, 5] == attempts(history, "call")
    assert 1 + 3 + 5 + 5 == clock.now() - start


@pytest.mark.parametrize(
    ("error", "tries", "reason"),
    [
        ("key", 1, "go: KeyError: 'sku'"),
        ("rejected", 1, "go: Rejected: card declined"),
        ("value", 4, "go: ValueError: try again"),
    ],
)
def test_non_retryable_errors_are_not_retried(
    run: Runner, new_engine: EngineFactory, error: str, tries: int, reason: str
) -> None:
    """Issue 2: Retry(non_retryable=...) types and NonRetryableError subclasses fail the step at once."""

    async def scenario() -> tuple[WorkflowFailed, int, list[EventKind]]:
        async with new_engine() as engine:
            handle = await engine.start(Picky(error=error))
            failed = await failure_of(handle.result())
            return failed, len(attempts(handle.history(), "go")), kinds(handle.history())

    failed, actual_tries, history_kinds = run(scenario())
    assert (tries, reason) == (actual_tries, failed.reason)
    assert tries - 1 == history_kinds.count(K.RETRY_SCHEDULED)


def test_each_attempt_of_an_async_step_has_its_own_timeout(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: timeout= limits every attempt of an async step; a timed-out attempt is a failure and is retried."""

    async def scenario() -> tuple[InstanceStatus, list[tuple[int, str | None]]]:
        async with new_engine() as engine:
            handle = await engine.start(Slow(hangs=1))
            await handle.result()
            history = handle.history()
            return handle.status, [(e.attempt, e.detail) for e in of_kind(history, K.STEP_FAILED)]

    status, failures = run(scenario())
    assert InstanceStatus.COMPLETED == status
    assert [1] == [attempt for attempt, _ in failures]
    assert all((detail or "").startswith("TimeoutError") for _, detail in failures)


def test_a_step_that_times_out_on_every_attempt_fails(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: when every attempt times out, the instance fails with a TimeoutError."""

    async def scenario() -> tuple[WorkflowFailed, list[int]]:
        async with new_engine() as engine:
            handle = await engine.start(Slow(hangs=2))
            failed = await failure_of(handle.result())
            return failed, [e.attempt for e in of_kind(handle.history(), K.STEP_FAILED)]

    failed, failed_attempts = run(scenario())
    assert InstanceStatus.FAILED == failed.status
    assert (failed.reason or "").startswith("fetch: TimeoutError")
    assert [1, 2] == failed_attempts


# --------------------------------------------------------------------------- error routing


def test_on_error_routes_a_matching_failure_after_the_retries(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: @after(src, on_error=ValueError) catches src's ValueError once its retries are spent."""

    async def scenario() -> tuple[InstanceStatus, int, list[tuple[str | None, str | None]]]:
        async with new_engine() as engine:
            handle = await engine.start(Routed(error="value"))
            await handle.result()
            return handle.status, len(attempts(handle.history(), "risky")), transitions(handle.history())

    status, tries, path = run(scenario())
    assert (InstanceStatus.COMPLETED, 2) == (status, tries)
    assert [("risky", "handle"), ("handle", "@completed")] == path


def test_on_error_does_not_route_other_errors(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: an error that is not an instance of on_error's types fails the instance as usual."""

    async def scenario() -> tuple[WorkflowFailed, list[tuple[str | None, str | None]]]:
        async with new_engine() as engine:
            handle = await engine.start(Routed(error="key"))
            return await failure_of(handle.result()), transitions(handle.history())

    failed, path = run(scenario())
    assert (InstanceStatus.FAILED, "risky: KeyError: 'missing'") == (failed.status, failed.reason)
    no_transitions: list[tuple[str | None, str | None]] = []
    assert no_transitions == path


def test_a_step_that_succeeds_takes_its_completion_edge_not_the_error_route(
    run: Runner, new_engine: EngineFactory
) -> None:
    """Issue 2: the on_error edge is not a completion edge."""

    async def scenario() -> list[tuple[str | None, str | None]]:
        async with new_engine() as engine:
            handle = await engine.start(Routed())
            await handle.result()
            return transitions(handle.history())

    assert [("risky", "done"), ("done", "@completed")] == run(scenario())


# --------------------------------------------------------------------------- the saga


def test_compensations_run_in_reverse_completion_order_once_each(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: on failure the compensations of the completed steps run newest first, each once."""

    async def scenario() -> tuple[WorkflowFailed, list[str], list[tuple[str | None, str | None]]]:
        async with new_engine() as engine:
            handle = await engine.start(Trip(fail_at="pay"))
            failed = await failure_of(handle.result())
            return failed, handle.workflow.log, compensations_done(handle.history())

    failed, log, compensated = run(scenario())
    assert (InstanceStatus.FAILED, "pay: RuntimeError: pay is unavailable") == (failed.status, failed.reason)
    expected_log = [  # no "pay": its failed attempt's change to the log is undone
        "book_flight",
        "notify",
        "book_hotel",
        "book_car",
        "cancel_car (book_car)",
        "cancel_hotel (book_hotel)",
        "cancel_flight (book_flight)",
    ]
    assert expected_log == log
    expected = [("book_car", "cancel_car"), ("book_hotel", "cancel_hotel"), ("book_flight", "cancel_flight")]
    assert expected == compensated


def test_only_completed_steps_are_compensated(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: the step that failed, and the steps never reached, are not compensated."""

    async def scenario() -> list[tuple[str | None, str | None]]:
        async with new_engine() as engine:
            handle = await engine.start(Trip(fail_at="book_hotel"))
            await failure_of(handle.result())
            return compensations_done(handle.history())

    assert [("book_flight", "cancel_flight")] == run(scenario())


def test_compensations_are_retried_with_their_own_policy(
    run: Runner, new_engine: EngineFactory, clock: VirtualClock
) -> None:
    """Issue 2: a failing compensation is retried (default Retry(3, 0.5s, x2); or its own retry=) before moving on."""

    def fail_twice(ctx: Ctx) -> None:
        if ctx.undoing == "book_hotel" and ctx.attempt <= 2:
            msg = f"hotel desk busy ({ctx.attempt})"
            raise ConnectionError(msg)
        if ctx.undoing == "book_car" and ctx.attempt == 1:
            msg = "car desk busy"
            raise ConnectionError(msg)

    async def scenario() -> tuple[InstanceStatus, list[HistoryEvent], list[str]]:
        async with new_engine(before_attempt=fail_twice) as engine:
            handle = await engine.start(Trip(fail_at="pay"))
            await failure_of(handle.result())
            return handle.status, handle.history(), handle.workflow.log

    status, history, log = run(scenario())
    assert InstanceStatus.FAILED == status
    saga_kinds = {K.COMPENSATION_STARTED, K.COMPENSATION_FAILED, K.COMPENSATION_COMPLETED, K.RETRY_SCHEDULED}
    saga = [(e.kind, e.step, e.attempt, e.detail) for e in history if e.kind in saga_kinds and e.step != "pay"]
    assert [
        (K.COMPENSATION_STARTED, "book_car", 1, "cancel_car"),
        (K.COMPENSATION_FAILED, "book_car", 1, "ConnectionError: car desk busy"),
        (K.RETRY_SCHEDULED, "book_car", 2, "in 7s"),
        (K.COMPENSATION_STARTED, "book_car", 2, "cancel_car"),
        (K.COMPENSATION_COMPLETED, "book_car", 2, "cancel_car"),
        (K.COMPENSATION_STARTED, "book_hotel", 1, "cancel_hotel"),
        (K.COMPENSATION_FAILED, "book_hotel", 1, "ConnectionError: hotel desk busy (1)"),
        (K.RETRY_SCHEDULED, "book_hotel", 2, "in 0.5s"),
        (K.COMPENSATION_STARTED, "book_hotel", 2, "cancel_hotel"),
        (K.COMPENSATION_FAILED, "book_hotel", 2, "ConnectionError: hotel desk busy (2)"),
        (K.RETRY_SCHEDULED, "book_hotel", 3, "in 1s"),
        (K.COMPENSATION_STARTED, "book_hotel", 3, "cancel_hotel"),
        (K.COMPENSATION_COMPLETED, "book_hotel", 3, "cancel_hotel"),
        (K.COMPENSATION_STARTED, "book_flight", 1, "cancel_flight"),
        (K.COMPENSATION_COMPLETED, "book_flight", 1, "cancel_flight"),
    ] == saga
    # The injected faults struck before the bodies: each body ran exactly once.
    undo_lines = [line for line in log if line.startswith("cancel_")]
    assert ["cancel_car (book_car)", "cancel_hotel (book_hotel)", "cancel_flight (book_flight)"] == undo_lines
    waits = 7 + 0.5 + 1
    compensation_started = of_kind(history, K.COMPENSATION_STARTED)
    assert waits == compensation_started[-1].at - compensation_started[0].at
    assert clock.now() == history[-1].at


def test_a_loop_through_a_compensable_step_compensates_each_visit(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: a step completed twice (a loop) is compensated twice, newest visit first."""

    async def scenario() -> tuple[Topup, list[tuple[str | None, str | None]]]:
        async with new_engine() as engine:
            handle = await engine.start(Topup())
            await failure_of(handle.result())
            return handle.workflow, compensations_done(handle.history())

    wf, compensated = run(scenario())
    assert 2 == wf.rounds
    assert [("charge", "refund"), ("charge", "refund")] == compensated
    assert 2 == len(set(wf.charge_keys)), "two visits, two idempotency keys"
    assert 2 == len(set(wf.refund_keys)), "each visit is undone under its own key"


def test_a_compensation_that_fails_for_good_leaves_the_instance_compensation_failed(
    run: Runner, new_engine: EngineFactory
) -> None:
    """Issue 2: a compensation failing after its retries stops the saga in a visible compensation_failed state."""

    def hotel_desk_closed(ctx: Ctx) -> None:
        if ctx.undoing == "book_hotel":
            msg = "hotel desk closed"
            raise ConnectionError(msg)

    async def scenario() -> tuple[WorkflowFailed, list[HistoryEvent], list[str], list[str], list[str]]:
        async with new_engine(before_attempt=hotel_desk_closed) as engine:
            handle = await engine.start(Trip(fail_at="pay"))
            failed = await failure_of(handle.result())
            stuck = [i.id for i in engine.instances(status=InstanceStatus.COMPENSATION_FAILED)]
            failed_ids = [i.id for i in engine.instances(status=InstanceStatus.FAILED)]
            return failed, handle.history(), handle.workflow.log, stuck, [handle.instance_id, *failed_ids]

    failed, history, log, stuck, ids = run(scenario())
    assert InstanceStatus.COMPENSATION_FAILED == failed.status
    expected_reason = (
        "compensation cancel_hotel of book_hotel failed: ConnectionError: hotel desk closed "
        "(after: pay: RuntimeError: pay is unavailable)"
    )
    assert expected_reason == failed.reason
    assert [ids[0]] == stuck
    assert [ids[0]] == ids, "not listed as failed"
    compensation_kinds = {K.COMPENSATION_STARTED, K.COMPENSATION_FAILED, K.COMPENSATION_COMPLETED}
    saga = [(e.kind, e.step, e.attempt) for e in history if e.kind in compensation_kinds]
    assert (K.COMPENSATION_FAILED, "book_hotel", 3) == saga[-1]
    assert [("book_car", "cancel_car")] == compensations_done(history)
    assert "cancel_flight (book_flight)" not in log, "the older compensations did not run"
    assert (K.STATUS_CHANGED, "compensation_failed") == (history[-1].kind, history[-1].detail)


# --------------------------------------------------------------------------- cancel


def test_cancel_an_in_flight_async_step_delivers_cancelled_error_and_compensates(
    run: Runner, new_engine: EngineFactory
) -> None:
    """Issue 2: cancel() interrupts the running step with CancelledError, then compensates; the instance ends cancelled."""

    async def scenario() -> tuple[InstanceStatus, list[str], list[HistoryEvent], list[str]]:
        async with new_engine() as engine:
            handle = await engine.start(Hanging())
            await eventually(lambda: "waiting" in handle.workflow.log)
            status = await engine.cancel(handle.instance_id, reason="customer left")
            seen = [line.split()[1] for line in Hanging.outside if line.startswith(handle.instance_id + " ")]
            return status, handle.workflow.log, handle.history(), seen

    status, log, history, seen = run(scenario())
    assert InstanceStatus.CANCELLED == status
    assert ["waiting", "cancelled"] == seen
    assert ["reserve", "release"] == log, "the cancelled attempt's change is undone before the saga"
    assert (K.STATUS_CHANGED, "cancelled") == (history[-1].kind, history[-1].detail)
    cancel_events = [(e.kind, e.step, e.detail) for e in history if e.kind in {K.CANCEL_REQUESTED, K.STEP_CANCELLED}]
    expected = [
        (K.CANCEL_REQUESTED, None, "customer left"),
        (K.STEP_CANCELLED, "wait_forever", "customer left"),
    ]
    assert expected == cancel_events
    assert [("reserve", "release")] == compensations_done(history)


def test_result_of_a_cancelled_instance_raises_workflow_failed(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: result() of a cancelled instance raises WorkflowFailed with status cancelled and the reason."""

    async def scenario() -> WorkflowFailed:
        async with new_engine() as engine:
            handle = await engine.start(Hanging())
            await eventually(lambda: "waiting" in handle.workflow.log)
            await engine.cancel(handle.instance_id, reason="customer left")
            return await failure_of(handle.result())

    failed = run(scenario())
    assert (InstanceStatus.CANCELLED, "cancelled: customer left") == (failed.status, failed.reason)


def test_cancel_without_compensation(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: cancel(compensate=False) ends the instance cancelled and runs no compensation."""

    async def scenario() -> tuple[InstanceStatus, list[str], list[EventKind], str | None]:
        async with new_engine() as engine:
            handle = await engine.start(Hanging())
            await eventually(lambda: "waiting" in handle.workflow.log)
            status = await engine.cancel(handle.instance_id, reason="duplicate", compensate=False)
            return status, handle.workflow.log, kinds(handle.history()), engine.info(handle.instance_id).error

    status, log, history_kinds, error = run(scenario())
    assert InstanceStatus.CANCELLED == status
    assert ["reserve"] == log
    assert K.COMPENSATION_STARTED not in history_kinds
    assert "cancelled: duplicate" == error


def test_cancel_an_instance_parked_on_a_retry_timer(run: Runner) -> None:
    """Issue 2: cancelling during a retry's backoff stops the retries and compensates."""
    clock = VirtualClock(autojump=False)

    async def scenario() -> tuple[InstanceStatus, list[str], list[int]]:
        async with Engine(MemoryStore(), clock=clock) as engine:
            handle = await engine.start(Backoff())
            await eventually(lambda: K.RETRY_SCHEDULED in kinds(handle.history()))
            status = await engine.cancel(handle.instance_id, reason="give up")
            # The retry's due time passes: the cancelled instance must not attempt again.
            clock.advance(10 * 3600)
            for _ in range(20):
                await asyncio.sleep(0)
            return status, handle.workflow.log, attempts(handle.history(), "call")

    status, log, tried = run(scenario())
    assert InstanceStatus.CANCELLED == status
    assert ["reserve", "release"] == log, "the failed attempt's change was undone"
    assert [1] == tried


def test_cancel_a_finished_instance_raises_instance_finished(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: a terminal instance cannot be cancelled."""

    async def scenario() -> tuple[InstanceFinished, str]:
        async with new_engine() as engine:
            handle = await engine.start(Linear())
            await handle.result()
            with pytest.raises(InstanceFinished) as err:
                await engine.cancel(handle.instance_id)
            return err.value, handle.instance_id

    err, instance_id = run(scenario())
    assert (instance_id, InstanceStatus.COMPLETED) == (err.instance_id, err.status)
    assert f"instance {instance_id} is already completed: cannot cancel" == str(err)


def test_cancel_an_unknown_instance_raises_instance_not_found(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: an unknown instance id is a LookupError naming the id."""

    async def scenario() -> InstanceNotFound:
        async with new_engine() as engine:
            with pytest.raises(InstanceNotFound) as err:
                await engine.cancel("no-such-id")
            return err.value

    err = run(scenario())
    assert isinstance(err, LookupError)
    assert "no-such-id" == err.instance_id


# --------------------------------------------------------------------------- start


def test_start_rejects_a_variable_of_the_wrong_type(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: start() checks the variables against the declared field types, naming the field."""
    amount = cast("float", "12")

    async def scenario() -> tuple[WorkflowInputError, int]:
        async with new_engine() as engine:
            with pytest.raises(WorkflowInputError) as err:
                await engine.start(OrderProcess(order_id="o-1", customer_id="c-1", amount=amount))
            return err.value, len(engine.instances())

    err, count = run(scenario())
    assert isinstance(err, TypeError)
    assert ("OrderProcess", "amount") == (err.workflow, err.field_path)
    assert "OrderProcess.amount: expected float but got '12' (type=str)" == str(err)
    assert 0 == count, "nothing was started"


def test_start_names_the_path_of_a_wrong_nested_value(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: a wrong element inside a container is reported with its index."""
    items = cast("list[Item]", [Item("BOOK", 1), "DESK"])

    async def scenario() -> WorkflowInputError:
        async with new_engine() as engine:
            with pytest.raises(WorkflowInputError) as err:
                await engine.start(OrderProcess(order_id="o-1", customer_id="c-1", amount=5.0, items=items))
            return err.value

    assert "items[1]" == run(scenario()).field_path


def test_the_same_object_cannot_be_started_twice(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: each workflow object is one run; starting it again is an input error."""

    async def scenario() -> tuple[WorkflowInputError, int]:
        async with new_engine() as engine:
            wf = Linear()
            await engine.start(wf)
            with pytest.raises(WorkflowInputError) as err:
                await engine.start(wf)
            return err.value, len(engine.instances())

    err, count = run(scenario())
    assert "Linear.<instance>: this object was started already; construct a new one for a new instance" == str(err)
    assert 1 == count


def test_start_rejects_something_that_is_not_a_workflow(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: start() needs an instance of a concrete Workflow subclass."""
    not_a_workflow = cast("Workflow", object())

    async def scenario() -> None:
        async with new_engine() as engine:
            with pytest.raises(TypeError, match="start\\(\\) needs an instance of a concrete Workflow subclass"):
                await engine.start(not_a_workflow)

    run(scenario())


# --------------------------------------------------------------------------- Ctx


def test_ctx_describes_each_attempt_and_keys_are_stable_per_visit(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: Ctx has the instance id, step and attempt; idempotency_key is per visit, the same across retries."""

    async def scenario() -> tuple[str, list[tuple[str, str, int, str]]]:
        async with new_engine() as engine:
            handle = await engine.start(Visits())
            await handle.result()
            return handle.instance_id, [entry for entry in Visits.seen if entry[0] == handle.instance_id]

    instance_id, seen = run(scenario())
    expected = [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("c", 1), ("b", 1), ("c", 1), ("d", 1)]
    assert expected == [(name, attempt) for _, name, attempt, _ in seen]
    assert {instance_id} == {i for i, _, _, _ in seen}
    keys = [key for _, _, _, key in seen]
    assert 1 == len(set(keys[0:3])), "retries of one visit share the key"
    assert len(keys) - 2 == len(set(keys)), "every other visit has a key of its own"


def test_services_receive_the_visit_idempotency_key(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: ctx.call reaches the in-process service, which gets the step visit's idempotency key."""
    ledger = Ledger()

    async def scenario() -> Calls:
        async with new_engine(services={"ledger": ledger}) as engine:
            handle = await engine.start(Calls(service="ledger", operation="post"))
            return await handle.result()

    wf = run(scenario())
    assert ("posted 5", "") == (wf.result, wf.error)
    assert [wf.key] == ledger.keys


@pytest.mark.parametrize(
    ("service", "operation", "message"),
    [
        ("nowhere", "post", "no service 'nowhere' is registered (registered: ledger)"),
        ("ledger", "delete", "service 'ledger' has no operation 'delete' (it has: post)"),
    ],
)
def test_calling_an_unknown_service_or_operation_raises_service_not_found(
    run: Runner, new_engine: EngineFactory, service: str, operation: str, message: str
) -> None:
    """Issue 2: ctx.call to an unregistered service or operation raises ServiceNotFound, naming what exists."""

    async def scenario() -> Calls:
        async with new_engine(services={"ledger": Ledger()}) as engine:
            handle = await engine.start(Calls(service=service, operation=operation))
            return await handle.result()

    assert message == run(scenario()).error


def test_service_not_found_is_not_retried(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: a call to an unknown service fails the step at once: retrying cannot register the service."""

    async def scenario() -> tuple[WorkflowFailed, list[int]]:
        async with new_engine() as engine:
            handle = await engine.start(CallsBlindly())
            return await failure_of(handle.result()), attempts(handle.history(), "call")

    failed, tried = run(scenario())
    assert "call: ServiceNotFound: no service 'nowhere' is registered (registered: none)" == failed.reason
    assert [1] == tried


def test_ctx_log_is_bound_to_the_instance_and_step(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: ctx.log is a structlog logger bound to the instance, workflow, step and attempt."""

    async def scenario() -> str:
        async with new_engine() as engine:
            handle = await engine.start(Logs())
            await handle.result()
            return handle.instance_id

    with structlog.testing.capture_logs() as logs:
        instance_id = run(scenario())
    spoken = [entry for entry in logs if entry["event"] == "spoken"]
    expected = {
        "event": "spoken",
        "words": 3,
        "instance_id": instance_id,
        "workflow": "Logs",
        "step": "speak",
        "attempt": 1,
        "log_level": "info",
    }
    assert [expected] == spoken


# --------------------------------------------------------------------------- history, progress, events


def test_history_records_every_kind_of_event_with_timestamps(
    run: Runner, new_engine: EngineFactory, clock: VirtualClock
) -> None:
    """Issue 2: history() holds step starts/ends/attempts/errors, transitions, tasks, cancels, compensations, status."""
    start = clock.now()

    def fail_cancel_flight_once(ctx: Ctx) -> None:
        if ctx.step == "cancel_flight" and ctx.attempt == 1:
            msg = "busy"
            raise ConnectionError(msg)

    async def scenario() -> list[list[HistoryEvent]]:
        async with new_engine(
            services=order_services(),
            before_attempt=fail_cancel_flight_once,
        ) as engine:
            flaky = await engine.start(Flaky(failures=1))
            await flaky.result()
            trip = await engine.start(Trip(fail_at="pay"))
            await failure_of(trip.result())
            order = await engine.start(OrderProcess(order_id="o-1", customer_id="c-1", amount=5000.0))
            await order.wait_idle()
            [task] = engine.tasks(user="manager")
            await engine.complete_task(task.id, user="manager", form=Approval(approved=True))
            await order.result()
            waiting = await engine.start(OrderProcess(order_id="o-2", customer_id="c-1", amount=5000.0))
            await waiting.wait_idle()
            await engine.cancel(waiting.instance_id, reason="changed mind")
            hanging = await engine.start(Hanging())
            await eventually(lambda: "waiting" in hanging.workflow.log)
            await engine.cancel(hanging.instance_id)
            return [handle.history() for handle in (flaky, trip, order, waiting, hanging)]

    histories = run(scenario())
    seen = {e.kind for history in histories for e in history}
    assert ISSUE_2_KINDS <= seen, ISSUE_2_KINDS - seen
    for history in histories:
        assert K.INSTANCE_STARTED == history[0].kind
        times = [e.at for e in history]
        assert sorted(times) == times, "oldest first"
        assert all(start <= t <= clock.now() for t in times)
        assert history[-1].when.tzinfo is not None
    flaky_history = histories[0]
    assert [("call", "@completed")] == transitions(flaky_history)


def test_history_of_the_approved_order_reads_as_the_run(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: transitions name their edge (source and destination); the task entries say who completed it."""

    async def scenario() -> tuple[list[tuple[EventKind, str | None, int, str | None]], str]:
        async with new_engine(services=order_services()) as engine:
            handle = await engine.start(OrderProcess(order_id="o-1", customer_id="c-1", amount=5000.0))
            await handle.wait_idle()
            [task] = engine.tasks()
            await engine.complete_task(task.id, user="manager", form=Approval(approved=True))
            await handle.result()
            return [(e.kind, e.step, e.attempt, e.detail) for e in handle.history()], task.id

    history, task_id = run(scenario())
    expected = [
        (K.INSTANCE_STARTED, None, 0, "OrderProcess version 1"),
        (K.STEP_STARTED, "validate_order", 1, None),
        (K.STEP_COMPLETED, "validate_order", 1, None),
        (K.TRANSITION, "validate_order", 0, "check_inventory"),
        (K.STEP_STARTED, "check_inventory", 1, None),
        (K.STEP_COMPLETED, "check_inventory", 1, None),
        (K.TRANSITION, "check_inventory", 0, "manual_approval"),
        (K.TASK_CREATED, "manual_approval", 0, task_id),
        (K.TASK_COMPLETED, "manual_approval", 0, "manager"),
        (K.STEP_STARTED, "manual_approval", 1, None),
        (K.STEP_COMPLETED, "manual_approval", 1, None),
        (K.TRANSITION, "manual_approval", 0, "process_payment"),
        (K.STEP_STARTED, "process_payment", 1, None),
        (K.STEP_COMPLETED, "process_payment", 1, None),
        (K.TRANSITION, "process_payment", 0, "update_inventory"),
        (K.STEP_STARTED, "update_inventory", 1, None),
        (K.STEP_COMPLETED, "update_inventory", 1, None),
        (K.TRANSITION, "update_inventory", 0, "send_confirmation"),
        (K.STEP_STARTED, "send_confirmation", 1, None),
        (K.STEP_COMPLETED, "send_confirmation", 1, None),
        (K.TRANSITION, "send_confirmation", 0, "@completed"),
        (K.STATUS_CHANGED, None, 0, "completed"),
    ]
    without_status = [e for e in history if e[0] is not K.STATUS_CHANGED]
    assert [e for e in expected if e[0] is not K.STATUS_CHANGED] == without_status
    assert expected[-1] == history[-1]


def test_history_records_every_status_change(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: every status change (to waiting at a human task and back to running) is in the history."""

    async def scenario() -> list[str | None]:
        async with new_engine(services=order_services()) as engine:
            handle = await engine.start(OrderProcess(order_id="o-1", customer_id="c-1", amount=5000.0))
            await handle.wait_idle()
            [task] = engine.tasks()
            await engine.complete_task(task.id, user="manager", form=Approval(approved=True))
            await handle.result()
            return [e.detail for e in of_kind(handle.history(), K.STATUS_CHANGED)]

    assert ["waiting", "running", "completed"] == run(scenario())


def test_progress_counts_steps_done_and_the_fewest_steps_left(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: progress() says the current step, steps done, the fewest steps left and the fraction."""

    async def scenario() -> tuple[str, list[tuple[InstanceStatus, str | None, int, int, float]]]:
        async with new_engine(services=order_services()) as engine:
            handle = await engine.start(OrderProcess(order_id="o-1", customer_id="c-1", amount=5000.0))
            snapshots = [handle.progress()]
            await handle.wait_idle()
            snapshots.append(engine.progress(handle.instance_id))
            [task] = engine.tasks()
            await engine.complete_task(task.id, user="manager", form=Approval(approved=True))
            await handle.result()
            snapshots.append(handle.progress())
            assert {handle.instance_id} == {p.instance_id for p in snapshots}
            return handle.instance_id, [(p.status, p.step, p.steps_done, p.steps_left, p.fraction) for p in snapshots]

    _, snapshots = run(scenario())
    assert [
        # Just started: at the initial step; the shortest way to the end is 5 steps (no approval).
        (InstanceStatus.RUNNING, "validate_order", 0, 5, 0.0),
        # Parked at the approval: 2 done, 4 left (approval, payment, inventory, confirmation).
        (InstanceStatus.WAITING, "manual_approval", 2, 4, 2 / 6),
        (InstanceStatus.COMPLETED, None, 6, 0, 1.0),
    ] == snapshots


def test_subscribers_see_every_history_event(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: subscribe() receives every history entry of every instance, in order, until unsubscribed."""
    received: list[tuple[str, HistoryEvent]] = []

    async def scenario() -> tuple[dict[str, list[HistoryEvent]], str]:
        async with new_engine() as engine:
            unsubscribe = engine.subscribe(lambda instance_id, event: received.append((instance_id, event)))
            trip = await engine.start(Trip(fail_at="pay"))
            linear = await engine.start(Linear())
            await failure_of(trip.result())
            await linear.result()
            unsubscribe()
            after_unsubscribe = await engine.start(Linear())
            await after_unsubscribe.result()
            histories = {trip.instance_id: trip.history(), linear.instance_id: linear.history()}
            return histories, after_unsubscribe.instance_id

    histories, unseen = run(scenario())
    for instance_id, history in histories.items():
        assert history == [event for i, event in received if i == instance_id]
    assert unseen not in {i for i, _ in received}


def test_a_failing_subscriber_does_not_break_the_instance(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: an exception in a subscriber is logged, never propagated into the run."""

    def broken(instance_id: str, event: HistoryEvent) -> None:
        msg = "subscriber bug"
        raise RuntimeError(msg)

    async def scenario() -> InstanceStatus:
        async with new_engine() as engine:
            engine.subscribe(broken)
            handle = await engine.start(Linear())
            await handle.result()
            return handle.status

    assert InstanceStatus.COMPLETED == run(scenario())


def test_machine_stays_shared_with_no_models_after_running_instances(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2 / DESIGN §2: running instances never adds them to the class's machine."""

    async def scenario() -> None:
        async with new_engine() as engine:
            for x in (1, -1, 20):
                await (await engine.start(Gateway(x=x))).result()

    run(scenario())
    no_models: list[object] = []
    assert no_models == machine_of(Gateway).models


def test_many_instances_run_concurrently_without_mixing_up_their_runs(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: instances on one engine (more than its workers) keep their own variables, history and saga."""

    async def scenario() -> list[tuple[str, InstanceStatus, list[str], list[tuple[str | None, str | None]]]]:
        async with new_engine() as engine:
            plans = ["pay", "book_car", "notify", ""] * 50
            handles = [await engine.start(Trip(fail_at=fail_at)) for fail_at in plans]
            for handle in handles:
                await engine.wait_instance(handle.instance_id)
            return [(h.workflow.fail_at, h.status, h.workflow.log, compensations_done(h.history())) for h in handles]

    expected: dict[str, tuple[InstanceStatus, list[str], list[tuple[str | None, str | None]]]] = {
        "pay": (  # the failing step's own line is undone with the rest of its attempt's changes
            InstanceStatus.FAILED,
            ["book_flight", "notify", "book_hotel", "book_car"],
            [("book_car", "cancel_car"), ("book_hotel", "cancel_hotel"), ("book_flight", "cancel_flight")],
        ),
        "book_car": (
            InstanceStatus.FAILED,
            ["book_flight", "notify", "book_hotel"],
            [("book_hotel", "cancel_hotel"), ("book_flight", "cancel_flight")],
        ),
        "notify": (InstanceStatus.FAILED, ["book_flight"], [("book_flight", "cancel_flight")]),
        "": (InstanceStatus.COMPLETED, ["book_flight", "notify", "book_hotel", "book_car", "pay"], []),
    }
    results = run(scenario())
    assert 200 == len(results)
    for fail_at, status, log, compensated in results:
        steps = [line for line in log if " (" not in line]
        assert expected[fail_at] == (status, steps, compensated)


def test_instances_are_listed_by_status(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: instances(status=...) filters the snapshots by status."""

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        async with new_engine() as engine:
            ok = await engine.start(Linear())
            await ok.result()
            bad = await engine.start(Trip(fail_at="notify"))
            await failure_of(bad.result())
            completed = [i.id for i in engine.instances(status=InstanceStatus.COMPLETED)]
            failed = [i.id for i in engine.instances(status=InstanceStatus.FAILED)]
            return [ok.instance_id, bad.instance_id], completed, failed

    (ok, bad), completed, failed = run(scenario())
    assert ([ok], [bad]) == (completed, failed)
