"""
Issue 3: the engine behaves the same on a MemoryStore and on a SqliteStore.

Every scenario runs twice through the parametrized ``store`` fixture, once per
store, and asserts the same outcome and the same history, entry by entry:
linear completion, retries with backoff, compensation in reverse order,
``compensation_failed`` then ``retry_compensation``, human tasks (completed,
refused to the wrong user, refused with the wrong form) and cancellation with and
without compensation.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING

import attrs
import pytest

from statemachine_orch import (
    Ctx,
    Engine,
    InstanceStateError,
    InstanceStatus,
    NonRetryableError,
    Retry,
    Store,
    TaskFormError,
    TaskNotAuthorized,
    TaskStatus,
    VirtualClock,
    Workflow,
    WorkflowFailed,
    after,
    human_task,
    step,
)
from tests.integration.helpers import Entry, entries

if TYPE_CHECKING:
    from tests.conftest import Runner


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


class Flaky(Workflow):
    """A call that fails its first *failures* attempts; four attempts, 1 s then doubling."""

    failures: int

    @step(initial=True, retry=Retry(attempts=4, initial=timedelta(seconds=1), backoff=2.0))
    def call(self, ctx: Ctx) -> None:
        if ctx.attempt <= self.failures:
            msg = f"attempt {ctx.attempt} lost"
            raise ConnectionError(msg)

    @after(call)
    @step(final=True)
    def done(self, ctx: Ctx) -> None: ...


class Shipment(Workflow):
    """Reserve and charge (both undoable), label, then ship, which fails for good when asked to."""

    carrier_down: bool = False
    undone: list[str] = attrs.field(factory=list[str])

    @step(initial=True)
    def reserve(self, ctx: Ctx) -> None: ...

    @reserve.compensation
    def release(self, ctx: Ctx) -> None:
        self.undone.append("release")

    @after(reserve)
    @step
    def charge(self, ctx: Ctx) -> None: ...

    @charge.compensation(retry=Retry(attempts=2, initial=timedelta(seconds=5)))
    def refund(self, ctx: Ctx) -> None:
        self.undone.append("refund")

    @after(charge)
    @step
    def label(self, ctx: Ctx) -> None: ...

    @after(label)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None:
        if self.carrier_down:
            msg = "carrier down"
            raise NonRetryableError(msg)


@attrs.frozen
class Verdict:
    """The reviewer's answer."""

    approved: bool
    note: str = ""


@attrs.frozen
class Ballot:
    """A form of another type with the same shape."""

    approved: bool


class Review(Workflow):
    """Reserve (undoable), then a review by alice or any editor, then publish."""

    verdict: Verdict | None = None
    undone: list[str] = attrs.field(factory=list[str])

    @step(initial=True)
    def reserve(self, ctx: Ctx) -> None: ...

    @reserve.compensation
    def release(self, ctx: Ctx) -> None:
        self.undone.append("release")

    @after(reserve)
    @human_task(assignee="alice", candidate_groups=("editors",), form=Verdict)
    def review(self, ctx: Ctx, form: Verdict) -> None:
        self.verdict = form

    @after(review)
    @step(final=True)
    def publish(self, ctx: Ctx) -> None: ...


def story(engine: Engine, instance_id: str) -> list[Entry]:
    """The instance's history without times, its id written ``ID``."""
    return entries(engine.history(instance_id), instance_id)


def offsets(engine: Engine, instance_id: str, start: float) -> list[float]:
    """When each history entry happened, in seconds after *start*."""
    return [e.at - start for e in engine.history(instance_id)]


# --------------------------------------------------------------------------- scenarios


LINEAR: list[Entry] = [
    ("instance_started", None, 0, "Linear version 1"),
    ("step_started", "first", 1, None),
    ("step_completed", "first", 1, None),
    ("transition", "first", 0, "second"),
    ("step_started", "second", 1, None),
    ("step_completed", "second", 1, None),
    ("transition", "second", 0, "third"),
    ("step_started", "third", 1, None),
    ("step_completed", "third", 1, None),
    ("transition", "third", 0, "@completed"),
    ("status_changed", None, 0, "completed"),
]


