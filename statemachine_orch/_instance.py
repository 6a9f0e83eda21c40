"""The engine's record of one instance (the workflow object is its machine model)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import attrs

from ._clock import utc_datetime
from ._status import InstanceStatus

if TYPE_CHECKING:
    from transitions import Machine

    from ._fanout import FanOut
    from ._history import HistoryEvent
    from ._spec import WorkflowSpec
    from ._tasks import Task

EMPTY: Any = ()
"""The shared stand-in for a record's list that has never been used."""
_EMPTY = EMPTY

NO_PAYLOAD: Any = object()
"""Marks a waiting step whose form or message has not arrived yet."""

_EMPTY_BRANCHES: Any = {}  # never written to: replaced by a fresh dict on the first branch


@attrs.frozen
class InstanceInfo:
    """
    A snapshot of one instance, as listed by ``Engine.instances``.

    Attributes:
        id: The instance id.
        workflow: The workflow name.
        version: The version it runs on.
        status: Its status.
        step: The current step (``None`` once it left the steps).
        created_at: When it started (engine clock, seconds since the epoch).
        error: Why it failed or was cancelled.
        open_task: The id of its open human task, if any (the first, inside a fork).
        wake_at: When its timer (retry backoff, ``@timer``, escalation) is due (the
            earliest, inside a fork).
        steps: Every current step: several inside a fork, one per branch still running.
        in_fork: Whether the instance is inside a fork's parallel branches.
        parent: The instance whose ``@subflow`` step started this one, if any.
        quarantined: Why the engine stopped running this instance, if it did: its
            stored record cannot be loaded (a value of the wrong type, written by
            hand or by older code), or its workflow version has no registered class.
            Other instances carry on; fix the record (or register the class) and
            restart the engine.
        outcome: How it ended, in the workflow's own words: ``completed``,
            ``cancelled``, ``failed``, or the outcome of the ``@failure_end`` it
            reached (``rejected``...); ``None`` while it runs. An instance whose
            compensation failed keeps the outcome it was ending with (its
            ``status`` says ``compensation_failed``).

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.1.0 :attr:`created_datetime` and :attr:`wake_datetime`; :attr:`outcome`.
    """

    id: str
    workflow: str
    version: str
    status: InstanceStatus
    step: str | None
    created_at: float
    error: str | None
    open_task: str | None
    wake_at: float | None = None
    steps: tuple[str, ...] = ()
    in_fork: bool = False
    parent: str | None = None
    quarantined: str | None = None
    outcome: str | None = None

    @property
    def created_datetime(self) -> dt.datetime:
        """
        :attr:`created_at` as an aware datetime in UTC.

        .. versionadded:: 0.1.0
        """
        return utc_datetime(self.created_at)

    @property
    def wake_datetime(self) -> dt.datetime | None:
        """
        :attr:`wake_at` as an aware datetime in UTC, or ``None`` when no timer is due.

        .. versionadded:: 0.1.0
        """
        return utc_datetime(self.wake_at)


def outcome_of(status: InstanceStatus, failure: dict[str, Any] | None) -> str | None:
    """An instance's :attr:`InstanceInfo.outcome`, from its status and its kept failure record."""
    if failure is not None and (status.is_terminal or status is InstanceStatus.COMPENSATING):
        return str(failure.get("outcome", "failed"))
    if status.is_terminal:
        return "failed" if status is InstanceStatus.COMPENSATION_FAILED else status.value
    return None


@attrs.frozen
class Signal:
    """
    A message delivered to an instance and not consumed yet.

    .. versionadded:: 0.1.0
    """

    seq: int
    type_name: str
    message: object


@attrs.frozen
class Command:
    """
    A change a caller asked of an instance, kept durably until its driver applies it.

    ``kind`` is one of ``complete_task``, ``cancel``, ``retry_compensation``,
    ``migrate`` and ``wake``; ``body`` is its JSON object (see
    ``docs/design/leases.md``).

    .. versionadded:: 0.1.0
    """

    seq: int
    instance_id: str
    kind: str
    body: dict[str, Any]
    created_at: float


COMMAND_KINDS = frozenset(
    {"complete_task", "claim_task", "reassign_task", "cancel", "retry_compensation", "migrate", "wake"}
)
"""The kinds of :class:`Command`."""


def active_steps(state: object) -> list[str]:
    """
    The steps a machine state stands for, in order.

    A step name stands for itself; inside a fork the state is a list of leaf paths
    (``f@fork.b@branch.step``, nested lists for nested forks), whose last parts
    are steps or a branch's ``@start`` / ``@done``, which stand for no step.
    """
    if isinstance(state, str):
        return [] if state.startswith("@") else [state]
    out: list[str] = []
    for leaf in leaves(state):
        name = leaf.rpartition(".")[2]
        if not name.startswith("@"):
            out.append(name)
    return out


