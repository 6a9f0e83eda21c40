"""
``WorkflowMachine``: a hypothesis state machine that runs real instances of a workflow.

Each generated example is a story: instances started from generated inputs with a
generated fault plan, human tasks completed with generated forms (by people who
may, and sometimes by one who may not), instances cancelled. A real engine runs
them on an in-memory store and a virtual clock. After every transition the
workflow's own ``@invariant`` methods are checked; after every rule, once the
engine is idle, the built-in invariants are: the saga guarantee, every instance
waiting on an open task or ended, history consistent with the machine. Modelling
bugs fail too: no edge to take after a step, a loop with no exit, a compensation
that cannot absorb the transient faults its retry policy is meant for, a failing
``assert`` in a step.

Forked instances wait on several things at once (one per branch): the checks read
every current step, the fork, branch and join events of the history, and the
saga over the global order in which the steps of all branches completed.

Children of ``@subflow`` steps run on the same engine and are instances of the
story like their parents (``i1/1``): their tasks, messages and timers are the
story's actions, their faults come from the parent's plan (``ship/pack``), every
check runs on them, and the rules across a parent and its children too (a
completed parent's child never undone, a compensated parent's completed child
undone once, no child left running by an ended parent).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import itertools
import unittest
import warnings
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, ClassVar, cast

import attrs
import structlog.testing
from hypothesis import HealthCheck, Phase, note, target
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.control import current_build_context
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from statemachine_orch._clock import VirtualClock
from statemachine_orch._conditions import conditions_of
from statemachine_orch._ctx import Ctx
from statemachine_orch._decorators import Step
from statemachine_orch._engine import Engine
from statemachine_orch._errors import NonRetryableError, TaskNotAuthorized
from statemachine_orch._history import EventKind, HistoryEvent
from statemachine_orch._machine import STATE_ATTRIBUTE
from statemachine_orch._services import ServiceRegistry
from statemachine_orch._spec import (
    CANCELLED,
    COMPENSATING,
    COMPENSATION_FAILED,
    COMPLETED,
    FAILED,
    LIFECYCLE_STATES,
    EdgeSpec,
    StepKind,
    TaskSpec,
    WorkflowSpec,
)
from statemachine_orch._status import InstanceStatus
from statemachine_orch._store import MemoryStore
from statemachine_orch._tasks import Task
from statemachine_orch._workflow import spec_of

from ._actions import (
    Action,
    AppliedAction,
    Cancel,
    CancelChild,
    Complete,
    FireTimers,
    HandOver,
    InvariantViolation,
    Send,
    Start,
)
from ._blame import Changes, leak
from ._coverage import Coverage, CoverageWarning, current_registry, describe_edge
from ._faults import InjectedFault, InjectedPermanentFault, Injector
from ._recorder import Recorder
from ._story import retell
from ._strategies import (
    STAND_IN,
    Actor,
    FaultPlan,
    Near,
    actors,
    capped,
    fault_plans,
    form_strategy,
    input_strategy,
    make_error,
    near_constants,
    record_strategy,
)

_K = EventKind
_REAL_TIMEOUT = 30.0  # real seconds a rule may take before the engine counts as hung
_SPIN_LIMIT = 200  # retries of one instance within one action before it counts as hung
_EXTRA_ROUNDS = 9  # more runs of the budget, steered to missed edges, while require_coverage is not met
_HISTORY_SHOWN = 120  # history entries a message shows of one instance (its first and its last ones)
_STORY_EVENTS_KEPT = 40  # events the story shows of one action (its first and its last ones)
_CHECKED_AFTER = (
    _K.TRANSITION,
    _K.STATUS_CHANGED,
    _K.TASK_CREATED,
    _K.TASK_COMPLETED,
    _K.COMPENSATION_COMPLETED,
)
_ENDED = frozenset(s.value for s in InstanceStatus if s.is_terminal)
_WAITS = (_K.TASK_CREATED, _K.TIMER_SET, _K.MESSAGE_AWAITED, _K.CHILD_STARTED)
"""Events after which an instance waits: its count of transitions without a wait starts again."""
DEFAULT_MAX_TRANSITIONS = 2_000


def default_max_transitions(spec: WorkflowSpec) -> int:
    """
    How many transitions an instance of *spec* may make without waiting before it counts as a runaway loop.

    Enough for a loop of a few hundred rounds (a 360-instalment mortgage) of a few
    steps each: 2,000, or 20 per step of a larger workflow.
    """
    return max(DEFAULT_MAX_TRANSITIONS, 20 * len(spec.steps))


_UNDONE_STATES = (COMPENSATING, CANCELLED, COMPENSATION_FAILED)
_TERMINAL_STATE_STATUS = {
    COMPLETED: InstanceStatus.COMPLETED,
    FAILED: InstanceStatus.FAILED,
    CANCELLED: InstanceStatus.CANCELLED,
    COMPENSATION_FAILED: InstanceStatus.COMPENSATION_FAILED,
}


class RunawayLoop(NonRetryableError):
    """
    Raised into a step of an instance that made too many transitions without waiting or ending.

    .. versionadded:: 0.1.0
    """


class CoverageError(AssertionError):
    """
    A ``WorkflowMachine`` run with ``require_coverage`` left edges unvisited.

    Attributes:
        coverage: What the run covered.
        unvisited: The edges never taken.

    .. versionadded:: 0.1.0
    """

    coverage: Coverage
    unvisited: tuple[EdgeSpec, ...]

    def __init__(self, message: str, coverage: Coverage, unvisited: Iterable[EdgeSpec] | None = None) -> None:
        self.coverage = coverage
        self.unvisited = tuple(coverage.unvisited() if unvisited is None else unvisited)
        super().__init__(message)


@attrs.frozen
class _Config:
    """How a machine was built: ``WorkflowMachine``'s arguments, resolved."""

    workflow: type[Any]
    spec: WorkflowSpec
    services: Callable[[], ServiceRegistry | Mapping[str, object] | None]
    max_transitions: int
    allow_no_edge: frozenset[str]
    require_coverage: float | None
    errors: Mapping[str, Callable[[str], BaseException]]
    tree: tuple[tuple[type[Any], WorkflowSpec], ...] = ()
    """The workflow and the children its ``@subflow`` steps start (and theirs), each once, the workflow first."""
    explicit_max: bool = False
    max_instances: int = 5
    """How many instances one story starts at most (further ``Start`` actions do nothing)."""
    capped: tuple[str, ...] = ()
    """What the fault plans leave out: retry policies longer than a plan injects faults into."""
    exempt: frozenset[tuple[str, str]] = frozenset()
    """The edges (source, dest) left out of coverage: unreachable by design."""

    def max_for(self, spec: WorkflowSpec) -> int:
        """The runaway-loop bound of an instance of *spec* (a child's own default, unless one was given)."""
        if spec is self.spec or self.explicit_max:
            return self.max_transitions
        return default_max_transitions(spec)


class _Spinning(Exception):
    """An instance retried too often within one action: the story stops jumping over its backoffs."""

    def __init__(self, instance_id: str, step: str | None, message: str) -> None:
        self.instance_id = instance_id
        self.step = step
        self.message = message
        super().__init__(message)


@attrs.define
class _Violation:
    rule: str
    instance_id: str
    step: str | None
    message: str


@attrs.define
class _Track:
    """What the story knows about one instance."""

    name: str
    started_as: str
    faults: FaultPlan
    since_wait: int = 0
    runaway: bool = False
    halfway: str | None = None
    """The instance's variables when it had made half the transitions allowed without a wait."""
    cancel: bool | None = None
    noted: int = 0
    last_step: str | None = None
    injected: list[str] = attrs.field(factory=list[str])
    spec: WorkflowSpec | None = None
    parent: str | None = None
    """A child's parent (its id), and the parent's subflow step that started it."""
    via: str | None = None
    started_step: str | None = None
    """The step whose ``step_started`` is the instance's latest event (a subflow step then runs its handler)."""
    in_compensation: bool = False
    """Whether a compensation attempt is in flight (its ``compensation_started`` is the latest event)."""
    retries_now: int = 0
    """Retries scheduled since the story's current action began."""
    compensated: bool = False
    """Whether the instance started compensating (failed, or cancelled with compensation)."""
    status: InstanceStatus = InstanceStatus.RUNNING
    """The status its history says it has."""