def test_linear_completion(store: Store, clock: VirtualClock, run: Runner) -> None:
    """Issue 3: a linear workflow completes with the same variables and history on both stores."""

    async def scenario() -> tuple[list[str], list[Entry]]:
        async with Engine(store, clock=clock, workflows=PINNED) as engine:
            handle = await engine.start(Linear())
            wf = await handle.result()
            return wf.trail, story(engine, handle.instance_id)

    trail, history = run(scenario())
    assert ["first", "second", "third"] == trail
    assert LINEAR == history


RETRIES: list[Entry] = [
    ("instance_started", None, 0, "Flaky version 1"),
    ("step_started", "call", 1, None),
    ("step_failed", "call", 1, "ConnectionError: attempt 1 lost"),
    ("retry_scheduled", "call", 2, "in 1s"),
    ("step_started", "call", 2, None),
    ("step_failed", "call", 2, "ConnectionError: attempt 2 lost"),
    ("retry_scheduled", "call", 3, "in 2s"),
    ("step_started", "call", 3, None),
    ("step_completed", "call", 3, None),
    ("transition", "call", 0, "done"),
    ("step_started", "done", 1, None),
    ("step_completed", "done", 1, None),
    ("transition", "done", 0, "@completed"),
    ("status_changed", None, 0, "completed"),
]


def test_retries_with_backoff(store: Store, clock: VirtualClock, run: Runner) -> None:
    """Issue 3: retries wait 1 s then 2 s on the engine clock, and are recorded alike on both stores."""
    start = clock.now()

    async def scenario() -> tuple[InstanceStatus, list[Entry], list[float]]:
        async with Engine(store, clock=clock, workflows=PINNED) as engine:
            handle = await engine.start(Flaky(failures=2))
            await handle.result()
            return handle.status, story(engine, handle.instance_id), offsets(engine, handle.instance_id, start)

    status, history, times = run(scenario())
    assert InstanceStatus.COMPLETED == status
    assert RETRIES == history
    started = [t for (kind, *_), t in zip(history, times, strict=True) if kind == "step_started"]
    assert [0.0, 1.0, 3.0, 3.0] == started


EXHAUSTED: list[Entry] = [
    ("instance_started", None, 0, "Flaky version 1"),
    ("step_started", "call", 1, None),
    ("step_failed", "call", 1, "ConnectionError: attempt 1 lost"),
    ("retry_scheduled", "call", 2, "in 1s"),
    ("step_started", "call", 2, None),
    ("step_failed", "call", 2, "ConnectionError: attempt 2 lost"),
    ("retry_scheduled", "call", 3, "in 2s"),
    ("step_started", "call", 3, None),
    ("step_failed", "call", 3, "ConnectionError: attempt 3 lost"),
    ("retry_scheduled", "call", 4, "in 4s"),
    ("step_started", "call", 4, None),
    ("step_failed", "call", 4, "ConnectionError: attempt 4 lost"),
    ("instance_failed", "call", 0, "call: ConnectionError: attempt 4 lost"),
    ("status_changed", None, 0, "compensating"),
    ("status_changed", None, 0, "failed"),
]


def test_a_step_that_exhausts_its_retries_fails_the_instance(store: Store, clock: VirtualClock, run: Runner) -> None:
    """Issue 3: after its last attempt a step fails the instance, with the last error, on both stores."""

    async def scenario() -> tuple[WorkflowFailed, list[Entry]]:
        async with Engine(store, clock=clock, workflows=PINNED) as engine:
            handle = await engine.start(Flaky(failures=4))
            with pytest.raises(WorkflowFailed) as err:
                await handle.result()
            return err.value, story(engine, handle.instance_id)

    err, history = run(scenario())
    assert (InstanceStatus.FAILED, "call: ConnectionError: attempt 4 lost") == (err.status, err.reason)
    assert EXHAUSTED == history


