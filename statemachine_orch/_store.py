"""The ``Store`` protocol and the in-memory store."""

from __future__ import annotations

import heapq
import itertools
import time
from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import attrs

from ._errors import InstanceExists, LeaseLost, TaskAlreadyCompleted, TaskClaimed
from ._history import HistoryEvent, new_event
from ._instance import EMPTY as _EMPTY
from ._status import InstanceStatus
from ._tasks import Task, TaskClaim, TaskReassignment, TaskStatus

if TYPE_CHECKING:
    from ._instance import Command, InstanceInfo, InstanceRecord, Signal
    from ._registry import WorkflowRegistry


@attrs.frozen
class LateTask:
    """
    An open human task past its due time, as :meth:`Store.late_tasks` finds it.

    Attributes:
        id: The task id.
        instance_id: The instance waiting on it.
        workflow: The workflow name.
        version: The version the instance runs on (its class may be unknown to the reader).
        step: The human-task step.
        due_at: When it was due (engine clock, seconds since the epoch).
        wake_at: The instance's timer, if it has one (an escalation's, while it waits on the task).

    .. versionadded:: 0.1.0
    """

    id: str
    instance_id: str
    workflow: str
    version: str
    step: str
    due_at: float
    wake_at: float | None


@attrs.frozen
class ScheduleState:
    """
    What a store keeps about one schedule (``Engine(schedules=...)``): how far its due times were dealt with.

    Attributes:
        id: The schedule's id.
        cursor: Every due time at or before it (engine clock, seconds since the
            epoch) was started or skipped; the next one after it is pending.
        last_instance: The instance its latest start made (the overlap policy looks at it).
        started: How many instances it started.

    .. versionadded:: 0.1.0
    """

    id: str
    cursor: float
    last_instance: str | None = None
    started: int = 0