class WorkflowStateMachine(RuleBasedStateMachine):
    """
    The base of the machines :func:`WorkflowMachine` builds; read its results from the class.

    Attributes:
        config: How the machine was built (the workflow, its spec, the options).
        coverage: The edges and guard outcomes exercised by the runs of this class
            (reset when its ``TestCase`` starts).
        clock: The story's virtual clock.
        engine: The engine running the story.

    .. versionadded:: 0.1.0
    """

    config: ClassVar[_Config]
    coverage: ClassVar[Coverage]
    menu: ClassVar[_Menu]
    steer: ClassVar[frozenset[str]] = frozenset()
    """Steps whose edges the run still misses: the actions on them are drawn more often."""
    steer_score: ClassVar[dict[str, int]] = {}
    """How close each step is to those: a story is scored by the closest it got (hypothesis climbs it)."""
    clock: VirtualClock
    """The story's clock: it moves when retries back off, and when the story fires timers."""
    engine: Engine
    """The engine that runs the story's instances (in memory, one worker)."""

    def __init__(self) -> None:
        super().__init__()
        cfg = self.config
        # The engine logs every failed instance; thousands of generated failures would
        # bury the story, so a run keeps them in memory instead.
        self._logs = structlog.testing.capture_logs()
        self._logs.__enter__()
        self._loop = asyncio.new_event_loop()
        # Not autojump: a wait's timer (escalation, @timer) fires only when the story
        # says so (rule fire_timers); retry backoffs are jumped over by _settle.
        self.clock = VirtualClock(autojump=False)
        self._faults = Injector(self._live_workflow, cfg.errors)
        self._changes = Changes(self._live_workflow)
        given = cfg.services()
        self.engine = Engine(
            MemoryStore(),
            services=self._faults.services(given if isinstance(given, ServiceRegistry) else ServiceRegistry(given)),
            clock=self.clock,
            # One worker: a parent waiting on its child (or on its child's undo) holds none.
            concurrency=1,
            before_attempt=self._before_attempt,
            after_attempt=self._after_attempt,
        )
        sinks_main = (self.coverage, current_registry().of(cfg.spec))
        self._recorder = Recorder(
            self.engine, lambda spec: sinks_main if spec is cfg.spec else (current_registry().of(spec),)
        )
        self.engine.subscribe(self._on_event)
        self._tracks: dict[str, _Track] = {}
        self._pending: tuple[str, FaultPlan] | None = None
        self._violations: list[_Violation] = []
        self._touched: dict[str, None] = {}
        self._unended: dict[str, None] = {}
        self._anomalies_seen = 0
        self._action_began = 0.0
        self.steered = 0
        """How often this story entered a step the run steers to."""
        # Refreshed after every rule (the engine is idle then), read by the preconditions.
        self._open_tasks_now: list[Task] = []
        self._waiting_now: dict[str, None] = {}
        # The story so far (for retelling a failure), what the current action touched and aimed at.
        self._log: list[AppliedAction] = []
        self._action_touched: dict[str, None] = {}
        self._action_target: str | None = None
        # Notes go to hypothesis, or, when a story is replayed outside it, here.
        self._notes: list[str] | None = None

    # ------------------------------------------------------------------ plumbing

    def teardown(self) -> None:
        """Stop the engine and close the event loop."""
        if self.steer and self._notes is None:
            # Hill-climb towards stories that reach the steps whose edges are missed.
            target(float(self.steered), label="visits to steps whose edges are missed")
        try:
            self._loop.run_until_complete(self.engine.aclose())
        finally:
            self._loop.close()
            self._logs.__exit__(None, None, None)

    def _run(self, op: Coroutine[Any, Any, Any] | None) -> Any:
        async def go() -> Any:
            async with asyncio.timeout(_REAL_TIMEOUT):
                if op is None:
                    await self._settle()
                    return None
                # Settle alongside: cancel() waits for the end, which may need a
                # compensation's retry backoff to be jumped over first.
                task = asyncio.ensure_future(op)
                while not task.done():
                    await self._settle()
                    await asyncio.sleep(0)
                await self._settle()
                return task.result()

        try:
            return self._loop.run_until_complete(go())
        except _Spinning as spin:
            self._violate("hung", spin.instance_id, spin.step, spin.message)
            raise self._error(self._violations[-1]) from None
        except TimeoutError:
            # Blame the instance whose attempt is in flight, not the last one something happened to.
            busy = [i for i, t in self._tracks.items() if t.started_step is not None or t.in_compensation]
            instance_id = next(reversed(busy or list(self._touched) or list(self._tracks)), None)
            if instance_id is None:
                raise
            msg = (
                f"the engine did not settle within {_REAL_TIMEOUT:g} s of real time: a step or compensation "
                "awaits something that never happens (give it a timeout=)"
            )
            self._violate("hung", instance_id, self._tracks[instance_id].last_step, msg)
            raise self._error(self._violations[-1]) from None

    async def _settle(self) -> None:
        """
        Run until every instance waits or ended: no worker busy, no timer due, no retry pending.

        Timers already due (the story moved the clock) must fire before the story
        goes on, or what happens next would depend on the event loop's timing.
        """
        engine, clock = self.engine, self.clock
        while True:
            # No engine event means "nothing runs" without also waiting for every timer.
            while engine.statistics().active:  # noqa: ASYNC110
                await asyncio.sleep(0)
            now = clock.now()
            infos = [engine.info(i) for i in self._unended]
            pending = [i for i in infos if i.wake_at is not None and not i.status.is_terminal]
            if any(i.wake_at is not None and i.wake_at <= now for i in pending):
                clock.jump_to(now)  # wakes the engine's timer task
                await asyncio.sleep(0)
                continue
            backoffs = [i for i in pending if i.wake_at is not None and self._backing_off(i.id, i.status)]
            if not backoffs:
                return
            soonest = min(backoffs, key=lambda i: i.wake_at or 0.0)
            self._check_spinning(soonest.id)
            assert soonest.wake_at is not None  # noqa: S101 - filtered above
            clock.jump_to(soonest.wake_at)

    def _check_spinning(self, instance_id: str) -> None:
        """Stop jumping over the backoffs of an instance that retries on and on within one action."""
        track = self._tracks.get(instance_id)
        if track is None or track.retries_now < _SPIN_LIMIT:
            return
        history = self.engine.history(instance_id)
        failed = next((e for e in reversed(history) if e.kind in (_K.STEP_FAILED, _K.COMPENSATION_FAILED)), None)
        step = failed.step if failed is not None else track.last_step
        last = f"; its last attempt failed with {failed.detail}" if failed is not None and failed.detail else ""
        spec = self._spec(track)
        policy = ""
        if step is not None and spec.has_step(step):
            s = spec.step(step)
            undoing = failed is not None and failed.kind is _K.COMPENSATION_FAILED and s.compensation is not None
            retry = s.compensation.retry if undoing and s.compensation is not None else s.retry
            policy = f" under Retry(attempts={retry.attempts})"
        elapsed = self.clock.now() - self._action_began
        msg = (
            f"{track.name} was retried {track.retries_now} times{policy} within one action, the clock jumping "
            f"{_duration(elapsed)} over the backoffs, and it still neither waits nor ended: for these inputs and "
            f"services its attempts never succeed{last}"
        )
        raise _Spinning(instance_id, step, self._names(msg, instance_id))

    def _backing_off(self, instance_id: str, status: InstanceStatus) -> bool:
        """Whether the instance's timer is a retry's backoff (a plain step waits for nothing else)."""
        if status is not InstanceStatus.WAITING:
            return True
        wf = self.engine.workflow(instance_id)
        raw: object = getattr(wf, STATE_ATTRIBUTE, "")
        if isinstance(raw, str):
            return False
        # Inside a fork, one branch may back off while another waits on a task.
        spec = spec_of(wf)
        return any(spec.has_step(n) and spec.step(n).kind is StepKind.STEP for n in _active_steps(raw))

    def _violate(self, rule_id: str, instance_id: str, step: str | None, message: str) -> None:
        self._violations.append(_Violation(rule_id, instance_id, step, message))

    def _before_attempt(self, ctx: Ctx) -> None:
        track = self._tracks.get(ctx.instance_id)
        if track is None:
            return
        limit = self._limit(track)
        if not ctx.compensating and (track.runaway or track.since_wait > limit):
            if not track.runaway:
                track.runaway = True
                self._runaway(ctx.instance_id, ctx.step)
            msg = f"{track.name} made more than {limit} transitions without waiting"
            raise RunawayLoop(msg)
        if not ctx.compensating and track.started_step == ctx.step and self._spec(track).step(ctx.step).child:
            # A subflow step's attempt met its fault when it started the child; this is its on_result handler.
            return
        self._faults.before(ctx, track.faults, track.injected)

    def _after_attempt(self, ctx: Ctx) -> None:
        if ctx.instance_id in self._tracks:
            self._faults.after(ctx)

    def _live_workflow(self, instance_id: str) -> object:
        return self.engine.workflow(instance_id)

    def _limit(self, track: _Track) -> int:
        return self.config.max_for(self._spec(track))

    def _spec(self, track: _Track) -> WorkflowSpec:
        return track.spec if track.spec is not None else self.config.spec

    def _on_event(self, instance_id: str, event: HistoryEvent) -> None:
        self._recorder(instance_id, event)
        kind = event.kind
        if kind is _K.INSTANCE_STARTED and self._pending is not None and "/" not in instance_id:
            started_as, faults = self._pending
            self._pending = None
            roots = sum(1 for t in self._tracks.values() if t.parent is None)
            self._tracks[instance_id] = _Track(f"i{roots + 1}", started_as, faults, spec=self.config.spec)
            self._unended[instance_id] = None
        track = self._tracks.get(instance_id)
        if track is None:
            return
        self._touched[instance_id] = None
        self._action_touched[instance_id] = None
        if kind is _K.STATUS_CHANGED:
            # Only these can have a timer; a completed child undone by its parent runs again.
            if event.detail in _ENDED:
                self._unended.pop(instance_id, None)
            else:
                self._unended[instance_id] = None
        track.started_step = event.step if kind is _K.STEP_STARTED else None
        track.in_compensation = kind is _K.COMPENSATION_STARTED
        if kind is _K.RETRY_SCHEDULED:
            track.retries_now += 1
        elif kind is _K.STATUS_CHANGED and event.detail is not None:
            track.status = InstanceStatus(event.detail)
            track.compensated = track.compensated or track.status is InstanceStatus.COMPENSATING
        spec = self._spec(track)
        if spec.invariants and (kind is _K.STEP_STARTED or kind is _K.STEP_COMPLETED):
            self._changes(instance_id, event)
        if kind is _K.CHILD_STARTED and event.step is not None and event.detail is not None:
            self._child_started(instance_id, track, event.step, event.detail)
        if kind is _K.TRANSITION:
            if self.steer:
                self.steered = max(self.steered, self.steer_score.get(event.detail or "", 0))
            track.since_wait += 1
            if track.since_wait == self._limit(track) // 2:
                track.halfway = repr(self.engine.workflow(instance_id))
        elif kind in _WAITS:
            track.since_wait = 0
        if kind in (_K.STEP_STARTED, _K.STEP_COMPLETED, _K.STEP_FAILED):
            track.last_step = event.step
        elif kind in (_K.COMPENSATION_COMPLETED, _K.COMPENSATION_FAILED, _K.COMPENSATION_STARTED):
            track.last_step = f"{event.detail} (undoing {event.step})"
        if (kind is _K.STEP_FAILED or kind is _K.COMPENSATION_FAILED) and (event.detail or "").startswith(
            "AssertionError"
        ):
            what = "step" if kind is _K.STEP_FAILED else "compensation"
            msg = f"an assert failed in {what} {track.last_step} (attempt {event.attempt}): {event.detail}"
            self._violate("assertion-failed", instance_id, event.step, msg)
        if kind is _K.STEP_FAILED and (event.detail or "").startswith("ServiceNotFound"):
            msg = f"step {event.step} called a service that is not registered: {event.detail}; pass services="
            self._violate("missing-service", instance_id, event.step, msg)
        if spec.invariants and kind in _CHECKED_AFTER:
            self._check_invariants(instance_id, event, track)

    def _child_started(self, parent_id: str, parent: _Track, step: str, child_id: str) -> None:
        """Follow a child like the story's own instances: its faults are its parent's plan for *step*."""
        if child_id in self._tracks:
            return
        prefix = f"{step}/"
        faults = {k.removeprefix(prefix): v for k, v in parent.faults.items() if k.startswith(prefix)}
        name = parent.name + child_id.removeprefix(parent_id)
        wf = self.engine.workflow(child_id)
        self._tracks[child_id] = _Track(
            name, repr(wf), faults, spec=spec_of(wf), parent=parent_id, via=step, cancel=None
        )
        if not self.engine.info(child_id).status.is_terminal:
            self._unended[child_id] = None
        self._touched[child_id] = None

    def _check_invariants(self, instance_id: str, event: HistoryEvent, track: _Track) -> None:
        wf = self.engine.workflow(instance_id)
        spec = spec_of(wf)
        if not spec.invariants:
            return
        status = track.status
        for inv in spec.invariants:
            try:
                ok = inv.holds(wf, status, track.compensated)
                why = "returned False"
            except Exception as exc:  # noqa: BLE001 - an invariant that raises is broken
                ok = False
                why = f"raised {type(exc).__name__}: {exc}"
            if not ok:
                state = getattr(wf, STATE_ATTRIBUTE, None)
                msg = (
                    f"@invariant {inv.name} {why} after {event.describe().strip()} "
                    f"(last ran: {track.last_step}; state {state}, status {status.value}; variables then: {wf!r})"
                )
                step = (track.last_step or "").split(" ")[0] or None
                # After an undo the last step is seldom the culprit: the effect nobody undid is.
                blamed, why_left = leak(spec, inv, status, self._changes.done(instance_id))
                if why_left is not None:
                    msg += f"; {why_left}"
                self._violate("invariant", instance_id, blamed or step, msg)

    # ------------------------------------------------------------------ checks

    def _after_rule(self) -> None:
        anomalies = self._recorder.anomalies[self._anomalies_seen :]
        self._anomalies_seen = len(self._recorder.anomalies)
        allowed = self.config.allow_no_edge
        for a in anomalies:
            track = self._tracks.get(a.instance_id)
            if track is None:
                continue
            qualified = f"{self._spec(track).name}.{a.step}"
            if not (a.rule == "no-edge-enabled" and (a.step in allowed or qualified in allowed)):
                self._violate(a.rule, a.instance_id, a.step, a.message)
        # A child's end moves its parent on, and a parent's end its children: check the whole family.
        for instance_id in list(self._touched):
            track = self._tracks[instance_id]
            while track.parent is not None and track.parent in self._tracks:
                self._touched[track.parent] = None
                track = self._tracks[track.parent]
        for instance_id in self._touched:
            self._check_idle(instance_id)
            if self.engine.info(instance_id).status is InstanceStatus.WAITING:
                self._waiting_now[instance_id] = None
            else:
                self._waiting_now.pop(instance_id, None)
        self._open_tasks_now = [t for t in self.engine.tasks() if t.instance_id in self._tracks]
        for instance_id in self._touched:
            self._note_story(instance_id)
        self._touched.clear()
        if self._violations:
            v = self._violations[0]
            raise self._error(v)

    def _note_story(self, instance_id: str) -> None:
        track = self._tracks[instance_id]
        if self._notes is None and not current_build_context().is_final:
            return  # hypothesis keeps notes of the final (failing) run only: no need to write them
        history = self.engine.history(instance_id)
        lines = [
            f"    {track.name}  {self._describe(instance_id, event)}"
            for event in history[track.noted :]
            if event.kind is not _K.STEP_STARTED
        ]
        if len(lines) > _STORY_EVENTS_KEPT:
            # A long loop's one action can make thousands of events: its first and last tell the story.
            half = _STORY_EVENTS_KEPT // 2
            left_out = len(lines) - 2 * half
            lines[half:-half] = [f"    {track.name}  ... ({left_out} events of this action left out)"]
        for line in lines:
            self._note(line)
        track.noted = len(history)

    def _describe(self, instance_id: str, event: HistoryEvent) -> str:
        return self._names(event.describe(), instance_id)

    def _names(self, text: str, instance_id: str) -> str:
        """*text* with the instance's id, and those of its family, replaced by their names in the story."""
        track = self._tracks[instance_id]
        text = text.replace(instance_id, track.name)
        while track.parent is not None and track.parent in self._tracks:
            parent_id, track = track.parent, self._tracks[track.parent]
            text = text.replace(parent_id, track.name)
        return text

    def _error(self, v: _Violation) -> InvariantViolation:
        track = self._tracks[v.instance_id]
        info = self.engine.info(v.instance_id)
        wf = self.engine.workflow(v.instance_id)
        state = getattr(wf, STATE_ATTRIBUTE, None)
        spec = self._spec(track)
        lines = [
            f"{spec.name}: {v.message} [{v.rule}]",
            f"instance {track.name} = {track.started_as}",
        ]
        if track.parent is not None:
            parent = self._tracks[track.parent]
            lines.append(f"child of {parent.name} ({parent.started_as}), started by its step {track.via}")
        if track.faults:
            lines.append(f"fault plan: {track.faults!r}")
        lines.append(f"state reached: {state} (status {info.status.value})")
        if info.error:
            lines.append(f"error: {self._names(info.error, v.instance_id)}")
        family = [v.instance_id]
        if track.parent is not None:
            family.append(track.parent)
        family += [i for i, t in self._tracks.items() if t.parent == v.instance_id]
        for instance_id in family:
            lines.append(f"history of {self._tracks[instance_id].name}:")
            history = self.engine.history(instance_id)
            half = _HISTORY_SHOWN // 2
            if len(history) > _HISTORY_SHOWN:
                lines += [f"  {self._describe(instance_id, e)}" for e in history[:half]]
                lines.append(f"  ... {len(history) - 2 * half} entries left out ...")
                history = history[-half:]
            lines += [f"  {self._describe(instance_id, e)}" for e in history]
        if self.config.capped:
            lines.append("fault plans capped: " + "; ".join(self.config.capped))
        return InvariantViolation("\n".join(lines), rule=v.rule, workflow=spec.name, instance=track.name, step=v.step)

    def _runaway(self, instance_id: str, step: str) -> None:
        history = self.engine.history(instance_id)
        transitions = [e for e in history if e.kind is _K.TRANSITION]
        recent = transitions[-200:]
        spec = spec_of(self.engine.workflow(instance_id))
        back = {(e.source, e.dest): e for e in spec.edges if e.back}
        taken: dict[tuple[str, str], int] = {}
        for e in transitions:
            key = (e.step or "", e.detail or "")
            if key in back:
                taken[key] = taken.get(key, 0) + 1
        loops = ", ".join(f"{describe_edge(back[k])} taken {n}x" for k, n in taken.items())
        cycle = " -> ".join([e.step or "?" for e in recent[-8:]] + [step])
        source = next(iter(taken))[0] if taken else step
        track = self._tracks[instance_id]
        limit = self._limit(track)
        now = repr(self.engine.workflow(instance_id))
        same = (
            f"; its variables are what they were {limit - limit // 2} transitions earlier ({now}): nothing the loop "
            "does changes what its guards read"
            if track.halfway == now
            else f"; its variables now: {now}"
        )
        msg = (
            f"{track.name} did not end within {limit} transitions without waiting (on a task, a timer or a "
            f"message): it loops through {loops or cycle} (last: {cycle}){same}. A loop meant to run longer "
            f"needs a larger bound: WorkflowMachine({spec.name}, max_transitions=...)"
        )
        self._violate("runaway-loop", instance_id, source, msg)

    def _check_idle(self, instance_id: str) -> None:
        track = self._tracks[instance_id]
        info = self.engine.info(instance_id)
        wf = self.engine.workflow(instance_id)
        spec = spec_of(wf)
        raw: object = getattr(wf, STATE_ATTRIBUTE, "")
        state = _state_text(raw)
        active = _active_steps(raw)
        status = info.status
        history = self.engine.history(instance_id)
        replay = _Replay(spec, instance_id)
        wrong: tuple[HistoryEvent, str] | None = None
        for e in history:
            problem = replay.apply(e)
            if problem is not None:
                wrong = (e, problem)
                break
        # Every instance is waiting on something open, or ended.
        if not status.is_terminal:
            self._check_waiting(instance_id, track, spec, raw, active, status, None if wrong else replay)
        # History is consistent with the machine.
        self._check_history(instance_id, track, spec, state, active, status, replay, wrong)
        # The saga guarantee.
        self._check_saga(instance_id, track, spec, status, history)
        # A parent's children: undone when (and only when) it is, never left running.
        if replay.started:
            self._check_children(instance_id, track, status, history)

    def _check_waiting(
        self,
        instance_id: str,
        track: _Track,
        spec: WorkflowSpec,
        raw: object,
        active: list[str],
        status: InstanceStatus,
        replay: _Replay | None,
    ) -> None:
        state = _state_text(raw)
        if isinstance(raw, list) and not active:
            msg = (
                f"idle engine, but every branch of {track.name} arrived ({state}) and the join did not fire: "
                "a join that can never fire"
            )
            self._violate("stuck", instance_id, None, msg)
            return
        running = [n for n in active if not spec.has_step(n) or spec.step(n).kind is StepKind.STEP]
        if status is not InstanceStatus.WAITING or running or not active:
            where = ", ".join(running) or state
            msg = f"idle engine, but {track.name} is {status.value} at {where}: not waiting, not ended"
            self._violate("stuck", instance_id, (running or active or [state])[0], msg)
            return
        tasks = sorted(t.step for t in self.engine.tasks(instance_id=instance_id))
        humans = sorted(n for n in active if spec.step(n).kind is StepKind.HUMAN_TASK)
        if tasks != humans:
            msg = f"{track.name} waits at {', '.join(active)} but its open tasks are {tasks}"
            self._violate("stuck", instance_id, (humans or active)[0], msg)
            return
        for name in active:
            if spec.step(name).kind is StepKind.FAN_OUT and replay is not None:
                ours = [c for c in self.engine.children(instance_id) if replay.started.get(c.id) == name]
                if all(c.status.is_terminal for c in ours):
                    msg = (
                        f"idle engine, but {track.name} waits at its fan-out step {name}, whose children all "
                        "ended: their ends never resumed the parent"
                    )
                    self._violate("stuck", instance_id, name, msg)
                    return
            if spec.step(name).kind is not StepKind.SUBFLOW or replay is None:
                continue
            child_id = replay.open_children.get(name)
            child = self.engine.info(child_id) if child_id is not None else None
            if child is None:
                msg = f"idle engine, but {track.name} waits at its subflow step {name}, which started no child"
            elif child.status.is_terminal:
                msg = (
                    f"idle engine, but {track.name} waits at its subflow step {name} on its child "
                    f"{self._names(child.id, instance_id)}, which ended {child.status.value}: its end never "
                    "resumed the parent"
                )
            else:
                continue
            self._violate("stuck", instance_id, name, msg)
            return

    def _check_history(
        self,
        instance_id: str,
        track: _Track,
        spec: WorkflowSpec,
        state: str,
        active: list[str],
        status: InstanceStatus,
        replay: _Replay,
        wrong: tuple[HistoryEvent, str] | None,
    ) -> None:
        if wrong is not None:
            event, problem = wrong
            self._violate("history", instance_id, event.step, f"history has {self._names(problem, instance_id)}")
            return
        replayed = replay.where()
        expected = _TERMINAL_STATE_STATUS.get(state)
        if active or spec.has_step(state):
            consistent = sorted(replay.active) == sorted(active) and status in (
                InstanceStatus.RUNNING,
                InstanceStatus.WAITING,
            )
        elif state == COMPLETED:
            consistent = replayed == COMPLETED and status is InstanceStatus.COMPLETED
        elif replay.completed:
            # Only a completed child is compensated after its end: undone by its parent.
            consistent = track.parent is not None and state in _UNDONE_STATES and (expected in (None, status))
        else:
            consistent = state in LIFECYCLE_STATES and all(spec.has_step(n) for n in replay.active)
            consistent = consistent and bool(replay.active) and (expected is None or status is expected)
        if not consistent:
            msg = f"{track.name} is at {state} ({status.value}), but its transitions lead to {replayed}"
            self._violate("history", instance_id, next(iter(replay.active), None), msg)

    def _check_saga(
        self,
        instance_id: str,
        track: _Track,
        spec: WorkflowSpec,
        status: InstanceStatus,
        history: list[HistoryEvent],
    ) -> None:
        completed: list[str] = []
        # A fan-out step left with children started (a cancel, a failing sibling branch) is undone like a completed one.
        fans = {s.name for s in spec.steps if s.fan is not None}
        left: dict[str, None] = {}
        # An attempted compensation (attempted=True) is registered as its step's visit starts, not as it completes.
        early = {s.name for s in spec.steps if s.compensation is not None and s.compensation.attempted}
        for e in history:
            step = e.step or ""
            if e.kind is _K.STEP_STARTED and step in early and e.attempt == 1:
                completed.append(step)
            elif e.kind is _K.STEP_COMPLETED and step not in early and spec.step(step).compensation is not None:
                completed.append(step)
                left.pop(step, None)
            elif e.kind is _K.CHILD_STARTED and step in fans:
                left[step] = None
            elif e.kind is _K.STEP_FAILED:
                left.pop(step, None)
            elif e.kind is _K.STATUS_CHANGED and e.detail == InstanceStatus.COMPENSATING.value:
                completed += left
                left.clear()
        undone = [e.step for e in history if e.kind is _K.COMPENSATION_COMPLETED]
        expected = completed[::-1]
        if status is InstanceStatus.COMPENSATION_FAILED:
            failed = [e for e in history if e.kind is _K.COMPENSATION_FAILED]
            last = failed[-1] if failed else None
            comp_step = last.step if last is not None else None
            comp = spec.step(comp_step).compensation if comp_step is not None else None
            comp_name = comp.name if comp is not None else "?"
            attempts = [e for e in failed if e.step == comp_step]
            injected = [i for i in track.injected if i.startswith(comp_name + " ")]
            limit = comp.retry.attempts if comp is not None else 0
            policy = "unlimited" if limit is None else limit
            msg = (
                f"compensation {comp_name} of {comp_step} failed for good on attempt "
                f"{last.attempt if last else '?'} ({last.detail if last else '?'}), although the faults "
                f"injected into it ({len(injected)} transient) are fewer than its retry policy's "
                f"{policy} attempts absorb; its attempts: " + "; ".join(f"#{e.attempt} {e.detail}" for e in attempts)
            )
            self._violate("compensation-failed", instance_id, comp_step, self._names(msg, instance_id))
            if undone != expected[: len(undone)]:
                msg = f"compensations ran for {undone}, which is not the start of {expected} (newest first)"
                self._violate("saga", instance_id, comp_step, msg)
            return
        cancel = track.cancel
        if status is InstanceStatus.CANCELLED and cancel is None and track.parent is not None:
            # Cancelled by its parent (cancelled, or failing), or undone by the parent's compensation.
            parent = self.engine.info(track.parent).status
            # A fan-out that fails cancels its running children and undoes its completed ones: the parent goes on.
            via = self._spec(self._tracks[track.parent]).step(track.via or "")
            unwound = via.fan is not None and any(
                e.kind is _K.STEP_FAILED and e.step == via.name for e in self.engine.history(track.parent)
            )
            if not unwound and parent in (InstanceStatus.RUNNING, InstanceStatus.WAITING, InstanceStatus.COMPLETED):
                msg = f"{track.name} ended cancelled, but nobody cancelled it (its parent is {parent.value})"
                self._violate("saga", instance_id, None, msg)
                return
            cancel = any(e.kind is _K.STATUS_CHANGED and e.detail == "compensating" for e in history)
        if status is InstanceStatus.FAILED or (status is InstanceStatus.CANCELLED and cancel):
            if undone != expected:
                msg = (
                    f"{track.name} ended {status.value}: the compensations of the completed steps "
                    f"{completed} must run newest first, once each ({expected}), but ran for {undone}"
                )
                self._violate("saga", instance_id, (undone or expected or [None])[0], msg)
            return
        if status is InstanceStatus.CANCELLED and cancel is None:
            msg = f"{track.name} ended cancelled, but nobody cancelled it"
            self._violate("saga", instance_id, None, msg)
        if undone:
            msg = f"{track.name} is {status.value}, yet compensations ran for {undone}"
            self._violate("saga", instance_id, undone[0], msg)

    def _check_children(
        self, instance_id: str, track: _Track, status: InstanceStatus, history: list[HistoryEvent]
    ) -> None:
        """
        The cross-instance rules of a parent, once it ended.

        Completed: none of its completed children was undone. Failed, or cancelled with
        compensation: each child whose subflow step completed was undone once (ended
        ``cancelled`` through its own compensations). Ended in any way: no child runs on.
        """
        if not status.is_terminal or status is InstanceStatus.COMPENSATION_FAILED:
            return
        # Per child: the subflow step that started it, and whether that step completed with it.
        started: dict[str, str] = {}
        finished: dict[str, str] = {}
        used: dict[str, None] = {}
        last_done: dict[str, str] = {}
        # A fan-out keeps every child that completed (undone with it), unless the fan-out
        # failed: then it undid them itself, before its step failed (unwound).
        fans = {s.name for s in self._spec(track).steps if s.fan is not None}
        kept: dict[str, dict[str, None]] = {}
        unwound: dict[str, None] = {}
        for e in history:
            step, detail = e.step or "", e.detail or ""
            if e.kind is _K.CHILD_STARTED:
                started[detail] = step
            elif e.kind is _K.CHILD_FINISHED:
                child_id, _, how = detail.rpartition(" ")
                finished[child_id] = how
                if how == InstanceStatus.COMPLETED.value and step in fans:
                    kept.setdefault(step, {})[child_id] = None
                elif how == InstanceStatus.COMPLETED.value:
                    last_done[step] = child_id
            elif e.kind is _K.STEP_COMPLETED and step in last_done:
                used[last_done.pop(step)] = None
            elif e.kind is _K.STEP_FAILED and step in kept:
                unwound.update(kept.pop(step))
        for children in kept.values():
            used.update(children)
        compensated = status is InstanceStatus.FAILED or (status is InstanceStatus.CANCELLED and track.cancel)
        for child_id, step in started.items():
            child = self.engine.info(child_id)
            name = self._names(child_id, instance_id)
            child_history = self.engine.history(child_id)
            undos = sum(
                1
                for a, b in itertools.pairwise(child_history)
                if a.kind is _K.STATUS_CHANGED
                and a.detail == InstanceStatus.COMPLETED.value
                and b.kind is _K.STATUS_CHANGED
                and b.detail == InstanceStatus.COMPENSATING.value
            )
            if not child.status.is_terminal:
                msg = (
                    f"{track.name} ended {status.value}, but its child {name} (started by {step}) is still "
                    f"{child.status.value}"
                )
                self._violate("orphan-child", instance_id, step, msg)
            elif child_id in unwound and (undos != 1 or child.status is not InstanceStatus.CANCELLED):
                msg = (
                    f"the fan-out {step} of {track.name} failed, so its completed child {name} must be undone "
                    f"once and end cancelled; it was undone {undos} times and ended {child.status.value}"
                )
                self._violate("child-saga", instance_id, step, msg)
            elif child_id in unwound:
                continue
            elif status is InstanceStatus.COMPLETED and undos:
                msg = f"{track.name} completed, but its completed child {name} (started by {step}) was undone"
                self._violate("child-saga", instance_id, step, msg)
            elif compensated and child_id in used and (undos != 1 or child.status is not InstanceStatus.CANCELLED):
                msg = (
                    f"{track.name} ended {status.value} and compensated, so its child {name}, whose completion "
                    f"{step} took, must be undone once and end cancelled; it was undone {undos} times and ended "
                    f"{child.status.value}"
                )
                self._violate("child-saga", instance_id, step, msg)
            elif status is InstanceStatus.CANCELLED and track.cancel is False and finished.get(child_id) is None:
                child_comp = any(
                    e.kind is _K.STATUS_CHANGED and e.detail == InstanceStatus.COMPENSATING.value for e in child_history
                )
                if child_comp:
                    msg = (
                        f"{track.name} was cancelled without compensation, but its child {name} "
                        f"(started by {step}), cancelled with it, ran its compensations"
                    )
                    self._violate("child-saga", instance_id, step, msg)

    # ------------------------------------------------------------------ actions

    def apply(self, action: Action) -> None:
        """Apply one action of the story, run the engine until every instance waits or ended, check."""
        self._action_began = self.clock.now()
        for track in self._tracks.values():
            track.retries_now = 0
        self._action_touched = {}
        self._action_target = None
        # The engine runs the started workflow object itself: keep it as it was, to replay the story.
        logged = attrs.evolve(action, workflow=copy.deepcopy(action.workflow)) if isinstance(action, Start) else action
        try:
            if isinstance(action, Start):
                self._start(action)
            elif isinstance(action, Complete):
                self._complete(action)
            elif isinstance(action, HandOver):
                self._hand_over(action)
            elif isinstance(action, (Cancel, CancelChild)):
                self._cancel(action)
            elif isinstance(action, Send):
                self._send(action)
            else:
                self._fire_timers()
        except InvariantViolation as err:
            self._logged(logged)
            err.story = tuple(self._log)
            raise
        self._logged(logged)

    def _logged(self, action: Action) -> None:
        names = frozenset(self._tracks[i].name for i in self._action_touched if i in self._tracks)
        target = self._tracks[self._action_target].name if self._action_target in self._tracks else None
        self._log.append(AppliedAction(action, names, target))

    def _note(self, text: str) -> None:
        if self._notes is None:
            note(text)
        else:
            self._notes.append(text)

    def _aim(self, action: Action, target: str) -> Action | None:
        """*action* with its index recomputed to aim at the instance named *target* (``None``: not there)."""
        ids = [i for i, t in self._tracks.items() if t.name == target]
        if not ids:
            return None
        instance_id = ids[0]
        if isinstance(action, (Complete, HandOver)):
            tasks = self.open_tasks(action.step)
            at = [n for n, t in enumerate(tasks) if t.instance_id == instance_id]
            return attrs.evolve(action, task=len(tasks) - 1 - at[-1]) if at else None
        if isinstance(action, (Cancel, CancelChild)):
            children = isinstance(action, CancelChild)
            waiting = [i for i in self._waiting_now if (self._tracks[i].parent is not None) is children]
            return (
                attrs.evolve(action, instance=len(waiting) - 1 - waiting.index(instance_id))
                if instance_id in waiting
                else None
            )
        if isinstance(action, Send):
            takers = [i for i in self._waiting_now if _takes(self._spec(self._tracks[i]), action.message)]
            return (
                attrs.evolve(action, instance=len(takers) - 1 - takers.index(instance_id))
                if instance_id in takers
                else None
            )
        return action

    @classmethod
    def replay(cls, *actions: Action) -> None:
        """
        Play *actions* as a story on a fresh engine, as a failing run printed it; raise what it breaks.

        Use it to keep a story that broke something as a test of its own: a failing
        ``WorkflowMachine`` run prints the call to paste.

        Raises:
            InvariantViolation: The story broke a check; its notes tell the story.

        .. versionadded:: 0.1.0
        """
        err, _, notes = cls.replay_aimed([(a, None) for a in actions])
        if err is not None:
            err.add_note("\n".join(notes))
            raise err

    @classmethod
    def replay_aimed(
        cls, story: list[tuple[Action, str | None]]
    ) -> tuple[InvariantViolation | None, list[Action], list[str]]:
        """
        Play a story whose actions may name the instance they aim at; what broke, the actions as played, the notes.

        Stops at the first action that breaks a check, or that aims at an instance it cannot find
        (then the violation is ``None``).
        """
        machine = cls()
        notes: list[str] = []
        machine._notes = notes
        played: list[Action] = []
        try:
            for action, target in story:
                aimed = machine._aim(action, target) if target is not None else action
                if aimed is None:
                    return None, played, notes
                played.append(aimed)
                try:
                    machine.apply(copy.deepcopy(aimed) if isinstance(aimed, Start) else aimed)
                except InvariantViolation as err:
                    return err, played, notes
            return None, played, notes
        finally:
            machine.teardown()

    def open_tasks(self, step: str) -> list[Task]:
        """
        The open tasks at *step* of the story's instances (as of the end of the last action).

        A step of a child workflow is named ``Child.step``.
        """
        return [t for t in self._open_tasks_now if self._step_key(t.instance_id, t.step) == step]

    def _step_key(self, instance_id: str, step: str) -> str:
        """How actions name *step* of the instance: plain for the tested workflow, ``Child.step`` for a child's."""
        spec = self._spec(self._tracks[instance_id])
        return step if spec is self.config.spec else f"{spec.name}.{step}"

    def shape(self) -> _Shape:
        """
        What actions can apply now.

        Whether a ``Start`` can, the open tasks per step, the waiting takers per message
        type, whether a timer waits, the waiting instances the story started, the waiting children.
        """
        counts: dict[str, int] = {}
        for t in self._open_tasks_now:
            key = self._step_key(t.instance_id, t.step)
            counts[key] = counts.get(key, 0) + 1
        roots = sum(1 for t in self._tracks.values() if t.parent is None)
        waiting = list(self._waiting_now)
        takers = tuple(
            sum(1 for i in waiting if _takes_type(self._spec(self._tracks[i]), message_type))
            for message_type, _ in self.menu.sends
        )
        children = sum(1 for i in waiting if self._tracks[i].parent is not None)
        return (
            roots < self.config.max_instances,
            tuple(sorted(counts.items())),
            takers,
            bool(self.timers_due()),
            len(waiting) - children,
            children,
        )

    def waiting_instances(self) -> list[str]:
        """Ids of the story's instances that wait (as of the end of the last action)."""
        return list(self._waiting_now)

    def timers_due(self) -> list[float]:
        """When the timers of the waiting instances fall due (escalations, ``@timer`` steps)."""
        return [w for i in self._waiting_now if (w := self.engine.info(i).wake_at) is not None]

    def _start(self, action: Start) -> None:
        roots = sum(1 for t in self._tracks.values() if t.parent is None)
        if roots >= self.config.max_instances:
            return  # a story plays this many instances at most: more only cost time
        started_as = repr(action.workflow)
        self._pending = (started_as, action.faults)
        name = f"i{roots + 1}"
        faults = f" with faults {action.faults!r}" if action.faults else ""
        early = f", then before it runs: signal {', '.join(map(repr, action.messages))}" if action.messages else ""
        self._note(f"{name} = start {started_as}{faults}{early}")
        self._run(self._start_then_signal(action))
        self._after_rule()

    async def _start_then_signal(self, action: Start) -> None:
        handle = await self.engine.start(action.workflow)
        # Nothing ran yet: the engine runs the instance once this coroutine waits.
        for message in action.messages:
            await self.engine.signal(handle.instance_id, message)

    def _task_of(self, action: Complete | HandOver) -> tuple[Task, _Track] | None:
        """The open task *action* aims at (its index counts from the newest at its step), and its instance's track."""
        tasks = self.open_tasks(action.step)
        if action.task >= len(tasks):
            return None
        task = tasks[-1 - action.task]
        return task, self._tracks[task.instance_id]

    def _complete(self, action: Complete) -> None:
        found = self._task_of(action)
        if found is None:
            return
        task, track = found
        instance_id = task.instance_id
        who, step = _for_task(action.by, task), action.step
        form = self._echoed(instance_id, action.form, action.echo)
        self._note(f"{track.name}: {who!r} completes the task at {step} with {form!r}{_echo_note(action.echo)}")
        complete = self.engine.complete_task(task.id, user=who.user, groups=who.groups, form=form)
        self._touched[instance_id] = self._action_touched[instance_id] = None
        self._action_target = instance_id
        if who.authorised:
            self._run(complete)
            self._after_rule()
            return
        before = self._snapshot(instance_id)
        try:
            self._run(complete)
        except TaskNotAuthorized:
            self._note(f"    {track.name}  refused, as it must be")
        else:
            task_spec = self._spec(track).step(task.step).task
            assert task_spec is not None  # noqa: S101 - tasks belong to human-task steps
            msg = f"{who!r} completed the task at {step}, which only {actors(task_spec)[:-1]} may"
            self._violate("unauthorised-completion", instance_id, step, msg)
        if self._snapshot(instance_id) != before:
            msg = f"the refused completion of the task at {step} by {who!r} changed the instance"
            self._violate("unauthorised-completion", instance_id, step, msg)
        self._after_rule()

    def _hand_over(self, action: HandOver) -> None:
        found = self._task_of(action)
        if found is None:
            return
        task, track = found
        instance_id = task.instance_id
        if action.delegate:
            holder = _for_task(Actor(action.to), task)  # one it is for delegates it
            self._note(f"{track.name}: {holder!r} delegates the task at {action.step} to {action.to!r}")
            change = self.engine.delegate_task(task.id, user=holder.user, groups=holder.groups, to=action.to)
        else:
            self._note(f"{track.name}: the task at {action.step} is reassigned to {action.to!r}")
            change = self.engine.reassign_task(task.id, assignee=action.to, by="story")
        self._touched[instance_id] = self._action_touched[instance_id] = None
        self._action_target = instance_id
        self._run(change)
        now = next((t for t in self.engine.tasks(instance_id=instance_id) if t.id == task.id), None)
        if now is None or now.assignee != action.to or not now.may_complete(action.to, ()):
            msg = f"the task at {action.step} was handed to {action.to!r}, but it is for {now!r}"
            self._violate("hand-over", instance_id, action.step, msg)
        self._after_rule()

    def _snapshot(self, instance_id: str) -> tuple[object, ...]:
        info = self.engine.info(instance_id)
        tasks = tuple((t.id, t.status) for t in self.engine.tasks(instance_id=instance_id))
        return (info.status, info.step, len(self.engine.history(instance_id)), tasks)

    def _cancel(self, action: Cancel | CancelChild) -> None:
        children = isinstance(action, CancelChild)
        waiting = [i for i in self._waiting_now if (self._tracks[i].parent is not None) is children]
        instance_id = waiting[-1 - action.instance] if action.instance < len(waiting) else None
        if instance_id is None:
            return
        track = self._tracks[instance_id]
        track.cancel = action.compensate
        self._note(f"{track.name}: cancel(compensate={action.compensate})")
        cancel = self.engine.cancel(instance_id, reason="cancelled by the story", compensate=action.compensate)
        self._touched[instance_id] = self._action_touched[instance_id] = None
        self._action_target = instance_id
        self._run(cancel)
        self._after_rule()

    def _fire_timers(self) -> None:
        due = self.timers_due()
        if not due:
            return
        when = min(due)
        self._note(f"clock +{when - self.clock.now():g}s: the timers due then fire")
        self.clock.jump_to(when)
        self._run(None)
        self._after_rule()

    def _send(self, action: Send) -> None:
        # Only to an instance whose workflow takes the message (a child may take other messages than its parent).
        takers = [i for i in self._waiting_now if _takes(self._spec(self._tracks[i]), action.message)]
        if action.instance >= len(takers):
            return
        instance_id = takers[-1 - action.instance]
        message = self._echoed(instance_id, action.message, action.echo)
        self._note(f"{self._tracks[instance_id].name}: signal {message!r}{_echo_note(action.echo)}")
        self._touched[instance_id] = self._action_touched[instance_id] = None
        self._action_target = instance_id
        self._run(self.engine.signal(instance_id, message))
        self._after_rule()

    def _echoed(self, instance_id: str, record: Any, names: tuple[str, ...]) -> Any:
        """*record* (a form, a message) with the fields *names* set to the instance's variables of that name."""
        if not names:
            return record
        wf = self.engine.workflow(instance_id)
        changes = {
            n: getattr(wf, n)
            for n in names
            if hasattr(wf, n) and type(getattr(wf, n)) is type(getattr(record, n, None))
        }
        return _evolve(record, changes) if changes else record