SAGA: list[Entry] = [
    ("instance_started", None, 0, "Shipment version 1"),
    ("step_started", "reserve", 1, None),
    ("step_completed", "reserve", 1, None),
    ("transition", "reserve", 0, "charge"),
    ("step_started", "charge", 1, None),
    ("step_completed", "charge", 1, None),
    ("transition", "charge", 0, "label"),
    ("step_started", "label", 1, None),
    ("step_completed", "label", 1, None),
    ("transition", "label", 0, "ship"),
    ("step_started", "ship", 1, None),
    ("step_failed", "ship", 1, "NonRetryableError: carrier down"),
    ("instance_failed", "ship", 0, "ship: NonRetryableError: carrier down"),
    ("status_changed", None, 0, "compensating"),
    ("compensation_started", "charge", 1, "refund"),
    ("compensation_completed", "charge", 1, "refund"),
    ("compensation_started", "reserve", 1, "release"),
    ("compensation_completed", "reserve", 1, "release"),
    ("status_changed", None, 0, "failed"),
]


def test_compensation_in_reverse_order(store: Store, clock: VirtualClock, run: Runner) -> None:
    """Issue 3: a step failing for good undoes the completed steps newest first, once each, on both stores."""

    async def scenario() -> tuple[InstanceStatus, list[str], list[Entry]]:
        async with Engine(store, clock=clock, workflows=PINNED) as engine:
            handle = await engine.start(Shipment(carrier_down=True))
            status = await engine.wait_instance(handle.instance_id)
            wf: Shipment = engine.workflow(handle.instance_id)
            return status, wf.undone, story(engine, handle.instance_id)

    status, undone, history = run(scenario())
    assert InstanceStatus.FAILED == status
    assert ["refund", "release"] == undone
    assert SAGA == history


RETRY_COMPENSATION: list[Entry] = [
    ("instance_started", None, 0, "Shipment version 1"),
    ("step_started", "reserve", 1, None),
    ("step_completed", "reserve", 1, None),
    ("transition", "reserve", 0, "charge"),
    ("step_started", "charge", 1, None),
    ("step_completed", "charge", 1, None),
    ("transition", "charge", 0, "label"),
    ("step_started", "label", 1, None),
    ("step_completed", "label", 1, None),
    ("transition", "label", 0, "ship"),
    ("step_started", "ship", 1, None),
    ("step_failed", "ship", 1, "NonRetryableError: carrier down"),
    ("instance_failed", "ship", 0, "ship: NonRetryableError: carrier down"),
    ("status_changed", None, 0, "compensating"),
    ("compensation_started", "charge", 1, "refund"),
    ("compensation_failed", "charge", 1, "RuntimeError: ledger offline"),
    ("retry_scheduled", "charge", 2, "in 5s"),
    ("compensation_started", "charge", 2, "refund"),
    ("compensation_failed", "charge", 2, "RuntimeError: ledger offline"),
    ("status_changed", None, 0, "compensation_failed"),
    ("status_changed", None, 0, "compensating"),
    ("compensation_started", "charge", 1, "refund"),
    ("compensation_completed", "charge", 1, "refund"),
    ("compensation_started", "reserve", 1, "release"),
    ("compensation_completed", "reserve", 1, "release"),
    ("status_changed", None, 0, "failed"),
]


