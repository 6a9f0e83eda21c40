"""
Issue 10, item 2: undo a step that failed or was cut short, and hand its error on, typed.

``@x.compensation(attempted=True)`` registers the undo when a visit of ``x`` starts
(durably, before the call): it runs when the instance compensates whether the step
completed, failed for good (routed by ``on_error`` or not) or was cancelled in
flight, once per visit, in the saga's order of registration. A step an ``on_error``
edge leads to may take the error as a third parameter: the same exception in
process, the same class, args and attributes after a restart; a failure end reached
that way keeps it as the instance's failure (``WorkflowFailed.error``).
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.
# pyright: reportUnusedClass=false

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs
import pytest

from statemachine_orch import (
    Ctx,
    Engine,
    EventKind,
    HistoryEvent,
    InstanceStatus,
    Retry,
    SqliteStore,
    VirtualClock,
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

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import EngineFactory, Runner

K = EventKind


class Declined(Exception):
    """A refusal carrying a code."""

    def __init__(self, code: str) -> None:
        super().__init__(f"declined ({code})")
        self.code = code


def undone(history: Sequence[HistoryEvent]) -> list[tuple[str | None, str | None]]:
    """(step, compensation) of every compensation that completed, in order."""
    return [(e.step, e.detail) for e in history if e.kind is K.COMPENSATION_COMPLETED]


class Booking(Workflow):
    """Reserve (may time out after taking effect), then charge; the reservation's undo is attempted."""

    reserve_fails: bool = False
    charge_fails: bool = False
    keys: list[str] = attrs.field(factory=list[str])
    error_seen: str = ""

    @step(initial=True, retry=Retry(attempts=2, initial=1))
    def reserve(self, ctx: Ctx) -> None:
        if self.reserve_fails:
            msg = "the hotel did not answer"
            raise TimeoutError(msg)

    @reserve.compensation(attempted=True)
    def cancel_reservation(self, ctx: Ctx) -> None:
        self.keys = [*self.keys, ctx.idempotency_key]

    @after(reserve, on_error=TimeoutError)
    @step
    def note_timeout(self, ctx: Ctx, error: TimeoutError) -> None:
        self.error_seen = f"{type(error).__name__}: {error}"

    @after(reserve)
    @after(note_timeout)
    @step(final=True)
    def charge(self, ctx: Ctx) -> None:
        if self.charge_fails:
            raise Declined("05")


def test_an_attempted_undo_runs_after_the_last_attempt_failed_and_the_error_went_on(
    run: Runner, new_engine: EngineFactory
) -> None:
    """Issue 10: reserve failed twice, on_error went on, charge failed: the reservation is undone, once."""

    async def scenario() -> None:
        async with new_engine() as engine:
            handle = await engine.start(Booking(reserve_fails=True, charge_fails=True))
            with pytest.raises(WorkflowFailed) as err:
                await handle.result()
            wf = handle.workflow
            assert [("reserve", "cancel_reservation")] == undone(handle.history())
            assert [f"{handle.instance_id}:0:undo"] == wf.keys
            assert "TimeoutError: the hotel did not answer" == wf.error_seen
            assert isinstance(err.value.error, Declined)
            assert "05" == err.value.error.code

    run(scenario())