def _echo_note(names: tuple[str, ...]) -> str:
    return f" ({', '.join(names)} as the instance has {'them' if len(names) > 1 else 'it'})" if names else ""


def _evolve(record: object, changes: dict[str, object]) -> Any:
    if attrs.has(type(record)):
        built: Any = record
        return attrs.evolve(built, **changes)
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return dataclasses.replace(record, **changes)
    return record


def _echo_fields(record_type: object, specs: Iterable[WorkflowSpec], near: Near) -> st.SearchStrategy[tuple[str, ...]]:
    """
    Which fields of a form or message type to set to the target's variables of the same name: none, or some.

    Only variables a guard compares with another variable (``wf.accepted_quote == wf.quote_no``):
    their values are where the other one must be met.
    """
    paired = {name for pair in near.pairs for name in pair}
    names = {f.name for sp in specs for f in sp.fields} & paired
    fields: list[str] = []
    if isinstance(record_type, type) and attrs.has(record_type):
        fields = [f.name for f in attrs.fields(record_type) if f.init and f.name in names]
    elif isinstance(record_type, type) and dataclasses.is_dataclass(record_type):
        fields = [f.name for f in dataclasses.fields(record_type) if f.init and f.name in names]
    if not fields:
        return st.just(())
    return st.one_of(st.just(()), st.sets(st.sampled_from(fields), min_size=1).map(lambda s: tuple(sorted(s))))


