"""
Issue 10, item 3: a declared failure end, ``@failure_end(outcome=...)``.

Its method returns the reason; the instance then fails like after any failure (the
compensations of its completed steps run, newest first) and ends ``failed`` with
that reason and the declared outcome, which ``InstanceInfo.outcome``,
``WorkflowFailed`` and ``Engine.failure`` give. The order example models its
rejected orders this way instead of the guard gap it had.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.
# pyright: reportUnusedClass=false

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import attrs
import pytest

from examples.order_process import Approval, Item, OrderProcess, make_engine
from statemachine_orch import (
    Ctx,
    EventKind,
    Failure,
    InstanceStatus,
    Retry,
    Workflow,
    WorkflowDefinitionError,
    WorkflowFailed,
    after,
    failure_end,
    human_task,
    mermaid,
    paths,
    spec_of,
    step,
)
from statemachine_orch._progress import steps_to_end
from statemachine_orch.testing import Ending

if TYPE_CHECKING:
    from tests.conftest import EngineFactory, Runner

K = EventKind


@attrs.frozen
class Verdict:
    """A reviewer's answer."""

    accepted: bool
    note: str = ""


class Loan(Workflow):
    """Reserve funds, review, then pay out or decline (a failure end)."""

    amount: int
    accepted: bool = False
    note: str = ""
    undone: list[str] = attrs.field(factory=list[str])

    @step(initial=True)
    def reserve(self, ctx: Ctx) -> None: ...

    @reserve.compensation
    def release(self, ctx: Ctx) -> None:
        self.undone.append("release")

    @after(reserve)
    @human_task(form=Verdict, assignee="officer")
    def review(self, ctx: Ctx, form: Verdict) -> None:
        self.accepted, self.note = form.accepted, form.note

    @after(review, when=lambda wf: wf.accepted)
    @step(final=True)
    def pay_out(self, ctx: Ctx) -> None: ...

    @after(review)
    @failure_end(outcome="declined")
    async def decline(self, ctx: Ctx) -> str:
        await asyncio.sleep(0)
        return f"declined: {self.note}"


def test_a_failure_end_fails_the_instance_with_its_reason_and_outcome_and_runs_the_saga(
    run: Runner, new_engine: EngineFactory
) -> None:
    """Issue 10: the failure end's method runs, then the instance compensates and ends failed, outcome declined."""

    async def scenario() -> None:
        engine = new_engine()
        async with engine:
            handle = await engine.start(Loan(amount=100))
            await handle.wait_idle()
            [task] = engine.tasks(user="officer")
            await engine.complete_task(task.id, user="officer", form=Verdict(accepted=False, note="no income"))
            with pytest.raises(WorkflowFailed) as err:
                await handle.result()
            info = engine.info(handle.instance_id)
            assert (InstanceStatus.FAILED, "declined", "declined: no income") == (info.status, info.outcome, info.error)
            assert ["release"] == handle.workflow.undone
            exc = err.value
            assert (InstanceStatus.FAILED, "declined", "decline", "declined: no income", None) == (
                exc.status,
                exc.outcome,
                exc.step,
                exc.reason,
                exc.error,
            )
            assert f"instance {handle.instance_id} ended failed (declined): declined: no income" == str(exc)
            assert Failure("declined", "decline", "declined: no income") == engine.failure(handle.instance_id)
            tail = [(e.kind, e.step, e.detail) for e in handle.history()[-7:]]
            assert [
                (K.STEP_COMPLETED, "decline", None),
                (K.INSTANCE_FAILED, "decline", "declined: declined: no income"),
                (K.STATUS_CHANGED, None, "compensating"),
                (K.COMPENSATION_STARTED, "reserve", "release"),
                (K.COMPENSATION_COMPLETED, "reserve", "release"),
                (K.STATUS_CHANGED, None, "failed"),
            ] == tail[1:]

    run(scenario())