class Store(Protocol):
    """
    **Protocol:** where an engine keeps instances, their history, tasks, timers and signals.

    The engine calls :meth:`commit` at every state change with the records that
    changed: the store writes, in ONE transaction per call, each record's state,
    variables, saga, timer, its pending history entries, its changed tasks and
    the signals it consumed, then empties those pending lists. When ``commit``
    raises, nothing of the call may be half-written.

    .. versionadded:: 0.1.0
    """

    group_commit: bool
    """Whether concurrent instances' commits should be batched into one call."""

    def attach(self, registry: WorkflowRegistry) -> None:
        """Called once by the engine: the registry resolves stored workflow versions."""
        ...

    def commit(self, records: Sequence[InstanceRecord]) -> None:
        """Write the records' changes in one transaction."""
        ...

    def load(self, instance_id: str) -> InstanceRecord | None:
        """
        The committed state of an instance, or ``None`` if there is no such instance.

        Raises:
            UnknownWorkflowVersion: Its workflow version has no registered class.
        """
        ...

    def info(self, instance_id: str) -> InstanceInfo | None:
        """A snapshot of the committed instance (works without its class)."""
        ...

    def infos(self, status: InstanceStatus | None, workflow: str | None) -> list[InstanceInfo]:
        """Snapshots of the committed instances, optionally filtered."""
        ...

    def children(self, parent_id: str) -> list[InstanceInfo]:
        """Snapshots of the instances started by *parent_id*'s subflow steps, oldest first."""
        ...

    def waiting_parents(self) -> list[str]:
        """Waiting instances with a child that has ended (recovery resumes them)."""
        ...

    def history(self, instance_id: str) -> list[HistoryEvent]:
        """The committed history of an instance, oldest first."""
        ...

    def task(self, task_id: str) -> Task | None:
        """The task with this id, if any."""
        ...

    def open_tasks(
        self,
        user: str | None,
        groups: frozenset[str],
        instance_id: str | None,
        *,
        due_before: float | None = None,
        limit: int | None = None,
    ) -> list[Task]:
        """
        Open tasks, oldest first: all, or only those *user* (in *groups*) may complete, or of one instance.

        With *due_before* only those due at or before it; with *limit*, at most that many.

        .. versionchanged:: 0.1.0 *due_before* and *limit*; a claimed task is only its claimant's.
        """
        ...

    def add_signal(self, instance_id: str, type_name: str, message: object) -> int:
        """Durably keep a message for an instance (its own transaction); return its sequence number."""
        ...

    def signals(self, instance_id: str) -> list[Signal]:
        """The instance's unconsumed messages, oldest first."""
        ...

    def signalled(self) -> list[str]:
        """Ids of waiting instances that have unconsumed messages (recovery delivers them)."""
        ...

    def next_wake(self, exclude: frozenset[str] = frozenset()) -> float | None:
        """The earliest timer due time of an instance not in *exclude*, if any."""
        ...

    def due(self, now: float, limit: int) -> list[str]:
        """Ids of instances whose timer is due at *now*, earliest first."""
        ...

    def in_flight(self) -> list[str]:
        """Ids of instances that were running (no timer, no wait) when the store was last used."""
        ...

    # Monitoring reads (alerts and gauges): aggregates and late things, never whole tables of records.

    def instance_counts(self) -> list[tuple[str, InstanceStatus, int]]:
        """How many instances each workflow has in each status: ``(workflow, status, count)``, sorted by both."""
        ...

    def task_counts(self, now: float) -> list[tuple[str, str, int, int]]:
        """Open tasks by workflow and step: ``(workflow, step, open, overdue at now)``, sorted by both."""
        ...

    def quiet(self, statuses: frozenset[InstanceStatus], before: float | None) -> list[tuple[InstanceInfo, float]]:
        """
        Instances in one of *statuses* with no timer, whose last change is at or before *before* (``None``: any).

        Each comes with the time of its last committed history entry (its
        ``created_at`` when it has none), the oldest change first.
        """
        ...

    def late_timers(self, before: float, limit: int | None = None) -> list[InstanceInfo]:
        """Live instances whose timer was due at or before *before*, earliest first (at most *limit*)."""
        ...

    def late_tasks(self, before: float) -> list[LateTask]:
        """Open tasks whose due time is at or before *before*, earliest first."""
        ...

    # Leases and commands: docs/design/leases.md

    leases: bool
    """Whether several processes may share this store (then workers lease instances)."""

    def claim(self, instance_id: str, owner: str, now: float, until: float) -> int | None:
        """Take the lease of an instance (terminal ones too) if free, expired or *owner*'s; return the new fence."""
        ...

    def claim_runnable(
        self, owner: str, now: float, until: float, limit: int, exclude: frozenset[str]
    ) -> list[tuple[str, int]]:
        """Claim up to *limit* instances that need a worker (in flight, timer due, commands waiting)."""
        ...

    def commanded(self, owner: str) -> list[str]:
        """Ids of instances *owner* holds that have commands waiting."""
        ...

    def renew(self, owner: str, fences: Mapping[str, int], until: float) -> list[str]:
        """Extend *owner*'s leases to *until*; return the ids whose lease was taken over."""
        ...

    def release(self, owner: str, fences: Mapping[str, int]) -> None:
        """Give back *owner*'s leases whose fence still matches."""
        ...

    def expire(self, owner: str) -> int:
        """Mark every lease of *owner* (a worker found dead) expired; return how many."""
        ...

    def owners(self) -> list[str]:
        """The owners holding leases now."""
        ...

    def add_command(
        self,
        instance_id: str,
        kind: str,
        body: Mapping[str, object],
        *,
        complete: Task | None = None,
        signal: tuple[str, object] | None = None,
        claim: TaskClaim | None = None,
        reassign: TaskReassignment | None = None,
    ) -> int:
        """
        Keep a command for an instance in one transaction (with a task's completion, a claim or a signal); its seq.

        *complete* closes its open task row, unless another user than its
        ``completed_by`` claimed it; *claim* sets the open task's claimant from
        ``claim.before`` to ``claim.after``; *reassign* gives the open task (still
        claimed by ``reassign.claimant``) its new assignee and candidate groups, and
        no claimant.

        Raises:
            TaskAlreadyCompleted: The task row of *complete*, *claim* or *reassign* is no longer open
                (nothing written).
            TaskClaimed: Another user holds the task's claim (nothing written).

        .. versionchanged:: 0.1.0 *claim*; a claimed task is completed only by its claimant; *reassign*.
        """
        ...

    def commands(self, instance_id: str) -> list[Command]:
        """The instance's unapplied commands, oldest first."""
        ...

    # Schedules, as in docs/design/leases.md

    def schedule(self, schedule_id: str) -> ScheduleState | None:
        """The schedule's stored state, if it has one."""
        ...

    def save_schedule(self, state: ScheduleState, expected: float | None) -> bool:
        """
        Write a schedule's state if its stored cursor is still *expected*; whether it was written.

        With *expected* ``None`` the state is inserted if the schedule has none
        yet. The compare-and-set lets several workers advance one schedule: the
        one whose view is stale writes nothing and looks again.
        """
        ...

    def close(self) -> None:
        """Release the store's resources."""
        ...