def _duration(seconds: float) -> str:
    """``90s``, ``5.5 h``, ``13.4 days``: a span of virtual time, readable."""
    if seconds < 120:  # noqa: PLR2004 - below two minutes, seconds read best
        return f"{seconds:g}s"
    if seconds < 2 * 86_400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} days"


def _takes_type(spec: WorkflowSpec, message_type: type) -> bool:
    """Whether a ``@wait_for`` step of *spec* takes messages of *message_type*."""
    return any(s.message is not None and issubclass(message_type, s.message) for s in spec.steps)


def _takes(spec: WorkflowSpec, message: object) -> bool:
    """Whether a ``@wait_for`` step of *spec* takes *message* (the engine refuses it otherwise)."""
    return any(s.message is not None and isinstance(message, s.message) for s in spec.steps)


def _leaves(state: object) -> list[str]:
    """The leaf paths of a machine state: itself, or inside a fork every leaf of its (nested) lists."""
    if isinstance(state, str):
        return [state]
    if isinstance(state, (list, tuple)):
        return [leaf for item in cast("Iterable[object]", state) for leaf in _leaves(item)]
    return [str(state)]


def _active_steps(state: object) -> list[str]:
    """The steps a machine state stands for: a branch's ``@start`` / ``@done`` and lifecycle states stand for none."""
    names = [leaf.rpartition(".")[2] for leaf in _leaves(state)]
    return [n for n in names if not n.startswith("@")]


