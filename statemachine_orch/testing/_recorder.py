"""
Turns an engine's history into coverage: which edge each transition took, which guard outcomes decided it.

History names a transition by its source and destination; the edge and the guard
outcomes are recovered from the spec: after a completion the guards of the source
are evaluated again, in the engine's order, on the same variables (guards are
pure, so they answer as they did a moment ago). A different answer, a guard that
raises, or a completion with no edge to take are reported as anomalies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs

from statemachine_orch._history import EventKind, HistoryEvent
from statemachine_orch._spec import COMPLETED, EdgeSpec, WorkflowSpec
from statemachine_orch._workflow import spec_of

from ._coverage import Coverage

if TYPE_CHECKING:
    from statemachine_orch._engine import Engine

_K = EventKind


@attrs.frozen
class Choice:
    """The guards of a step evaluated after it completed, and the edge they choose."""

    step: str
    outcomes: tuple[tuple[EdgeSpec, bool], ...]
    edge: EdgeSpec | None
    error: str | None = None

    def describe(self) -> str:
        """``g1 -> False, g2 -> True`` (or ``no guard``), and the default when it is taken."""
        parts = [f"{e.source} -> {e.dest} when {e.guard_name}: {v}" for e, v in self.outcomes]
        if self.error is not None:
            parts.append(f"a guard raised {self.error}")
        elif self.edge is None:
            parts.append("and there is no default edge")
        elif self.edge.guard is None:
            parts.append(f"default {self.edge.source} -> {self.edge.dest}")
        return "; ".join(parts)


@attrs.frozen
class Anomaly:
    """Something the history shows that a correct model never does."""

    rule: str
    instance_id: str
    step: str
    message: str


def completion_edges(spec: WorkflowSpec, step: str) -> tuple[list[EdgeSpec], EdgeSpec | None]:
    """The guarded completion edges of *step* in the order they are tried, and its default."""
    completion = [e for e in spec.outgoing(step) if e.is_completion]
    return [e for e in completion if e.guard is not None], next((e for e in completion if e.guard is None), None)


def choose(spec: WorkflowSpec, wf: object, step: str) -> Choice:
    """Evaluate the guards of *step* on *wf* as the engine does: in order, the first that holds wins."""
    guarded, default = completion_edges(spec, step)
    outcomes: list[tuple[EdgeSpec, bool]] = []
    for edge in guarded:
        guard = edge.guard
        assert guard is not None  # noqa: S101 - guarded edges have one
        try:
            value: object = guard(wf)
        except Exception as exc:  # noqa: BLE001 - a guard's failure is reported, not raised
            return Choice(step, tuple(outcomes), None, f"{type(exc).__name__}: {exc}")
        if value is not True and value is not False:
            return Choice(step, tuple(outcomes), None, f"{edge.guard_name} returned {value!r}, not a bool")
        outcomes.append((edge, value))
        if value:
            return Choice(step, tuple(outcomes), edge)
    return Choice(step, tuple(outcomes), default)


class Recorder:
    """
    An engine subscriber that records coverage and anomalies.

    Args:
        engine: The engine to read workflows from.
        sinks: For a spec, the coverages to record into.
    """

    def __init__(self, engine: Engine, sinks: Callable[[WorkflowSpec], Sequence[Coverage]]) -> None:
        self.engine = engine
        self.sinks = sinks
        self.anomalies: list[Anomaly] = []
        self.choices: dict[str, Choice] = {}
        self._last: dict[str, tuple[EventKind, str]] = {}
        self._new: set[str] = set()

    def __call__(self, instance_id: str, event: HistoryEvent) -> None:
        """Record *event* of *instance_id*."""
        kind = event.kind
        if kind is _K.INSTANCE_STARTED:
            # Published before the engine stores the instance: count it at its next event.
            self._new.add(instance_id)
            return
        if instance_id in self._new:
            self._new.discard(instance_id)
            for cov in self.sinks(spec_of(self.engine.workflow(instance_id))):
                cov.instances += 1
        if kind is _K.STEP_COMPLETED or kind is _K.STEP_FAILED:
            if event.step is not None:
                self._last[instance_id] = (kind, event.step)
        elif kind is _K.TRANSITION:
            self._transition(instance_id, event)
        elif kind is _K.STATUS_CHANGED and event.detail == "compensating":
            self._failed(instance_id)

    def _transition(self, instance_id: str, event: HistoryEvent) -> None:
        source, dest = event.step, event.detail
        prev = self._last.pop(instance_id, None)
        if source is None or dest is None or dest == COMPLETED:
            return
        wf = self.engine.workflow(instance_id)
        spec = spec_of(wf)
        sinks = self.sinks(spec)
        edge: EdgeSpec | None = None
        if prev == (_K.STEP_COMPLETED, source):
            choice = choose(spec, wf, source)
            self.choices[instance_id] = choice
            for e, holds in choice.outcomes:
                for cov in sinks:
                    cov.record_guard(e, holds)
            edge = choice.edge
            if edge is None or edge.dest != dest:
                chose = "no edge" if edge is None else f"the edge to {edge.dest}"
                msg = (
                    f"the engine went {source} -> {dest}, but the guards evaluated again on the same "
                    f"variables choose {chose} ({choice.describe()}); a guard is not pure"
                )
                self.anomalies.append(Anomaly("impure-guard", instance_id, source, msg))
                guarded, default = completion_edges(spec, source)
                edge = next((e for e in [*guarded, default] if e is not None and e.dest == dest), None)
        else:
            out = spec.outgoing(source)
            wanted = [e for e in out if e.dest == dest]
            if prev == (_K.STEP_FAILED, source):
                edge = next((e for e in wanted if e.is_error), None)
            if edge is None:
                edge = next((e for e in wanted if e.is_timeout), None)
            if edge is None and wanted:
                edge = wanted[0]
        if edge is not None:
            for cov in sinks:
                cov.record_edge(edge)

    def _failed(self, instance_id: str) -> None:
        prev = self._last.pop(instance_id, None)
        if prev is None or prev[0] is not _K.STEP_COMPLETED:
            return
        step = prev[1]
        wf = self.engine.workflow(instance_id)
        spec = spec_of(wf)
        if spec.step(step).final:
            return
        choice = choose(spec, wf, step)
        self.choices[instance_id] = choice
        for e, holds in choice.outcomes:
            for cov in self.sinks(spec):
                cov.record_guard(e, holds)
        if choice.error is not None:
            msg = f"after {step} completed, choosing its edge failed: {choice.describe()}"
            self.anomalies.append(Anomaly("guard-error", instance_id, step, msg))
        elif choice.edge is None:
            msg = f"after {step} completed no edge could be taken: {choice.describe()}"
            self.anomalies.append(Anomaly("no-edge-enabled", instance_id, step, msg))
