"""
Issue 12: structured logs of steps, retries, compensations and status changes.

Captured with ``structlog.testing.capture_logs`` (with ``merge_contextvars``, as
an application that binds contextvars configures it): the user's own lines in
step bodies and compensations carry instance_id, workflow, step and attempt, and
the engine's lifecycle events come at their levels. The library configures
nothing: without ``logs=True`` no lifecycle event and no contextvar appears.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

import structlog
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from statemachine_orch import Engine, MemoryStore, VirtualClock
from tests.observe.flows import OBSERVED, ObsFlaky, ObsStuckRefund, ObsTrip

if TYPE_CHECKING:
    from tests.conftest import Runner


def run_logged(run: Runner, workflow: object, *, logs: bool = True) -> tuple[str, list[MutableMapping[str, Any]]]:
    async def scenario() -> str:
        engine = Engine(MemoryStore(), clock=VirtualClock(autojump=True), logs=logs, workflows=OBSERVED)
        async with engine:
            handle = await engine.start(workflow)  # type: ignore[type-var]
            await handle.wait_idle()
            return handle.instance_id

    with capture_logs(processors=[merge_contextvars]) as lines:
        instance_id = run(scenario())
    return instance_id, lines


def events(lines: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [line for line in lines if line["event"] == name]


def test_user_lines_in_steps_and_compensations_carry_the_instance_workflow_step_and_attempt(run: Runner) -> None:
    """Issue 12: contextvars bound around the body: the user's log lines name where they come from."""
    instance_id, lines = run_logged(run, ObsTrip())
    (booking,) = events(lines, "booking the flight")
    assert {"instance_id": instance_id, "workflow": "ObsTrip", "step": "book_flight", "attempt": 1}.items() <= (
        booking.items()
    )
    (cancelling,) = events(lines, "cancelling the flight")
    assert {"instance_id": instance_id, "workflow": "ObsTrip", "step": "cancel_flight", "attempt": 1}.items() <= (
        cancelling.items()
    )
    # Unbound after each body: the engine's own lines outside steps carry no step of the user's.
    (failed,) = events(lines, "instance_failed")
    assert "attempt" not in failed
    assert structlog.contextvars.get_contextvars() == {}


def test_lifecycle_events_come_at_their_levels(run: Runner) -> None:
    """Issue 12: starts debug, completions info, retries warning, compensations info, status changes info."""
    instance_id, lines = run_logged(run, ObsFlaky())
    started = events(lines, "step_started")
    assert [("fetch", 1), ("fetch", 2), ("fetch", 3), ("store", 1)] == [(e["step"], e["attempt"]) for e in started]
    assert {"debug"} == {e["log_level"] for e in started}
    retries = events(lines, "step_retry")
    assert [1, 2] == [e["attempt"] for e in retries]
    assert {"warning"} == {e["log_level"] for e in retries}
    assert {"ConnectionError: attempt 1 refused"} == {retries[0]["error"]}
    assert all(e["retry_in"] > 0 for e in retries)
    completed = events(lines, "step_completed")
    assert [("fetch", 3), ("store", 1)] == [(e["step"], e["attempt"]) for e in completed]
    assert {"info"} == {e["log_level"] for e in completed}
    assert all(e["instance_id"] == instance_id and e["workflow"] == "ObsFlaky" for e in started + retries + completed)
    statuses = events(lines, "status_changed")
    assert "completed" == statuses[-1]["status"]
    assert {"info"} == {e["log_level"] for e in statuses}


def test_a_compensation_is_logged_with_the_step_it_undoes(run: Runner) -> None:
    """Issue 12: the failed step (warning), the compensation's start and completion, the end status."""
    _, lines = run_logged(run, ObsTrip())
    (failed,) = events(lines, "step_failed")
    assert ("book_hotel", "warning", "RuntimeError: no room") == (failed["step"], failed["log_level"], failed["error"])
    (comp_started,) = events(lines, "compensation_started")
    assert ("cancel_flight", "book_flight", "debug") == (
        comp_started["step"],
        comp_started["undoing"],
        comp_started["log_level"],
    )
    (comp_done,) = events(lines, "compensation_completed")
    assert ("cancel_flight", "info") == (comp_done["step"], comp_done["log_level"])
    assert ["compensating", "failed"] == [e["status"] for e in events(lines, "status_changed")]


def test_a_failed_compensation_is_logged_as_an_error(run: Runner) -> None:
    """Issue 12: the undo that fails for good is an error line naming the step it undoes and why."""
    instance_id, lines = run_logged(run, ObsStuckRefund())
    (failed,) = events(lines, "compensation_failed")
    assert ("error", "refund", "charge", "RuntimeError: the bank is closed", instance_id) == (
        failed["log_level"],
        failed["step"],
        failed["undoing"],
        failed["error"],
        failed["instance_id"],
    )
    assert "compensation_failed" == events(lines, "status_changed")[-1]["status"]
    retries = events(lines, "compensation_retry")
    assert {"warning"} == {e["log_level"] for e in retries}
    assert len(retries) + 1 == len(events(lines, "compensation_started"))


def test_without_logs_the_engine_binds_and_logs_no_step(run: Runner) -> None:
    """Issue 12: off by default: the user's line carries no context, and no lifecycle event is logged."""
    _, lines = run_logged(run, ObsTrip(), logs=False)
    (booking,) = events(lines, "booking the flight")
    assert "instance_id" not in booking
    assert [] == events(lines, "step_started") + events(lines, "step_completed") + events(lines, "status_changed")