def _state_text(state: object) -> str:
    if isinstance(state, str):
        return state
    return "[" + ", ".join(_leaves(state)) + "]"


class _Replay:
    """
    The history's transitions replayed against the spec: which steps are current.

    Outside forks one step is current; a fork's transitions into its branches
    replace it by each branch's first step, ``branch_done`` removes a branch's last
    step, and ``joined`` (once every branch started has arrived) makes the join
    current.
    """

    def __init__(self, spec: WorkflowSpec, instance_id: str) -> None:
        self.spec = spec
        self.instance_id = instance_id
        self.active: list[str] = [spec.initial]
        self.completed = False
        # Per fork being run: the branches started, those skipped, those arrived.
        self.forks: dict[str, tuple[set[str], set[str], set[str]]] = {}
        # Per subflow step: the child it waits on (started, not finished); every child started, by step.
        self.open_children: dict[str, str] = {}
        self.started: dict[str, str] = {}
        # Per fan-out step: its children started and not finished.
        self.fanned: dict[str, dict[str, None]] = {}

    def where(self) -> str:
        """The current steps, as text."""
        if self.completed:
            return COMPLETED
        return ", ".join(self.active) or "nowhere"

    def apply(self, e: HistoryEvent) -> str | None:
        """Replay *e*; what is wrong with it, if anything."""
        kind = e.kind
        source, dest = e.step or "", e.detail or ""
        if kind is _K.CHILD_STARTED:
            return self._child_started(source, dest)
        if kind is _K.CHILD_FINISHED:
            return self._child_finished(source, dest)
        if kind is _K.TRANSITION:
            open_child = self.open_children.get(source) or next(iter(self.fanned.get(source, ())), None)
            if open_child is not None and not any(x.dest == dest and x.is_timeout for x in self.spec.outgoing(source)):
                return f"the transition {source} -> {dest} while its child {open_child} had not finished"
            self.open_children.pop(source, None)
            fork = self.spec.fork(source)
            if fork is not None and any(r.name == dest for r in fork.regions) and self._entering(fork.step):
                return self._enter(source, dest, started=True)
            return self._move(source, dest)
        if kind is _K.BRANCH_SKIPPED:
            return self._enter(source, dest, started=False)
        if kind is _K.BRANCH_DONE:
            return self._arrive(source, dest)
        if kind is _K.JOINED:
            return self._join(source, dest)
        return None

    def _child_started(self, step: str, child_id: str) -> str | None:
        spec = self.spec
        kind = spec.step(step).kind if spec.has_step(step) else None
        if step not in self.active or kind not in (StepKind.SUBFLOW, StepKind.FAN_OUT):
            return f"a child {child_id} started by {step} while the machine was at {self.where()}"
        if kind is StepKind.FAN_OUT:
            if not child_id.startswith(f"{self.instance_id}/") or child_id in self.started:
                return f"a child {child_id} started by {step}: not a new id under its parent's"
            self.started[child_id] = step
            self.fanned.setdefault(step, {})[child_id] = None
            return None
        if step in self.open_children:
            return f"a second child {child_id} started by {step}, whose child {self.open_children[step]} runs"
        if not child_id.startswith(f"{self.instance_id}/") or child_id in self.started:
            return f"a child {child_id} started by {step}: not a new id under its parent's"
        self.started[child_id] = step
        self.open_children[step] = child_id
        return None

    def _child_finished(self, step: str, detail: str) -> str | None:
        child_id, _, how = detail.rpartition(" ")
        if child_id in self.fanned.get(step, {}):
            del self.fanned[step][child_id]
            return None if how in _ENDED else f"the child {child_id} of {step} finished {how}, which is no end"
        if self.open_children.get(step) != child_id:
            return f"the child {child_id} of {step} finished, but {step} was not waiting on it"
        if how not in _ENDED:
            return f"the child {child_id} of {step} finished {how}, which is no end"
        del self.open_children[step]
        return None

    def _entering(self, fork: str) -> bool:
        return fork in self.forks or fork in self.active

    def _move(self, source: str, dest: str) -> str | None:
        spec = self.spec
        if source not in self.active:
            return f"the transition {source} -> {dest} while the machine was at {self.where()}"
        ok = (dest == COMPLETED and spec.step(source).final) or any(
            x.dest == dest and not x.join for x in spec.outgoing(source)
        )
        if not ok:
            return f"the transition {source} -> {dest}, no edge of the spec (the machine was at {self.where()})"
        self.active.remove(source)
        if dest == COMPLETED:
            self.completed = True
        else:
            self.active.append(dest)
        return None

    def _enter(self, fork: str, branch: str, started: bool) -> str | None:
        spec = self.spec.fork(fork)
        what = "started" if started else "skipped"
        if spec is None or not any(r.name == branch for r in spec.regions):
            return f"the branch {branch} {what} by {fork}, which is no branch of a fork"
        if fork not in self.forks:
            if fork not in self.active:
                return f"the branch {branch} {what} by the fork {fork} while the machine was at {self.where()}"
            self.active.remove(fork)
            self.forks[fork] = (set(), set(), set())
        began, skipped, _ = self.forks[fork]
        if branch in began or branch in skipped:
            return f"the branch {branch} of the fork {fork} {what} twice"
        region = next(r for r in spec.regions if r.name == branch)
        if not started and region.edge.guard is None:
            return f"the unguarded branch {branch} of the fork {fork} skipped"
        (began if started else skipped).add(branch)
        if started:
            self.active.append(branch)
        return None

    def _arrive(self, last: str, join: str) -> str | None:
        held = self.spec.branch_of(last)
        if held is None or last not in self.active:
            return f"the branch done at {last} (into {join}) while the machine was at {self.where()}"
        fork, region = held
        if fork.join != join or last not in region.ends or fork.step not in self.forks:
            return f"the branch {region.name} done at {last} into {join}, not an end of a branch of a running fork"
        self.active.remove(last)
        self.forks[fork.step][2].add(region.name)
        return None

    def _join(self, fork: str, join: str) -> str | None:
        spec = self.spec.fork(fork)
        if spec is None or spec.join != join or fork not in self.forks:
            return f"the join of {fork} into {join} while the machine was at {self.where()}"
        began, skipped, arrived = self.forks.pop(fork)
        every = {r.name for r in spec.regions}
        if began != arrived or began | skipped != every:
            waiting = ", ".join(sorted((every - skipped) - arrived))
            return f"the join of {fork} into {join} before every branch started arrived (not yet: {waiting})"
        self.active.append(join)
        return None