def test_outcome_of_the_other_ends(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 10: outcome is None while it runs, completed, cancelled, or failed after a step failed for good."""

    async def scenario() -> None:
        engine = new_engine()
        async with engine:
            accepted = await engine.start(Loan(amount=1))
            cancelled = await engine.start(Loan(amount=2))
            await accepted.wait_idle()
            await cancelled.wait_idle()
            assert None is engine.info(accepted.instance_id).outcome
            assert None is engine.failure(accepted.instance_id)
            task = next(t for t in engine.tasks(user="officer") if t.instance_id == accepted.instance_id)
            await engine.complete_task(task.id, user="officer", form=Verdict(accepted=True))
            await accepted.result()
            await engine.cancel(cancelled.instance_id, reason="withdrawn")
            assert "completed" == engine.info(accepted.instance_id).outcome
            assert None is engine.failure(accepted.instance_id)
            assert "cancelled" == engine.info(cancelled.instance_id).outcome
            assert Failure("cancelled", None, "cancelled: withdrawn") == engine.failure(cancelled.instance_id)
            with pytest.raises(WorkflowFailed) as err:
                await cancelled.result()
            assert ("cancelled", None) == (err.value.outcome, err.value.step)
            assert f"instance {cancelled.instance_id} ended cancelled: cancelled: withdrawn" == str(err.value)

    run(scenario())


def test_a_failure_end_must_return_a_str_or_it_fails_as_a_step(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 10: a reason that is not a str is the step's TypeError: retried, then the instance fails (outcome failed)."""

    class NoReason(Workflow):
        @step(initial=True)
        def begin(self, ctx: Ctx) -> None: ...

        @after(begin)
        @failure_end(retry=Retry(attempts=2, initial=1))
        def give_up(self, ctx: Ctx) -> str:
            return None  # type: ignore[return-value] # pyright: ignore[reportReturnType] - the mistake under test

    async def scenario() -> None:
        engine = new_engine()
        async with engine:
            handle = await engine.start(NoReason())
            with pytest.raises(WorkflowFailed) as err:
                await handle.result()
            failed = [e.detail for e in handle.history() if e.kind is K.STEP_FAILED]
            msg = "TypeError: the failure end give_up must return the reason (a str), got None"
            assert [msg, msg] == failed
            assert ("failed", "give_up", f"give_up: {msg}") == (err.value.outcome, err.value.step, err.value.reason)
            assert isinstance(err.value.error, TypeError)

    run(scenario())


def test_bare_failure_end_has_the_outcome_failed(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 10: ``@failure_end`` alone ends the instance failed, outcome failed, and its history says the reason."""

    class Expiring(Workflow):
        @step(initial=True)
        def begin(self, ctx: Ctx) -> None: ...

        @after(begin)
        @failure_end
        def expire(self, ctx: Ctx) -> str:
            return "the offer expired"

    async def scenario() -> None:
        engine = new_engine()
        async with engine:
            handle = await engine.start(Expiring())
            status = await engine.wait_instance(handle.instance_id)
            info = engine.info(handle.instance_id)
            assert (InstanceStatus.FAILED, "failed", "the offer expired") == (status, info.outcome, info.error)
            [failed] = [e for e in handle.history() if e.kind is K.INSTANCE_FAILED]
            assert ("expire", "the offer expired") == (failed.step, failed.detail)

    assert "failed" == spec_of(Expiring).step("expire").outcome
    run(scenario())


def test_a_failed_compensation_keeps_the_outcome(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 10: compensation_failed after a failure end still says the outcome; the retry ends failed with it."""
    broken = {"release": True}

    class Fragile(Workflow):
        @step(initial=True)
        def reserve(self, ctx: Ctx) -> None: ...

        @reserve.compensation(retry=Retry(attempts=1))
        def release(self, ctx: Ctx) -> None:
            if broken["release"]:
                msg = "ledger offline"
                raise RuntimeError(msg)

        @after(reserve)
        @failure_end(outcome="rejected")
        def reject(self, ctx: Ctx) -> str:
            return "no"

    async def scenario() -> None:
        engine = new_engine()
        async with engine:
            handle = await engine.start(Fragile())
            assert InstanceStatus.COMPENSATION_FAILED == await engine.wait_instance(handle.instance_id)
            assert "rejected" == engine.info(handle.instance_id).outcome
            broken["release"] = False
            assert InstanceStatus.FAILED == await engine.retry_compensation(handle.instance_id)
            info = engine.info(handle.instance_id)
            assert ("rejected", "no") == (info.outcome, info.error)

    run(scenario())


def test_the_order_example_ends_a_rejected_approval_at_its_failure_end(run: Runner) -> None:
    """Issue 10: the manager's rejection ends the order failed, outcome rejected, with the comment as the reason."""

    async def scenario() -> None:
        engine, _, payments = make_engine()
        async with engine:
            order = OrderProcess(order_id="ORD-9", customer_id="CUST-9", amount=5000, items=[Item("LAMP", 1)])
            handle = await engine.start(order)
            await handle.wait_idle()
            [task] = engine.tasks(user="manager")
            await engine.complete_task(task.id, user="manager", form=Approval(approved=False, comment="over budget"))
            with pytest.raises(WorkflowFailed) as err:
                await handle.result()
            blocked = await engine.start(
                OrderProcess(order_id="", customer_id="CUST-10", amount=5, items=[Item("BOOK", 1)])
            )
            with pytest.raises(WorkflowFailed) as refused:
                await blocked.result()
        assert ("rejected", "reject_order", "rejected by the manager: over budget") == (
            err.value.outcome,
            err.value.step,
            err.value.reason,
        )
        assert ("rejected", "customer CUST-10 may not place orders") == (refused.value.outcome, refused.value.reason)
        assert {} == payments.charges

    run(scenario())


def test_outcome_must_be_a_name_other_than_another_status() -> None:
    """Issue 10: bad-outcome, for an outcome that is not a name and for one naming another status."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Odd(Workflow):
            @step(initial=True)
            def begin(self, ctx: Ctx) -> None: ...

            @after(begin, when=lambda wf: True)
            @failure_end(outcome="two words")
            def one(self, ctx: Ctx) -> str:
                return ""

            @after(begin)
            @failure_end(outcome="cancelled")
            def two(self, ctx: Ctx) -> str:
                return ""

    assert [("one", "bad-outcome"), ("two", "bad-outcome")] == [(p.step, p.rule) for p in err.value.problems]
    one, two = (p.message for p in err.value.problems)
    assert "@failure_end(outcome='two words') needs a name" in one
    assert "@failure_end(outcome='cancelled') names another status" in two


def test_paths_end_at_a_failure_end_with_its_outcome() -> None:
    """Issue 10: paths() ends such a path with Ending.FAILURE_END, prints the outcome, and lists the saga."""
    declined = [p for p in paths(Loan) if p.ending is Ending.FAILURE_END]

    assert ["reserve -> review -[not wf.accepted]-> decline => declined, undo release => failed"] == [
        str(p) for p in declined
    ]
    [path] = declined
    assert ("declined", ("reserve",), True) == (path.outcome, path.undone, path.ending.failed)
    assert {"completed", "failed", "declined", "cancelled"} == {p.outcome for p in paths(Loan)}


def test_diagrams_show_the_failure_end_and_its_outcome() -> None:
    """Issue 10: Mermaid labels the failure end and its edge to the end with the outcome."""
    text = mermaid(Loan)

    assert "    decline: decline (failure end: declined)\n" in text
    assert "    decline --> [*]: declined\n" in text
    assert "    pay_out --> [*]\n" in text


def test_progress_does_not_count_a_failure_end_as_completing() -> None:
    """Issue 10: the fewest steps left to complete ignore a failure end (it ends, but does not complete)."""
    assert {"reserve": 3, "review": 2, "pay_out": 1} == steps_to_end(spec_of(Loan))