def test_compensation_failed_then_retry_compensation(store: Store, clock: VirtualClock, run: Runner) -> None:
    """Issue 3: a compensation failing for good leaves compensation_failed; retry_compensation finishes the undo."""
    ledger_offline = True

    def fault(ctx: Ctx) -> None:
        if ctx.compensating and ledger_offline:
            msg = "ledger offline"
            raise RuntimeError(msg)

    async def scenario() -> tuple[tuple[InstanceStatus, str | None], InstanceStatus, list[str], list[Entry]]:
        nonlocal ledger_offline
        async with Engine(store, clock=clock, workflows=PINNED, before_attempt=fault) as engine:
            handle = await engine.start(Shipment(carrier_down=True))
            stuck = await engine.wait_instance(handle.instance_id)
            stuck_info = (stuck, engine.info(handle.instance_id).error)
            ledger_offline = False
            final = await engine.retry_compensation(handle.instance_id)
            wf: Shipment = engine.workflow(handle.instance_id)
            return stuck_info, final, wf.undone, story(engine, handle.instance_id)

    stuck, final, undone, history = run(scenario())
    error = "compensation refund of charge failed: RuntimeError: ledger offline (after: ship: NonRetryableError: carrier down)"
    assert (InstanceStatus.COMPENSATION_FAILED, error) == stuck
    assert InstanceStatus.FAILED == final
    assert ["refund", "release"] == undone
    assert RETRY_COMPENSATION == history


TASK_WAITING: list[Entry] = [
    ("instance_started", None, 0, "Review version 1"),
    ("step_started", "reserve", 1, None),
    ("step_completed", "reserve", 1, None),
    ("transition", "reserve", 0, "review"),
    ("task_created", "review", 0, "ID.1"),
    ("status_changed", None, 0, "waiting"),
]


TASK_DONE: list[Entry] = [
    ("instance_started", None, 0, "Review version 1"),
    ("step_started", "reserve", 1, None),
    ("step_completed", "reserve", 1, None),
    ("transition", "reserve", 0, "review"),
    ("task_created", "review", 0, "ID.1"),
    ("status_changed", None, 0, "waiting"),
    ("task_completed", "review", 0, "bob"),
    ("status_changed", None, 0, "running"),
    ("step_started", "review", 1, None),
    ("step_completed", "review", 1, None),
    ("transition", "review", 0, "publish"),
    ("step_started", "publish", 1, None),
    ("step_completed", "publish", 1, None),
    ("transition", "publish", 0, "@completed"),
    ("status_changed", None, 0, "completed"),
]


def test_human_task_refusals_change_nothing_then_completion(store: Store, clock: VirtualClock, run: Runner) -> None:
    """Issue 3: the wrong user and the wrong form are refused without a trace; the assignee completes it."""

    async def scenario() -> tuple[list[str], list[Entry], list[Entry], Verdict | None, TaskStatus | None]:
        async with Engine(store, clock=clock, workflows=PINNED) as engine:
            handle = await engine.start(Review())
            await handle.wait_idle()
            [task] = engine.tasks(user="alice")
            before = story(engine, handle.instance_id)
            errors: list[str] = []
            with pytest.raises(TaskNotAuthorized) as refused:
                await engine.complete_task(task.id, user="mallory", groups=["readers"], form=Verdict(approved=True))
            errors.append(str(refused.value).replace(handle.instance_id, "ID"))
            with pytest.raises(TaskFormError) as wrong_form:
                await engine.complete_task(task.id, user="alice", form=Ballot(approved=True))
            errors.append(str(wrong_form.value).replace(handle.instance_id, "ID"))
            unchanged = story(engine, handle.instance_id)
            assert [task] == engine.tasks(user="alice")
            assert InstanceStatus.WAITING == handle.status
            assert before == unchanged
            await engine.complete_task(task.id, user="bob", groups=["editors"], form=Verdict(approved=True, note="ok"))
            wf = await handle.result()
            done = engine.store.task(task.id)
            return (
                errors,
                unchanged,
                story(engine, handle.instance_id),
                wf.verdict,
                None if done is None else done.status,
            )

    errors, waiting, history, verdict, task_status = run(scenario())
    assert [
        "task ID.1: user 'mallory' (groups: readers) may not complete it; only assignee 'alice' or members of editors may",
        "task ID.1: the form must be an instance of Verdict, got Ballot(approved=True) (Ballot)",
    ] == errors
    assert TASK_WAITING == waiting
    assert TASK_DONE == history
    assert Verdict(approved=True, note="ok") == verdict
    assert TaskStatus.COMPLETED == task_status


