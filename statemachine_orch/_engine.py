"""
The engine: runs instances step by step, through each class's shared machine.

For each instance the engine runs the current step's method (sync, or awaited
when async), records the outcome, fires the machine's event (``next``,
``error``, ``timeout``, ``fail``...) so that ``transitions`` picks the edge, and
commits the record. Waiting (a human task, a timer, a message, a retry's
backoff) ends the instance's turn and drops it from memory; a worker picks it up
again when the task is completed, the message arrives or the timer falls due.

Crash semantics: every state change is one store commit, so a transition is
applied exactly once; a step's body runs before the commit that records it, so a
crash in between re-runs it on recovery (at least once) with the same
``ctx.idempotency_key``. No step runs before its predecessor's commit is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import os
import socket
from collections import deque
from collections.abc import Callable, Coroutine, Generator, Iterable, Mapping
from typing import Any, Self, TypeVar

import attrs
import structlog

from ._clock import Clock, SystemClock, VirtualClock
from ._ctx import Ctx
from ._errors import (
    ChildWorkflowFailed,
    InstanceExists,
    InstanceFinished,
    InstanceNotFound,
    InstanceStateError,
    LeaseLost,
    MigrationError,
    NoEdgeEnabled,
    RecordLoadError,
    SignalTypeError,
    StoreError,
    TaskAlreadyCompleted,
    TaskFormError,
    TaskNotAuthorized,
    TaskNotFound,
    UnknownWorkflowVersion,
    WorkflowInputError,
)
from ._handle import EngineStatistics, Handle, RecoveryReport
from ._history import EventKind, HistoryEvent, new_event
from ._instance import NO_PAYLOAD, Branch, Command, InstanceInfo, InstanceRecord, Signal, active_steps, leaves
from ._machine import DONE, START, STATE_ATTRIBUTE, ForkMachine
from ._progress import Progress, progress_of
from ._registry import WorkflowRegistry, default_registry
from ._services import ServiceRegistry
from ._spec import (
    CANCELLED,
    CANCELLING,
    COMPENSATING,
    COMPENSATION_FAILED,
    COMPLETED,
    FAILED,
    MigrationSpec,
    StepKind,
    StepSpec,
)
from ._status import InstanceStatus
from ._store import MemoryStore, Store
from ._tasks import Task, TaskStatus, check_user, group_names
from ._validate import value_mismatch
from ._workflow import Workflow, spec_of

W = TypeVar("W", bound=Workflow)
_R = TypeVar("_R")

_log: Any = structlog.get_logger("statemachine_orch.engine")

_STATUS_OF_STATE = {
    COMPLETED: InstanceStatus.COMPLETED,
    FAILED: InstanceStatus.FAILED,
    CANCELLED: InstanceStatus.CANCELLED,
    COMPENSATION_FAILED: InstanceStatus.COMPENSATION_FAILED,
    COMPENSATING: InstanceStatus.COMPENSATING,
    CANCELLING: InstanceStatus.COMPENSATING,
}

_K = EventKind
_QUEUED: Any = object()  # InstanceRecord.worker while the instance waits for a worker
_DUE_BATCH = 256  # timers fired per store query
_RELOAD_DELAY = 0.05  # first wait before reloading an instance whose commit failed
_RELOAD_DELAY_MAX = 30.0  # the cap of that wait, doubled at each failed commit in a row
_BUSY_RETRY = 0.005  # wait before looking again at a due timer whose instance is busy


class Engine:
    """
    Runs workflow instances.

    Args:
        store: Where instances live (default: a new :class:`MemoryStore`).
        services: The services steps reach with ``ctx.call``: a
            :class:`ServiceRegistry` or a mapping from names to objects.
        clock: Where time comes from (default: :class:`SystemClock`).
        concurrency: How many instances run at once (each in its own worker task).
        before_attempt: Called with the :class:`Ctx` before every attempt of a step or
            a compensation; an exception it raises counts as that attempt's failure.
            The testing toolkit injects faults through it.
        workflows: Workflow classes this engine runs, every version whose instances
            may be in the store (default: every class defined in the process).
        lease: With a store shared by several processes (``SqliteStore``,
            ``PostgresStore``): how long a claim on an instance lasts without a
            heartbeat (seconds, default 10; renewed every third of it). A worker
            that dies is replaced after at most this long: a shorter lease fails
            over sooner and costs more heartbeat writes.
        poll: With such a store: how often idle workers look for work others left
            (instances in flight of a dead worker, due timers, commands from other
            processes), in seconds (default 0.05; a store that pushes notifications,
            such as PostgreSQL's LISTEN/NOTIFY, is looked at once a second besides).

    Use it inside a running event loop. ``async with Engine(...) as engine``
    recovers what the store holds in flight and stops the workers on exit.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        services: ServiceRegistry | Mapping[str, object] | None = None,
        clock: Clock | None = None,
        concurrency: int = 64,
        before_attempt: Callable[[Ctx], None] | None = None,
        workflows: Iterable[type[Workflow]] = (),
        lease: float = 10.0,
        poll: float = 0.05,
    ) -> None:
        if not lease > 0 or not poll > 0:
            msg = f"Engine(lease={lease!r}, poll={poll!r}): both must be positive numbers of seconds"
            raise ValueError(msg)
        self.store: Store = store if store is not None else MemoryStore()
        self.services: ServiceRegistry = (
            services if isinstance(services, ServiceRegistry) else ServiceRegistry(services)
        )
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.concurrency = concurrency
        self.before_attempt = before_attempt
        self.registry: WorkflowRegistry = WorkflowRegistry(workflows, parent=default_registry)
        self.store.attach(self.registry)
        self._group = self.store.group_commit
        # A store that writes JSON needs every changed variable checked strictly; the
        # memory store keeps the objects themselves (VariablesValidator.check_step).
        self._strict_vars = not isinstance(self.store, MemoryStore)
        self._ids = itertools.count(1)
        self._prefix = os.urandom(4).hex()
        self._live: dict[str, InstanceRecord] = {}
        # Instances to run, in order; an id stands for a record still to load (recovery).
        self._ready: deque[InstanceRecord | str] = deque()
        self._ready_event: asyncio.Event | None = None  # set once the workers exist
        self._idle_workers: deque[asyncio.Future[None]] = deque()
        self._queued_ids: set[str] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._timer_task: asyncio.Task[None] | None = None
        self._timer_wake: asyncio.Event | None = None
        # Group commit: the changes waiting for the next flush, and its outcome (the failed ones, by position).
        self._batch: list[tuple[InstanceRecord, ...]] | None = None
        self._batch_done: asyncio.Future[dict[int, StoreError | InstanceExists] | None] | None = None
        self._commits = 0
        self._committed_records = 0
        self._active = 0
        self._orphans: set[str] = set()
        # Why each of those was quarantined, and when: its version has no class, or
        # its record cannot be loaded (shown by info(), instances() and history()).
        self._quarantine: dict[str, tuple[float, str]] = {}
        # Changes handed to an instance's driver by callers (task completions,
        # cancels, retries, migrations), applied in its next turn, in its commit.
        self._inbox: dict[str, list[_Command]] = {}
        # Instances whose commits failed: how many times in a row, and those that
        # wait out their backoff now (no timer or caller runs them meanwhile).
        self._failures: dict[str, int] = {}
        self._held: set[str] = set()
        # Waiters get the record itself, so that result() needs no reload from the store.
        self._waiters: dict[str, list[tuple[bool, asyncio.Future[InstanceRecord]]]] = {}
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._subscribers: list[Callable[[str, HistoryEvent], None]] = []
        self._known: set[type[Workflow]] = set()
        self._now = self.clock.now
        if isinstance(self.clock, VirtualClock):
            self.clock.subscribe(self._wake_timers)
        # Leases (docs/design/leases.md): with a store several processes share, this
        # engine drives an instance only while it holds its lease.
        self._leasing: bool = bool(getattr(self.store, "leases", False))
        self._drives = concurrency > 0  # an engine without workers is a client: it only writes commands
        self.lease = lease
        self.poll = poll
        self.owner: str = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._fences: dict[str, int] = {}  # the leases this engine holds: instance id -> fence
        self._releasing: dict[str, int] = {}  # leases to give back at the next flush
        self._lease_task: asyncio.Task[None] | None = None
        self._stop_listening: Callable[[], None] | None = None
        self._dead_owners: set[str] = set()  # workers of this host found dead (their leases expired once)
        self._backlog = False  # the last claim round filled every free worker: there may be more

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        """Start the workers and resume what the store holds in flight (stopping them again if that fails)."""
        try:
            await self.recover()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop the workers (instances stay in the store as they are)."""
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the workers and the timer task; in-flight steps are cancelled; leases are given back."""
        in_flight = {i for i, r in self._live.items() if r.worker is not None or r.runners}
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        tasks = [*self._workers, *(t for t in (self._timer_task, self._lease_task) if t is not None)]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        self._timer_task = None
        self._lease_task = None
        self._ready_event = None
        self._timer_wake = None
        if self._leasing and (self._fences or self._releasing):
            # A clean stop hands the instances over at once instead of after the lease:
            # the parked ones given back, those in flight expired (so that the next
            # worker resumes them as a dead worker's).
            held = {**self._fences, **self._releasing}
            self._fences.clear()
            self._releasing.clear()
            self._live.clear()
            try:
                self.store.release(self.owner, {i: f for i, f in held.items() if i not in in_flight})
                if in_flight:
                    self.store.expire(self.owner)
            except StoreError as exc:
                _log.warning("lease_release_failed", owner=self.owner, error=str(exc), leases=len(held))

    async def recover(self) -> RecoveryReport:
        """
        Resume every instance the store holds in flight; arm the store's timers.

        Instances that were running when the last engine stopped (or was killed)
        run their current step again, with the same idempotency key; timers that
        fell due meanwhile fire at once, in due order. Called by ``async with``.

        Returns:
            How many instances were resumed, and which could not be (orphans).
        """
        self._ensure_running()
        if self._leasing:
            if not self._drives:
                return RecoveryReport(0, ())
            # Across processes, recovery is a claim: the instances in flight whose
            # worker died, due timers and waiting commands (dead workers of this
            # host are recognised at once; others' leases expire).
            self._expire_dead_owners()
            claimed, lost = self._claim_round()
            # Written while no engine ran, without a command (by an older version): a
            # child's end, a message. Whoever holds those instances now has them.
            for instance_id in dict.fromkeys([*self.store.waiting_parents(), *self.store.signalled()]):
                if instance_id in self._live or instance_id in self._orphans:
                    continue
                rec = self._get_or_orphan(instance_id)
                if rec is None:
                    continue
                if rec.worker is None and rec.status is InstanceStatus.WAITING:
                    self._enqueue(rec)
                    claimed += 1
                else:
                    self._unpin(rec)
            if claimed or lost:
                _log.info("recovered", resumed=claimed, orphaned=len(lost))
            return RecoveryReport(claimed, tuple(lost))
        resumed = 0
        orphaned: list[str] = []
        for info in self.store.infos(InstanceStatus.RUNNING, None) + self.store.infos(
            InstanceStatus.COMPENSATING, None
        ):
            instance_id = info.id
            if (info.wake_at is not None and not info.in_fork) or instance_id in self._live:
                continue
            if instance_id in self._queued_ids:
                continue
            if self.registry.resolve(info.workflow, info.version) is None:
                why = f"its workflow {info.workflow} version {info.version} has no registered class"
                self._orphan(instance_id, why, "orphaned_instance", workflow=info.workflow, version=info.version)
                orphaned.append(instance_id)
                continue
            # Loaded by the worker that runs it: the first instance resumes at once,
            # however many are in flight.
            self._enqueue_id(instance_id)
            resumed += 1
        for instance_id in self.store.waiting_parents():
            # A parent whose child ended while no engine ran hears of it now.
            if instance_id not in self._live and instance_id not in self._queued_ids:
                self._enqueue_id(instance_id)
                resumed += 1
        for instance_id in self.store.signalled():
            if instance_id in self._live:
                continue
            rec = self._get_or_orphan(instance_id)
            if rec is None:
                continue
            if rec.worker is None and rec.status is InstanceStatus.WAITING and self._message_arrived(rec):
                self._enqueue(rec)
                resumed += 1
            else:
                self._unpin(rec)
        self._wake_timers()
        if resumed or orphaned:
            _log.info("recovered", resumed=resumed, orphaned=len(orphaned))
        return RecoveryReport(resumed, tuple(orphaned))

    async def run(self) -> None:
        """Recover, then run instances and timers until cancelled (a worker process)."""
        await self.recover()
        try:
            await asyncio.Event().wait()
        finally:
            await self.aclose()

    def _ensure_running(self) -> None:
        if self._ready_event is not None:
            return
        self._ready_event = asyncio.Event()
        self._timer_wake = asyncio.Event()
        if not self._drives:
            return  # a client: no workers, no timers
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._worker()) for _ in range(self.concurrency)]
        if self._leasing:
            self._timer_task = loop.create_task(self._fleet_loop())
            self._lease_task = loop.create_task(self._heartbeat_loop())
            listen = getattr(self.store, "listen", None)
            if listen is not None:
                wake = self._timer_wake

                def heard(instance_id: str) -> None:  # in the store's listener thread
                    loop.call_soon_threadsafe(self._heard, instance_id, wake)

                self._stop_listening = listen(heard)
        else:
            self._timer_task = loop.create_task(self._timer_loop())

    # ----------------------------------------------------------------- starting

    async def start(self, workflow: W, *, instance_id: str | None = None) -> Handle[W]:
        """
        Start a new instance from *workflow* (a new, never started object).

        Args:
            workflow: The new instance's workflow object (its input variables).
            instance_id: The id to give it (default: a new unique one). Starting
                with an id that exists already starts nothing and returns a handle
                to the existing instance, however many processes try at once: a
                caller that retries a start after a crash or a timeout gets one
                instance, never two. Up to 200 printable characters, no ``/``
                (reserved for child instances).

        Returns:
            A :class:`Handle` to follow it.

        Raises:
            WorkflowInputError: A variable does not match its declared type, the
                object was started before, or *instance_id* is not a usable id.
            InstanceExists: *instance_id* belongs to an instance of another workflow.
            TypeError: *workflow* is not an instance of a concrete Workflow class.
            StoreError: The store could not record it (nothing was started).
        """
        if instance_id is not None:
            _check_instance_id(workflow, instance_id)
            if self._existing(workflow, instance_id):
                return Handle(self, instance_id)
        rec = self._create(workflow, instance_id)
        self._live[rec.id] = rec
        try:
            await self._save(rec)
        except InstanceExists:
            self._drop_new(rec)
            setattr(workflow, STATE_ATTRIBUTE, None)  # nothing of it was started
            self._existing(workflow, rec.id)
            return Handle(self, rec.id)
        except StoreError:
            if self.store.info(rec.id) is None:
                self._drop_new(rec)
                raise
            # The commit landed and only its acknowledgement was lost: it started.
            rec.committed()
        if self._drives:
            self._enqueue(rec)
        else:
            self._live.pop(rec.id, None)  # a client: a worker of the fleet claims it
        return Handle(self, rec.id)

    def _existing(self, workflow: object, instance_id: str) -> bool:
        """Whether an instance with this id exists (of *workflow*'s workflow: else InstanceExists)."""
        info = self._find_info(instance_id)
        if info is None:
            return False
        name = type(workflow).__orch_spec__.name if isinstance(workflow, Workflow) else None
        if name is not None and info.workflow != name:
            raise InstanceExists(instance_id, f"it is an instance of {info.workflow}, not of {name}")
        return True

    def _drop_new(self, rec: InstanceRecord) -> None:
        """Forget a new instance whose first commit did not happen."""
        if self._live.get(rec.id) is rec:
            del self._live[rec.id]
        self._fences.pop(rec.id, None)

    def start_nowait(self, workflow: W) -> Handle[W]:
        """
        Like :meth:`start`, for a store that commits without I/O (the :class:`MemoryStore`).

        Raises:
            TypeError: The store is not a MemoryStore.
        """
        store = self.store
        if type(store) is not MemoryStore and not isinstance(store, MemoryStore):
            name = type(store).__name__
            msg = f"start_nowait() needs a MemoryStore; use `await start()` with {name}"
            raise TypeError(msg)
        rec = self._create(workflow)
        self._live[rec.id] = rec
        store.commit((rec,))
        self._enqueue(rec)
        return Handle(self, rec.id)

    def _create(self, workflow: object, instance_id: str | None = None, parent: str | None = None) -> InstanceRecord:
        if not isinstance(workflow, Workflow) or type(workflow).__orch_abstract__:
            msg = f"start() needs an instance of a concrete Workflow subclass, got {workflow!r}"
            raise TypeError(msg)
        cls = type(workflow)
        spec = cls.__orch_spec__
        if getattr(workflow, STATE_ATTRIBUTE, None) is not None:
            msg = "this object was started already; construct a new one for a new instance"
            raise WorkflowInputError(spec.name, "<instance>", msg)
        cls.__orch_validate__.start(workflow)
        if cls not in self._known:
            self._known.add(cls)
            self.registry.register(cls)
        setattr(workflow, STATE_ATTRIBUTE, spec.initial)
        now = self._now()
        rec_id = instance_id if instance_id is not None else f"{self._prefix}-{next(self._ids):x}"
        rec = InstanceRecord(rec_id, workflow, spec, cls.__orch_machine__, now)
        rec.parent = parent
        if self._leasing and self._drives:
            # Born leased to this engine: no other worker runs it before it parks.
            rec.fence = 1
            rec.lease = (self.owner, now + self.lease)
            self._fences[rec_id] = 1
        rec.history.append(new_event(HistoryEvent, (now, _K.INSTANCE_STARTED, None, 0, spec.label)))
        if self._subscribers:
            self._publish(rec.id, rec.history[-1])
        return rec

    # ----------------------------------------------------------------- queries

    def handle(self, instance_id: str) -> Handle[Any]:
        """
        A handle to an existing instance.

        Raises:
            InstanceNotFound: No instance has this id.
        """
        self.info(instance_id)
        return Handle(self, instance_id)

    def info(self, instance_id: str) -> InstanceInfo:
        """
        A snapshot of one instance (``quarantined`` says why this engine stopped it, if it did).

        Raises:
            InstanceNotFound: No instance has this id.
        """
        info = self._find_info(instance_id)
        if info is None:
            raise InstanceNotFound(instance_id)
        return info

    def _find_info(self, instance_id: str) -> InstanceInfo | None:
        """A snapshot of the live record, else of the stored one, else None."""
        rec = self._live.get(instance_id)
        info = rec.info() if rec is not None else self.store.info(instance_id)
        if self._quarantine and info is not None and instance_id in self._quarantine:
            info = attrs.evolve(info, quarantined=self._quarantine[instance_id][1])
        return info

    def instances(
        self, status: InstanceStatus | None = None, workflow: type[Workflow] | str | None = None
    ) -> list[InstanceInfo]:
        """Snapshots of the instances, optionally only those with *status* / of *workflow*."""
        name = workflow if isinstance(workflow, str) or workflow is None else spec_of(workflow).name
        stored = {i.id: i for i in self.store.infos(None, name)}
        for rec in self._live.values():
            if name is None or rec.spec.name == name:
                stored[rec.id] = rec.info()
        for instance_id, (_, why) in self._quarantine.items():
            if instance_id in stored:
                stored[instance_id] = attrs.evolve(stored[instance_id], quarantined=why)
        return [i for i in stored.values() if status is None or i.status is status]

    def workflow(self, instance_id: str) -> Any:
        """
        The instance's workflow object (its variables).

        Raises:
            InstanceNotFound: No instance has this id.
            UnknownWorkflowVersion: Its workflow version has no registered class.
            StoreError: The store cannot be read, or the record cannot be loaded
                (:class:`RecordLoadError`, naming the instance and the field: the
                instance is quarantined).
        """
        return self._peek(instance_id).wf

    def history(self, instance_id: str) -> list[HistoryEvent]:
        """
        Everything that happened to the instance, oldest first.

        An instance this engine quarantined ends with an ``instance_quarantined``
        entry giving the reason (kept by the engine: its record cannot be written).

        Raises:
            InstanceNotFound: No instance has this id.
        """
        rec = self._live.get(instance_id)
        stored = self.store.history(instance_id)
        if rec is None and not stored and self.store.info(instance_id) is None:
            raise InstanceNotFound(instance_id)
        events = stored + rec.history if rec is not None else stored
        quarantined = self._quarantine.get(instance_id) if self._quarantine else None
        if quarantined is not None:
            at, why = quarantined
            events.append(new_event(HistoryEvent, (at, _K.INSTANCE_QUARANTINED, None, 0, why)))
        return events

    def progress(self, instance_id: str) -> Progress:
        """
        How far the instance is: steps done, the current step, and the fewest steps left.

        Raises:
            InstanceNotFound: No instance has this id.
        """
        return progress_of(self._peek(instance_id), self.history(instance_id))

    def tasks(
        self, user: str | None = None, groups: Iterable[str] = (), *, instance_id: str | None = None
    ) -> list[Task]:
        """
        Open human tasks; with *user*, only those that user (member of *groups*) may complete.

        Args:
            user: Filter to tasks this user may complete.
            groups: The user's groups (the caller vouches for them).
            instance_id: Filter to this instance's tasks.
        """
        return self.store.open_tasks(user, frozenset(_groups(groups)), instance_id)

    def statistics(self) -> EngineStatistics:
        """What the engine is doing right now."""
        nxt = self.store.next_wake(self._no_timers())
        return EngineStatistics(
            live=len(self._live),
            active=self._active,
            queued=len(self._ready),
            next_timer_in=None if nxt is None else nxt - self.clock.now(),
            commits=self._commits,
            committed_records=self._committed_records,
        )

    def subscribe(self, callback: Callable[[str, HistoryEvent], None]) -> Callable[[], None]:
        """
        Call ``callback(instance_id, event)`` for every history entry from now on.

        Returns:
            A function that unsubscribes.
        """
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    # ----------------------------------------------------------------- outside events

    async def complete_task(self, task_id: str, *, user: str, groups: Iterable[str] = (), form: object = None) -> Task:
        """
        Complete an open human task; the instance then runs the task's method with *form*.

        Only the assignee or a member of a candidate group may complete it, exactly
        once, with a form of the declared type. On any error nothing changes.

        Args:
            task_id: The task.
            user: Who completes it.
            groups: The user's groups (the caller vouches for them).
            form: The filled form, an instance of the task's form type (``None``
                for a task without a form).

        Returns:
            The completed task.

        Raises:
            TaskNotFound: No such task.
            TaskAlreadyCompleted: It was completed (or cancelled) already.
            TaskNotAuthorized: *user* is not the assignee and in no candidate group.
            TaskFormError: *form* is not an instance of the declared type, or a field
                of it does not hold its declared type (or cannot be stored as JSON).
            TypeError: *user* is not a ``str`` (``None`` included), or *groups* is not
                an iterable of ``str``.
            ValueError: *user* is empty or holds a control character (a newline...).
            UnknownWorkflowVersion: The task's instance runs a workflow version that
                has no registered class here (nothing changed).
            StoreError: The completion could not be committed (nothing changed), or
                the instance's record cannot be loaded (:class:`RecordLoadError`: it is
                quarantined).
        """
        check_user(user)
        task = self.store.task(task_id)
        if task is None:
            raise TaskNotFound(task_id, "no such task")
        if task.status is not TaskStatus.OPEN:
            by = f" by {task.completed_by!r}" if task.completed_by else ""
            raise TaskAlreadyCompleted(task_id, f"is already {task.status.value}{by}; a task completes once")
        group_list = _groups(groups)
        if not task.may_complete(user, group_list):
            allowed: list[str] = []
            if task.assignee is not None:
                allowed.append(f"assignee {task.assignee!r}")
            if task.candidate_groups:
                allowed.append(f"members of {', '.join(task.candidate_groups)}")
            msg = (
                f"user {user!r} (groups: {', '.join(group_list) or 'none'}) may not complete it; "
                f"only {' or '.join(allowed)} may"
            )
            raise TaskNotAuthorized(task_id, user, msg)
        self._peek(task.instance_id)  # an instance of an unregistered version fails here, plainly
        _check_form(task, form)
        completed_at = self.clock.now()
        apply = self._complete_apply(task, user, completed_at, form)
        if self._leasing:
            done = attrs.evolve(
                task, status=TaskStatus.COMPLETED, completed_by=user, completed_at=completed_at, form=form
            )
            # The task row and the command, in one transaction: a second completion,
            # from any process, finds the task closed.
            body = {"task": task.id, "user": user}
            await self._command(task.instance_id, "complete_task", body, apply, complete=done)
            return done
        try:
            return await self._submit(task.instance_id, apply)
        except StoreError:
            stored = self.store.task(task_id)
            if stored is None or stored.status is not TaskStatus.COMPLETED or stored.completed_by != user:
                raise
            # The completion was written; only its acknowledgement was lost. The
            # instance's reload runs it on.
            return stored

    def _complete_apply(
        self, task: Task, user: str, completed_at: float, form: object
    ) -> Callable[[InstanceRecord], Task]:
        """The completion of *task*, as its driver applies it."""
        task_id = task.id

        def apply(rec: InstanceRecord) -> Task:
            # In the driver's turn: the instance may have moved on since the checks above.
            branch = next((b for b in rec.branches.values() if b.task_id == task_id), None)
            if branch is None and rec.task_id != task_id:
                closed = next((t for t in rec.dirty_tasks if t.id == task_id), None) or self.store.task(task_id)
                if closed is not None and closed.status is not TaskStatus.OPEN and not self._leasing:
                    by = f" by {closed.completed_by!r}" if closed.completed_by else ""
                    raise TaskAlreadyCompleted(task_id, f"is already {closed.status.value}{by}; a task completes once")
                raise TaskAlreadyCompleted(task_id, "its instance is no longer waiting on it")
            done = attrs.evolve(
                task, status=TaskStatus.COMPLETED, completed_by=user, completed_at=completed_at, form=form
            )
            rec.add_task(done)
            tok: InstanceRecord | Branch = rec if branch is None else branch
            tok.payload = form
            tok.task_id = None
            tok.wake_at = None
            if branch is not None:
                _sync_wake(rec)
            self._note(rec, _K.TASK_COMPLETED, task.step, 0, user)
            self._set_status(rec, InstanceStatus.RUNNING)
            return done

        return apply

    async def signal(self, instance_id: str, message: object) -> None:
        """
        Deliver *message* to an instance.

        It is kept durably until a ``@wait_for`` step of its type consumes it:
        at once when the instance waits there, or when it gets there.

        Raises:
            InstanceNotFound: No instance has this id.
            InstanceFinished: The instance is terminal.
            SignalTypeError: No ``@wait_for`` step of its workflow takes this type, or
                a field of the message does not hold its declared type (or cannot be
                stored as JSON); nothing was stored.
            StoreError: The store cannot be read, or the instance's record cannot be
                loaded (:class:`RecordLoadError`: it is quarantined).
        """
        rec = self._peek(instance_id)
        if rec.status.is_terminal:
            raise InstanceFinished(instance_id, rec.status, f"deliver {type(message).__name__}")
        accepted = [s.message for s in rec.spec.steps if s.message is not None]
        declared = next((t for t in accepted if isinstance(message, t)), None)
        if declared is None:
            names = ", ".join(sorted({t.__name__ for t in accepted})) or "none"
            msg = f"{rec.spec.name} does not wait for {type(message).__name__} (it waits for: {names})"
            raise SignalTypeError(instance_id, msg)
        bad = value_mismatch(message, declared)
        if bad is not None:
            where = declared.__name__ + bad.path
            raise SignalTypeError(instance_id, f"{where}: {bad.describe()}", field_path=where)
        # Filed under the declared type it matched, so every store decodes it as that type.
        if self._leasing:
            # With a wake-up for whichever worker holds (or next claims) the instance.
            self.store.add_command(instance_id, "wake", {}, signal=(_type_name(declared), message))
            self._kick(instance_id)
            return
        self.store.add_signal(instance_id, _type_name(declared), message)
        waiting_here = any(
            (m := rec.spec.step(name).message) is not None and isinstance(message, m)
            for name in active_steps(rec.state)
        )
        if not waiting_here:
            return
        if rec.branches:
            self._resume(self._get(instance_id))
        elif rec.status is InstanceStatus.WAITING and rec.worker is None:
            self._enqueue(self._get(instance_id))

    async def cancel(self, instance_id: str, *, reason: str = "", compensate: bool = True) -> InstanceStatus:
        """
        Cancel an instance and wait until it is terminal.

        A step in flight sees ``asyncio.CancelledError``; an open task is cancelled.
        With *compensate*, the compensations of the completed steps run (newest
        first) and the instance ends ``cancelled`` (or ``compensation_failed``).
        Cancelling an instance that is already compensating just waits for it.

        Returns:
            The terminal status.

        Raises:
            InstanceNotFound: No instance has this id.
            InstanceFinished: It is already terminal.
        """
        rec = self._peek(instance_id)
        if rec.status.is_terminal:
            raise InstanceFinished(instance_id, rec.status, "cancel")
        if self._leasing:
            body = {"reason": reason, "compensate": compensate}
            await self._command(instance_id, "cancel", body, self._cancel_apply(instance_id, reason, compensate))
        else:
            await self._request_cancel(instance_id, reason, compensate=compensate)
        return await self._wait_for(instance_id, terminal_only=True)

    def _cancel_apply(self, instance_id: str, reason: str, compensate: bool) -> Callable[[InstanceRecord], object]:
        """A cancel, as the instance's driver applies it."""

        def apply(rec: InstanceRecord) -> object:
            if rec.status.is_terminal:
                raise InstanceFinished(instance_id, rec.status, "cancel")
            # An instance compensating already is not cancelled again: the caller waits for it.
            if rec.cancel is None and active_steps(rec.state):
                rec.cancel = (reason, compensate)
                self._note(rec, _K.CANCEL_REQUESTED, None, 0, reason or None)
                if rec.runners:
                    self._cancel_branches(rec, f"cancelled: {reason}" if reason else "cancelled")
            return None

        return apply

    def _request_cancel(self, instance_id: str, reason: str, *, compensate: bool) -> asyncio.Future[object]:
        """Hand a cancel to the instance's driver; the future resolves once it is committed."""
        done = self._submit(instance_id, self._cancel_apply(instance_id, reason, compensate), interrupt=True)
        self._interrupt_step(instance_id)
        return done

    def _interrupt_step(self, instance_id: str) -> None:
        """A cancel waits: the step in flight sees CancelledError; the driver then applies the cancel."""
        rec = self._live.get(instance_id)
        worker: object = rec.worker if rec is not None else None
        if rec is not None and rec.in_step and worker is not _QUEUED and isinstance(worker, asyncio.Task):
            worker.cancel()

    async def retry_compensation(self, instance_id: str) -> InstanceStatus:
        """
        Run again the compensations of a ``compensation_failed`` instance, and wait for the end.

        For an operator, once the cause is fixed: the compensation that failed
        runs again (with its retries), then the older ones; the instance ends
        ``failed`` (or ``compensation_failed`` again).

        Returns:
            The terminal status.

        Raises:
            InstanceNotFound: No instance has this id.
            InstanceStateError: The instance is not ``compensation_failed``.
        """
        current = self._peek(instance_id)
        apply = self._retry_apply(instance_id)
        if self._leasing:
            if current.state != COMPENSATION_FAILED:
                apply(current)  # refused at the door, plainly (raises)
            await self._command(instance_id, "retry_compensation", {}, apply)
        else:
            await self._submit(instance_id, apply)
        return await self._wait_for(instance_id, terminal_only=True)

    def _retry_apply(self, instance_id: str) -> Callable[[InstanceRecord], object]:
        """A retry of the failed compensations, as the instance's driver applies it."""

        def apply(rec: InstanceRecord) -> object:
            if rec.state != COMPENSATION_FAILED:
                msg = f"is {rec.status.value}, not compensation_failed: there is no failed compensation to retry"
                raise InstanceStateError(instance_id, rec.status, msg)
            _trigger(rec, "retry_compensation")
            rec.comp_attempt = 1
            self._set_status(rec, InstanceStatus.COMPENSATING)
            return None

        return apply

    async def migrate(self, instance_id: str, to: type[Workflow]) -> InstanceInfo:
        """
        Move an instance to another version of its workflow, through a declared ``@migration``.

        The instance must not be running a step (waiting, or parked on a timer).
        Its open task is kept when the new version waits on the same human-task
        step; otherwise the task is cancelled and the new step is entered afresh.

        Returns:
            The migrated instance's snapshot.

        Raises:
            MigrationError: No migration from its version, it is busy or terminal,
                or the migration returned something unusable.
        """
        current = self._peek(instance_id)
        _migration_for(current, to)
        if current.worker is not None:
            # Refused at once rather than queued behind a step that may take long.
            raise MigrationError(instance_id, "is running a step now; migrate it while it waits")
        apply = self._migrate_apply(instance_id, to)
        if self._leasing:
            body = {"workflow": spec_of(to).name, "version": spec_of(to).version}
            applied, info = await self._command(instance_id, "migrate", body, apply, local_only=True)
            if not applied:
                raise MigrationError(instance_id, "is running a step in another worker now; migrate it while it waits")
            result: InstanceInfo = info
            return result
        return await self._submit(instance_id, apply)

    def _migrate_apply(self, instance_id: str, to: type[Workflow]) -> Callable[[InstanceRecord], InstanceInfo]:
        """A migration to *to*, as the instance's driver applies it."""
        new_spec = spec_of(to)

        def apply(rec: InstanceRecord) -> InstanceInfo:
            migration = _migration_for(rec, to)  # again, in the driver's turn: it may have moved on
            if rec.status is not InstanceStatus.WAITING and rec.wake_at is None:
                raise MigrationError(instance_id, "is running a step now; migrate it while it waits")
            old_state = rec.state
            try:
                # A copy: a migration that fails half-way leaves the instance as it was.
                new_wf, new_state = migration.fn(copy.deepcopy(rec.wf), old_state)
            except Exception as exc:
                msg = f"migration {migration.name} raised {type(exc).__name__}: {exc}"
                raise MigrationError(instance_id, msg) from exc
            if not isinstance(new_wf, to) or not new_spec.has_step(new_state):
                expected = f"({to.__qualname__}(...), a step of it)"
                msg = f"migration {migration.name} must return {expected}, got ({new_wf!r}, {new_state!r})"
                raise MigrationError(instance_id, msg)
            try:
                to.__orch_validate__.start(new_wf)  # typed at this door too: the new version's variables
            except WorkflowInputError as exc:
                msg = f"migration {migration.name} returned variables of the wrong type: {exc}"
                raise MigrationError(instance_id, msg) from exc
            missing = [s for s, _ in rec.saga if not new_spec.has_step(s) or new_spec.step(s).compensation is None]
            if missing:
                version = new_spec.version
                msg = f"completed steps {missing} have no compensation in version {version}; it could not undo them"
                raise MigrationError(instance_id, msg)
            keep_task = new_state == old_state and new_spec.step(new_state).kind is StepKind.HUMAN_TASK
            if rec.task_id is not None and not keep_task:
                self._close_task(rec, "migrated")
            elif rec.task_id is not None and (kept := self.store.task(rec.task_id)) is not None:
                rec.add_task(attrs.evolve(kept, form_type=new_spec.step(new_state).payload_type))
            if not keep_task and rec.status is InstanceStatus.WAITING:
                self._set_status(rec, InstanceStatus.RUNNING)
                rec.wake_at = None
            setattr(new_wf, STATE_ATTRIBUTE, new_state)
            rec.visit += 1  # a new visit: a task the new step opens must not reuse the cancelled one's id
            rec.wf = new_wf
            rec.spec = new_spec
            rec.machine = to.__orch_machine__
            self.registry.register(to)
            self._note(rec, _K.MIGRATED, new_state, 0, f"version {migration.source_version} -> {new_spec.version}")
            return rec.info()

        return apply

    # ----------------------------------------------------------------- waiting

    async def wait_result(self, instance_id: str) -> tuple[InstanceStatus, Any]:
        """
        Wait until the instance is terminal; return its status and its workflow object.

        Raises:
            InstanceNotFound: No instance has this id.
        """
        status, wf = await self._wait_record(instance_id, terminal_only=True)
        return status, wf if wf is not None else self.workflow(instance_id)

    async def wait_instance(self, instance_id: str, *, terminal: bool = True) -> InstanceStatus:
        """
        Wait until the instance is terminal (or, with ``terminal=False``, waiting).

        Returns:
            Its status then.

        Raises:
            InstanceNotFound: No instance has this id.
        """
        return await self._wait_for(instance_id, terminal_only=terminal)

    async def wait_idle(self) -> None:
        """Wait until no instance is running and no timer is pending (all wait or ended)."""
        self._ensure_running()
        while not self._is_idle():
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(fut)
            await fut

    def _is_idle(self) -> bool:
        if self._active:
            return False
        nxt = self.store.next_wake(self._no_timers())
        if nxt is None:
            return True
        # A virtual clock that does not jump only moves when the test moves it:
        # until then, a future timer cannot make anything happen.
        clock = self.clock
        return isinstance(clock, VirtualClock) and not clock.autojump and nxt > clock.now()

    async def _wait_for(self, instance_id: str, *, terminal_only: bool) -> InstanceStatus:
        return (await self._wait_record(instance_id, terminal_only=terminal_only))[0]

    async def _wait_record(self, instance_id: str, *, terminal_only: bool) -> tuple[InstanceStatus, Any]:
        """Wait as :meth:`_wait_for`; also return the workflow object, when the turn that ended had it."""
        info = self.info(instance_id)
        rec = self._live.get(instance_id)
        # A turn in progress may have ended the instance in memory only: wait for its commit.
        running = rec is not None and rec.worker is not None
        if not running and (info.status.is_terminal or (not terminal_only and info.status is InstanceStatus.WAITING)):
            return info.status, rec.wf if rec is not None else None
        fut: asyncio.Future[InstanceRecord] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(instance_id, []).append((terminal_only, fut))
        if not self._leasing:
            done = await fut
            return done.status, done.wf
        # Another process may drive it: look at the store too, now and then.
        try:
            while True:
                finished, _ = await asyncio.wait({fut}, timeout=max(self.poll, 0.02))
                if finished:
                    done = fut.result()
                    return done.status, done.wf
                if instance_id in self._live and self._live[instance_id].worker is not None:
                    continue  # this engine runs it: its driver notifies
                seen = self.store.info(instance_id)
                if seen is not None and (
                    seen.status.is_terminal or (not terminal_only and seen.status is InstanceStatus.WAITING)
                ):
                    return seen.status, None
        finally:
            fut.cancel()

    def _notify(self, rec: InstanceRecord) -> None:
        waiters = self._waiters.get(rec.id)
        if not waiters:
            return
        status = rec.status
        idle = status is InstanceStatus.WAITING or status.is_terminal
        keep: list[tuple[bool, asyncio.Future[InstanceRecord]]] = []
        for terminal_only, fut in waiters:
            if fut.done():
                continue
            if status.is_terminal or (idle and not terminal_only):
                fut.set_result(rec)
            else:
                keep.append((terminal_only, fut))
        if keep:
            self._waiters[rec.id] = keep
        else:
            del self._waiters[rec.id]

    def _release_idle_waiters(self) -> None:
        for fut in self._idle_waiters:
            if not fut.done():
                fut.set_result(None)
        self._idle_waiters.clear()

    # ----------------------------------------------------------------- records and commits

    def _get(self, instance_id: str) -> InstanceRecord:
        """
        The live record, loading it (and keeping it live) if needed: for changes.

        With a shared store, loading it claims its lease first (raising
        ``_InstanceBusy`` when another live worker holds it) and takes the commands
        waiting for it.
        """
        rec = self._live.get(instance_id)
        if rec is None:
            if not self._leasing:
                rec = self._peek(instance_id)
                self._live[instance_id] = rec
                return rec
            fresh = instance_id not in self._fences and instance_id not in self._releasing
            fence = self._claim(instance_id)
            try:
                rec = self._peek(instance_id)
                rec.fence = fence
                self._live[instance_id] = rec
                self._pull_commands(rec)
            except BaseException:
                if fresh and instance_id not in self._live:
                    self._give_back(instance_id)
                raise
        return rec

    def _claim(self, instance_id: str) -> int:
        """The fence of this engine's lease on the instance, claiming it if needed."""
        fence = self._fences.get(instance_id)
        if fence is not None:
            return fence
        fence = self._releasing.pop(instance_id, None)  # given back but not written yet: keep it
        if fence is None:
            now = self._now()
            fence = self.store.claim(instance_id, self.owner, now, now + self.lease)
            if fence is None:
                raise _InstanceBusy(instance_id)
        self._fences[instance_id] = fence
        return fence

    def _give_back(self, instance_id: str) -> None:
        """Release the instance's lease (batched: written at the end of this loop iteration)."""
        fence = self._fences.pop(instance_id, None)
        if fence is None:
            return
        if not self._releasing:
            asyncio.get_running_loop().call_soon(self._flush_releases)
        self._releasing[instance_id] = fence

    def _flush_releases(self) -> None:
        batch, self._releasing = self._releasing, {}
        if not batch:
            return
        try:
            self.store.release(self.owner, batch)
        except StoreError as exc:
            # They expire by themselves; meanwhile nobody else runs those instances.
            _log.warning("lease_release_failed", owner=self.owner, error=str(exc), leases=len(batch))

    def _peek(self, instance_id: str) -> InstanceRecord:
        """The live record, or a fresh load that is not kept: for reading."""
        rec = self._live.get(instance_id)
        if rec is None:
            try:
                rec = self.store.load(instance_id)
            except RecordLoadError as exc:
                # A record no engine can load: quarantine it, name it, never crash a loop on it.
                err = exc.of_instance(instance_id)
                self._orphan(instance_id, err)
                raise err from exc
            if rec is None:
                raise InstanceNotFound(instance_id)
        return rec

    def _unpin(self, rec: InstanceRecord) -> None:
        """Drop a record from memory once nothing runs it and all of it is committed (its lease goes too)."""
        if rec.worker is None and not rec.history and rec.id not in self._inbox and self._live.get(rec.id) is rec:
            del self._live[rec.id]
            if self._leasing:
                self._give_back(rec.id)

    def _get_or_orphan(self, instance_id: str) -> InstanceRecord | None:
        """The live record, or None (and a log line, once) when its version has no class or it cannot be loaded."""
        if instance_id in self._orphans:
            return None
        try:
            return self._get(instance_id)
        except UnknownWorkflowVersion as exc:
            self._orphan(instance_id, exc, "orphaned_instance")
            return None
        except RecordLoadError:
            return None  # quarantined by _peek
        except _InstanceBusy:
            return None  # another worker drives it
        except StoreError as exc:
            # The store could not be read now (I/O): try again later, after a backoff.
            if instance_id not in self._held:
                self._hold(instance_id, exc)
            return None

    def _orphan(self, instance_id: str, why: Exception | str, event: str = "quarantined_instance", **log: str) -> None:
        """
        Quarantine an instance: no worker or timer runs it again in this engine.

        Once per instance: logged as *event*, and its reason shown by info(),
        instances() and history() (an instance_quarantined entry).
        """
        if instance_id in self._orphans:
            return
        self._orphans.add(instance_id)
        at = self._now()
        reason = str(why)
        self._quarantine[instance_id] = (at, reason)
        _log.error(event, instance_id=instance_id, error=reason, **log)
        if self._subscribers:
            self._publish(instance_id, new_event(HistoryEvent, (at, _K.INSTANCE_QUARANTINED, None, 0, reason)))

    def _signals(self, rec: InstanceRecord) -> list[Signal]:
        """The instance's stored messages; none when they cannot be loaded (then it is quarantined)."""
        try:
            return self.store.signals(rec.id)
        except RecordLoadError as exc:
            self._orphan(rec.id, exc.of_instance(rec.id))
            return []

    async def _save(self, rec: InstanceRecord, *more: InstanceRecord) -> None:
        """Commit *rec* (and *more*, in the same transaction); with a group-committing store, with others' changes."""
        if self._leasing:
            for r in (rec, *more):
                if r.parent is not None and r.status.is_terminal and _ended_now(r):
                    # The parent may live in another worker: the end and its wake-up are one commit.
                    r.send(r.parent, "wake", {})
        if not self._group:
            self._commit((rec, *more))
            return
        batch = self._batch
        if batch is None:
            batch = self._batch = []
            self._batch_done = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._flush)
        done = self._batch_done
        assert done is not None  # noqa: S101 - created with the batch
        index = len(batch)
        batch.append((rec, *more) if more else (rec,))
        failed = await asyncio.shield(done)
        if failed is not None and (exc := failed.get(index)) is not None:
            raise exc

    def _flush(self) -> None:
        batch, done = self._batch, self._batch_done
        self._batch = self._batch_done = None
        assert batch is not None  # noqa: S101 - scheduled with a batch
        assert done is not None  # noqa: S101
        try:
            self._commit(tuple(dict.fromkeys(rec for group in batch for rec in group)))
        except (StoreError, InstanceExists) as exc:
            if len(batch) == 1:
                done.set_result({0: exc})
                return
            # One record may be what failed (its variables cannot be written, its
            # lease was taken over): commit each change alone, so that the others are
            # written once and only its own callers hear of the failure.
            failed: dict[int, StoreError | InstanceExists] = {}
            for index, group in enumerate(batch):
                try:
                    self._commit(group)
                except (StoreError, InstanceExists) as alone:
                    failed[index] = alone
            done.set_result(failed)
        else:
            done.set_result(None)

    def _commit(self, records: tuple[InstanceRecord, ...]) -> None:
        try:
            self.store.commit(records)
        except (StoreError, InstanceExists):
            raise
        except Exception as exc:
            msg = f"commit of {len(records)} instance change(s) failed: {type(exc).__name__}: {exc}"
            raise StoreError(msg) from exc
        self._commits += 1
        self._committed_records += len(records)
        if self._failures:
            for rec in records:
                self._failures.pop(rec.id, None)

    # ----------------------------------------------------------------- the driver's inbox

    def _submit(
        self, instance_id: str, apply: Callable[[InstanceRecord], _R], *, interrupt: bool = False, seq: int = 0
    ) -> asyncio.Future[_R]:
        """
        Hand a change of an instance to its driver; the future resolves once the change is committed.

        *apply* runs in the driver's turn, on the driver's record: it checks that the
        change still makes sense (raising the caller's typed error, with nothing
        changed) and makes it. The driver commits it with whatever it moves next.
        """
        fut: asyncio.Future[_R] = asyncio.get_running_loop().create_future()
        queued = self._inbox.setdefault(instance_id, [])
        pulled = next((c for c in queued if seq and c.seq == seq), None)
        if pulled is not None:
            # Read from the store already (a fresh claim pulls the commands): the caller waits on that one.
            pulled.apply, pulled.done = apply, fut
        else:
            queued.append(_Command(apply, fut, interrupt=interrupt, seq=seq))
        self._wake_driver(instance_id)
        return fut

    def _wake_driver(self, instance_id: str) -> None:
        """Make sure a driver will look at the instance's inbox."""
        if instance_id in self._held or instance_id in self._queued_ids:
            return  # its reload (after a failed commit), or the worker that loads it, will
        rec = self._live.get(instance_id)
        if rec is None:
            try:
                rec = self._get(instance_id)
            except (InstanceNotFound, UnknownWorkflowVersion, StoreError) as exc:
                for command in self._inbox.pop(instance_id, ()):
                    if command.done is not None and not command.done.done():
                        command.done.set_exception(exc)
                return
        if rec.worker is None:
            self._enqueue(rec)
        else:
            _poke(rec)  # a fork's driver wakes; a flat one looks at the inbox between moves

    # ----------------------------------------------------------------- commands across processes

    async def _command(
        self,
        instance_id: str,
        kind: str,
        body: Mapping[str, object],
        apply: Callable[[InstanceRecord], _R],
        *,
        complete: Task | None = None,
        local_only: bool = False,
    ) -> tuple[bool, Any]:
        """
        A caller's change with a shared store: write it as a command, then apply it here if this engine may.

        The command row (with the task's completion, if any) is one transaction. If
        this engine holds or can claim the instance, its driver applies the command
        and the call returns ``(True, result)`` once that is committed (the typed
        error of a refused command is raised). Otherwise the instance's owner (or
        the next worker to claim it) applies it: ``(False, None)``. With
        *local_only* nothing is written unless this engine can claim the instance.
        """
        if local_only:
            try:
                self._get(instance_id)
            except _InstanceBusy:
                return False, None
            return True, await self._submit(instance_id, apply, interrupt=kind == "cancel")
        seq = self.store.add_command(instance_id, kind, body, complete=complete)
        if not self._drives:
            return False, None
        try:
            self._get(instance_id)
        except _InstanceBusy:
            return False, None  # its owner hears of it (NOTIFY, or its next poll)
        fut = self._submit(instance_id, apply, interrupt=kind == "cancel", seq=seq)
        if kind == "cancel":
            self._interrupt_step(instance_id)
        try:
            return True, await fut
        except StoreError as exc:
            if isinstance(exc, RecordLoadError):
                raise
            # The command is in the store: the driver's reload (or the worker that took
            # the instance over) applies it. It was accepted; only its effect is later.
            _log.warning("command_deferred", instance_id=instance_id, command=kind, error=str(exc))
            return False, None

    def _pull_commands(self, rec: InstanceRecord) -> bool:
        """Queue the instance's stored commands for its driver (each once); True if any was new."""
        try:
            stored = self.store.commands(rec.id)
        except StoreError as exc:
            _log.warning("commands_unreadable", instance_id=rec.id, error=str(exc))
            return False
        if not stored:
            return False
        queued = self._inbox.setdefault(rec.id, [])
        known = {c.seq for c in queued if c.seq}
        known.update(rec.consumed_commands)
        new = False
        for command in stored:
            if command.seq in known:
                continue
            new = True
            apply = self._decode_command(command)
            queued.append(
                _Command(apply, None, interrupt=command.kind == "cancel", seq=command.seq, label=command.kind)
            )
        if not queued:
            del self._inbox[rec.id]
        return new

    def _decode_command(self, command: Command) -> Callable[[InstanceRecord], Any] | None:
        """The change a stored command asks for (None: a wake-up only, or one that cannot apply any more)."""
        body = command.body
        instance_id = command.instance_id
        kind = command.kind
        if kind == "cancel":
            return self._cancel_apply(instance_id, str(body.get("reason", "")), bool(body.get("compensate", True)))
        if kind == "retry_compensation":
            return self._retry_apply(instance_id)
        if kind == "complete_task":
            task = self.store.task(str(body.get("task")))
            if task is None:
                return None
            return self._complete_apply(task, str(body.get("user")), task.completed_at or self._now(), task.form)
        if kind == "migrate":
            cls = self.registry.resolve(str(body.get("workflow")), str(body.get("version")))
            if cls is None:
                return None
            return self._migrate_apply(instance_id, cls)
        return None

    def _kick(self, instance_id: str) -> None:
        """A command was written for the instance: make its driver look, if it is (or can be) this engine."""
        if not self._drives:
            return
        rec = self._live.get(instance_id)
        if rec is None:
            if instance_id in self._orphans or instance_id in self._held or instance_id in self._queued_ids:
                return
            try:
                rec = self._get(instance_id)  # claims it, and takes its commands
            except (_InstanceBusy, InstanceNotFound):
                return  # its owner hears of it (NOTIFY, or its next poll)
            except StoreError as exc:
                _log.warning("kick_failed", instance_id=instance_id, error=str(exc))
                return
        else:
            self._pull_commands(rec)
        self._run_commands(rec)

    def _run_commands(self, rec: InstanceRecord) -> None:
        """Commands wait for the live *rec*: get its driver to apply them (interrupting a step for a cancel)."""
        if rec.id not in self._inbox:
            self._unpin(rec)
            return
        if self._interrupting(rec.id):
            self._interrupt_step(rec.id)
        if rec.worker is None:
            self._enqueue(rec)
        else:
            _poke(rec)

    def _heard(self, instance_id: str, wake: asyncio.Event | None) -> None:
        """The store announced a command for *instance_id* (PostgreSQL's NOTIFY)."""
        if wake is not self._timer_wake:
            return  # from before a restart of this engine
        if instance_id in self._live:
            self._kick(instance_id)
        elif wake is not None:
            wake.set()  # the fleet loop claims it

    # ----------------------------------------------------------------- the fleet: claims, leases, failover

    def _claim_round(self) -> tuple[int, list[str]]:
        """Claim what needs a worker (up to the free workers) and queue it; how many, and the orphans found."""
        room = self.concurrency - self._active
        if room <= 0:
            return 0, []
        now = self._now()
        exclude = frozenset(self._live.keys() | self._orphans | self._held | self._queued_ids | self._fences.keys())
        claimed = self.store.claim_runnable(self.owner, now, now + self.lease, room, exclude)
        self._backlog = len(claimed) >= room
        taken = 0
        orphaned: list[str] = []
        for instance_id, fence in claimed:
            self._fences[instance_id] = fence
            if self._take(instance_id, now):
                taken += 1
            elif instance_id in self._orphans:
                orphaned.append(instance_id)
        return taken, orphaned

    def _take(self, instance_id: str, now: float) -> bool:
        """A claimed instance: run it if it needs running (else give its lease back); True if queued."""
        rec = self._get_or_orphan(instance_id)
        if rec is None:
            self._give_back(instance_id)
            return False
        if rec.worker is not None:
            return False
        if rec.wake_at is not None and rec.wake_at <= now and self._fire_due([instance_id], now):
            return True
        if rec.id in self._inbox or (
            not rec.status.is_terminal
            and (rec.wake_at is None or bool(rec.branches))
            and rec.status in (InstanceStatus.RUNNING, InstanceStatus.COMPENSATING)
        ):
            self._enqueue(rec)
            return True
        self._unpin(rec)
        return False

    async def _fleet_loop(self) -> None:
        """With a shared store: claim work (in flight of dead workers, due timers, commands) and fire timers."""
        wake = self._timer_wake
        assert wake is not None  # noqa: S101 - created with the loop
        clock = self.clock
        store = self.store
        failures = 0
        listening = self._stop_listening is not None
        last_sweep = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                if loop.time() - last_sweep >= (1.0 if listening else self.poll):
                    last_sweep = loop.time()
                    self._expire_dead_owners()
                    for instance_id in store.commanded(self.owner):
                        rec = self._live.get(instance_id)
                        if rec is not None and self._pull_commands(rec):
                            self._run_commands(rec)
                claimed, _ = self._claim_round()
                nxt = store.next_wake(self._no_timers())
            except StoreError as exc:
                failures += 1
                delay = _backoff(failures)
                _log.error("claims_failed", error=str(exc), failures=failures, retry_in=delay)
                wake.clear()
                await _wait_event(wake, delay)
                continue
            failures = 0
            if claimed:
                await asyncio.sleep(0)
                continue
            if self._idle_waiters and self._is_idle():
                self._release_idle_waiters()
            now = clock.now()
            virtual = isinstance(clock, VirtualClock) and clock.autojump
            if virtual and self._active == 0 and nxt is not None and nxt > now:
                assert isinstance(clock, VirtualClock)  # noqa: S101 - for the type checker
                clock.jump_to(nxt)
                continue
            # Timers of instances others hold, commands of others' instances: look again
            # after a short poll (a NOTIFY wakes the loop at once).
            delay = 1.0 if listening else self.poll
            if nxt is not None and nxt > now:
                delay = min(delay, nxt - now)
            wake.clear()
            await _wait_event(wake, delay)

    async def _heartbeat_loop(self) -> None:
        """Renew this engine's leases every third of the lease length; drop those taken over."""
        while True:
            await asyncio.sleep(self.lease / 3)
            if not self._fences:
                continue
            now = self._now()
            try:
                lost = self.store.renew(self.owner, dict(self._fences), now + self.lease)
            except StoreError as exc:
                _log.warning("lease_renewal_failed", owner=self.owner, error=str(exc), leases=len(self._fences))
                continue
            for instance_id in lost:
                self._lost(instance_id)

    def _lost(self, instance_id: str) -> None:
        """Another worker took the instance over: drop this engine's copy (it writes nothing more)."""
        if self._fences.pop(instance_id, None) is None:
            return
        _log.warning("lease_lost", instance_id=instance_id, owner=self.owner)
        rec = self._live.get(instance_id)
        if rec is not None and rec.worker is None:
            del self._live[instance_id]
        for command in self._inbox.pop(instance_id, ()):
            if command.done is not None and not command.done.done():
                command.done.set_exception(LeaseLost([instance_id]))

    def _expire_dead_owners(self) -> None:
        """Expire at once the leases of this host's workers that died (their pid is gone)."""
        host = socket.gethostname()
        for owner in self.store.owners():
            parts = owner.split(":")
            if len(parts) != 3 or parts[0] != host or owner in self._dead_owners:  # noqa: PLR2004 - host:pid:random
                continue
            if owner != self.owner and not _pid_alive(parts[1]):
                # Once: a dead worker takes no new lease, and its name may stay on the
                # rows it ended (their leases are expired, and ended rows are not claimed).
                self._dead_owners.add(owner)
                expired = self.store.expire(owner)
                _log.info("dead_worker_expired", owner=owner, leases=expired)

    def _interrupting(self, instance_id: str) -> bool:
        """Whether a caller's change waits that interrupts the step in flight (a cancel)."""
        return any(c.interrupt for c in self._inbox.get(instance_id, ()))

    async def _apply_inbox(self, rec: InstanceRecord) -> bool:
        """Apply the changes callers handed to this instance, and commit them in one go; True if any was made."""
        applied: list[tuple[asyncio.Future[Any], object]] = []
        durable = False
        for command in self._inbox.pop(rec.id, ()):
            done, apply = command.done, command.apply
            if command.seq:
                durable = True
                rec.add_consumed_command(command.seq)  # applied or refused, in this turn's commit
            if apply is None or (done is not None and done.done()):
                continue  # a note to look again (this is it), or a caller that gave up waiting
            try:
                result = apply(rec)
            except Exception as exc:  # noqa: BLE001 - the caller's typed error, handed back to it
                if done is not None:
                    done.set_exception(exc)
                else:
                    # Nobody here waits for it (another process wrote it): the history says why.
                    self._note(rec, _K.COMMAND_REJECTED, None, 0, f"{command.label}: {exc}")
                    _log.warning("command_rejected", instance_id=rec.id, command=command.label, error=str(exc))
                continue
            if done is not None:
                applied.append((done, result))
        if not applied:
            # Only commands nobody here waits for: their rows go with the turn's next
            # commit (or the one at its end), with the move they cause.
            return durable
        try:
            await self._save(rec)
        except StoreError as exc:
            for fut, _ in applied:
                if not fut.done():
                    fut.set_exception(exc)
            raise
        for fut, result in applied:
            if not fut.done():
                fut.set_result(result)
        return True

    def _forget(self, rec: InstanceRecord) -> None:
        """Drop the live record: its next use reloads the committed state."""
        if self._live.get(rec.id) is rec:
            del self._live[rec.id]

    # ----------------------------------------------------------------- workers

    def _enqueue(self, rec: InstanceRecord) -> None:
        if self._ready_event is None:
            self._ensure_running()
        self._active += 1
        rec.worker = _QUEUED
        self._ready.append(rec)
        self._wake_one_worker()

    def _enqueue_id(self, instance_id: str) -> None:
        """Queue an instance whose record a worker loads when it gets to it (recovery)."""
        if self._ready_event is None:
            self._ensure_running()
        self._active += 1
        self._queued_ids.add(instance_id)
        self._ready.append(instance_id)
        self._wake_one_worker()

    def _wake_one_worker(self) -> None:
        # One instance, one worker: waking every idle worker for each enqueue made
        # a sequential client pay for all of them.
        idle = self._idle_workers
        while idle:
            fut = idle.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    async def _worker(self) -> None:
        ready = self._ready
        current = asyncio.current_task()
        assert current is not None  # noqa: S101 - always inside a task
        loop = asyncio.get_running_loop()
        while True:
            if not ready:
                fut: asyncio.Future[None] = loop.create_future()
                self._idle_workers.append(fut)
                await fut
                continue
            item = ready.popleft()
            if isinstance(item, str):
                loaded = self._load_queued(item)
                if loaded is None:
                    self._active -= 1
                    continue
                rec = loaded
            else:
                rec = item
            rec.worker = current
            try:
                await self._drive(rec)
                if rec.consumed_commands or rec.outbox:
                    await self._save(rec)  # commands applied (or refused) with no move to carry them
            except asyncio.CancelledError:
                if (rec.cancel is None and not self._interrupting(rec.id)) or current.cancelling() > 1:
                    raise
                # Our own cancel() interrupted the instance outside a step body: drive again.
                current.uncancel()
                self._ready.appendleft(rec)
                self._active += 1
                rec.worker = _QUEUED
            except LeaseLost:
                # Another worker took it over: it drives the instance from what the store holds.
                rec.worker = None
                self._active -= 1
                self._forget(rec)
                self._lost(rec.id)
                if self._active == 0:
                    self._wake_timers()
                continue
            except StoreError as exc:
                self._forget(rec)
                rec.worker = None
                self._active -= 1
                # No waiter hears of this turn: its last change was not written. The
                # reload continues from what the store holds, after a backoff, and a
                # later turn reports.
                self._hold(rec.id, exc)
                if self._active == 0:
                    self._wake_timers()
                continue
            finally:
                if rec.worker is current:
                    rec.worker = None
            self._turn_ended(rec)

    def _load_queued(self, instance_id: str) -> InstanceRecord | None:
        """The record of a queued id, or None when it cannot or need not run now."""
        self._queued_ids.discard(instance_id)
        try:
            rec = self._get_or_orphan(instance_id)
        except (InstanceNotFound, StoreError) as exc:
            _log.error("recovery_load_failed", instance_id=instance_id, error=str(exc))
            return None
        return rec if rec is not None and rec.worker is None else None

    def _hold(self, instance_id: str, exc: StoreError) -> None:
        """
        A commit of the instance failed: reload it after a backoff that doubles at each failure in a row.

        Meanwhile no timer, caller or worker runs it: faults slow an instance down,
        never speed it up (a due timer re-fired at once would re-run its step in a
        tight loop while the disk is full).
        """
        failures = self._failures[instance_id] = self._failures.get(instance_id, 0) + 1
        delay = _backoff(failures)
        _log.error("commit_failed", instance_id=instance_id, error=str(exc), failures=failures, retry_in=delay)
        self._held.add(instance_id)
        asyncio.get_running_loop().call_later(delay, self._reload, instance_id)

    def _reload(self, instance_id: str) -> None:
        """After a failed commit and its backoff: go on from what the store holds (the commit may have landed)."""
        self._held.discard(instance_id)
        if instance_id in self._live:
            return
        try:
            rec = self._get(instance_id)
        except (InstanceNotFound, UnknownWorkflowVersion, RecordLoadError, _InstanceBusy) as exc:
            # Gone, quarantined (by _peek) or taken over: nothing to retry; its callers hear why.
            for command in self._inbox.pop(instance_id, ()):
                if command.done is not None and not command.done.done():
                    command.done.set_exception(exc)
            return
        except StoreError as exc:
            self._hold(instance_id, exc)
            return
        if rec.worker is None and (
            instance_id in self._inbox
            or (
                (rec.wake_at is None or bool(rec.branches))
                and rec.status in (InstanceStatus.RUNNING, InstanceStatus.COMPENSATING)
            )
        ):
            self._enqueue(rec)
        else:
            self._notify(rec)  # those who waited for the failed turn hear what the store holds
            self._unpin(rec)
        self._wake_timers()

    def _turn_ended(self, rec: InstanceRecord) -> None:
        self._active -= 1
        if self._backlog and self.concurrency - self._active >= max(1, self.concurrency // 8):
            # Work was left behind at the last claim and workers are free again: claim
            # now (in batches of an eighth of the workers), not at the next poll.
            self._backlog = False
            self._wake_timers()
        if rec.worker is None and (
            rec.id in self._inbox or (rec.status is InstanceStatus.WAITING and self._message_arrived(rec))
        ):
            # A caller's change, or a signal, came while this turn was committing: take it now.
            self._enqueue(rec)
        self._notify(rec)
        # Parked or finished and fully committed: from now on it lives in the store.
        self._unpin(rec)
        if self._active == 0:
            self._wake_timers()
            if self._idle_waiters and self._is_idle():
                self._release_idle_waiters()

    def _message_arrived(self, rec: InstanceRecord, only: str | None = None) -> bool:
        types = [
            m
            for name in ([only] if only is not None else active_steps(rec.state))
            if (m := rec.spec.step(name).message) is not None
        ]
        if not types:
            return False
        return any(
            s.seq not in rec.consumed_signals and isinstance(s.message, tuple(types)) for s in self._signals(rec)
        )

    # ----------------------------------------------------------------- timers

    def _wake_timers(self) -> None:
        if self._timer_wake is not None:
            self._timer_wake.set()

    def _park(self, rec: InstanceRecord, delay: float) -> None:
        rec.wake_at = self.clock.now() + delay
        self._wake_timers()

    async def _timer_loop(self) -> None:
        wake = self._timer_wake
        assert wake is not None  # noqa: S101 - created with the loop
        clock = self.clock
        store = self.store
        failures = 0
        while True:
            now = clock.now()
            due: list[str] = []
            try:
                nxt = store.next_wake(self._no_timers())
                if nxt is not None and nxt <= now:
                    due = store.due(now, _DUE_BATCH)
            except StoreError as exc:
                # The timer loop never dies of its store: it retries, slower and slower.
                failures += 1
                delay = _backoff(failures)
                _log.error("timers_unreadable", error=str(exc), failures=failures, retry_in=delay)
                wake.clear()
                await _wait_event(wake, delay)
                continue
            failures = 0
            if nxt is None:
                if self._idle_waiters and self._active == 0:
                    self._release_idle_waiters()
                wake.clear()
                await wake.wait()
                continue
            if nxt <= now:
                if self._fire_due(due, now):
                    await asyncio.sleep(0)
                else:
                    # Every due instance is still busy finishing its turn; its next
                    # commit clears or moves the timer. Wait for that, not in a spin.
                    wake.clear()
                    await _wait_event(wake, _BUSY_RETRY)
                continue
            wake.clear()
            if isinstance(clock, VirtualClock):
                if clock.autojump and self._active == 0:
                    clock.jump_to(nxt)
                    continue
                await wake.wait()
            else:
                await _wait_event(wake, nxt - now)

    def _no_timers(self) -> frozenset[str]:
        """Instances whose timers do not fire now: orphans, and those waiting out a commit backoff."""
        return frozenset(self._orphans.union(self._held) if self._held else self._orphans)

    def _fire_due(self, instance_ids: list[str], now: float) -> int:
        fired = 0
        held = self._held
        for instance_id in instance_ids:
            if instance_id in held:
                continue  # its reload, after the backoff, sees the timer again
            rec = self._get_or_orphan(instance_id)
            if rec is None:
                continue
            if rec.branches and rec.wake_at is not None and rec.wake_at <= now:
                # Inside a fork: wake the due branches; the others keep their timers.
                # A woken branch keeps its due time until it runs: a sibling may
                # commit first, and a restart must still find the timer.
                for b in rec.branches.values():
                    if b.wake_at is not None and b.wake_at <= now:
                        b.woken = True
                _sync_wake(rec)
                self._resume(rec)
                fired += 1
                continue
            if rec.worker is not None or rec.wake_at is None or rec.wake_at > now:
                self._unpin(rec)
                continue
            rec.wake_at = None
            rec.woken = True
            self._enqueue(rec)
            fired += 1
        return fired

    # ----------------------------------------------------------------- running

    def _note(self, rec: InstanceRecord, kind: EventKind, step: str | None, attempt: int, detail: str | None) -> None:
        event = new_event(HistoryEvent, (self._now(), kind, step, attempt, detail))
        rec.history.append(event)
        if self._subscribers:
            self._publish(rec.id, event)

    def _publish(self, instance_id: str, event: HistoryEvent) -> None:
        for callback in list(self._subscribers):
            try:
                callback(instance_id, event)
            except Exception:  # noqa: BLE001 - a subscriber must never break an instance
                _log.exception("subscriber_failed", instance_id=instance_id, kind=event.kind.value)

    def _set_status(self, rec: InstanceRecord, status: InstanceStatus) -> None:
        if rec.status is not status:
            rec.status = status
            self._note(rec, _K.STATUS_CHANGED, None, 0, status.value)

    async def _drive(self, rec: InstanceRecord) -> None:
        inbox = self._inbox
        while True:
            if inbox and rec.id in inbox:
                if not await self._apply_inbox(rec) and rec.status.is_terminal:
                    return  # every change was refused (it had ended): nothing to drive
                if (
                    rec.wake_at is not None
                    and rec.status is not InstanceStatus.WAITING
                    and rec.cancel is None
                    and not rec.branches
                ):
                    return  # woken for a caller's change only: it still waits out its retry backoff
            spec = rec.spec  # a migration may have changed it
            state = rec.state
            if state.__class__ is list:
                if rec.cancel is not None:
                    await self._apply_cancel(rec)
                elif await self._drive_fork(rec):
                    return
                continue
            if spec.has_step(state):
                if rec.cancel is not None:
                    await self._apply_cancel(rec)
                    continue
                step = spec.step(state)
                if step.kind.waits and rec.payload is NO_PAYLOAD:
                    if await self._wait(rec, step):
                        return
                    continue
                if await self._run_step(rec, step):
                    return
            elif state in (COMPENSATING, CANCELLING):
                if await self._compensate(rec):
                    return
            else:
                self._set_status(rec, _STATUS_OF_STATE[state])
                stray_timer = rec.wake_at is not None
                if stray_timer:
                    rec.wake_at = None  # an ended instance has no timer: a stored one would fire forever
                if rec.history or stray_timer:
                    await self._save(rec)
                if rec.parent is not None:
                    self._child_ended(rec)
                return

    # ----------------------------------------------------------------- child workflows

    def children(self, instance_id: str) -> list[InstanceInfo]:
        """
        The instances started by *instance_id*'s ``@subflow`` steps, oldest first.

        Their own histories hold their steps; the parent's history names each
        child in its ``child_started`` / ``child_finished`` entries.
        """
        return [self._find_info(i.id) or i for i in self.store.children(instance_id)]

    def tree(self, instance_id: str) -> str:
        """
        The instance and its children, recursively: one line each, indented by depth.

        Each line reads ``<id> <workflow> <status>`` and, for a child, the parent's
        step that started it (``ship ->``); the children's own histories hold
        their steps.

        Raises:
            InstanceNotFound: No instance has this id.
        """
        lines: list[str] = []

        def add(info: InstanceInfo, depth: int, via: str) -> None:
            lines.append(f"{'  ' * depth}{via}{info.id} {info.workflow} {info.status.value}")
            started = {
                e.detail: e.step for e in self.history(info.id) if e.kind is _K.CHILD_STARTED and e.detail is not None
            }
            for child in self.children(info.id):
                add(child, depth + 1, f"{started.get(child.id, '?')} -> ")

        add(self.info(instance_id), 0, "")
        return "\n".join(lines)

    async def _child_wait(self, rec: InstanceRecord, step: StepSpec, tok: Branch | None) -> bool:
        """Start the child of a subflow step, or see whether it ended; True while the step waits."""
        t: InstanceRecord | Branch = rec if tok is None else tok
        child_id = _child_id(rec, t)
        info = self._find_info(child_id)
        if info is None:
            ctx = Ctx(self.services, rec.id, rec.spec.name, step.name, t.attempt, (rec.id, t.visit, ""))
            start = step.start
            assert start is not None  # noqa: S101 - subflow steps always have one
            try:
                if self.before_attempt is not None:
                    self.before_attempt(ctx)
                child: object = start(rec.wf, ctx)
                if step.child is None or not isinstance(child, step.child):
                    expected = step.child.__qualname__ if step.child is not None else "a workflow"
                    msg = f"{step.name} must return a new {expected} to start as its child, got {child!r}"
                    raise TypeError(msg)
                crec = self._create(child, child_id, rec.id)
            except Exception as exc:  # noqa: BLE001 - user code: the step's failure
                return await self._step_failed(rec, step, t.attempt, exc, tok)
            self._live[child_id] = crec
            self._note(rec, _K.CHILD_STARTED, step.name, t.attempt, child_id)
            self._waits(rec, tok)
            try:
                await self._save(rec, crec)
            except StoreError:
                # The parent's reload must not find a child that exists only in this
                # process's memory: it would wait for it forever.
                self._forget(crec)
                raise
            self._enqueue(crec)
            return True
        if not info.status.is_terminal:
            if self._waits(rec, tok):
                await self._save(rec)
            return True
        self._note(rec, _K.CHILD_FINISHED, step.name, t.attempt, f"{child_id} {info.status.value}")
        if tok is None:
            self._set_status(rec, InstanceStatus.RUNNING)
        else:
            tok.waiting = False
        if info.status is InstanceStatus.COMPLETED:
            t.payload = self.workflow(child_id)
            return False
        return await self._step_failed(
            rec, step, t.attempt, ChildWorkflowFailed(child_id, info.status, info.error), tok
        )

    def _waits(self, rec: InstanceRecord, tok: Branch | None) -> bool:
        """Mark the instance (or branch) waiting; True when that is a change."""
        if tok is not None:
            changed = not tok.waiting
            tok.waiting = True
            return changed
        if rec.status is InstanceStatus.WAITING:
            return False
        self._set_status(rec, InstanceStatus.WAITING)
        return True

    def _child_ended(self, child: InstanceRecord) -> None:
        """A child reached its end: its parent's subflow step may go on."""
        assert child.parent is not None  # noqa: S101 - called for children only
        try:
            parent = self._get_or_orphan(child.parent)
        except InstanceNotFound:
            return
        if parent is None:
            return
        waits = parent.status is InstanceStatus.WAITING or (parent.branches and not parent.status.is_terminal)
        # A compensating parent parked without a timer waits for a child to undo itself.
        undoing = parent.status is InstanceStatus.COMPENSATING and parent.wake_at is None
        if waits or undoing:
            self._resume(parent)
        else:
            self._unpin(parent)

    def _cancel_child(self, parent: InstanceRecord, child_id: str, why: str, *, compensate: bool = True) -> None:
        if self._leasing:
            # The child may run in another worker: a command, written with the parent's next commit.
            parent.send(child_id, "cancel", {"reason": why, "compensate": compensate})
            return
        try:
            child = self._get_or_orphan(child_id)
        except InstanceNotFound:
            return
        if child is None:
            return
        if child.status.is_terminal:
            self._unpin(child)
            return
        # Not awaited: the child's driver applies it; a failed commit there is its own to retry.
        self._request_cancel(child.id, why, compensate=compensate).add_done_callback(_retrieved)

    def _children_running(self, rec: InstanceRecord) -> bool:
        """Whether a child of *rec* has not ended yet (one cancelled with it may still be undoing itself)."""
        for child in self.store.children(rec.id):
            info = self._find_info(child.id)
            if info is not None and not info.status.is_terminal:
                return True
        return False

    def _child_undo(self, rec: InstanceRecord, name: str, visit: int, attempt: int) -> tuple[str, str]:
        """
        Where the undo of a subflow step's child stands, for compensation attempt *attempt*.

        ``("kick", id)``: start it (the child completed, or an earlier attempt's undo
        failed); ``("running", id)``: it runs; ``("done", id)``: the child is undone, or
        never completed (a failed child undid itself); ``("failed", id)``: this
        attempt's undo failed.
        """
        attempts = rec.spec.step(name).retry.attempts
        ids = [f"{rec.id}/{visit}"] + [f"{rec.id}/{visit}.{a}" for a in range(2, attempts + 1)]
        # The step completed, so its last child did: earlier attempts' children failed.
        for child_id in reversed(ids):
            info = self._find_info(child_id)
            if info is None:
                continue
            status = info.status
            if status in (InstanceStatus.CANCELLED, InstanceStatus.FAILED):
                return "done", child_id
            if status is InstanceStatus.COMPLETED:
                return "kick", child_id
            if status is InstanceStatus.COMPENSATION_FAILED:
                ours = self._peek(child_id).cause == _undo_marker(rec, attempt)
                return ("failed" if ours else "kick"), child_id
            return "running", child_id
        return "done", ""

    async def _kick_child_undo(self, rec: InstanceRecord, undo: tuple[str, str], attempt: int) -> bool:
        """Start the child's undo (True: the parent parks until it ends), or raise its failure."""
        word, child_id = undo
        if word == "done":
            return False
        child = self._get(child_id)
        if word == "failed":
            self._unpin(child)
            raise ChildWorkflowFailed(child_id, child.status, child.error)
        marker = _undo_marker(rec, attempt)
        if child.status is InstanceStatus.COMPLETED:
            child.error = child.cause = marker
            _trigger(child, "undo")
        else:
            child.cause = marker
            _trigger(child, "retry_undo")
            child.comp_attempt = 1
        self._set_status(child, InstanceStatus.COMPENSATING)
        await self._save(child)
        self._enqueue(child)
        return True

    # ----------------------------------------------------------------- forks

    def _resume(self, rec: InstanceRecord) -> None:
        """Something a branch (or the instance) waited for arrived: run it."""
        if rec.worker is None:
            self._enqueue(rec)
        elif rec.poke is not None and not rec.poke.done():
            _poke(rec)  # a fork's driver waiting on its branches looks again
        else:
            # Its driver is between moves (committing, leaving): a note in its inbox
            # makes it look again before it lets go of the instance.
            self._inbox.setdefault(rec.id, []).append(_Command(None, None, interrupt=False))

    def _sync_branches(self, rec: InstanceRecord) -> None:
        """Keep one branch record per current step inside forks; a new visit for each new step."""
        steps = active_steps(rec.state) if _in_fork(rec) else []
        branches = rec.branches
        if not steps:
            if branches:
                rec.branches = {}
                rec.wake_at = None  # the branches' timers went with them
            return
        if not branches:
            branches = rec.branches = {}
        current = set(steps)
        for name in [n for n in branches if n not in current]:
            del branches[name]
        for name in steps:
            if name not in branches:
                rec.visit += 1
                branches[name] = Branch(rec.visit)
        _sync_wake(rec)

    def _cancel_branches(self, rec: InstanceRecord, why: str, *, keep: object = None) -> None:
        """Cancel the steps in flight of the fork's branches (but *keep*'s)."""
        runners = rec.runners or {}
        for name, task in runners.items():
            if task is keep or task.done():
                continue
            branch = rec.branches.get(name)
            if branch is not None:
                branch.cancelled = why
            task.cancel()

    def _leave_fork(self, rec: InstanceRecord, why: str, *, compensate: bool = True) -> None:
        """The instance leaves its fork for good: cancel the branches, their tasks and timers."""
        self._cancel_branches(rec, why, keep=asyncio.current_task())
        for name, branch in rec.branches.items():
            if branch.task_id is not None:
                self._close_task(rec, why, branch)
            if branch.waiting and rec.spec.step(name).child is not None:
                self._cancel_child(rec, _child_id(rec, branch), why, compensate=compensate)
        rec.branches = {}
        rec.wake_at = None

    async def _drive_fork(self, rec: InstanceRecord) -> bool:
        """Run the runnable branches of a fork together; True when every branch waits."""
        loop = asyncio.get_running_loop()
        runners: dict[str, asyncio.Task[None]] = {}
        rec.runners = runners
        inbox = self._inbox
        try:
            while True:
                if inbox and rec.id in inbox:
                    await self._apply_inbox(rec)
                if not _in_fork(rec) or rec.cancel is not None:
                    return False
                if self._fork_gates(rec):
                    await self._save(rec)
                    continue
                if not rec.branches:
                    self._sync_branches(rec)
                for name, branch in rec.branches.items():
                    if name not in runners and self._runnable(rec, name, branch):
                        runners[name] = loop.create_task(self._branch_turn(rec, name, branch))
                if not runners:
                    _sync_wake(rec)
                    if rec.status is not InstanceStatus.WAITING:
                        self._set_status(rec, InstanceStatus.WAITING)
                        await self._save(rec)
                    return True
                if rec.status is InstanceStatus.WAITING:
                    self._set_status(rec, InstanceStatus.RUNNING)
                poke = rec.poke = loop.create_future()
                await asyncio.wait([*runners.values(), poke], return_when=asyncio.FIRST_COMPLETED)
                rec.poke = None
                for name, task in list(runners.items()):
                    if task.done():
                        del runners[name]
                        if not task.cancelled() and (exc := task.exception()) is not None:
                            raise exc
        finally:
            rec.runners = None
            rec.poke = None
            pending = [t for t in runners.values() if not t.done()]
            for t in pending:
                # A step cancelled already (a sibling failed, the instance was
                # cancelled) may be finishing its cleanup: let it, once.
                if not t.cancelling():
                    t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    def _fork_gates(self, rec: InstanceRecord) -> bool:
        """Start or skip the branches of a fork just entered, or fire a join; True when something fired."""
        machine = rec.machine
        assert type(machine) is ForkMachine  # noqa: S101 - only classes with forks have list states
        state = rec.state
        all_leaves = leaves(state)
        starts = [leaf for leaf in all_leaves if leaf.endswith("." + START)]
        wf = rec.wf
        spec = rec.spec
        if starts:
            entered: dict[str, int] = {}
            for leaf in starts:
                branch = leaf.rsplit(".", 2)[-2].removesuffix("@branch")
                held = spec.branch_of(branch)
                assert held is not None  # noqa: S101 - a branch's first step is in it
                fork = held[0].step
                entered.setdefault(fork, 0)
                try:
                    ok = _trigger(rec, f"enter@{branch}", wf)
                except Exception as exc:  # noqa: BLE001 - a guard raised
                    why = f"{fork}: the guard of the branch {branch} raised {type(exc).__name__}: {exc}"
                    self._fail(rec, why, fork)
                    return True
                if ok:
                    entered[fork] += 1
                    self._note(rec, _K.TRANSITION, fork, 0, branch)
                else:
                    _trigger(rec, f"skip@{branch}", wf)
                    self._note(rec, _K.BRANCH_SKIPPED, fork, 0, branch)
            for fork, count in entered.items():
                if not count:
                    self._fail(rec, str(NoEdgeEnabled(spec.name, fork)), fork)
                    return True
            self._sync_branches(rec)
            return True
        present = set(all_leaves)
        # Innermost forks first: their join may complete an outer branch.
        for fork, regions in sorted(machine.region_paths.items(), key=lambda kv: -kv[1][0].count(".")):
            if all(f"{r}.{DONE}" in present for r in regions):
                _trigger(rec, f"join@{fork}", wf)
                fork_spec = spec.fork(fork)
                assert fork_spec is not None  # noqa: S101 - a machine's forks are the spec's
                rec.visit += 1
                self._note(rec, _K.JOINED, fork, 0, fork_spec.join)
                self._sync_branches(rec)
                return True
        return False

    def _runnable(self, rec: InstanceRecord, name: str, branch: Branch) -> bool:
        if not branch.woken and branch.wake_at is not None and branch.wake_at <= self.clock.now():
            branch.woken = True  # due (after a restart, before the timer loop saw it)
            _sync_wake(rec)
        if not branch.waiting or branch.woken or branch.payload is not NO_PAYLOAD:
            return True
        kind = rec.spec.step(name).kind
        if kind is StepKind.SUBFLOW:
            info = self._find_info(_child_id(rec, branch))
            return info is None or info.status.is_terminal
        return kind is StepKind.WAIT_FOR and self._message_arrived(rec, name)

    async def _branch_turn(self, rec: InstanceRecord, name: str, branch: Branch) -> None:
        """One move of one branch: wait, or run one attempt of its step."""
        step = rec.spec.step(name)
        if branch.woken:
            branch.wake_at = None  # its timer is consumed now; the next commit says so
            _sync_wake(rec)
        if step.kind.waits and branch.payload is NO_PAYLOAD:
            await self._branch_wait(rec, branch, step)
            return
        branch.waiting = False
        await self._run_step(rec, step, branch)

    async def _branch_wait(self, rec: InstanceRecord, branch: Branch, step: StepSpec) -> None:
        """Enter or re-check a branch's waiting step (as :meth:`_wait` does outside forks)."""
        woken, branch.woken = branch.woken, False
        if step.kind is StepKind.SUBFLOW:
            await self._child_wait(rec, step, branch)
            return
        name = step.name
        timeout = next((e for e in rec.spec.outgoing(name) if e.is_timeout), None)
        if step.kind is StepKind.TIMER:
            if woken:
                self._note(rec, _K.TIMER_FIRED, name, 0, None)
                branch.payload = None
                branch.waiting = False
                return
            if not branch.waiting:
                delay = step.delay or 0.0
                branch.waiting = True
                branch.wake_at = self.clock.now() + delay
                _sync_wake(rec)
                self._wake_timers()
                self._note(rec, _K.TIMER_SET, name, 0, f"in {delay:g}s")
                await self._save(rec)
            return
        if woken and timeout is not None:
            if branch.task_id is not None:
                self._close_task(rec, "escalated", branch)
            self._note(rec, _K.ESCALATED, name, 0, f"waited {timeout.timeout:g}s")
            before = leaves(rec.state)
            _trigger(rec, f"timeout@{name}", rec.wf)
            self._moved(rec, name, before)
            await self._save(rec)
            return
        if step.kind is StepKind.WAIT_FOR and (message := self._take_message(rec, step)) is not NO_PAYLOAD:
            branch.payload = message
            branch.wake_at = None
            branch.waiting = False
            _sync_wake(rec)
            self._note(rec, _K.MESSAGE_RECEIVED, name, 0, _type_label(step.message))
            return
        if branch.waiting:
            return
        if step.kind is StepKind.HUMAN_TASK:
            self._open_task(rec, step, branch)
        else:
            assert step.message is not None  # noqa: S101
            self._note(rec, _K.MESSAGE_AWAITED, name, 0, step.message.__name__)
        branch.waiting = True
        if timeout is not None and timeout.timeout is not None:
            branch.wake_at = self.clock.now() + timeout.timeout
            _sync_wake(rec)
            self._wake_timers()
        await self._save(rec)

    # ----------------------------------------------------------------- waiting steps

    def _take_message(self, rec: InstanceRecord, step: StepSpec) -> object:
        """Consume the oldest stored message a ``@wait_for`` step takes (``NO_PAYLOAD``: none); the caller notes it."""
        message_type = step.message
        assert message_type is not None  # noqa: S101 - wait_for steps always have one
        for sig in self._signals(rec):
            if sig.seq not in rec.consumed_signals and isinstance(sig.message, message_type):
                rec.add_consumed_signal(sig.seq)
                return sig.message
        return NO_PAYLOAD

    async def _wait(self, rec: InstanceRecord, step: StepSpec) -> bool:
        """Enter or re-check a waiting step; True when the instance stays parked."""
        woken, rec.woken = rec.woken, False
        if step.kind is StepKind.SUBFLOW:
            return await self._child_wait(rec, step, None)
        timeout = next((e for e in rec.spec.outgoing(step.name) if e.is_timeout), None)
        if step.kind is StepKind.TIMER:
            if woken:
                self._note(rec, _K.TIMER_FIRED, step.name, 0, None)
                rec.payload = None
                self._set_status(rec, InstanceStatus.RUNNING)
                return False
            if rec.status is not InstanceStatus.WAITING:
                delay = step.delay or 0.0
                self._park(rec, delay)
                self._set_status(rec, InstanceStatus.WAITING)
                self._note(rec, _K.TIMER_SET, step.name, 0, f"in {delay:g}s")
                await self._save(rec)
            return True
        if woken and timeout is not None:
            if rec.task_id is not None:
                self._close_task(rec, "escalated")
            self._set_status(rec, InstanceStatus.RUNNING)
            self._note(rec, _K.ESCALATED, step.name, 0, f"waited {timeout.timeout:g}s")
            _trigger(rec, _event(rec, "timeout", step.name), rec.wf)
            self._moved(rec, step.name)
            await self._save(rec)
            return False
        if step.kind is StepKind.WAIT_FOR and (message := self._take_message(rec, step)) is not NO_PAYLOAD:
            rec.payload = message
            rec.wake_at = None
            self._set_status(rec, InstanceStatus.RUNNING)
            self._note(rec, _K.MESSAGE_RECEIVED, step.name, 0, _type_label(step.message))
            return False
        if rec.status is InstanceStatus.WAITING:
            return True
        if step.kind is StepKind.HUMAN_TASK:
            self._open_task(rec, step)
        else:
            assert step.message is not None  # noqa: S101
            self._note(rec, _K.MESSAGE_AWAITED, step.name, 0, step.message.__name__)
        if timeout is not None and timeout.timeout is not None:
            self._park(rec, timeout.timeout)
        self._set_status(rec, InstanceStatus.WAITING)
        await self._save(rec)
        return True

    def _open_task(self, rec: InstanceRecord, step: StepSpec, tok: InstanceRecord | Branch | None = None) -> None:
        t = rec if tok is None else tok
        spec_task = step.task
        assert spec_task is not None  # noqa: S101 - human tasks always have one
        now = self.clock.now()
        task = Task(
            id=f"{rec.id}.{t.visit}",
            instance_id=rec.id,
            workflow=rec.spec.name,
            step=step.name,
            assignee=spec_task.assignee,
            candidate_groups=spec_task.candidate_groups,
            form_type=spec_task.form,
            created_at=now,
            due_at=now + spec_task.due if spec_task.due is not None else None,
        )
        rec.add_task(task)
        t.task_id = task.id
        self._note(rec, _K.TASK_CREATED, step.name, 0, task.id)

    def _close_task(self, rec: InstanceRecord, why: str, tok: InstanceRecord | Branch | None = None) -> None:
        t = rec if tok is None else tok
        task_id = t.task_id
        t.task_id = None
        if task_id is None:
            return
        task = self.store.task(task_id)
        if task is not None and task.status is TaskStatus.OPEN:
            rec.add_task(attrs.evolve(task, status=TaskStatus.CANCELLED, completed_at=self.clock.now()))
            self._note(rec, _K.TASK_CANCELLED, task.step, 0, f"{task.id} ({why})")

    async def _run_step(self, rec: InstanceRecord, step: StepSpec, tok: Branch | None = None) -> bool:
        """Run one attempt of *step* (of branch *tok*); True when it parks (a retry timer)."""
        t: InstanceRecord | Branch = rec if tok is None else tok
        t.woken = False
        attempt = t.attempt
        wf = rec.wf
        name = step.name
        ctx = Ctx(self.services, rec.id, rec.spec.name, name, attempt, (rec.id, t.visit, ""))
        self._note(rec, _K.STEP_STARTED, name, attempt, None)
        payload = t.payload
        args = (wf, ctx) if payload is NO_PAYLOAD or step.payload_type is None else (wf, ctx, payload)
        variables = wf.__orch_validate__
        strict = self._strict_vars
        kept = variables.snapshot(wf) if strict else variables.read(wf)
        t.in_step = True
        try:
            if self.before_attempt is not None:
                self.before_attempt(ctx)
            if step.is_async:
                if step.timeout is None:
                    await step.fn(*args)
                else:
                    await _with_timeout(step.fn(*args), step.timeout)
            else:
                step.fn(*args)
            # A variable of the wrong type fails the attempt (and is put back) before
            # anything is committed: the record must stay loadable.
            if strict or not variables.settled(wf, kept):
                variables.check_step(wf, kept, tok is None, strict)
        except asyncio.CancelledError:
            t.in_step = False
            current = asyncio.current_task()
            why = tok.cancelled if tok is not None else _cancel_reason(rec)
            ours = (
                rec.cancel is not None
                or (tok is not None and tok.cancelled is not None)
                or (tok is None and self._interrupting(rec.id))
            )
            if not ours or current is None or current.cancelling() > 1:
                raise
            current.uncancel()
            if tok is None and rec.cancel is None:
                # The cancel that interrupted the step is still in the inbox: apply it first.
                await self._apply_inbox(rec)
                why = _cancel_reason(rec)
            self._note(rec, _K.STEP_CANCELLED, name, attempt, why or None)
            return False
        except Exception as exc:  # noqa: BLE001 - any failure of user code is the step's failure
            t.in_step = False
            if isinstance(exc, TimeoutError) and step.timeout is not None and not str(exc):
                exc = TimeoutError(f"attempt {attempt} exceeded the step's timeout of {step.timeout:g}s")
            return await self._step_failed(rec, step, attempt, exc, tok)
        t.in_step = False
        self._note(rec, _K.STEP_COMPLETED, name, attempt, None)
        if step.compensation is not None:
            rec.add_saga(name, t.visit)
        t.payload = NO_PAYLOAD
        t.attempt = 1
        if tok is not None and name not in rec.branches:
            # The instance left the fork while this step ran (a sibling failed, and
            # the step ignored its cancellation): its completion is compensated.
            await self._save(rec)
            return False
        before = leaves(rec.state) if tok is not None else None
        try:
            moved = _trigger(rec, _event(rec, "next", name), wf)
        except Exception as exc:  # noqa: BLE001 - a guard raised
            self._fail(rec, f"{name}: a guard raised {type(exc).__name__}: {exc}", name)
        else:
            if moved:
                self._moved(rec, name, before)
            else:
                self._fail(rec, str(NoEdgeEnabled(rec.spec.name, name)), name)
        await self._save(rec)
        return False

    def _moved(self, rec: InstanceRecord, source: str, before: list[str] | None = None) -> None:
        rec.visit += 1
        state = rec.state
        if before is None and type(state) is str:
            self._note(rec, _K.TRANSITION, source, 0, state)
            if state == COMPLETED:
                self._set_status(rec, InstanceStatus.COMPLETED)
            return
        # Into a fork (entering its branches is noted as they start), or inside one.
        old = set(before or ())
        for leaf in leaves(state):
            if leaf in old:
                continue
            if leaf.endswith("." + DONE):
                held = rec.spec.branch_of(source)
                join = held[0].join if held is not None else "?"
                self._note(rec, _K.BRANCH_DONE, source, 0, join)
            elif not leaf.endswith("." + START):
                self._note(rec, _K.TRANSITION, source, 0, leaf.rpartition(".")[2])
        self._sync_branches(rec)

    async def _step_failed(
        self, rec: InstanceRecord, step: StepSpec, attempt: int, exc: Exception, tok: Branch | None = None
    ) -> bool:
        t: InstanceRecord | Branch = rec if tok is None else tok
        error = f"{type(exc).__name__}: {exc}"
        self._note(rec, _K.STEP_FAILED, step.name, attempt, error)
        if step.retry.retries(exc, attempt):
            delay = step.retry.delay(attempt)
            t.attempt = attempt + 1
            self._note(rec, _K.RETRY_SCHEDULED, step.name, attempt + 1, f"in {delay:g}s")
            if tok is None:
                self._park(rec, delay)
            else:
                tok.waiting = True
                tok.wake_at = self.clock.now() + delay
                _sync_wake(rec)
                self._wake_timers()
            await self._save(rec)
            return True
        t.attempt = 1
        t.payload = NO_PAYLOAD
        if tok is not None and step.name not in rec.branches:
            await self._save(rec)  # the instance left the fork meanwhile
            return False
        before = leaves(rec.state) if tok is not None else None
        if any(e.is_error for e in rec.spec.outgoing(step.name)) and _trigger(
            rec, _event(rec, "error", step.name), rec.wf, exc
        ):
            self._moved(rec, step.name, before)
        else:
            self._fail(rec, f"{step.name}: {error}", step.name)
        await self._save(rec)
        return False

    def _fail(self, rec: InstanceRecord, error: str, step: str) -> None:
        rec.error = rec.cause = error
        self._note(rec, _K.INSTANCE_FAILED, step, 0, error)
        if rec.branches:
            self._leave_fork(rec, f"a sibling branch failed: {error}")
        _trigger(rec, "fail")
        self._set_status(rec, InstanceStatus.COMPENSATING)
        _log.warning("instance_failed", instance_id=rec.id, workflow=rec.spec.name, error=error)

    async def _apply_cancel(self, rec: InstanceRecord) -> None:
        assert rec.cancel is not None  # noqa: S101 - checked by the caller
        reason, compensate = rec.cancel
        self._close_task(rec, "cancelled")
        state = rec.state
        if state.__class__ is str and rec.spec.has_step(state) and rec.spec.step(state).child is not None:
            self._cancel_child(rec, _child_id(rec, rec), f"its parent was cancelled: {reason}", compensate=compensate)
        if rec.branches:
            self._leave_fork(rec, f"cancelled: {reason}" if reason else "cancelled", compensate=compensate)
        rec.wake_at = None
        rec.payload = NO_PAYLOAD
        rec.error = rec.cause = f"cancelled: {reason}" if reason else "cancelled"
        _trigger(rec, "cancel" if compensate else "abandon")
        self._set_status(rec, InstanceStatus.COMPENSATING if compensate else InstanceStatus.CANCELLED)
        await self._save(rec)

    async def _compensate(self, rec: InstanceRecord) -> bool:
        """Run the compensations newest first; True when parked (a retry timer, a child undoing itself)."""
        rec.woken = False
        spec = rec.spec
        if spec.has_subflows and self._children_running(rec):
            # A child cancelled with its parent undoes its own steps first: they are
            # newer. The parent parks without a worker; the child's end resumes it.
            return True
        while rec.saga:
            name, visit = rec.saga[-1]
            comp = spec.step(name).compensation
            assert comp is not None  # noqa: S101 - only steps with one enter the saga
            attempt = rec.comp_attempt
            undo = self._child_undo(rec, name, visit, attempt) if spec.step(name).child is not None else None
            if undo is not None and undo[0] == "running":
                return True
            ctx = Ctx(self.services, rec.id, spec.name, comp.name, attempt, (rec.id, visit, ":undo"), name)
            if undo is None or undo[0] == "kick":
                self._note(rec, _K.COMPENSATION_STARTED, name, attempt, comp.name)
            try:
                if undo is not None:
                    if await self._kick_child_undo(rec, undo, attempt):
                        await self._save(rec)
                        return True
                else:
                    variables = rec.wf.__orch_validate__
                    kept = variables.snapshot(rec.wf, self._strict_vars)
                    if self.before_attempt is not None:
                        self.before_attempt(ctx)
                    if comp.is_async:
                        await comp.fn(rec.wf, ctx)
                    else:
                        comp.fn(rec.wf, ctx)
                    variables.check_step(rec.wf, kept, True, self._strict_vars)  # noqa: FBT003
            except Exception as exc:  # noqa: BLE001 - user code
                error = f"{type(exc).__name__}: {exc}"
                self._note(rec, _K.COMPENSATION_FAILED, name, attempt, error)
                if comp.retry.retries(exc, attempt):
                    delay = comp.retry.delay(attempt)
                    rec.comp_attempt = attempt + 1
                    self._note(rec, _K.RETRY_SCHEDULED, name, attempt + 1, f"in {delay:g}s")
                    self._park(rec, delay)
                    await self._save(rec)
                    return True
                rec.comp_attempt = 1
                rec.error = f"compensation {comp.name} of {name} failed: {error} (after: {rec.cause})"
                _trigger(rec, "compensation_error")
                self._set_status(rec, InstanceStatus.COMPENSATION_FAILED)
                await self._save(rec)
                return False
            rec.saga.pop()
            rec.comp_attempt = 1
            self._note(rec, _K.COMPENSATION_COMPLETED, name, attempt, comp.name)
            await self._save(rec)
        _trigger(rec, "compensated")
        rec.error = rec.cause
        self._set_status(rec, _STATUS_OF_STATE[rec.state])
        await self._save(rec)
        return False


class _Command:
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


class _InstanceBusy(StoreError):
    """Another live worker holds the instance's lease: this engine may not change it now."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        super().__init__(f"instance {instance_id}: another worker holds it now")


def _ended_now(rec: InstanceRecord) -> bool:
    """Whether the record's pending history holds its change to a terminal status."""
    return any(e.kind is _K.STATUS_CHANGED and InstanceStatus(e.detail).is_terminal for e in rec.history)


def _pid_alive(pid_text: str) -> bool:
    """Whether a process with this pid runs on this host (a zombie counts as dead)."""
    try:
        pid = int(pid_text)
    except ValueError:
        return True  # not ours to judge
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:  # noqa: PTH123 - a /proc file
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


_ID_MAX = 200


def _check_instance_id(workflow: object, instance_id: object) -> None:
    """A caller-given instance id: a printable text without "/" (child ids use it), at most 200 characters."""
    name = type(workflow).__orch_spec__.name if isinstance(workflow, Workflow) else type(workflow).__name__
    if not isinstance(instance_id, str):
        msg = f"instance_id must be a str, got {instance_id!r} ({type(instance_id).__name__})"
        raise WorkflowInputError(name, "instance_id", msg)
    if not instance_id or len(instance_id) > _ID_MAX or not instance_id.isprintable() or "/" in instance_id:
        msg = (
            f"instance_id must be 1 to {_ID_MAX} printable characters without '/' "
            f"(reserved for child instances); got {instance_id!r}"
        )
        raise WorkflowInputError(name, "instance_id", msg)


def _backoff(failures: int) -> float:
    """How long to wait after *failures* failed tries in a row: doubling from _RELOAD_DELAY, capped."""
    return min(_RELOAD_DELAY * 2.0 ** (failures - 1), _RELOAD_DELAY_MAX)


def _cancel_reason(rec: InstanceRecord) -> str | None:
    """Why the instance is being cancelled (None: it is not)."""
    return rec.cancel[0] if rec.cancel is not None else None


def _retrieved(fut: asyncio.Future[Any]) -> None:
    """Mark the outcome of a fire-and-forget command as seen."""
    if not fut.cancelled():
        fut.exception()


def _migration_for(rec: InstanceRecord, to: type[Workflow]) -> MigrationSpec:
    """The ``@migration`` of *to* that moves *rec*, or MigrationError when it cannot be moved."""
    new_spec = spec_of(to)
    if isinstance(rec.state, list):
        raise MigrationError(rec.id, "is inside a fork's branches; migrate it before the fork or after the join")
    if rec.status.is_terminal or not rec.spec.has_step(rec.state):
        raise MigrationError(rec.id, f"is {rec.status.value}: a finished instance is not migrated")
    found = [m for m in new_spec.migrations if m.source_version == rec.spec.version and new_spec.name == rec.spec.name]
    if not found:
        msg = f"{to.__qualname__} declares no @migration from {rec.spec.name} version {rec.spec.version}"
        raise MigrationError(rec.id, msg)
    return found[0]


def _trigger(rec: InstanceRecord, event: str, *args: object) -> bool:
    """Fire *event* on the record's shared machine for its workflow object."""
    machine = rec.machine
    if type(machine) is ForkMachine:
        return bool(machine.trigger_event(rec.wf, event, *args))
    return bool(machine.events[event].trigger(rec.wf, *args))


def _event(rec: InstanceRecord, kind: str, step: str) -> str:
    """The name of a step's event: shared in a flat machine, the step's own with forks."""
    return f"{kind}@{step}" if rec.spec.has_forks else kind


def _undo_marker(parent: InstanceRecord, attempt: int) -> str:
    """What a child undone by its parent records as its cause (the attempt tells a retry from a failure)."""
    return f"compensated by its parent {parent.id}" + (f" (attempt {attempt})" if attempt > 1 else "")


def _child_id(rec: InstanceRecord, tok: InstanceRecord | Branch) -> str:
    """The id of the child a subflow step starts: stable across re-runs of one visit and attempt."""
    return f"{rec.id}/{tok.visit}" + (f".{tok.attempt}" if tok.attempt > 1 else "")


def _in_fork(rec: InstanceRecord) -> bool:
    state: object = rec.state
    return isinstance(state, list)


def _sync_wake(rec: InstanceRecord) -> None:
    """Inside a fork, the record's timer is its branches' earliest not yet woken."""
    rec.wake_at = min((b.wake_at for b in rec.branches.values() if b.wake_at is not None and not b.woken), default=None)


def _poke(rec: InstanceRecord) -> None:
    """Wake the driver of a fork: a branch may run now."""
    poke = rec.poke
    if poke is not None and not poke.done():
        poke.set_result(None)


async def _with_timeout(coro: Coroutine[Any, Any, Any], seconds: float) -> None:
    """Await *coro*, failing with TimeoutError after *seconds*; free when it never suspends."""
    # Arming a timer costs more than a whole step that only calls in-process
    # services, so run the coroutine's first slice directly and arm the timeout
    # only if it actually waits for something.
    try:
        first = coro.send(None)
    except StopIteration:
        return
    except BaseException:
        coro.close()
        raise
    async with asyncio.timeout(seconds):
        await _Resumed(coro, first)


class _Resumed:
    """An awaitable that continues a coroutine already started with ``send(None)``."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: object) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self.coro
        pending = self.first
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - forwarded into the step, as `await` would
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


def _groups(groups: Iterable[str]) -> tuple[str, ...]:
    # One group given as a plain string is that group, not its letters; bytes are no groups.
    return group_names(groups)


async def _wait_event(event: asyncio.Event, seconds: float) -> None:
    # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation
    # that arrives as the event fires, and the engine would never stop.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


def _check_form(task: Task, form: object) -> None:
    expected = task.form_type
    if expected is None:
        if form is not None:
            msg = f"takes no form, got {type(form).__name__}"
            raise TaskFormError(task.id, msg)
        return
    if not isinstance(form, expected):
        msg = f"the form must be an instance of {expected.__name__}, got {form!r} ({type(form).__name__})"
        raise TaskFormError(task.id, msg)
    bad = value_mismatch(form, expected)
    if bad is not None:
        where = expected.__name__ + bad.path
        raise TaskFormError(task.id, f"{where}: {bad.describe()}", field_path=where)


def _type_label(tp: type | None) -> str:
    return tp.__name__ if tp is not None else "?"


def _type_name(tp: type) -> str:
    return f"{tp.__module__}.{tp.__qualname__}"


def machine_of(workflow: type[Workflow]) -> Any:
    """
    The shared ``transitions`` machine compiled for *workflow*.

    .. versionadded:: 0.1.0
    """
    spec_of(workflow)
    return workflow.__orch_machine__