_shapes: dict[tuple[object, ...], tuple[object, ...]] = {}
_SHAPES_MAX = 100_000


class _CompactHistory:
    """
    One instance's history as timestamps plus shared "shapes".

    Most entries differ between instances only by their time ("step_started
    validate_order attempt 1"), so the rest of the entry is interned once for the
    process: 16 bytes an entry instead of a tuple and a float (~100 bytes).
    """

    __slots__ = ("shapes", "times")

    def __init__(self, events: Iterable[HistoryEvent] = ()) -> None:
        self.times = array("d")
        self.shapes: list[tuple[object, ...]] = []
        self.extend(events)

    def extend(self, events: Iterable[HistoryEvent]) -> None:
        times = self.times
        shapes = self.shapes
        for event in events:
            times.append(event[0])
            shape = event[1:]
            shared = _shapes.get(shape)
            if shared is None:
                shared = shape
                if len(_shapes) < _SHAPES_MAX:
                    _shapes[shape] = shape
            shapes.append(shared)

    def events(self) -> list[HistoryEvent]:
        return [new_event(HistoryEvent, (at, *shape)) for at, shape in zip(self.times, self.shapes, strict=True)]


class MemoryStore:
    """
    Keeps everything in this process's memory: fast, and gone when the process ends.

    Meant for tests and for workflows that need no durability. Its records are
    the engine's live objects, so a commit only files the pending history.

    .. versionadded:: 0.1.0
    """

    __slots__ = (
        "_closed_tasks",
        "_command_seq",
        "_commands",
        "_history",
        "_leases",
        "_open_tasks",
        "_pushed",
        "_records",
        "_schedules",
        "_signal_seq",
        "_signals",
        "_wakes",
    )

    group_commit = False
    leases = False

    def __init__(self) -> None:
        self._records: dict[str, InstanceRecord] = {}
        self._history: dict[str, _CompactHistory | list[HistoryEvent]] = {}
        self._open_tasks: dict[str, Task] = {}
        self._closed_tasks: dict[str, Task] = {}
        self._wakes: list[tuple[float, str]] = []
        self._pushed: dict[str, float] = {}
        self._signals: dict[str, list[Signal]] = {}
        self._signal_seq = itertools.count(1)
        self._commands: dict[str, list[Command]] = {}
        self._command_seq = itertools.count(1)
        self._leases: dict[str, tuple[str | None, float | None, int]] = {}  # id -> (owner, until, fence)
        self._schedules: dict[str, ScheduleState] = {}

    def attach(self, registry: WorkflowRegistry) -> None:
        """Nothing to resolve: records are live objects."""

    def commit(self, records: Sequence[InstanceRecord]) -> None:
        """
        File each record's pending history, tasks, timer, consumed signals and commands.

        Raises:
            LeaseLost: A record's fence is not the instance's (nothing filed).
            InstanceExists: A new record's id is taken (nothing filed).
        """
        self._check_commit(records)
        for rec in records:
            if not rec.stored:
                rec.stored = True
                if rec.fence:
                    owner, until = rec.lease if rec.lease is not None else (None, None)
                    self._leases[rec.id] = (owner, until, rec.fence)
            if rec.consumed_commands:
                gone_commands = set(rec.consumed_commands)
                left = [c for c in self._commands.get(rec.id, ()) if c.seq not in gone_commands]
                if left:
                    self._commands[rec.id] = left
                else:
                    self._commands.pop(rec.id, None)
                rec.consumed_commands = _EMPTY
            if rec.outbox:
                for target, kind, body in rec.outbox:
                    self._add_command(target, kind, body)
                rec.outbox = _EMPTY
            if rec.signals_out:
                for target, type_name, message in rec.signals_out:
                    self.add_signal(target, type_name, message)
                rec.signals_out = _EMPTY
            stored = self._history.get(rec.id)
            pending = rec.history
            if stored is None:
                # A new instance: the store takes its pending list as it is; it is
                # compacted at the instance's next commit, off the creation path.
                self._records[rec.id] = rec
                self._history[rec.id] = pending
                rec.history_len += len(pending)
                rec.history = []
            elif pending:
                if isinstance(stored, list):
                    stored = self._history[rec.id] = _CompactHistory(stored)
                stored.extend(pending)
                rec.history_len += len(pending)
                pending.clear()
            if rec.dirty_tasks:
                for task in rec.dirty_tasks:
                    self._file_task(task)
                rec.dirty_tasks = _EMPTY
            if rec.wake_at is not None and self._pushed.get(rec.id) != rec.wake_at:
                heapq.heappush(self._wakes, (rec.wake_at, rec.id))
                self._pushed[rec.id] = rec.wake_at
            if rec.consumed_signals:
                gone = set(rec.consumed_signals)
                self._signals[rec.id] = [s for s in self._signals.get(rec.id, ()) if s.seq not in gone]
                rec.consumed_signals = _EMPTY
            if self._signals and rec.status.is_terminal:
                self._signals.pop(rec.id, None)  # nobody will ever consume them

    def _check_commit(self, records: Sequence[InstanceRecord]) -> None:
        lost = [r.id for r in records if r.stored and r.fence and self._leases.get(r.id, (None, None, 0))[2] != r.fence]
        if lost:
            raise LeaseLost(lost)
        for r in records:
            if not r.stored and self._records.get(r.id, r) is not r:
                raise InstanceExists(r.id)

    def _file_task(self, task: Task) -> None:
        if task.status is TaskStatus.OPEN:
            self._open_tasks[task.id] = task
        else:
            self._open_tasks.pop(task.id, None)
            self._closed_tasks[task.id] = task

    def load(self, instance_id: str) -> InstanceRecord | None:
        """The instance's record."""
        return self._records.get(instance_id)

    def info(self, instance_id: str) -> InstanceInfo | None:
        """A snapshot of the instance."""
        rec = self._records.get(instance_id)
        return rec.info() if rec is not None else None

    def infos(self, status: InstanceStatus | None, workflow: str | None) -> list[InstanceInfo]:
        """Snapshots of the instances, oldest first."""
        return [
            r.info()
            for r in self._records.values()
            if (status is None or r.status is status) and (workflow is None or r.spec.name == workflow)
        ]

    def children(self, parent_id: str) -> list[InstanceInfo]:
        """The instance's children, oldest first."""
        return [r.info() for r in self._records.values() if r.parent == parent_id]

    def waiting_parents(self) -> list[str]:
        """Waiting instances with an ended child."""
        records = self._records
        return sorted(
            {
                r.parent
                for r in records.values()
                if r.parent is not None
                and r.status.is_terminal
                and (p := records.get(r.parent)) is not None
                and p.status is InstanceStatus.WAITING
            }
        )

    def history(self, instance_id: str) -> list[HistoryEvent]:
        """The instance's filed history."""
        stored = self._history.get(instance_id)
        if stored is None:
            return []
        return list(stored) if isinstance(stored, list) else stored.events()

    def task(self, task_id: str) -> Task | None:
        """The task with this id, if any."""
        return self._open_tasks.get(task_id) or self._closed_tasks.get(task_id)

    def open_tasks(
        self,
        user: str | None,
        groups: frozenset[str],
        instance_id: str | None,
        *,
        due_before: float | None = None,
        limit: int | None = None,
    ) -> list[Task]:
        """Open tasks, oldest first."""
        found = [
            t
            for t in self._open_tasks.values()
            if (user is None or t.may_complete(user, groups))
            and (instance_id is None or t.instance_id == instance_id)
            and (due_before is None or (t.due_at is not None and t.due_at <= due_before))
        ]
        return found[:limit]

    def add_signal(self, instance_id: str, type_name: str, message: object) -> int:
        """Keep a message for the instance."""
        from ._instance import Signal  # noqa: PLC0415 - import cycle through _instance's typing

        seq = next(self._signal_seq)
        self._signals.setdefault(instance_id, []).append(Signal(seq, type_name, message))
        return seq

    def signals(self, instance_id: str) -> list[Signal]:
        """The instance's unconsumed messages."""
        return list(self._signals.get(instance_id, ()))

    def signalled(self) -> list[str]:
        """Waiting instances with unconsumed messages."""
        return [
            i for i, sigs in self._signals.items() if sigs and (r := self._records.get(i)) and not r.status.is_terminal
        ]

    def next_wake(self, exclude: frozenset[str] = frozenset()) -> float | None:
        """The earliest live timer (of an instance not in *exclude*)."""
        self._drop_stale_wakes()
        return min((at for at, i in self._wakes if i not in exclude and self._live(at, i)), default=None)

    def due(self, now: float, limit: int) -> list[str]:
        """Instances whose timer is due, earliest first."""
        return [i for at, i in sorted(self._wakes) if at <= now and self._live(at, i)][:limit]

    def _live(self, at: float, instance_id: str) -> bool:
        rec = self._records.get(instance_id)
        return rec is not None and rec.wake_at == at

    def _drop_stale_wakes(self) -> None:
        # The heap keeps every timer ever set; an entry counts only while the
        # record still has that exact due time.
        wakes = self._wakes
        while wakes and not self._live(*wakes[0]):
            at, instance_id = heapq.heappop(wakes)
            if self._pushed.get(instance_id) == at:
                del self._pushed[instance_id]

    def in_flight(self) -> list[str]:
        """Nothing survives a restart of a memory store."""
        return []

    # ----------------------------------------------------------------- monitoring reads
    # Each takes a copy of the dict it walks first: a metrics server calls them from
    # its own thread while the engine's loop adds instances and tasks.

    def instance_counts(self) -> list[tuple[str, InstanceStatus, int]]:
        """How many instances each workflow has in each status, sorted."""
        counts: dict[tuple[str, str], int] = {}
        for rec in list(self._records.values()):
            key = (rec.spec.name, rec.status.value)
            counts[key] = counts.get(key, 0) + 1
        return [(name, InstanceStatus(status), n) for (name, status), n in sorted(counts.items())]

    def task_counts(self, now: float) -> list[tuple[str, str, int, int]]:
        """Open tasks (and how many are overdue at *now*) by workflow and step, sorted."""
        counts: dict[tuple[str, str], list[int]] = {}
        for task in list(self._open_tasks.values()):
            pair = counts.setdefault((task.workflow, task.step), [0, 0])
            pair[0] += 1
            if task.due_at is not None and task.due_at <= now:
                pair[1] += 1
        return [(name, step, n, late) for (name, step), (n, late) in sorted(counts.items())]

    def _last_change(self, rec: InstanceRecord) -> float:
        stored = self._history.get(rec.id)
        if isinstance(stored, list):
            return stored[-1].at if stored else rec.created_at
        return stored.times[-1] if stored is not None and stored.times else rec.created_at

    def quiet(self, statuses: frozenset[InstanceStatus], before: float | None) -> list[tuple[InstanceInfo, float]]:
        """Instances in *statuses* with no timer, last changed at or before *before*, the oldest change first."""
        found: list[tuple[float, str, InstanceRecord]] = []
        for rec in list(self._records.values()):
            if rec.status in statuses and rec.wake_at is None:
                last = self._last_change(rec)
                if before is None or last <= before:
                    found.append((last, rec.id, rec))
        found.sort(key=lambda item: item[:2])
        return [(rec.info(), last) for last, _, rec in found]

    def late_timers(self, before: float, limit: int | None = None) -> list[InstanceInfo]:
        """Live instances whose timer was due at or before *before*, earliest first."""
        late = [
            (rec.wake_at, rec.id, rec)
            for rec in self._records.values()
            if rec.wake_at is not None and rec.wake_at <= before and not rec.status.is_terminal
        ]
        late.sort(key=lambda item: item[:2])
        return [rec.info() for _, _, rec in late[:limit]]

    def late_tasks(self, before: float) -> list[LateTask]:
        """Open tasks due at or before *before*, earliest first."""
        late: list[LateTask] = []
        for task in list(self._open_tasks.values()):
            if task.due_at is None or task.due_at > before:
                continue
            rec = self._records.get(task.instance_id)
            version = rec.spec.version if rec is not None else ""
            wake_at = rec.wake_at if rec is not None else None
            late.append(LateTask(task.id, task.instance_id, task.workflow, version, task.step, task.due_at, wake_at))
        late.sort(key=lambda t: (t.due_at, t.id))
        return late

    # ----------------------------------------------------------------- leases and commands

    def _claimable(self, instance_id: str, owner: str, now: float, *, terminal: bool = False) -> bool:
        rec = self._records.get(instance_id)
        if rec is None or (rec.status.is_terminal and not terminal):
            return False
        holder, until, _ = self._leases.get(instance_id, (None, None, 0))
        return holder is None or holder == owner or until is None or until < now

    def _take(self, instance_id: str, owner: str, until: float) -> int:
        fence = self._leases.get(instance_id, (None, None, 0))[2] + 1
        self._leases[instance_id] = (owner, until, fence)
        return fence

    def claim(self, instance_id: str, owner: str, now: float, until: float) -> int | None:
        """Take the instance's lease if it is free, expired or *owner*'s (terminal or not); the new fence."""
        if not self._claimable(instance_id, owner, now, terminal=True):
            return None
        return self._take(instance_id, owner, until)

    def claim_runnable(
        self, owner: str, now: float, until: float, limit: int, exclude: frozenset[str]
    ) -> list[tuple[str, int]]:
        """Claim the instances that need a worker: in flight, timer due, or commands waiting."""
        found: list[tuple[float, str]] = []
        for rec in self._records.values():
            i = rec.id
            # A compensation_failed instance answers a command too (a retry of its compensations).
            answers = rec.status is InstanceStatus.COMPENSATION_FAILED and i in self._commands
            if i in exclude or not self._claimable(i, owner, now, terminal=answers):
                continue
            holder, until_now, _ = self._leases.get(i, (None, None, 0))
            if holder == owner and until_now is not None and until_now >= now:
                continue  # held by this owner already: it has it
            wake = rec.wake_at
            running = rec.status in (InstanceStatus.RUNNING, InstanceStatus.COMPENSATING)
            # Inside a fork a branch may have a timer while another ran: in flight when
            # its lease expired (its driver died) rather than being given back.
            in_flight = running and (wake is None or (bool(rec.branches) and holder is not None))
            if in_flight or i in self._commands:
                found.append((float("-inf"), i))
            elif wake is not None and wake <= now:
                found.append((wake, i))
        found.sort()
        return [(i, self._take(i, owner, until)) for _, i in found[:limit]]

    def commanded(self, owner: str) -> list[str]:
        """Instances *owner* holds that have commands waiting."""
        return [i for i in self._commands if self._leases.get(i, (None, None, 0))[0] == owner]

    def renew(self, owner: str, fences: Mapping[str, int], until: float) -> list[str]:
        """Extend *owner*'s leases; the ids it lost."""
        lost: list[str] = []
        for i, fence in fences.items():
            holder, _, stored = self._leases.get(i, (None, None, 0))
            if holder != owner or stored != fence:
                lost.append(i)
            else:
                self._leases[i] = (owner, until, fence)
        return lost

    def release(self, owner: str, fences: Mapping[str, int]) -> None:
        """Give back *owner*'s leases whose fence matches."""
        for i, fence in fences.items():
            holder, _, stored = self._leases.get(i, (None, None, 0))
            if holder == owner and stored == fence:
                self._leases[i] = (None, None, fence)

    def expire(self, owner: str) -> int:
        """Expire every lease of *owner*."""
        mine = [i for i, (holder, _, _) in self._leases.items() if holder == owner]
        for i in mine:
            _, _, fence = self._leases[i]
            self._leases[i] = (owner, 0.0, fence)
        return len(mine)

    def owners(self) -> list[str]:
        """The owners holding leases."""
        return sorted({holder for holder, _, _ in self._leases.values() if holder is not None})

    def add_command(
        self,
        instance_id: str,
        kind: str,
        body: Mapping[str, object],
        *,
        complete: Task | None = None,
        signal: tuple[str, object] | None = None,
        claim: TaskClaim | None = None,
        reassign: TaskReassignment | None = None,
    ) -> int:
        """Keep a command (with a task's completion, a claim, a reassignment or a signal)."""
        if complete is not None:
            current = self.task(complete.id)
            if current is None or current.status is not TaskStatus.OPEN:
                raise TaskAlreadyCompleted(complete.id, "is no longer open; a task completes once")
            user = complete.completed_by or ""
            if current.claimed_by not in (None, user):
                raise TaskClaimed(complete.id, user, current.claimed_by)
            self._file_task(attrs.evolve(complete, claimed_by=current.claimed_by))
        if claim is not None:
            current = self.task(claim.task_id)
            if current is None or current.status is not TaskStatus.OPEN:
                raise TaskAlreadyCompleted(claim.task_id, "is no longer open; only an open task is claimed")
            if current.claimed_by != claim.before:
                raise TaskClaimed(claim.task_id, claim.user, current.claimed_by)
            self._file_task(attrs.evolve(current, claimed_by=claim.after))
        if reassign is not None:
            current = self.task(reassign.task_id)
            if current is None or current.status is not TaskStatus.OPEN:
                raise TaskAlreadyCompleted(reassign.task_id, "is no longer open; only an open task is reassigned")
            if current.claimed_by != reassign.claimant:
                raise TaskClaimed(reassign.task_id, reassign.by, current.claimed_by)
            self._file_task(reassign.applied_to(current))
        if signal is not None:
            self.add_signal(instance_id, *signal)
        return self._add_command(instance_id, kind, body)

    def _add_command(self, instance_id: str, kind: str, body: Mapping[str, object]) -> int:
        from ._instance import Command  # noqa: PLC0415 - import cycle through _instance's typing

        seq = next(self._command_seq)
        command = Command(seq, instance_id, kind, dict(body), time.time())
        self._commands.setdefault(instance_id, []).append(command)
        return seq

    def commands(self, instance_id: str) -> list[Command]:
        """The instance's unapplied commands, oldest first."""
        return list(self._commands.get(instance_id, ()))

    # ----------------------------------------------------------------- schedules

    def schedule(self, schedule_id: str) -> ScheduleState | None:
        """The schedule's state, if it has one."""
        return self._schedules.get(schedule_id)

    def save_schedule(self, state: ScheduleState, expected: float | None) -> bool:
        """Write the schedule's state if its cursor is still *expected* (``None``: if it has none)."""
        current = self._schedules.get(state.id)
        if (current.cursor if current is not None else None) != expected:
            return False
        self._schedules[state.id] = state
        return True

    def records(self) -> Iterable[InstanceRecord]:
        """Every instance record, oldest first."""
        return self._records.values()

    def close(self) -> None:
        """Nothing to release."""

    def __len__(self) -> int:
        """The number of instances."""
        return len(self._records)