CANCEL_COMPENSATED: list[Entry] = [
    ("instance_started", None, 0, "Review version 1"),
    ("step_started", "reserve", 1, None),
    ("step_completed", "reserve", 1, None),
    ("transition", "reserve", 0, "review"),
    ("task_created", "review", 0, "ID.1"),
    ("status_changed", None, 0, "waiting"),
    ("cancel_requested", None, 0, "withdrawn"),
    ("task_cancelled", "review", 0, "ID.1 (cancelled)"),
    ("status_changed", None, 0, "compensating"),
    ("compensation_started", "reserve", 1, "release"),
    ("compensation_completed", "reserve", 1, "release"),
    ("status_changed", None, 0, "cancelled"),
]


CANCEL_ABANDONED: list[Entry] = [
    ("instance_started", None, 0, "Review version 1"),
    ("step_started", "reserve", 1, None),
    ("step_completed", "reserve", 1, None),
    ("transition", "reserve", 0, "review"),
    ("task_created", "review", 0, "ID.1"),
    ("status_changed", None, 0, "waiting"),
    ("cancel_requested", None, 0, "withdrawn"),
    ("task_cancelled", "review", 0, "ID.1 (cancelled)"),
    ("status_changed", None, 0, "cancelled"),
]


@pytest.mark.parametrize("compensate", [True, False])
def test_cancel_a_waiting_instance(store: Store, clock: VirtualClock, run: Runner, compensate: bool) -> None:
    """Issue 3: cancel closes the open task and, when asked to, undoes the completed steps, on both stores."""

    async def scenario() -> tuple[InstanceStatus, str | None, list[str], list[Entry], TaskStatus | None]:
        async with Engine(store, clock=clock, workflows=PINNED) as engine:
            handle = await engine.start(Review())
            await handle.wait_idle()
            [task] = engine.tasks()
            status = await engine.cancel(handle.instance_id, reason="withdrawn", compensate=compensate)
            wf: Review = engine.workflow(handle.instance_id)
            closed = engine.store.task(task.id)
            info = engine.info(handle.instance_id)
            return (
                status,
                info.error,
                wf.undone,
                story(engine, handle.instance_id),
                None if closed is None else closed.status,
            )

    status, error, undone, history, task_status = run(scenario())
    assert (InstanceStatus.CANCELLED, "cancelled: withdrawn") == (status, error)
    assert (["release"] if compensate else []) == undone
    assert (CANCEL_COMPENSATED if compensate else CANCEL_ABANDONED) == history
    assert TaskStatus.CANCELLED == task_status


def test_retry_compensation_of_an_instance_that_did_not_fail_its_compensation_is_refused(
    store: Store, clock: VirtualClock, run: Runner
) -> None:
    """Issue 3: retry_compensation is for compensation_failed instances only; others get InstanceStateError, unchanged."""

    async def scenario() -> tuple[str, InstanceStatus, InstanceStatus]:
        async with Engine(store, clock=clock, workflows=PINNED) as engine:
            handle = await engine.start(Linear())
            await handle.result()
            with pytest.raises(InstanceStateError) as err:
                await engine.retry_compensation(handle.instance_id)
            return str(err.value).replace(handle.instance_id, "ID"), err.value.status, handle.status

    message, reported, status = run(scenario())
    assert "instance ID is completed, not compensation_failed: there is no failed compensation to retry" == message
    assert (InstanceStatus.COMPLETED, InstanceStatus.COMPLETED) == (reported, status)


PINNED: list[type[Workflow]] = [Linear, Flaky, Shipment, Review]


"""This module's workflows, pinned in every engine: other test modules define classes of the same names."""