def leaves(state: Any) -> list[str]:
    """The leaf paths of a machine state, nested lists flattened."""
    if isinstance(state, str):
        return [state]
    out: list[str] = []
    item: Any
    for item in state:
        if item.__class__ is str:
            out.append(item)
        else:
            out.extend(leaves(item))
    return out


Waited = tuple[float, tuple[int, ...]]
"""A reminded wait: when it began, and how many times each of its reminders ran."""


class Branch:
    """
    What the engine keeps about one running branch of a fork: its current step's visit.

    The fields mean what the record's fields of the same names mean for an
    instance outside forks (``fan``: a fan-out step's children; ``waited``: a
    reminded wait's start and reminders run). ``waiting`` is set while the branch waits (a task, a
    message, a timer, a retry's backoff); ``cancelled`` holds why the engine
    cancelled the branch's step in flight; ``overlapped`` whether another
    branch's step ran while this branch's current attempt did.
    """

    __slots__ = (
        "attempt",
        "cancelled",
        "fan",
        "in_step",
        "overlapped",
        "payload",
        "task_id",
        "visit",
        "waited",
        "waiting",
        "wake_at",
        "woken",
    )

    def __init__(self, visit: int) -> None:
        self.attempt = 1
        self.visit = visit
        self.payload: Any = NO_PAYLOAD
        self.task_id: str | None = None
        self.wake_at: float | None = None
        self.woken = False
        self.waiting = False
        self.in_step = False
        self.overlapped = False
        self.cancelled: str | None = None
        self.fan: FanOut | None = None
        self.waited: Waited | None = None