def _check_coverage(machine: type[WorkflowStateMachine]) -> None:
    """Fail a run below ``require_coverage``; warn about the edges a passing run never took (``exempt`` aside)."""
    config = machine.config
    cov = machine.coverage
    counted = [(e, n) for e, n in zip(config.spec.edges, cov.taken, strict=True) if not _exempt(e, config.exempt)]
    missed = [e for e, n in counted if not n]
    if not missed:
        return
    fraction = 1 - len(missed) / len(counted)
    dead = {id(e): by for e, by in conditions_of(config.spec, config.workflow).shadowed()}
    lines = [f"  {describe_edge(e)}{_dead_note(dead[id(e)]) if id(e) in dead else ''}" for e in missed]
    required = config.require_coverage
    if required is not None:
        if fraction < required:
            msg = (
                f"{config.spec.name}: the run covered {fraction:.0%} of the edges, {required:.0%} are required; "
                "never taken:\n" + "\n".join(lines)
            )
            raise CoverageError(msg, cov, missed)
        return  # what the run took is what was asked for
    msg = (
        f"{config.spec.name}: the run took {len(counted) - len(missed)} of its {len(counted)} edges "
        f"({fraction:.0%}); never taken:\n" + "\n".join(lines) + "\n"
        "Pass require_coverage=1.0 to make this a failure, exempt=[(source, dest)] for an edge unreachable by "
        "design, or give the run more stories (settings(max_examples=...): dsl/testing.md, section The budget)."
    )
    warnings.warn(CoverageWarning(msg), stacklevel=3)