def test_an_attempted_undo_does_not_run_when_the_instance_completes(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 10: registered does not mean run: a completed instance undoes nothing."""

    async def scenario() -> None:
        async with new_engine() as engine:
            handle = await engine.start(Booking(reserve_fails=True))
            await handle.result()
            assert [] == undone(handle.history())

    run(scenario())


def test_a_cancel_in_flight_undoes_the_attempted_step_and_one_never_started_is_not_undone(run: Runner) -> None:
    """Issue 10: cut short while it runs, the step is undone; cancelled before it started, it is not."""
    started = asyncio.Event()

    class Slow(Workflow):
        wait_first: bool
        undone_by: list[str] = attrs.field(factory=list[str])

        @human_task(assignee="ann", initial=True)
        def gate(self, ctx: Ctx) -> None: ...

        @after(gate)
        @step(final=True)
        async def call(self, ctx: Ctx) -> None:
            started.set()
            await asyncio.Event().wait()  # the partner never answers

        @call.compensation(attempted=True)
        def undo_call(self, ctx: Ctx) -> None:
            self.undone_by = [*self.undone_by, ctx.undoing or ""]

    async def scenario() -> None:
        async with Engine(clock=VirtualClock()) as engine:
            never = await engine.start(Slow(wait_first=True))
            await never.wait_idle()
            assert InstanceStatus.CANCELLED == await engine.cancel(never.instance_id, reason="early")
            assert [] == undone(never.history())

            cut = await engine.start(Slow(wait_first=False))
            await cut.wait_idle()
            [task] = engine.tasks(user="ann", instance_id=cut.instance_id)
            await engine.complete_task(task.id, user="ann")
            await started.wait()
            assert InstanceStatus.CANCELLED == await engine.cancel(cut.instance_id, reason="too slow")
            kinds = [e.kind for e in cut.history()]
            assert K.STEP_CANCELLED in kinds
            assert [("call", "undo_call")] == undone(cut.history())
            assert ["call"] == cut.workflow.undone_by

    run(scenario())


def test_in_a_fork_a_branch_cut_short_by_a_failing_sibling_is_undone(run: Runner) -> None:
    """Issue 10: the AWS saga: the car fails while the hotel request is in flight; the hotel is undone too."""
    hotel_called = asyncio.Event()

    class Trip(Workflow):
        cancelled: list[str] = attrs.field(factory=list[str])

        @step(initial=True, fork=True)
        def plan(self, ctx: Ctx) -> None: ...

        @after(plan)
        @step
        async def book_hotel(self, ctx: Ctx) -> None:
            hotel_called.set()
            await asyncio.Event().wait()

        @book_hotel.compensation(attempted=True)
        def cancel_hotel(self, ctx: Ctx) -> None:
            self.cancelled = [*self.cancelled, "hotel"]

        @after(plan)
        @step
        async def book_car(self, ctx: Ctx) -> None:
            await hotel_called.wait()
            msg = "no cars"
            raise LookupError(msg)

        @book_car.compensation(attempted=True)
        def cancel_car(self, ctx: Ctx) -> None:
            self.cancelled = [*self.cancelled, "car"]

        @after(book_hotel, book_car)
        @step(final=True)
        def pay(self, ctx: Ctx) -> None: ...

    async def scenario() -> None:
        async with Engine(clock=VirtualClock()) as engine:
            handle = await engine.start(Trip())
            with pytest.raises(WorkflowFailed):
                await handle.result()
            # Registered as each started (hotel first, then car): undone newest first.
            assert ["car", "hotel"] == handle.workflow.cancelled
            assert [("book_car", "cancel_car"), ("book_hotel", "cancel_hotel")] == undone(handle.history())

    run(scenario())


class Handled(Workflow):
    """An on_error handler with retries, so that it parks between attempts (and a restart rebuilds the error)."""

    seen: str = ""

    @step(initial=True)
    def charge(self, ctx: Ctx) -> None:
        raise Declined("51")

    @after(charge, on_error=Declined)
    @step(retry=Retry(attempts=2, initial=60))
    def explain(self, ctx: Ctx, error: Declined) -> None:
        self.seen = f"{type(error).__name__} {error.code} {error.args} attempt {ctx.attempt}"
        if ctx.attempt == 1:
            msg = "the mail server is down"
            raise ConnectionError(msg)

    @after(charge)
    @after(explain)
    @step(final=True)
    def close(self, ctx: Ctx) -> None: ...


def test_the_error_reaches_the_handler_after_a_restart_rebuilt_from_sqlite(run: Runner, tmp_path: Path) -> None:
    """Issue 10: the handler's retry runs in a new engine; it gets a Declined with the same code and args."""
    db = tmp_path / "orch.db"

    async def first() -> str:
        clock = VirtualClock(autojump=False)
        with SqliteStore(db) as store:
            async with Engine(store, clock=clock) as engine:
                handle = await engine.start(Handled())
                await handle.wait_idle()  # parked: explain's retry in 60 s
                assert 1 == sum(1 for e in handle.history() if e.kind is K.RETRY_SCHEDULED)
                return handle.instance_id

    async def second(instance_id: str) -> str:
        with SqliteStore(db) as store:
            async with Engine(store, clock=VirtualClock(start=10**10)) as engine:
                result: Handled = await engine.handle(instance_id).result()
                return result.seen

    instance_id = run(first())
    assert "Declined 51 ('declined (51)',) attempt 2" == run(second(instance_id))


def test_a_handler_in_a_branch_gets_its_error(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 10: inside a fork, the branch's handler gets the exception of its branch's step."""

    class Forked(Workflow):
        code: str = ""

        @step(initial=True, fork=True)
        def split(self, ctx: Ctx) -> None: ...

        @after(split)
        @step
        def left(self, ctx: Ctx) -> None:
            raise Declined("left")

        @after(left, on_error=Declined)
        @step
        def left_fixed(self, ctx: Ctx, error: Declined) -> None:
            self.code = error.code

        @after(split)
        @step
        def right(self, ctx: Ctx) -> None: ...

        @after(left, left_fixed, right)
        @step(final=True)
        def join(self, ctx: Ctx) -> None: ...

    async def scenario() -> None:
        async with new_engine() as engine:
            handle = await engine.start(Forked())
            assert "left" == (await handle.result()).code

    run(scenario())


def test_a_failure_end_given_the_error_keeps_it_as_the_failure(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 10: routed to a failure end that takes the error, WorkflowFailed.error is that error."""

    class Refund(Workflow):
        @step(initial=True)
        def charge(self, ctx: Ctx) -> None:
            raise Declined("61")

        @after(charge)
        @step(final=True)
        def ship(self, ctx: Ctx) -> None: ...

        @after(charge, on_error=Declined)
        @failure_end(outcome="declined")
        def declined(self, ctx: Ctx, error: Declined) -> str:
            return f"card declined ({error.code})"

    async def scenario() -> None:
        async with new_engine() as engine:
            handle = await engine.start(Refund())
            with pytest.raises(WorkflowFailed) as err:
                await handle.result()
            exc = err.value
            assert ("declined", "declined", "card declined (61)") == (exc.outcome, exc.step, exc.reason)
            assert isinstance(exc.error, Declined)
            assert "61" == exc.error.code
            assert exc.error is exc.__cause__

    run(scenario())


def test_an_error_parameter_needs_error_edges_of_matching_types() -> None:
    """Issue 10: error-param-without-error-edge and error-param-type name the step and what is wrong."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Wrong(Workflow):
            @step(initial=True)
            def charge(self, ctx: Ctx) -> None: ...

            @after(charge, when=lambda wf: True)
            @step
            def by_completion(self, ctx: Ctx, error: Declined) -> None: ...

            @after(charge, on_error=TimeoutError)
            @step
            def by_wrong_type(self, ctx: Ctx, error: Declined) -> None: ...

            @after(charge)
            @after(by_completion)
            @after(by_wrong_type)
            @step(final=True)
            def end(self, ctx: Ctx) -> None: ...

    problems = [(p.step, p.rule, p.message) for p in err.value.problems]
    assert [
        (
            "by_completion",
            "error-param-without-error-edge",
            (
                "takes a third parameter, the error of a failed step, but the edge from charge is no on_error edge; "
                "only on_error edges pass an error: route errors here with @after(step, on_error=...), or drop "
                "the parameter"
            ),
        ),
        (
            "by_wrong_type",
            "error-param-type",
            (
                "is entered on_error=TimeoutError, but its error parameter is annotated Declined; annotate a base "
                "class of every error routed here"
            ),
        ),
    ] == problems


def test_the_spec_paths_and_diagram_know_the_attempted_undo() -> None:
    """Issue 10: the spec carries attempted and the handler's error type; paths undo a failed reserve; Mermaid notes it."""
    spec = spec_of(Booking)
    comp = spec.step("reserve").compensation
    assert comp is not None
    assert (True, TimeoutError) == (comp.attempted, spec.step("note_timeout").error)
    failing = [str(p) for p in paths(Booking) if p.steps == ("reserve",)]
    assert ["reserve => fails, undo cancel_reservation => failed"] == failing
    assert "note right of reserve: undo: cancel_reservation (also if it failed or was cut short)" in mermaid(Booking)
