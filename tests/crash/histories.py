"""Reading the stored histories of the crash tests: what completed (once each) and what was undone."""

from __future__ import annotations

from statemachine_orch import EventKind, HistoryEvent

K = EventKind


def completed_once(history: list[HistoryEvent], who: str) -> list[str]:
    """The steps completed, in order; no step completed twice, no transition applied twice, started once."""
    done = [str(e.step) for e in history if e.kind is K.STEP_COMPLETED]
    assert len(done) == len(set(done)), f"{who}: a step completed twice: {done}"
    moves = [(e.step, e.detail) for e in history if e.kind is K.TRANSITION]
    assert len(moves) == len(set(moves)), f"{who}: a transition applied twice: {moves}"
    assert 1 == sum(e.kind is K.INSTANCE_STARTED for e in history), f"{who}: started more than once"
    return done


def compensated_steps(history: list[HistoryEvent]) -> list[str]:
    """The steps whose compensation completed, in order."""
    return [str(e.step) for e in history if e.kind is K.COMPENSATION_COMPLETED]
