"""
Turns an engine's history into coverage: which edge each transition took, which guard outcomes decided it.

History names a transition by its source and destination; the edge and the guard
outcomes are recovered from the spec: after a completion the guards of the source
are evaluated again, in the engine's order, on the same variables (guards are
pure, so they answer as they did a moment ago). A different answer, a guard that
raises, or a completion with no edge to take are reported as anomalies.

Forks: each branch a fork starts is a transition from the fork along the edge
into it (its guard, if any, must hold when evaluated again), a skipped branch's
guard must not hold; a branch arriving at its join takes the edge into the join.
Branches run side by side, so what is remembered is, per instance, each step that
completed or failed and whose transition has not been seen yet.
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


def _evaluate(edge: EdgeSpec, wf: object) -> bool | str:
    """The guard of *edge* on *wf*, or why it could not be evaluated."""
    guard = edge.guard
    assert guard is not None  # noqa: S101 - only called for guarded edges
    try:
        value: object = guard(wf)
    except Exception as exc:  # noqa: BLE001 - a guard's failure is reported, not raised
        return f"{type(exc).__name__}: {exc}"
    if value is not True and value is not False:
        return f"{edge.guard_name} returned {value!r}, not a bool"
    return value


def choose_branches(spec: WorkflowSpec, wf: object, fork: str) -> Choice:
    """Evaluate every guard of the fork *fork* on *wf*; the edge is one into a branch that starts, if any."""
    found = spec.fork(fork)
    assert found is not None  # noqa: S101 - only called for fork steps
    outcomes: list[tuple[EdgeSpec, bool]] = []
    started: EdgeSpec | None = None
    for r in found.regions:
        if r.edge.guard is None:
            started = started or r.edge
            continue
        value = _evaluate(r.edge, wf)
        if isinstance(value, str):
            return Choice(fork, tuple(outcomes), None, value)
        outcomes.append((r.edge, value))
        if value:
            started = started or r.edge
    return Choice(fork, tuple(outcomes), started)


def choose(spec: WorkflowSpec, wf: object, step: str) -> Choice:
    """Evaluate the guards of *step* on *wf* as the engine does: in order, the first that holds wins."""
    if spec.fork(step) is not None:
        return choose_branches(spec, wf, step)
    guarded, default = completion_edges(spec, step)
    outcomes: list[tuple[EdgeSpec, bool]] = []
    for edge in guarded:
        value = _evaluate(edge, wf)
        if isinstance(value, str):
            return Choice(step, tuple(outcomes), None, value)
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
        # Per instance: the steps that completed or failed and whose transition is still to come.
        self._ran: dict[str, dict[str, EventKind]] = {}
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
            # A reminder's side step runs beside a wait that goes on: no transition follows it.
            if event.step is not None and not spec_of(self.engine.workflow(instance_id)).is_side_step(event.step):
                self._ran.setdefault(instance_id, {})[event.step] = kind
        elif kind is _K.REMINDED:
            self._reminded(instance_id, event)
        elif kind is _K.TRANSITION or kind is _K.BRANCH_DONE:
            self._transition(instance_id, event)
        elif kind is _K.BRANCH_SKIPPED:
            self._skipped(instance_id, event)
        elif kind is _K.STATUS_CHANGED and event.detail == "compensating":
            self._failed(instance_id)
        elif kind is _K.STATUS_CHANGED and event.detail in _ENDED:
            self._ran.pop(instance_id, None)

    def _record(self, spec: WorkflowSpec, choice: Choice | None, edge: EdgeSpec | None) -> None:
        for cov in self.sinks(spec):
            if choice is not None:
                for e, holds in choice.outcomes:
                    cov.record_guard(e, holds)
            if edge is not None:
                cov.record_edge(edge)

    def _transition(self, instance_id: str, event: HistoryEvent) -> None:
        source, dest = event.step, event.detail
        if source is None or dest is None or dest == COMPLETED:
            self._ran.get(instance_id, {}).pop(source or "", None)
            return
        prev = self._ran.get(instance_id, {}).pop(source, None)
        wf = self.engine.workflow(instance_id)
        spec = spec_of(wf)
        fork = spec.fork(source)
        if fork is not None and prev is not _K.STEP_FAILED:
            self._branch(instance_id, spec, wf, source, dest, started=True)
            return
        edge: EdgeSpec | None = None
        choice: Choice | None = None
        if prev is _K.STEP_COMPLETED:
            choice = choose(spec, wf, source)
            self.choices[instance_id] = choice
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
            wanted = [e for e in spec.outgoing(source) if e.dest == dest]
            if prev is _K.STEP_FAILED:
                edge = next((e for e in wanted if e.is_error), None)
            if edge is None:
                edge = next((e for e in wanted if e.is_timeout), None)
            if edge is None and wanted:
                edge = wanted[0]
        self._record(spec, choice, edge)

    def _reminded(self, instance_id: str, event: HistoryEvent) -> None:
        """A reminder fell due: its edge is covered."""
        spec = spec_of(self.engine.workflow(instance_id))
        side = (event.detail or "").split(" ", 1)[0]
        edge = next((e for e in spec.reminders(event.step or "") if e.dest == side), None)
        self._record(spec, None, edge)

    def _branch(self, instance_id: str, spec: WorkflowSpec, wf: object, fork: str, branch: str, started: bool) -> None:
        """A branch of *fork* started (or was skipped): its edge, and its guard evaluated again."""
        found = spec.fork(fork)
        region = next((r for r in found.regions if r.name == branch), None) if found is not None else None
        if region is None:
            return
        edge = region.edge
        choice: Choice | None = None
        if edge.guard is not None:
            value = _evaluate(edge, wf)
            if isinstance(value, str):
                msg = f"the guard of the branch {branch} of the fork {fork} failed: {value}"
                self.anomalies.append(Anomaly("guard-error", instance_id, fork, msg))
                return
            choice = Choice(fork, ((edge, value),), edge if value else None)
            if value is not started:
                did = "started" if started else "skipped"
                msg = (
                    f"the engine {did} the branch {branch} of the fork {fork}, but its guard {edge.guard_name} "
                    f"evaluated again on the same variables is {value}; a guard is not pure"
                )
                self.anomalies.append(Anomaly("impure-guard", instance_id, fork, msg))
        self._record(spec, choice, edge if started else None)

    def _skipped(self, instance_id: str, event: HistoryEvent) -> None:
        if event.step is None or event.detail is None:
            return
        self._ran.get(instance_id, {}).pop(event.step, None)
        wf = self.engine.workflow(instance_id)
        self._branch(instance_id, spec_of(wf), wf, event.step, event.detail, started=False)

    def _failed(self, instance_id: str) -> None:
        ran = self._ran.pop(instance_id, {})
        completed = [step for step, kind in ran.items() if kind is _K.STEP_COMPLETED]
        if not completed:
            return
        wf = self.engine.workflow(instance_id)
        spec = spec_of(wf)
        for step in completed:
            if spec.step(step).final:
                continue
            choice = choose(spec, wf, step)
            self.choices[instance_id] = choice
            self._record(spec, choice, None)
            if choice.error is not None:
                msg = f"after {step} completed, choosing its edge failed: {choice.describe()}"
                self.anomalies.append(Anomaly("guard-error", instance_id, step, msg))
            elif choice.edge is None and spec.fork(step) is not None:
                msg = f"after the fork {step} completed none of its branches could start: {choice.describe()}"
                self.anomalies.append(Anomaly("no-edge-enabled", instance_id, step, msg))
            elif choice.edge is None:
                msg = f"after {step} completed no edge could be taken: {choice.describe()}"
                held = spec.branch_of(step)
                if held is None:
                    self.anomalies.append(Anomaly("no-edge-enabled", instance_id, step, msg))
                else:
                    fork, region = held
                    msg += (
                        f", so the branch {region.name} of the fork {fork.step} never reaches its join "
                        f"{fork.join}: a join that can never fire"
                    )
                    self.anomalies.append(Anomaly("join-never-fires", instance_id, step, msg))


_ENDED = frozenset({"completed", "failed", "cancelled", "compensation_failed"})