class InstanceRecord:
    """
    Everything the engine keeps about one instance besides its variables.

    ``saga`` holds ``(step, visit)`` for each completion of a step that has a
    compensation, oldest first: compensation pops from the end. ``fan`` holds,
    at a ``@fan_out`` step, its children's progress (stored with the record). ``history``,
    ``dirty_tasks`` and ``consumed_signals`` hold what the next commit writes;
    the store empties them when it commits.
    """

    __slots__ = (
        "attempt",
        "branches",
        "cancel",
        "cause",
        "comp_attempt",
        "consumed_commands",
        "consumed_signals",
        "created_at",
        "dirty_tasks",
        "error",
        "failure",
        "fan",
        "fence",
        "history",
        "history_len",
        "id",
        "in_step",
        "lease",
        "machine",
        "outbox",
        "parent",
        "payload",
        "poke",
        "runners",
        "saga",
        "signals_out",
        "spawned",
        "spec",
        "status",
        "stored",
        "task_id",
        "visit",
        "waited",
        "wake_at",
        "wf",
        "woken",
        "worker",
    )

    id: str
    wf: Any
    spec: WorkflowSpec
    machine: Machine
    status: InstanceStatus
    history: list[HistoryEvent]
    history_len: int
    saga: list[tuple[str, int]]
    attempt: int
    comp_attempt: int
    visit: int
    task_id: str | None
    payload: Any
    error: str | None
    fan: FanOut | None
    waited: Waited | None
    cause: str | None
    failure: dict[str, Any] | None
    cancel: tuple[str, bool] | None
    wake_at: float | None
    woken: bool
    in_step: bool
    worker: Any
    created_at: float
    dirty_tasks: list[Task]
    consumed_signals: list[int]
    branches: dict[str, Branch]
    runners: dict[str, Any] | None
    poke: Any
    parent: str | None
    fence: int
    lease: tuple[str, float] | None
    stored: bool
    consumed_commands: list[int]
    outbox: list[tuple[str, str, dict[str, object]]]
    signals_out: list[tuple[str, str, object]]
    spawned: list[InstanceRecord]

    def __init__(self, instance_id: str, wf: Any, spec: WorkflowSpec, machine: Machine, now: float) -> None:
        self.id = instance_id
        self.wf = wf
        self.spec = spec
        self.machine = machine
        self.status = InstanceStatus.RUNNING
        self.history = []
        self.history_len = 0
        # The three lists below stay the shared empty tuple until first used:
        # thousands of parked instances never need them.
        self.saga = _EMPTY
        self.attempt = 1
        self.comp_attempt = 1
        self.visit = 0
        self.task_id = None
        self.payload = NO_PAYLOAD
        self.error = None
        self.cause = None
        # Why it failed, kept as JSON (``_failure.failure_record``): outcome, step, the exception.
        self.failure = None
        self.cancel = None
        self.wake_at = None
        self.woken = False
        self.in_step = False
        self.worker = None
        self.created_at = now
        self.dirty_tasks = _EMPTY
        self.consumed_signals = _EMPTY
        # Inside a fork: the branch of each current step; the runner task of each
        # branch step in flight; a future that wakes the fork's driver.
        self.branches = _EMPTY_BRANCHES
        self.runners = None
        self.poke = None
        self.parent = None  # the instance whose subflow step started this one
        self.fan = None  # at a fan-out step: its children, started, ended and to start
        self.waited = None  # at a waiting step with reminders: when the wait began, reminders run
        # Leases (docs/design/leases.md): the fence this record was claimed with (0:
        # unleased, no check), the (owner, until) a new row is inserted with, and
        # whether the row exists yet.
        self.fence = 0
        self.lease = None
        self.stored = False
        # Durable commands applied in this turn (deleted by the next commit), and
        # commands for other instances (inserted by it): [(instance id, kind, body)].
        self.consumed_commands = _EMPTY
        self.outbox = _EMPTY
        # Messages a step sent to instances (ctx.signal): [(instance id, type name, message)],
        # kept as signal rows by the next commit; and the instances a step started
        # (ctx.start), inserted by the same commit (docs/design/leases.md).
        self.signals_out = _EMPTY
        self.spawned = _EMPTY

    def add_saga(self, step: str, visit: int) -> None:
        """Record a completion of a compensable step."""
        if self.saga is _EMPTY:
            self.saga = [(step, visit)]
        else:
            self.saga.append((step, visit))

    def add_task(self, task: Task) -> None:
        """Queue a new or changed task for the next commit."""
        if self.dirty_tasks is _EMPTY:
            self.dirty_tasks = [task]
        else:
            self.dirty_tasks.append(task)

    def add_consumed_signal(self, seq: int) -> None:
        """Queue the removal of a consumed signal for the next commit."""
        if self.consumed_signals is _EMPTY:
            self.consumed_signals = [seq]
        else:
            self.consumed_signals.append(seq)

    def add_consumed_command(self, seq: int) -> None:
        """Queue the removal of an applied durable command for the next commit."""
        if self.consumed_commands is _EMPTY:
            self.consumed_commands = [seq]
        else:
            self.consumed_commands.append(seq)

    def send(self, instance_id: str, kind: str, body: dict[str, object]) -> None:
        """Queue a command for another instance, inserted by the next commit."""
        if self.outbox is _EMPTY:
            self.outbox = [(instance_id, kind, body)]
        else:
            self.outbox.append((instance_id, kind, body))

    def send_signal(self, instance_id: str, type_name: str, message: object) -> None:
        """Queue a message for an instance (filed under its declared type), kept by the next commit."""
        if self.signals_out is _EMPTY:
            self.signals_out = [(instance_id, type_name, message)]
        else:
            self.signals_out.append((instance_id, type_name, message))

    def committed(self) -> None:
        """Called by a store once everything pending is written."""
        self.history_len += len(self.history)
        self.history.clear()
        self.dirty_tasks = _EMPTY
        self.consumed_signals = _EMPTY
        self.consumed_commands = _EMPTY
        self.outbox = _EMPTY
        self.signals_out = _EMPTY
        self.stored = True

    @property
    def state(self) -> Any:
        """The machine state: a step name, a lifecycle state (``@completed``...), or a fork's leaf list."""
        return self.wf._orch_state  # the machine's model attribute

    def info(self) -> InstanceInfo:
        """A snapshot of this record."""
        state = self.state
        if isinstance(state, str):
            step = state if self.spec.has_step(state) else None
            return InstanceInfo(
                id=self.id,
                workflow=self.spec.name,
                version=self.spec.version,
                status=self.status,
                step=step,
                created_at=self.created_at,
                error=self.error,
                open_task=self.task_id,
                wake_at=self.wake_at,
                steps=(step,) if step is not None else (),
                parent=self.parent,
                outcome=outcome_of(self.status, self.failure),
            )
        steps = tuple(active_steps(state))
        tasks = [b.task_id for b in self.branches.values() if b.task_id is not None]
        return InstanceInfo(
            id=self.id,
            workflow=self.spec.name,
            version=self.spec.version,
            status=self.status,
            step=steps[0] if steps else None,
            created_at=self.created_at,
            error=self.error,
            open_task=tasks[0] if tasks else None,
            wake_at=self.wake_at,
            steps=steps,
            in_fork=True,
            parent=self.parent,
            outcome=outcome_of(self.status, self.failure),
        )