def _closeness(spec: WorkflowSpec, goals: frozenset[str]) -> dict[str, int]:
    """For each step from which a *goal* step can be reached: higher the fewer edges away (a goal scores most)."""
    distance = dict.fromkeys(goals, 0)
    todo = list(goals)
    while todo:
        step = todo.pop(0)
        for e in spec.edges:
            if e.dest == step and e.source not in distance:
                distance[e.source] = distance[step] + 1
                todo.append(e.source)
    far = max(distance.values(), default=0) + 1
    return {step: far - d for step, d in distance.items()}


def _missed(machine: type[WorkflowStateMachine]) -> list[EdgeSpec]:
    """The edges a run must still take to meet ``require_coverage`` (none when it is not set, or met)."""
    config = machine.config
    required = config.require_coverage
    if required is None:
        return []
    counted = [(e, n) for e, n in zip(config.spec.edges, machine.coverage.taken, strict=True)]
    counted = [(e, n) for e, n in counted if not _exempt(e, config.exempt)]
    missed = [e for e, n in counted if not n]
    if not counted or 1 - len(missed) / len(counted) >= required:
        return []
    return missed


def _dead_note(by: tuple[EdgeSpec, ...]) -> str:
    if not by:
        return "  (dead: its guard never holds)"
    return "  (dead: its instances take " + " or ".join(describe_edge(b) for b in by) + " first)"


def _exempted(
    entry: str | tuple[Step[Any, Any, Any] | str, Step[Any, Any, Any] | str], spec: WorkflowSpec
) -> tuple[str, str]:
    """An ``exempt=`` entry as (source, dest); it must name edges of the workflow."""
    raw: object = entry
    pair: tuple[str, str] | None = None
    if isinstance(entry, str):
        source, arrow, dest = (part.strip() for part in entry.partition("->"))
        pair = (source, dest) if arrow else None
    elif isinstance(raw, tuple) and len(entry) == 2:  # noqa: PLR2004 - (source, dest)
        pair = (_step_name(entry[0]), _step_name(entry[1]))
    if pair is None:
        msg = f"exempt= takes edges as 'source -> dest' or (source, dest), got {entry!r}"
        raise TypeError(msg)
    if not any((e.source, e.dest) == pair for e in spec.edges):
        edges = ", ".join(sorted({f"{e.source} -> {e.dest}" for e in spec.edges}))
        msg = f"exempt={entry!r}: {spec.name} has no edge {pair[0]} -> {pair[1]} (its edges: {edges})"
        raise ValueError(msg)
    return pair


def _step_name(step: Step[Any, Any, Any] | str) -> str:
    return step if isinstance(step, str) else step.name


def _exempt(edge: EdgeSpec, exempt: frozenset[tuple[str, str]]) -> bool:
    return (edge.source, edge.dest) in exempt


def WorkflowMachine(  # noqa: N802 - it builds a class, and is named like one
    workflow: type[Any],
    *,
    inputs: st.SearchStrategy[Any] | None = None,
    forms: Mapping[object, st.SearchStrategy[Any]] | None = None,
    messages: Mapping[type, st.SearchStrategy[Any]] | None = None,
    services: Callable[[], ServiceRegistry | Mapping[str, object] | None]
    | ServiceRegistry
    | Mapping[str, object]
    | None = None,
    faults: bool = True,
    require_coverage: float | None = None,
    max_transitions: int | None = None,
    allow_no_edge: Iterable[Step[Any, Any, Any] | str] = (),
    exempt: Iterable[str | tuple[Step[Any, Any, Any] | str, Step[Any, Any, Any] | str]] = (),
    max_instances: int = 5,
) -> type[WorkflowStateMachine]:
    """
    Build a hypothesis state machine that tests *workflow* on a real engine.

    Use ``.TestCase`` as a test: ``TestOrder = WorkflowMachine(OrderProcess).TestCase``.
    Hypothesis then plays many stories: start instances from *inputs*, complete
    open tasks with generated forms (as the assignee, a member of a candidate
    group, or an intruder who must be refused with nothing changed), deliver
    generated messages, let time pass until timers fire, cancel waiting
    instances, and inject faults into step and compensation attempts. A broken
    invariant or a modelling bug raises :class:`InvariantViolation`, shrunk to the
    shortest story; the built-in checks are listed on ``dsl/testing.md``. The
    children of ``@subflow`` steps run in the same stories: their tasks are
    completed (as ``"Child.step"``), their steps get faults, they are checked too.

    Args:
        workflow: The workflow class.
        inputs: A strategy for new (never started) instances; default: every field
            without a default drawn from its type (floats finite), and at and
            around the constants guards compare it with.
        forms: Strategies for forms, keyed by human-task step (``Wf.approve``, or its
            name; ``"Child.step"`` for a child's) or by form type; default: drawn
            from the declared form type.
        messages: Strategies for the messages ``@wait_for`` steps take, keyed by type;
            default: drawn from the type. Messages go to waiting instances.
        services: The services steps call: a mapping or registry (shared by every
            example), or a function returning a fresh one per example (for stateful
            fakes).
        faults: Inject faults: each attempt of a step may succeed, fail transiently,
            fail permanently, or raise an ``on_error`` type of the step; each
            compensation attempt may fail transiently, never more often than its
            retry policy absorbs.
        require_coverage: Fail the test (:class:`CoverageError`) unless at least this
            share of the edges was taken; the message names the edges never taken.
            Without it, a passing run that left edges untaken warns
            (:class:`CoverageWarning`), naming them.
        max_transitions: Transitions an instance may make without waiting or ending
            before it counts as a loop with no exit (default: 2,000, or 20 per step
            of a larger workflow: a loop of a few hundred rounds passes).
        allow_no_edge: Steps after which "no edge enabled" is intended: the instance
            then fails and compensates on purpose, and it is not reported (a child's
            step as ``Child.step`` or the step object).
        max_instances: How many instances one story starts at most; a ``Start``
            beyond them does nothing. Bugs between instances need two or three; each
            one more costs a whole run of the workflow in every story.
        exempt: Edges unreachable by design, left out of coverage (of
            *require_coverage* and of the warning): ``"source -> dest"`` or
            ``(Wf.source, Wf.dest)``; every edge between the two steps.

    Returns:
        A :class:`WorkflowStateMachine` subclass with ``TestCase`` and ``coverage``.

    Raises:
        TypeError: *workflow* is not a concrete workflow class, or a field's type
            cannot be generated (pass *inputs*).

    .. versionadded:: 0.1.0
    """
    spec = spec_of(workflow)
    if max_instances < 1:
        msg = f"WorkflowMachine({spec.name}, max_instances={max_instances}): a story must start at least 1 instance"
        raise ValueError(msg)
    make_services: Callable[[], ServiceRegistry | Mapping[str, object] | None]
    if callable(services):
        make_services = services
    else:
        shared = services

        def make_services() -> ServiceRegistry | Mapping[str, object] | None:
            return shared

    tree = _tree(workflow, spec)
    specs = [sp for _, sp in tree]
    errors: dict[str, Callable[[str], BaseException]] = {}
    for edge in (e for sp in specs for e in sp.edges):
        for exc_type in edge.on_error:
            build = make_error(exc_type)
            if build is not None:
                errors[exc_type.__name__] = build
    config = _Config(
        workflow=workflow,
        spec=spec,
        services=make_services,
        max_transitions=max_transitions if max_transitions is not None else default_max_transitions(spec),
        allow_no_edge=frozenset(_allowed(s, tree) for s in allow_no_edge),
        require_coverage=require_coverage,
        errors=errors,
        tree=tree,
        explicit_max=max_transitions is not None,
        capped=tuple(capped(spec)) if faults else (),
        exempt=frozenset(_exempted(e, spec) for e in exempt),
        max_instances=max_instances,
    )
    near = near_constants(tree)
    start_inputs = inputs if inputs is not None else input_strategy(workflow, spec, near)
    plans = fault_plans(spec, errors) if faults else st.just(cast("FaultPlan", {}))
    # Messages the started workflow waits for may arrive before it does (early): the engine keeps them.
    early_types = sorted({s.message for s in spec.steps if s.message is not None}, key=_type_name)
    early = (
        st.lists(st.one_of([_message_strategy(t, messages, near) for t in early_types]), max_size=2).map(tuple)
        if early_types
        else st.just(())
    )
    starts = st.builds(Start, workflow=start_inputs, faults=plans, messages=early)
    completes: dict[str, Callable[[int], st.SearchStrategy[Action]]] = {}
    form_overrides = dict(forms or {})
    for cls, sp in tree:
        for s in sp.steps:
            task = s.task
            if s.kind is not StepKind.HUMAN_TASK or task is None:
                continue
            key = s.name if sp is spec else f"{sp.name}.{s.name}"
            # Never `a or b` on strategies: hypothesis warns that bool() of one is always True.
            form = next((v for k, v in form_overrides.items() if _names_step(k, key, s.name, cls)), None)
            if form is None and task.form is not None:
                form = form_overrides.get(task.form)
            if form is None:
                form = form_strategy(task, near)
            completes[key] = functools.partial(
                _completes, key, form, _people(task), _echo_fields(task.form, [sp], near)
            )
    sends: list[tuple[type, Callable[[int], st.SearchStrategy[Action]]]] = []
    message_types = sorted({s.message for sp in specs for s in sp.steps if s.message is not None}, key=_type_name)
    for message_type in message_types:
        takers = [sp for sp in specs if any(s.message is message_type for s in sp.steps)]
        message = _message_strategy(message_type, messages, near)
        sends.append((message_type, functools.partial(_sends, message, _echo_fields(message_type, takers, near))))
    menu = _Menu(starts, completes, sends)

    def do(self: WorkflowStateMachine, data: st.DataObject) -> None:
        self.apply(data.draw(self.menu.choices(self), label="action"))

    # One rule drawing one action among those that can apply now (an open task to
    # complete, an instance waiting for a message, a timer to fire...): hypothesis'
    # swarm testing (each example disables a random subset of rules) and
    # preconditions (drawing again until a rule is enabled) cost much of its power
    # to find and to shrink these stories, and actions that cannot apply waste it.
    namespace: dict[str, Any] = {
        "config": config,
        "coverage": Coverage(spec),
        "menu": menu,
        "__doc__": f"Generated stories of {spec.name}.",
        "__module__": workflow.__module__,
        "do": rule(data=st.data())(do),
    }
    machine = cast("type[WorkflowStateMachine]", type(f"{spec.name}Machine", (WorkflowStateMachine,), namespace))
    # A plain class attribute shadows hypothesis' TestCase property: ours also checks coverage.
    setattr(machine, "TestCase", _test_case(machine))  # noqa: B010 - mypy rejects assigning the property
    return machine


