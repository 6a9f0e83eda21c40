"""
Issue 4: the rest of ``statemachine_orch.testing``: its surface, the test engine, capture_history, coverage.
"""

from __future__ import annotations

import asyncio

import pytest

from statemachine_orch import Ctx, EventKind, InstanceStatus, Retry, Workflow, after, step, testing
from statemachine_orch.testing import (
    Actor,
    CoverageError,
    WorkflowMachine,
    capture_history,
    virtual_engine,
)

from .helpers import fresh


def test_the_public_surface() -> None:
    """Issue 4 (STYLE rule 6): the testing module's exports are pinned; each shows its public path."""
    expected = [
        "Actor",
        "AppliedAction",
        "Branch",
        "Cancel",
        "CancelChild",
        "CapturedEvent",
        "Complete",
        "Coverage",
        "CoverageError",
        "CoverageWarning",
        "Ending",
        "FireTimers",
        "ForkVisit",
        "GuardOutcome",
        "HandOver",
        "InjectedFault",
        "InjectedPermanentFault",
        "InvariantViolation",
        "Path",
        "RunawayLoop",
        "Send",
        "Start",
        "TooManyPaths",
        "WorkflowMachine",
        "WorkflowStateMachine",
        "capture_history",
        "paths",
        "virtual_engine",
    ]

    assert expected == testing.__all__
    for name in expected:
        module = getattr(testing, name).__module__
        assert module in {"statemachine_orch", "statemachine_orch.testing"}, (name, module)


class RetryingCall(Workflow, version="1"):
    """Fails twice, then works."""

    attempts: int = 0

    @step(initial=True, final=True, retry=Retry(attempts=3, initial=60))
    def call(self, ctx: Ctx) -> None:
        """Two transient failures first."""
        self.attempts += 1
        if ctx.attempt < 3:
            msg = "not yet"
            raise ConnectionError(msg)


def test_the_virtual_engine_jumps_over_backoffs_and_capture_history_records_them() -> None:
    """Issue 4: retries on the virtual clock take no real time; the history shows the virtual waits."""
    engine = virtual_engine()

    async def scenario() -> tuple[InstanceStatus, float]:
        began = engine.clock.now()
        with capture_history(engine) as events:
            handle = await engine.start(RetryingCall())
            await handle.result()
        after_block = len(events)
        waited = engine.clock.now() - began
        await engine.start(RetryingCall())
        await engine.wait_idle()
        assert after_block == len(events)  # nothing recorded outside the block
        kinds = [e.event.kind for e in events]
        assert EventKind.INSTANCE_STARTED == kinds[0]
        assert 2 == kinds.count(EventKind.RETRY_SCHEDULED)
        assert {handle.instance_id} == {e.instance_id for e in events}
        assert str(events[0]).startswith(f"{handle.instance_id}: instance_started")
        return handle.status, waited

    status, waited = asyncio.run(scenario())

    assert InstanceStatus.COMPLETED == status
    assert 60 + 120 == waited


class DormantCourier(Workflow, version="1"):
    """An edge whose guard reads a variable no input sets."""

    order: str
    express: bool = False

    @step(initial=True)
    def receive(self, ctx: Ctx) -> None:
        """Receive."""

    @after(receive, when=lambda wf: wf.express)
    @step(final=True)
    def courier(self, ctx: Ctx) -> None:
        """Never, as nothing sets express."""

    @after(receive)
    @step(final=True)
    def post(self, ctx: Ctx) -> None:
        """Always."""


def test_require_coverage_names_the_edges_never_taken() -> None:
    """Issue 4: require_coverage=1.0 fails a run that leaves an edge unvisited, and names it."""
    machine = fresh(WorkflowMachine(DormantCourier, require_coverage=1.0))

    with pytest.raises(CoverageError) as err:
        machine.TestCase().runTest()

    assert "DormantCourier: the run covered 50% of the edges, 100% are required; never taken:" in str(err.value)
    assert "receive -> courier [when wf.express]" in str(err.value)
    assert ["receive -> courier"] == [f"{e.source} -> {e.dest}" for e in err.value.unvisited]
    assert [("wf.express", True)] == [(e.guard_name, v) for e, v in err.value.coverage.missing_outcomes()]


def test_a_lower_requirement_passes_and_the_report_marks_the_miss() -> None:
    """Issue 4: coverage is data; its report marks unvisited edges with !!."""
    machine = fresh(WorkflowMachine(DormantCourier, require_coverage=0.5))

    machine.TestCase().runTest()

    report = machine.coverage.report().splitlines()
    assert report[0].startswith("DormantCourier: 1/2 edges (50%), ")
    assert report[1].startswith("  !! receive -> courier [when wf.express]: 0x  guard: true never/false")
    assert report[2].startswith("     receive -> post [default]: ")


def test_actors_print_who_they_are() -> None:
    """Issue 4: a story shows who completed a task, and whether they were allowed to."""
    assert "'manager'" == repr(Actor("manager"))
    assert "'member-of-finance' in ('finance',)" == repr(Actor("member-of-finance", ("finance",)))
    assert "'intruder' in ('outsiders',) (not authorised)" == repr(Actor("intruder", ("outsiders",), authorised=False))
