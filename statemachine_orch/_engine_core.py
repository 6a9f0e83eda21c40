"""
The engine's core: the state its layers share, constants and helpers used by several layers.

``EngineCore`` declares the attributes ``Engine.__init__`` sets and the methods
a lower layer calls on an upper one (each raising NotImplementedError here; the
module named in its comment implements it). See ``_engine.py`` for the layout.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from ._clock import Clock
from ._ctx import Ctx, Outbox
from ._errors import (
    InstanceExists,
    MigrationError,
    StoreError,
)
from ._heartbeat import Heartbeat
from ._history import EventKind, HistoryEvent
from ._instance import Branch, InstanceRecord
from ._machine import ForkMachine
from ._observe import Observer
from ._registry import WorkflowRegistry
from ._services import ServiceRegistry
from ._spec import (
    MigrationSpec,
    StepSpec,
)
from ._store import Store
from ._workflow import Workflow, spec_of

logger: Any = structlog.get_logger("statemachine_orch.engine")


K = EventKind


QUEUED: Any = object()  # InstanceRecord.worker while the instance waits for a worker


class InboxCommand:
    """A change of an instance handed by a caller to the instance's driver."""

    __slots__ = ("apply", "done", "interrupt", "label", "seq")

    def __init__(
        self,
        apply: Callable[[InstanceRecord], Any] | None,
        done: asyncio.Future[Any] | None,
        *,
        interrupt: bool,
        seq: int = 0,
        label: str = "",
    ) -> None:
        self.apply = apply
        self.done = done
        self.interrupt = interrupt  # a cancel: the step in flight is interrupted for it
        self.seq = seq  # a durable command's row (0: handed over in this process only)
        self.label = label  # its kind, for the history when it is refused


class InstanceBusy(StoreError):
    """Another live worker holds the instance's lease: this engine may not change it now."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        super().__init__(f"instance {instance_id}: another worker holds it now")


def migration_for(rec: InstanceRecord, to: type[Workflow]) -> MigrationSpec:
    """The ``@migration`` of *to* that moves *rec*, or MigrationError when it cannot be moved."""
    new_spec = spec_of(to)
    if isinstance(rec.state, list):
        raise MigrationError(rec.id, "is inside a fork's branches; migrate it before the fork or after the join")
    if rec.fan is not None:
        msg = f"waits at the fan-out step {rec.state} for its children; migrate it before the fan-out or after it"
        raise MigrationError(rec.id, msg)
    if rec.status.is_terminal or not rec.spec.has_step(rec.state):
        raise MigrationError(rec.id, f"is {rec.status.value}: a finished instance is not migrated")
    found = [m for m in new_spec.migrations if m.source_version == rec.spec.version and new_spec.name == rec.spec.name]
    if not found:
        msg = f"{to.__qualname__} declares no @migration from {rec.spec.name} version {rec.spec.version}"
        raise MigrationError(rec.id, msg)
    return found[0]


def trigger(rec: InstanceRecord, event: str, *args: object) -> bool:
    """Fire *event* on the record's shared machine for its workflow object."""
    machine = rec.machine
    if type(machine) is ForkMachine:
        return bool(machine.trigger_event(rec.wf, event, *args))
    return bool(machine.events[event].trigger(rec.wf, *args))


def child_id_of(rec: InstanceRecord, tok: InstanceRecord | Branch) -> str:
    """The id of the child a subflow step starts: stable across re-runs of one visit and attempt."""
    return f"{rec.id}/{tok.visit}" + (f".{tok.attempt}" if tok.attempt > 1 else "")


def sync_wake(rec: InstanceRecord) -> None:
    """Inside a fork, the record's timer is its branches' earliest not yet woken."""
    rec.wake_at = min((b.wake_at for b in rec.branches.values() if b.wake_at is not None and not b.woken), default=None)


def poke_fork(rec: InstanceRecord) -> None:
    """Wake the driver of a fork: a branch may run now."""
    poke = rec.poke
    if poke is not None and not poke.done():
        poke.set_result(None)


def type_label(tp: type | None) -> str:
    return tp.__name__ if tp is not None else "?"