def _completes(
    key: str,
    form: st.SearchStrategy[Any],
    people: st.SearchStrategy[Actor],
    echo: st.SearchStrategy[tuple[str, ...]],
    open_tasks: int,
) -> st.SearchStrategy[Action]:
    return st.builds(Complete, step=st.just(key), task=st.integers(0, open_tasks - 1), form=form, by=people, echo=echo)


def _hand_overs(key: str, open_tasks: int) -> st.SearchStrategy[Action]:
    return st.builds(
        HandOver, step=st.just(key), task=st.integers(0, open_tasks - 1), to=st.just(STAND_IN), delegate=st.booleans()
    )


def _sends(
    message: st.SearchStrategy[Any], echo: st.SearchStrategy[tuple[str, ...]], takers: int
) -> st.SearchStrategy[Action]:
    return st.builds(Send, instance=st.integers(0, takers - 1), message=message, echo=echo)


_Shape = tuple[bool, tuple[tuple[str, int], ...], tuple[int, ...], bool, int, int]
"""What actions can apply: see :meth:`WorkflowStateMachine.shape`."""


def _itself(strategy: st.SearchStrategy[Action]) -> st.SearchStrategy[Action]:
    return strategy


class _Menu:
    """The actions a story may take, and, given the machine's state, those that can apply now."""

    def __init__(
        self,
        starts: st.SearchStrategy[Action],
        completes: dict[str, Callable[[int], st.SearchStrategy[Action]]],
        sends: list[tuple[type, Callable[[int], st.SearchStrategy[Action]]]],
    ) -> None:
        self.starts = starts
        self.completes = completes
        self.sends = sends
        self._cache: dict[tuple[_Shape, frozenset[str]], st.SearchStrategy[Action]] = {}

    def choices(self, machine: WorkflowStateMachine) -> st.SearchStrategy[Action]:
        """One of the actions that can apply to *machine* now (``FireTimers()``, doing nothing, when none can)."""
        return self.for_shape(machine.shape(), machine.steer)

    def for_shape(self, shape: _Shape, steer: frozenset[str] = frozenset()) -> st.SearchStrategy[Action]:
        """One of the actions that can apply in a state of this *shape* (see :meth:`WorkflowStateMachine.shape`)."""
        found = self._cache.get((shape, steer))
        if found is None:
            can_start, tasks, takers, timers, waiting, children = shape
            # Weights, by repetition: moving an instance on (a task, a message) counts most, ending one early
            # (a cancel) least, so that stories go deep; a step whose edges are missed counts three times more.
            options: list[st.SearchStrategy[Action]] = [self.starts] * 2 if can_start else []
            for key, n in tasks:
                if key in self.completes:
                    options += [self.completes[key](n)] * (9 if key in steer else 3)
                    options.append(_hand_overs(key, n))
            options += [make(n) for (_, make), n in zip(self.sends, takers, strict=True) if n] * 3
            if timers:
                options += [st.just(FireTimers())] * (4 if steer else 2)
            if waiting:
                options.append(st.builds(Cancel, instance=st.integers(0, waiting - 1), compensate=st.booleans()))
            if children:
                options.append(st.builds(CancelChild, instance=st.integers(0, children - 1), compensate=st.booleans()))
            # (one_of would fold the repeats into one branch.) Nothing can apply (every instance allowed
            # ended): a cheap action that does nothing.
            options = options or [st.just(FireTimers())]
            found = options[0] if len(options) == 1 else st.sampled_from(options).flatmap(_itself)
            self._cache[shape, steer] = found
        return found


def _message_strategy(
    message_type: type, given: Mapping[type, st.SearchStrategy[Any]] | None, near: Near
) -> st.SearchStrategy[Any]:
    found = (given or {}).get(message_type)
    return found if found is not None else record_strategy(cast("type[Any]", message_type), near)


def _for_task(who: Actor, task: Task) -> Actor:
    """*who*, or for a task whose people were computed when it opened, one it is really for."""
    if not who.authorised or task.may_complete(who.user, who.groups):
        return who
    if task.assignee is not None:
        return Actor(task.assignee)
    return Actor(f"member-of-{task.candidate_groups[0]}", task.candidate_groups[:1])


def _people(task: TaskSpec) -> st.SearchStrategy[Actor]:
    # Everyone allowed, three times over, then the intruder: a refusal is checked in
    # about one completion in four, and the rest move the story on.
    people = actors(task)
    allowed, intruder = people[:-1], people[-1]
    return st.sampled_from([*allowed, *allowed, *allowed, intruder])


def _names_step(key: object, qualified: str, name: str, owner: type[Any]) -> bool:
    """Whether a ``forms=`` key names the step: ``Wf.step``, its name, or ``"Child.step"`` for a child's."""
    if isinstance(key, Step):
        return key.name == name and key.owner == owner.__qualname__
    return key == qualified


def _type_name(tp: type) -> str:
    return tp.__name__


def _tree(workflow: type[Any], spec: WorkflowSpec) -> tuple[tuple[type[Any], WorkflowSpec], ...]:
    """*workflow* and every workflow its ``@subflow`` steps start, and theirs, each once, breadth first."""
    found: dict[type[Any], WorkflowSpec] = {workflow: spec}
    queue = [spec]
    while queue:
        for s in queue.pop(0).steps:
            if s.child is not None and s.child not in found:
                found[s.child] = spec_of(s.child)
                queue.append(found[s.child])
    return tuple(found.items())


def _allowed(step: Step[Any, Any, Any] | str, tree: tuple[tuple[type[Any], WorkflowSpec], ...]) -> str:
    """An ``allow_no_edge=`` entry as the name checks compare: ``step``, or ``Child.step`` for a child's."""
    if isinstance(step, str):
        return step
    for cls, sp in tree[1:]:
        if step.owner == cls.__qualname__:
            return f"{sp.name}.{step.name}"
    return step.name


def _test_case(machine: type[WorkflowStateMachine]) -> type[unittest.TestCase]:
    class WorkflowTestCase(unittest.TestCase):
        # Hypothesis' defaults for state machines, without the explain phase: it re-runs
        # the failure under a tracer only to list engine lines, which are not the story.
        settings = hypothesis_settings(
            deadline=None,
            suppress_health_check=cast("list[HealthCheck]", list(HealthCheck)),
            phases=[p for p in Phase if p.name != "explain"],
        )

        def runTest(self) -> None:  # noqa: N802 - unittest's name
            machine.coverage.reset()
            machine.steer = frozenset()
            seed = getattr(machine, "_hypothesis_internal_use_seed", None)
            try:
                run_state_machine_as_test(machine, settings=self.settings)
                # Short of the coverage required: more stories, steered to the steps whose edges were missed,
                # as long as they take new edges (four rounds in a row without one: those are out of reach).
                idle = 0
                missed = _missed(machine)
                for extra in range(1, _EXTRA_ROUNDS + 1):
                    if not missed or idle == 4:  # noqa: PLR2004
                        break
                    machine.steer = frozenset(e.source for e in missed)
                    machine.steer_score = _closeness(machine.config.spec, machine.steer)
                    if seed is not None:
                        setattr(machine, "_hypothesis_internal_use_seed", seed + extra)  # noqa: B010
                    run_state_machine_as_test(machine, settings=self.settings)
                    before, missed = len(missed), _missed(machine)
                    idle = 0 if len(missed) < before else idle + 1
            except InvariantViolation as err:
                retell(machine.replay_aimed, machine.config.workflow, err)
                raise
            finally:
                machine.steer = frozenset()
                machine.steer_score = {}
                if seed is not None:
                    setattr(machine, "_hypothesis_internal_use_seed", seed)  # noqa: B010
            _check_coverage(machine)

    run: Any = WorkflowTestCase.runTest
    run.is_hypothesis_test = True
    run._hypothesis_state_machine_class = machine
    WorkflowTestCase.__name__ = f"{machine.__name__}.TestCase"
    WorkflowTestCase.__qualname__ = f"{machine.__qualname__}.TestCase"
    return WorkflowTestCase


def _public_module() -> None:
    # Raised and printed before anyone imports them through the package: show the public path.
    for obj in (
        AppliedAction,
        InjectedFault,
        InjectedPermanentFault,
        RunawayLoop,
        InvariantViolation,
        CoverageError,
        WorkflowStateMachine,
        Start,
        Complete,
        Cancel,
        CancelChild,
        Send,
        FireTimers,
    ):
        obj.__module__ = "statemachine_orch.testing"


_public_module()
