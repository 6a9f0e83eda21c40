"""
The engine: runs instances step by step, through each class's shared machine.

For each instance the engine runs the current step's method (sync, or awaited
when async), records the outcome, fires the machine's event (``next``,
``error``, ``fail``...) so that ``transitions`` picks the edge, and saves the
record. Waiting (a human task, a retry's backoff) ends the instance's turn: a
worker picks it up again when the task is completed or the timer fires.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import os
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

import attrs
import structlog

from ._clock import Clock, SystemClock, VirtualClock
from ._ctx import Ctx
from ._errors import (
    InstanceFinished,
    InstanceNotFound,
    NoEdgeEnabled,
    TaskAlreadyCompleted,
    TaskFormError,
    TaskNotAuthorized,
    TaskNotFound,
    WorkflowFailed,
    WorkflowInputError,
)
from ._history import EventKind, HistoryEvent
from ._instance import NO_FORM, InstanceRecord
from ._machine import STATE_ATTRIBUTE
from ._progress import Progress, progress_of
from ._services import ServiceRegistry
from ._spec import (
    CANCELLED,
    CANCELLING,
    COMPENSATING,
    COMPENSATION_FAILED,
    COMPLETED,
    FAILED,
    StepKind,
    StepSpec,
    WorkflowSpec,
)
from ._status import InstanceStatus
from ._store import MemoryStore, Store
from ._tasks import Task, TaskStatus
from ._validate import input_validator
from ._workflow import Workflow, spec_of

if TYPE_CHECKING:
    from transitions import Machine

W = TypeVar("W", bound=Workflow)

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


@attrs.frozen
class InstanceInfo:
    """
    A snapshot of one instance, as listed by ``Engine.instances``.

    .. versionadded:: 0.1.0
    """

    id: str
    workflow: str
    version: str
    status: InstanceStatus
    step: str | None
    created_at: float
    error: str | None
    open_task: str | None


@attrs.frozen
class EngineStatistics:
    """
    What an engine is doing right now (``Engine.statistics()``).

    Attributes:
        instances: Instances in the store.
        active: Instances queued or being run by a worker.
        queued: Instances waiting for a free worker.
        timers: Pending retry timers.
        next_timer_in: Seconds until the next timer is due (``None``: no timer).
        open_tasks: Open human tasks.

    .. versionadded:: 0.1.0
    """

    instances: int
    active: int
    queued: int
    timers: int
    next_timer_in: float | None
    open_tasks: int


class Handle(Generic[W]):
    """
    A reference to one started instance.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_engine", "instance_id")

    def __init__(self, engine: Engine, instance_id: str) -> None:
        self._engine = engine
        self.instance_id = instance_id

    def __repr__(self) -> str:
        return f"<Handle {self.instance_id} {self.status.value}>"

    @property
    def status(self) -> InstanceStatus:
        """The instance's status now."""
        return self._engine.info(self.instance_id).status

    @property
    def workflow(self) -> W:
        """The instance's workflow object: its variables as they are now."""
        wf: W = self._engine.workflow(self.instance_id)
        return wf

    @property
    def step(self) -> str | None:
        """The current step, or ``None`` once the instance left the steps."""
        return self._engine.info(self.instance_id).step

    def history(self) -> list[HistoryEvent]:
        """See :meth:`Engine.history`."""
        return self._engine.history(self.instance_id)

    def progress(self) -> Progress:
        """See :meth:`Engine.progress`."""
        return self._engine.progress(self.instance_id)

    async def wait_idle(self) -> InstanceStatus:
        """Wait until the instance is waiting on a task or terminal; return its status."""
        return await self._engine.wait_instance(self.instance_id, terminal=False)

    async def result(self) -> W:
        """
        Wait until the instance is terminal.

        Returns:
            The workflow object (its final variables) when it completed.

        Raises:
            WorkflowFailed: It ended failed, cancelled or compensation_failed.
        """
        status = await self._engine.wait_instance(self.instance_id, terminal=True)
        if status is not InstanceStatus.COMPLETED:
            info = self._engine.info(self.instance_id)
            raise WorkflowFailed(self.instance_id, status, info.error)
        return self.workflow


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

    Use it inside a running event loop; ``async with Engine(...) as engine``
    stops its workers on exit (``aclose``).

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
    ) -> None:
        self.store: Store = store if store is not None else MemoryStore()
        self.services = services if isinstance(services, ServiceRegistry) else ServiceRegistry(services)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.concurrency = concurrency
        self.before_attempt = before_attempt
        self._ids = itertools.count(1)
        self._prefix = os.urandom(4).hex()
        self._ready: deque[InstanceRecord] = deque()
        self._ready_event: asyncio.Event | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._timer_task: asyncio.Task[None] | None = None
        self._timer_wake: asyncio.Event | None = None
        self._timers: list[tuple[float, int, str, int]] = []
        self._timer_seq = itertools.count()
        self._active = 0
        self._waiters: dict[str, list[tuple[bool, asyncio.Future[InstanceStatus]]]] = {}
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._subscribers: list[Callable[[str, HistoryEvent], None]] = []
        self._validators: dict[WorkflowSpec, Callable[[object], None]] = {}
        self._virtual = isinstance(self.clock, VirtualClock)
        if isinstance(self.clock, VirtualClock):
            self.clock.subscribe(self._wake_timers)

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        """Start the workers."""
        self._ensure_running()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop the workers (instances stay in the store as they are)."""
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the workers and the timer task; in-flight steps are cancelled."""
        tasks = [*self._workers, *([self._timer_task] if self._timer_task else [])]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        self._timer_task = None
        self._ready_event = None
        self._timer_wake = None

    def _ensure_running(self) -> None:
        if self._ready_event is not None:
            return
        self._ready_event = asyncio.Event()
        self._timer_wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._worker()) for _ in range(self.concurrency)]
        self._timer_task = loop.create_task(self._timer_loop())

    # ----------------------------------------------------------------- public API

    async def start(self, workflow: W) -> Handle[W]:
        """
        Start a new instance from *workflow* (a new, never started object).

        Returns:
            A :class:`Handle` to follow it.

        Raises:
            WorkflowInputError: A variable does not match its declared type, or the
                object was started before.
            TypeError: *workflow* is not an instance of a concrete Workflow class.
        """
        rec = self._create(workflow)
        await self.store.add(rec)
        self._enqueue(rec)
        return Handle(self, rec.id)

    def start_nowait(self, workflow: W) -> Handle[W]:
        """
        Like :meth:`start`, for stores that need no I/O (the :class:`MemoryStore`).

        Raises:
            TypeError: The store is not a MemoryStore.
        """
        store = self.store
        if not isinstance(store, MemoryStore):
            msg = f"start_nowait() needs a MemoryStore; use `await start()` with {type(store).__name__}"
            raise TypeError(msg)
        rec = self._create(workflow)
        store.add_nowait(rec)
        self._enqueue(rec)
        return Handle(self, rec.id)

    def handle(self, instance_id: str) -> Handle[Any]:
        """
        A handle to an existing instance.

        Raises:
            InstanceNotFound: No instance has this id.
        """
        self._record(instance_id)
        return Handle(self, instance_id)

    def instances(
        self, status: InstanceStatus | None = None, workflow: type[Workflow] | None = None
    ) -> list[InstanceInfo]:
        """Snapshots of the instances, optionally only those with *status* / of class *workflow*."""
        name = spec_of(workflow).qualname if workflow is not None else None
        return [
            self._info(r)
            for r in self.store.records()
            if (status is None or r.status is status) and (name is None or r.spec.qualname == name)
        ]

    def info(self, instance_id: str) -> InstanceInfo:
        """
        A snapshot of one instance.

        Raises:
            InstanceNotFound: No instance has this id.
        """
        return self._info(self._record(instance_id))

    def workflow(self, instance_id: str) -> Any:
        """
        The instance's workflow object (its variables, live).

        Raises:
            InstanceNotFound: No instance has this id.
        """
        return self._record(instance_id).wf

    async def wait_instance(self, instance_id: str, *, terminal: bool = True) -> InstanceStatus:
        """
        Wait until the instance is terminal (or, with ``terminal=False``, waiting on a task).

        Returns:
            Its status then.

        Raises:
            InstanceNotFound: No instance has this id.
        """
        return await self._wait_for(instance_id, terminal_only=terminal)

    def history(self, instance_id: str) -> list[HistoryEvent]:
        """
        Everything that happened to the instance, oldest first.

        Raises:
            InstanceNotFound: No instance has this id.
        """
        return list(self._record(instance_id).history)

    def progress(self, instance_id: str) -> Progress:
        """
        How far the instance is: steps done, the current step, and the fewest steps left.

        Raises:
            InstanceNotFound: No instance has this id.
        """
        return progress_of(self._record(instance_id))

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
        group_set = frozenset(groups)
        return [
            t
            for t in self.store.open_tasks()
            if (user is None or t.may_complete(user, group_set))
            and (instance_id is None or t.instance_id == instance_id)
        ]

    async def complete_task(
        self, task_id: str, *, user: str, groups: Iterable[str] = (), form: object = None
    ) -> Task:
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
            TaskFormError: *form* is not an instance of the declared type.
        """
        task = self.store.task(task_id)
        if task is None:
            raise TaskNotFound(task_id, "no such task")
        if task.status is not TaskStatus.OPEN:
            by = f" by {task.completed_by!r}" if task.completed_by else ""
            raise TaskAlreadyCompleted(task_id, f"is already {task.status.value}{by}; a task completes once")
        group_list = tuple(groups)
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
        self._check_form(task, form)
        rec = self._record(task.instance_id)
        done = attrs.evolve(
            task,
            status=TaskStatus.COMPLETED,
            completed_by=user,
            completed_at=self.clock.now(),
            form=form,
        )
        await self.store.save_task(done)
        rec.form = form
        rec.task_id = None
        rec.status = InstanceStatus.RUNNING
        self._note(rec, _K.TASK_COMPLETED, task.step, 0, user)
        await self.store.save(rec)
        self._enqueue(rec)
        return done

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
        rec = self._record(instance_id)
        if rec.status.is_terminal:
            raise InstanceFinished(instance_id, rec.status, "cancel")
        if rec.cancel is None and rec.spec.has_step(rec.state):
            rec.cancel = (reason, compensate)
            self._note(rec, _K.CANCEL_REQUESTED, None, 0, reason or None)
            worker = rec.worker
            if rec.in_step and worker is not _QUEUED and worker is not None:
                worker.cancel()
            elif rec.worker is None:
                rec.timer_token += 1
                self._enqueue(rec)
        return await self._wait_for(instance_id, terminal_only=True)

    async def wait_idle(self) -> None:
        """Wait until no instance is running and no timer is pending (all wait or ended)."""
        self._ensure_running()
        while not self._is_idle():
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(fut)
            await fut

    def subscribe(self, callback: Callable[[str, HistoryEvent], None]) -> Callable[[], None]:
        """
        Call ``callback(instance_id, event)`` for every history entry from now on.

        Returns:
            A function that unsubscribes.
        """
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def statistics(self) -> EngineStatistics:
        """What the engine is doing right now."""
        records = self.store.records()
        nxt = self._timers[0][0] - self.clock.now() if self._timers else None
        return EngineStatistics(
            instances=sum(1 for _ in records),
            active=self._active,
            queued=len(self._ready),
            timers=len(self._timers),
            next_timer_in=nxt,
            open_tasks=sum(1 for _ in self.store.open_tasks()),
        )

    # ----------------------------------------------------------------- internals

    def _record(self, instance_id: str) -> InstanceRecord:
        rec = self.store.get(instance_id)
        if rec is None:
            raise InstanceNotFound(instance_id)
        return rec

    def _info(self, r: InstanceRecord) -> InstanceInfo:
        state = r.state
        return InstanceInfo(
            id=r.id,
            workflow=r.spec.name,
            version=r.spec.version,
            status=r.status,
            step=state if r.spec.has_step(state) else None,
            created_at=r.created_at,
            error=r.error,
            open_task=r.task_id,
        )

    def _create(self, workflow: object) -> InstanceRecord:
        if not isinstance(workflow, Workflow) or type(workflow).__orch_abstract__:
            msg = f"start() needs an instance of a concrete Workflow subclass, got {workflow!r}"
            raise TypeError(msg)
        cls = type(workflow)
        spec = cls.__orch_spec__
        if getattr(workflow, STATE_ATTRIBUTE, None) is not None:
            msg = "this object was started already; construct a new one for a new instance"
            raise WorkflowInputError(spec.name, "<instance>", msg)
        validate = self._validators.get(spec)
        if validate is None:
            validate = self._validators[spec] = input_validator(spec)
        validate(workflow)
        setattr(workflow, STATE_ATTRIBUTE, spec.initial)
        now = self.clock.now()
        rec = InstanceRecord(f"{self._prefix}-{next(self._ids):x}", workflow, spec, cls.__orch_machine__, now)
        rec.history.append(
            HistoryEvent(now, _K.INSTANCE_STARTED, None, 0, f"{spec.name} version {spec.version}")
        )
        if self._subscribers:
            self._publish(rec.id, rec.history[-1])
        return rec

    def _check_form(self, task: Task, form: object) -> None:
        expected = task.form_type
        if expected is None:
            if form is not None:
                msg = f"takes no form, got {type(form).__name__}"
                raise TaskFormError(task.id, msg)
            return
        if not isinstance(form, expected):
            msg = f"the form must be a {expected.__name__}, got {form!r} ({type(form).__name__})"
            raise TaskFormError(task.id, msg)

    def _note(
        self, rec: InstanceRecord, kind: EventKind, step: str | None, attempt: int, detail: str | None
    ) -> None:
        event = HistoryEvent(self.clock.now(), kind, step, attempt, detail)
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

    def _enqueue(self, rec: InstanceRecord) -> None:
        self._ensure_running()
        self._active += 1
        rec.worker = _QUEUED
        self._ready.append(rec)
        event = self._ready_event
        if event is not None and not event.is_set():
            event.set()

    async def _worker(self) -> None:
        ready = self._ready
        current = asyncio.current_task()
        assert current is not None  # noqa: S101 - always inside a task
        while True:
            event = self._ready_event
            assert event is not None  # noqa: S101 - set before workers start
            if not ready:
                event.clear()
                await event.wait()
                continue
            rec = ready.popleft()
            rec.worker = current
            try:
                await self._drive(rec)
            except asyncio.CancelledError:
                if rec.cancel is None or current.cancelling() > 1:
                    raise
                # Our own cancel() interrupted a step outside its body; drive again.
                current.uncancel()
                self._ready.appendleft(rec)
                self._active += 1
                rec.worker = _QUEUED
            except Exception:
                _log.exception("engine_bug", instance_id=rec.id, state=rec.state)
                raise
            finally:
                if rec.worker is current:
                    rec.worker = None
                self._turn_ended(rec)

    def _turn_ended(self, rec: InstanceRecord) -> None:
        self._active -= 1
        waiters = self._waiters.get(rec.id)
        if waiters:
            status = rec.status
            idle = status is InstanceStatus.WAITING or status.is_terminal
            keep: list[tuple[bool, asyncio.Future[InstanceStatus]]] = []
            for terminal_only, fut in waiters:
                if not fut.done() and (status.is_terminal or (idle and not terminal_only)):
                    fut.set_result(status)
                elif not fut.done():
                    keep.append((terminal_only, fut))
            if keep:
                self._waiters[rec.id] = keep
            else:
                del self._waiters[rec.id]
        if self._active == 0:
            if self._virtual and self._timer_wake is not None:
                self._timer_wake.set()
            if self._idle_waiters and self._is_idle():
                self._turn_ended_idle()

    def _is_idle(self) -> bool:
        return self._active == 0 and not self._timers

    async def _wait_for(self, instance_id: str, *, terminal_only: bool) -> InstanceStatus:
        rec = self._record(instance_id)
        running = rec.worker is not None
        if rec.status.is_terminal or (
            not terminal_only and rec.status is InstanceStatus.WAITING and not running
        ):
            return rec.status
        fut: asyncio.Future[InstanceStatus] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(instance_id, []).append((terminal_only, fut))
        return await fut

    # ----------------------------------------------------------------- timers

    def _wake_timers(self) -> None:
        if self._timer_wake is not None:
            self._timer_wake.set()

    def _schedule(self, rec: InstanceRecord, delay: float) -> None:
        rec.timer_token += 1
        entry = (self.clock.now() + delay, next(self._timer_seq), rec.id, rec.timer_token)
        heapq.heappush(self._timers, entry)
        self._wake_timers()

    async def _timer_loop(self) -> None:
        wake = self._timer_wake
        assert wake is not None  # noqa: S101 - created with the loop
        clock = self.clock
        while True:
            timers = self._timers
            if not timers:
                if self._idle_waiters and self._active == 0:
                    self._turn_ended_idle()
                wake.clear()
                await wake.wait()
                continue
            due, _, instance_id, token = timers[0]
            if due <= clock.now():
                heapq.heappop(timers)
                rec = self.store.get(instance_id)
                if rec is not None and rec.timer_token == token and rec.worker is None:
                    self._enqueue(rec)
                continue
            if isinstance(clock, VirtualClock):
                if clock.autojump and self._active == 0:
                    clock.jump_to(due)
                    continue
                wake.clear()
                await wake.wait()
            else:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), due - clock.now())

    def _turn_ended_idle(self) -> None:
        for fut in self._idle_waiters:
            if not fut.done():
                fut.set_result(None)
        self._idle_waiters.clear()

    # ----------------------------------------------------------------- running

    async def _drive(self, rec: InstanceRecord) -> None:
        spec = rec.spec
        while True:
            state = rec.state
            if spec.has_step(state):
                if rec.cancel is not None:
                    await self._apply_cancel(rec)
                    continue
                step = spec.step(state)
                if step.kind is StepKind.HUMAN_TASK and rec.form is NO_FORM:
                    if rec.task_id is None:
                        await self._open_task(rec, step)
                    return
                if await self._run_step(rec, step):
                    return
            elif state in (COMPENSATING, CANCELLING):
                if await self._compensate(rec):
                    return
            else:
                self._finish(rec)
                return

    async def _run_step(self, rec: InstanceRecord, step: StepSpec) -> bool:
        """Run one attempt of *step*; True when the instance parks (a retry timer)."""
        attempt = rec.attempt
        wf = rec.wf
        name = step.name
        ctx = Ctx(self.services, rec.id, rec.spec.name, name, attempt, f"{rec.id}:{rec.visit}")
        self._note(rec, _K.STEP_STARTED, name, attempt, None)
        args = (
            (wf, ctx)
            if rec.form is NO_FORM or step.task is None or step.task.form is None
            else (wf, ctx, rec.form)
        )
        rec.in_step = True
        try:
            if self.before_attempt is not None:
                self.before_attempt(ctx)
            if step.is_async:
                if step.timeout is None:
                    await step.fn(*args)
                else:
                    async with asyncio.timeout(step.timeout):
                        await step.fn(*args)
            else:
                step.fn(*args)
        except asyncio.CancelledError:
            rec.in_step = False
            current = asyncio.current_task()
            if rec.cancel is None or current is None or current.cancelling() > 1:
                raise
            current.uncancel()
            self._note(rec, _K.STEP_CANCELLED, name, attempt, rec.cancel[0] or None)
            return False
        except Exception as exc:  # noqa: BLE001 - any failure of user code is the step's failure
            rec.in_step = False
            return await self._step_failed(rec, step, attempt, exc)
        rec.in_step = False
        self._note(rec, _K.STEP_COMPLETED, name, attempt, None)
        if step.compensation is not None:
            rec.saga.append((name, rec.visit))
        rec.form = NO_FORM
        rec.attempt = 1
        try:
            moved = rec.machine.events["next"].trigger(wf, wf)
        except Exception as exc:  # noqa: BLE001 - a guard raised
            self._fail(rec, f"{name}: a guard raised {type(exc).__name__}: {exc}")
        else:
            if moved:
                self._moved(rec, name)
            else:
                self._fail(rec, str(NoEdgeEnabled(rec.spec.name, name)))
        await self.store.save(rec)
        return False

    def _moved(self, rec: InstanceRecord, source: str) -> None:
        rec.visit += 1
        self._note(rec, _K.TRANSITION, source, 0, rec.state)

    async def _step_failed(self, rec: InstanceRecord, step: StepSpec, attempt: int, exc: Exception) -> bool:
        error = f"{type(exc).__name__}: {exc}"
        self._note(rec, _K.STEP_FAILED, step.name, attempt, error)
        if step.retry.retries(exc, attempt):
            delay = step.retry.delay(attempt)
            rec.attempt = attempt + 1
            self._note(rec, _K.RETRY_SCHEDULED, step.name, attempt + 1, f"in {delay:g}s")
            self._schedule(rec, delay)
            await self.store.save(rec)
            return True
        rec.attempt = 1
        rec.form = NO_FORM
        if any(e.is_error for e in rec.spec.outgoing(step.name)) and rec.machine.events["error"].trigger(
            rec.wf, rec.wf, exc
        ):
            self._moved(rec, step.name)
        else:
            self._fail(rec, f"{step.name}: {error}")
        await self.store.save(rec)
        return False

    def _fail(self, rec: InstanceRecord, error: str) -> None:
        rec.error = error
        rec.machine.events["fail"].trigger(rec.wf)
        self._set_status(rec, InstanceStatus.COMPENSATING)
        _log.warning("instance_failed", instance_id=rec.id, workflow=rec.spec.name, error=error)

    async def _apply_cancel(self, rec: InstanceRecord) -> None:
        assert rec.cancel is not None  # noqa: S101 - checked by the caller
        reason, compensate = rec.cancel
        if rec.task_id is not None:
            task = self.store.task(rec.task_id)
            if task is not None and task.status is TaskStatus.OPEN:
                await self.store.save_task(
                    attrs.evolve(task, status=TaskStatus.CANCELLED, completed_at=self.clock.now())
                )
                self._note(rec, _K.TASK_CANCELLED, task.step, 0, task.id)
            rec.task_id = None
        rec.timer_token += 1
        rec.error = f"cancelled: {reason}" if reason else "cancelled"
        rec.machine.events["cancel" if compensate else "abandon"].trigger(rec.wf)
        self._set_status(rec, InstanceStatus.COMPENSATING if compensate else InstanceStatus.CANCELLED)
        await self.store.save(rec)

    async def _compensate(self, rec: InstanceRecord) -> bool:
        """Run the compensations newest first; True when parked on a retry timer."""
        spec = rec.spec
        while rec.saga:
            name, visit = rec.saga[-1]
            comp = spec.step(name).compensation
            assert comp is not None  # noqa: S101 - only steps with one enter the saga
            attempt = rec.comp_attempt
            ctx = Ctx(self.services, rec.id, spec.name, comp.name, attempt, f"{rec.id}:{visit}:undo", name)
            self._note(rec, _K.COMPENSATION_STARTED, name, attempt, comp.name)
            try:
                if self.before_attempt is not None:
                    self.before_attempt(ctx)
                if comp.is_async:
                    await comp.fn(rec.wf, ctx)
                else:
                    comp.fn(rec.wf, ctx)
            except Exception as exc:  # noqa: BLE001 - user code
                error = f"{type(exc).__name__}: {exc}"
                self._note(rec, _K.COMPENSATION_FAILED, name, attempt, error)
                if comp.retry.retries(exc, attempt):
                    delay = comp.retry.delay(attempt)
                    rec.comp_attempt = attempt + 1
                    self._note(rec, _K.RETRY_SCHEDULED, name, attempt + 1, f"in {delay:g}s")
                    self._schedule(rec, delay)
                    await self.store.save(rec)
                    return True
                rec.comp_attempt = 1
                rec.error = f"compensation {comp.name} of {name} failed: {error} (after: {rec.error})"
                rec.machine.events["compensation_error"].trigger(rec.wf)
                self._set_status(rec, InstanceStatus.COMPENSATION_FAILED)
                await self.store.save(rec)
                return False
            rec.saga.pop()
            rec.comp_attempt = 1
            self._note(rec, _K.COMPENSATION_COMPLETED, name, attempt, comp.name)
            await self.store.save(rec)
        rec.machine.events["compensated"].trigger(rec.wf)
        self._set_status(rec, _STATUS_OF_STATE[rec.state])
        await self.store.save(rec)
        return False

    def _finish(self, rec: InstanceRecord) -> None:
        status = _STATUS_OF_STATE[rec.state]
        self._set_status(rec, status)

    async def _open_task(self, rec: InstanceRecord, step: StepSpec) -> None:
        spec_task = step.task
        assert spec_task is not None  # noqa: S101 - human tasks always have one
        now = self.clock.now()
        task = Task(
            id=f"{rec.id}.{rec.visit}",
            instance_id=rec.id,
            workflow=rec.spec.name,
            step=step.name,
            assignee=spec_task.assignee,
            candidate_groups=spec_task.candidate_groups,
            form_type=spec_task.form,
            created_at=now,
            due_at=now + spec_task.due if spec_task.due is not None else None,
        )
        await self.store.save_task(task)
        rec.task_id = task.id
        rec.status = InstanceStatus.WAITING
        self._note(rec, _K.TASK_CREATED, step.name, 0, task.id)
        await self.store.save(rec)


def machine_of(workflow: type[Workflow]) -> Machine:
    """
    The shared ``transitions`` machine compiled for *workflow*.

    .. versionadded:: 0.1.0
    """
    spec_of(workflow)
    return workflow.__orch_machine__