class EngineCore:
    """The shared state of the engine's layers, and what a lower layer calls on an upper one."""

    # The engine's state, set by Engine.__init__ and shared by the layers.
    store: Store
    services: ServiceRegistry
    clock: Clock
    concurrency: int
    before_attempt: Callable[[Ctx], None] | None
    after_attempt: Callable[[Ctx], None] | None
    registry: WorkflowRegistry
    lease: float
    poll: float
    owner: str
    _group: bool
    _strict_vars: bool
    _ids: itertools.count[int]
    _prefix: str
    _live: dict[str, InstanceRecord]
    # Instances to run, in order; an id stands for a record still to load (recovery).
    _ready: deque[InstanceRecord | str]
    _ready_event: asyncio.Event | None  # set once the workers exist
    _idle_workers: deque[asyncio.Future[None]]
    _queued_ids: set[str]
    _workers: list[asyncio.Task[None]]
    _timer_task: asyncio.Task[None] | None
    _timer_wake: asyncio.Event | None
    # Group commit: the changes waiting for the next flush, and its outcome (the failed ones, by position).
    _batch: list[tuple[InstanceRecord, ...]] | None
    _batch_done: asyncio.Future[dict[int, StoreError | InstanceExists] | None] | None
    _commits: int
    _committed_records: int
    _active: int
    _orphans: set[str]
    # Why each of those was quarantined, and when (shown by info(), instances() and history()).
    _quarantine: dict[str, tuple[float, str]]
    # Changes handed to an instance's driver by callers, applied in its next turn, in its commit.
    _inbox: dict[str, list[InboxCommand]]
    # Instances whose commits failed: how many times in a row, and those that wait out their backoff now.
    _failures: dict[str, int]
    _held: set[str]
    # Waiters get the record itself, so that result() needs no reload from the store.
    _waiters: dict[str, list[tuple[bool, asyncio.Future[InstanceRecord | None]]]]
    _idle_waiters: list[asyncio.Future[None]]
    _turn_waiters: list[asyncio.Future[None]]
    _subscribers: list[Callable[[str, HistoryEvent], None]]
    _known: set[type[Workflow]]
    _now: Callable[[], float]
    # Leases (docs/design/leases.md): with a store several processes share, this
    # engine drives an instance only while it holds its lease.
    _leasing: bool
    _drives: bool  # an engine without workers is a client: it only writes commands
    _fences: dict[str, int]  # the leases this engine holds: instance id -> fence
    _releasing: dict[str, int]  # leases to give back at the next flush
    _lease_task: asyncio.Task[None] | None  # marks the loop's progress for the heartbeat
    _heartbeat: Heartbeat | None  # the thread renewing the leases (_heartbeat.py)
    _stop_listening: Callable[[], None] | None
    _dead_owners: set[str]
    _backlog: bool
    _claim_now: bool
    # Metrics, traces and logs (_observe.py): None when nothing observes the engine.
    _obs: Observer | None
    # What ctx.signal and ctx.start ask of the engine (_messages.py).
    _outbox: Outbox
    # The earliest due time of the engine's schedules, as last seen (None: it has none; _schedules.py).
    _sched_next: float | None

    # Implemented by the layers above; declared here so that a lower layer may call them.

    def _hold(self, instance_id: str, exc: StoreError) -> None:
        # called by records; implemented in _runtime
        raise NotImplementedError

    def _no_timers(self) -> frozenset[str]:
        # called by records; implemented in _runtime
        raise NotImplementedError

    def _pull_commands(self, rec: InstanceRecord) -> bool:
        # called by records, runtime; implemented in _commands
        raise NotImplementedError

    def _kick(self, instance_id: str) -> None:
        # called by runtime; implemented in _commands
        raise NotImplementedError

    async def _run_schedules(self, now: float) -> None:
        # called by runtime; implemented in _schedules
        raise NotImplementedError

    async def _save_sending(self, rec: InstanceRecord, more: tuple[InstanceRecord, ...]) -> None:
        # called by records; implemented in _messages
        raise NotImplementedError

    def _stage_effects(self, rec: InstanceRecord, step: str, effects: Sequence[object]) -> None:
        # called by driver; implemented in _messages
        raise NotImplementedError

    def _run_commands(self, rec: InstanceRecord) -> None:
        # called by runtime; implemented in _commands
        raise NotImplementedError

    def _interrupting(self, instance_id: str) -> bool:
        # called by runtime; implemented in _commands
        raise NotImplementedError

    async def _drive(self, rec: InstanceRecord) -> None:
        # called by runtime; implemented in _driver
        raise NotImplementedError

    def _close_task(self, rec: InstanceRecord, why: str, tok: InstanceRecord | Branch | None = None) -> None:
        # called by commands; implemented in _driver
        raise NotImplementedError

    async def _child_wait(self, rec: InstanceRecord, step: StepSpec, tok: Branch | None) -> bool:
        # called by driver; implemented in _driver_children
        raise NotImplementedError

    def _child_ended(self, child: InstanceRecord) -> None:
        # called by driver; implemented in _driver_children
        raise NotImplementedError

    def _cancel_child(self, parent: InstanceRecord, child_id: str, why: str, *, compensate: bool = True) -> None:
        # called by driver; implemented in _driver_children
        raise NotImplementedError

    def _children_running(self, rec: InstanceRecord) -> bool:
        # called by driver; implemented in _driver_children
        raise NotImplementedError

    def _child_undo(self, rec: InstanceRecord, name: str, visit: int, attempt: int) -> tuple[str, str]:
        # called by driver; implemented in _driver_children
        raise NotImplementedError

    async def _kick_child_undo(self, rec: InstanceRecord, undo: tuple[str, str], attempt: int) -> bool:
        # called by driver; implemented in _driver_children
        raise NotImplementedError

    async def _fan_wait(self, rec: InstanceRecord, step: StepSpec, tok: Branch | None) -> bool:
        # called by driver, forks; implemented in _driver_fanout
        raise NotImplementedError

    def _fan_abandon(
        self, rec: InstanceRecord, step: StepSpec, t: InstanceRecord | Branch, why: str, *, compensate: bool
    ) -> None:
        # called by driver, forks; implemented in _driver_fanout
        raise NotImplementedError

    def _fan_undo(self, rec: InstanceRecord, name: str, visit: int, attempt: int) -> tuple[str, str]:
        # called by driver; implemented in _driver_fanout
        raise NotImplementedError

    def _resume(self, rec: InstanceRecord) -> None:
        # called by runtime, children; implemented in _driver_forks
        raise NotImplementedError

    def _sync_branches(self, rec: InstanceRecord) -> None:
        # called by driver; implemented in _driver_forks
        raise NotImplementedError

    def _cancel_branches(self, rec: InstanceRecord, why: str, *, keep: object = None) -> None:
        # called by commands; implemented in _driver_forks
        raise NotImplementedError

    def _leave_fork(self, rec: InstanceRecord, why: str, *, compensate: bool = True) -> None:
        # called by driver; implemented in _driver_forks
        raise NotImplementedError

    async def _drive_fork(self, rec: InstanceRecord) -> bool:
        # called by driver; implemented in _driver_forks
        raise NotImplementedError

    def workflow(self, instance_id: str) -> Any:
        """See :meth:`Engine.workflow`."""
        # called by children; implemented in _client_api
        raise NotImplementedError
