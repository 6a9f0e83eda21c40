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

The engine is one class, :class:`Engine`, built of layers, each in a module of
its own; each layer's class subclasses the one below it, so an upper layer calls
a lower one directly, and the few calls upwards (a worker drives an instance; a
load pulls the commands waiting for it) are declared, unimplemented, in
``EngineCore``:

- ``_engine_core.py``: the shared state (typed attributes), constants, helpers;
- ``_records.py``: records in memory and in the store: load, save, group commit,
  leases held (claim, give back, lost), quarantine, history notes;
- ``_runtime.py``: the worker runtime: queue, workers, timers, the fleet loop
  (claims of others' work) and the heartbeat thread (``_heartbeat.py``);
- ``_commands.py``: the driver's inbox: callers' changes become commands (in
  memory, or durable across processes) applied in the driver's turn;
- ``_driver.py``: one turn of one instance: steps, waits, tasks, the saga;
- ``_driver_children.py``: child workflows (subflow steps);
- ``_driver_forks.py``: forks: branches, gates, joins;
- ``_client_api.py``: the public API callers use (info, complete_task,
  cancel, wait_*...);
- ``_engine.py``: :class:`Engine` itself: construction, lifecycle and starting
  instances (``start`` is generic in the workflow class, and its type errors name
  ``Engine``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from ._clock import Clock, SystemClock, VirtualClock
from ._ctx import Ctx
from ._engine_core import logger
from ._errors import (
    StoreError,
)
from ._handle import Handle, RecoveryReport
from ._messages import EngineOutbox
from ._observe import make_observer
from ._registry import WorkflowRegistry, default_registry
from ._schedule import Schedule
from ._schedules import Schedules
from ._services import ServiceRegistry
from ._status import InstanceStatus
from ._store import MemoryStore, Store
from ._workflow import Workflow, spec_of

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from .metrics import Metrics

W = TypeVar("W", bound=Workflow)


def machine_of(workflow: type[Workflow]) -> Any:
    """
    The shared ``transitions`` machine compiled for *workflow*.

    .. versionadded:: 0.1.0
    """
    spec_of(workflow)
    return workflow.__orch_machine__


class Engine(Schedules):
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
        after_attempt: Called with the :class:`Ctx` after the body of an attempt of a
            step or a compensation ran, before its outcome is committed; an
            exception it raises counts as that attempt's failure. The testing
            toolkit injects faults "after the effect" through it.
        workflows: Workflow classes this engine runs, every version whose instances
            may be in the store (default: every class defined in the process).
        lease: With a store shared by several processes (``SqliteStore``,
            ``PostgresStore``): how long a claim on an instance lasts without a
            heartbeat (seconds, default 10; renewed every third of it by a thread
            on a connection of its own, so that CPU-bound steps keep the leases).
            A worker that dies or is stopped is replaced after at most this long;
            one whose event loop makes no progress for a whole lease (hung) stops
            renewing and is replaced within two. A shorter lease fails over
            sooner and costs more heartbeat writes.
        poll: With such a store: how often idle workers look for work others left
            (instances in flight of a dead worker, due timers, commands from other
            processes), in seconds (default 0.05; a store that pushes notifications,
            such as PostgreSQL's LISTEN/NOTIFY, is looked at once a second besides).
        metrics: A :class:`~statemachine_orch.metrics.Metrics` to count this engine's
            steps, retries, compensations, instances, timers, commits and leases in.
        tracing: Open an OpenTelemetry span per instance turn, step attempt and
            compensation, current inside step bodies: ``True`` for the global tracer
            provider's tracer (spans are recorded once the application sets an SDK's
            provider), or a tracer provider to use. Needs opentelemetry-api (the
            ``otel`` extra).
        logs: Bind ``instance_id``, ``workflow``, ``step`` and ``attempt`` as structlog
            contextvars around every step body and compensation, and log step
            starts (debug), completions (info), retries (warning), compensations and
            status changes through structlog, as configured by the application
            (configure it before making the engine).
        schedules: :class:`Schedule` objects: this engine's workers start each one's
            due times (every worker of a fleet declares the same ones; each due time
            starts once across them and across restarts).

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
        after_attempt: Callable[[Ctx], None] | None = None,
        workflows: Iterable[type[Workflow]] = (),
        lease: float = 10.0,
        poll: float = 0.05,
        metrics: Metrics | None = None,
        tracing: bool | TracerProvider = False,
        logs: bool = False,
        schedules: Iterable[Schedule[Any]] = (),
    ) -> None:
        if not lease > 0 or not poll > 0:
            msg = f"Engine(lease={lease!r}, poll={poll!r}): both must be positive numbers of seconds"
            raise ValueError(msg)
        self.store = store if store is not None else MemoryStore()
        self.services = services if isinstance(services, ServiceRegistry) else ServiceRegistry(services)
        self.clock = clock if clock is not None else SystemClock()
        self.concurrency = concurrency
        self.before_attempt = before_attempt
        self.after_attempt = after_attempt
        self.registry = WorkflowRegistry(workflows, parent=default_registry)
        self.store.attach(self.registry)
        self._group = self.store.group_commit
        # A store that writes JSON needs every changed variable checked strictly; the
        # memory store keeps the objects themselves (VariablesValidator.check_step).
        self._strict_vars = not isinstance(self.store, MemoryStore)
        self._ids = itertools.count(1)
        self._prefix = os.urandom(4).hex()
        self._live = {}
        # Instances to run, in order; an id stands for a record still to load (recovery).
        self._ready = deque()
        self._ready_event = None  # set once the workers exist
        self._idle_workers = deque()
        self._queued_ids = set()
        self._workers = []
        self._timer_task = None
        self._timer_wake = None
        # Group commit: the changes waiting for the next flush, and its outcome (the failed ones, by position).
        self._batch = None
        self._batch_done = None
        self._commits = 0
        self._committed_records = 0
        self._active = 0
        self._orphans = set()
        # Why each of those was quarantined, and when: its version has no class, or
        # its record cannot be loaded (shown by info(), instances() and history()).
        self._quarantine = {}
        # Changes handed to an instance's driver by callers (task completions,
        # cancels, retries, migrations), applied in its next turn, in its commit.
        self._inbox = {}
        # Instances whose commits failed: how many times in a row, and those that
        # wait out their backoff now (no timer or caller runs them meanwhile).
        self._failures = {}
        self._held = set()
        # Waiters get the record itself, so that result() needs no reload from the store.
        self._waiters = {}
        self._idle_waiters = []
        # Those who wait until an instance and its children settle: woken after every turn.
        self._turn_waiters = []
        self._subscribers = []
        self._known = set()
        self._now = self.clock.now
        if isinstance(self.clock, VirtualClock):
            self.clock.subscribe(self._wake_timers)
        # Leases (docs/design/leases.md): with a store several processes share, this
        # engine drives an instance only while it holds its lease.
        self._leasing = bool(getattr(self.store, "leases", False))
        self._drives = concurrency > 0  # an engine without workers is a client: it only writes commands
        self.lease = lease
        self.poll = poll
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._fences = {}  # the leases this engine holds: instance id -> fence
        self._releasing = {}  # leases to give back at the next flush
        self._lease_task = None
        self._heartbeat = None
        if self._leasing and self._drives and not callable(getattr(self.store, "lease_renewer", None)):
            msg = (
                f"Engine(store={type(self.store).__name__}): a store with leases = True needs lease_renewer() "
                "(docs/design/leases.md): the heartbeat renews leases on a connection of its own"
            )
            raise TypeError(msg)
        self._stop_listening = None
        self._dead_owners = set()  # workers of this host found dead (their leases expired once)
        self._backlog = False  # the last claim round filled every free worker: there may be more
        self._claim_now = False  # the fleet loop claims at its next wake-up, poll or not
        self._obs = make_observer(metrics, tracing, logs)
        self._outbox = EngineOutbox(self._peek, self._find_info)
        self._init_schedules(schedules)

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
        if self._heartbeat is not None:
            # Before the leases are given back: a renewal after that would hold them again.
            await asyncio.to_thread(self._heartbeat.stop)
            self._heartbeat = None
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
                logger.warning("lease_release_failed", owner=self.owner, error=str(exc), leases=len(held))

    async def recover(self) -> RecoveryReport:
        """
        Resume every instance the store holds in flight; arm the store's timers.

        Instances that were running when the last engine stopped (or was killed)
        run their current step again, with the same idempotency key; timers that
        fell due meanwhile fire at once, in due order; schedules start what they
        missed meanwhile, as their ``catch_up`` says. Called by ``async with``.

        Returns:
            How many instances were resumed, and which could not be (orphans).
        """
        self._ensure_running()
        if self._sched_next is not None:
            # The schedules' first round: a new schedule starts counting now, not at a later poll.
            await self._run_schedules(self._now())
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
                logger.info("recovered", resumed=claimed, orphaned=len(lost))
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
            logger.info("recovered", resumed=resumed, orphaned=len(orphaned))
        return RecoveryReport(resumed, tuple(orphaned))

    async def run(self) -> None:
        """Recover, then run instances and timers until cancelled (a worker process)."""
        await self.recover()
        try:
            await asyncio.Event().wait()
        finally:
            await self.aclose()

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
        started_id, _ = await self._start(workflow, instance_id)
        return Handle(self, started_id)

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
        if self._obs is None:
            store.commit((rec,))
        else:
            self._commit((rec,))  # observed
        self._enqueue(rec)
        return Handle(self, rec.id)
