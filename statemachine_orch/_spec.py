"""
The compiled workflow spec: the one intermediate representation.

The class body is compiled once into a :class:`WorkflowSpec`; the transitions
machine, the static checks, the diagrams and the engine all read this, never the
class body.
"""

from __future__ import annotations

import ast
import enum
import hashlib
import typing
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from ._retry import Retry
from ._status import InstanceStatus


class StepKind(enum.Enum):
    """
    What kind of activity a step is.

    .. versionadded:: 0.1.0
    """

    STEP = "step"
    """Runs its method and moves on."""
    HUMAN_TASK = "human_task"
    """Opens a task and waits for a person to complete it."""
    TIMER = "timer"
    """Waits a fixed delay, durably."""
    WAIT_FOR = "wait_for"
    """Waits for an external message (a signal)."""
    SUBFLOW = "subflow"
    """Starts a child workflow and waits for it to end."""
    FAN_OUT = "fan_out"
    """Starts a child workflow per item, a bounded number at a time, and waits for them all."""

    @property
    def waits(self) -> bool:
        """Whether entering a step of this kind parks the instance."""
        return self is not StepKind.STEP


# Lifecycle states of the machine besides the steps. The "@" cannot appear in a
# Python identifier, so they never clash with a step name.
CREATED = "@created"
COMPLETED = "@completed"
COMPENSATING = "@compensating"
CANCELLING = "@cancelling"
FAILED = "@failed"
CANCELLED = "@cancelled"
COMPENSATION_FAILED = "@compensation_failed"
LIFECYCLE_STATES = (
    CREATED,
    COMPLETED,
    COMPENSATING,
    CANCELLING,
    FAILED,
    CANCELLED,
    COMPENSATION_FAILED,
)


@attrs.frozen
class FieldSpec:
    """
    A process variable: a typed field of the workflow class.

    .. versionadded:: 0.1.0
    """

    name: str
    type: Any
    has_default: bool


@attrs.frozen
class TaskSpec:
    """
    What a human-task step declared about its task.

    .. versionadded:: 0.1.0
    """

    assignee: str | None
    candidate_groups: tuple[str, ...]
    form: type | None
    due: float | None
    assignee_of: Callable[[Any], object] | None = attrs.field(default=None, repr=False, eq=False)
    """Computes the assignee from the workflow when the task opens (``None``: :attr:`assignee` as declared)."""
    groups_of: Callable[[Any], object] | None = attrs.field(default=None, repr=False, eq=False)
    """Computes the candidate groups when the task opens (``None``: :attr:`candidate_groups` as declared)."""
    assignee_name: str | None = None
    """The name of :attr:`assignee_of` (``approver``, or a lambda's text)."""
    groups_name: str | None = None
    """The name of :attr:`groups_of`."""

    @property
    def who(self) -> str:
        """Who the task is for, as declared: ``manager``, ``sales, ops``, ``approver()`` for a computed one."""
        parts: list[str] = []
        if self.assignee_name is not None:
            parts.append(f"{self.assignee_name}()")
        elif self.assignee is not None:
            parts.append(self.assignee)
        if self.groups_name is not None:
            parts.append(f"{self.groups_name}()")
        else:
            parts += self.candidate_groups
        return ", ".join(parts)


@attrs.frozen
class FanOutSpec:
    """
    What a ``@fan_out`` step declared about its children.

    Attributes:
        limit: How many of its children may run at once (``None``: all of them).
        tolerate: How many of its children may fail before the step does.

    .. versionadded:: 0.1.0
    """

    limit: int | None
    tolerate: int

    @property
    def label(self) -> str:
        """``2 at a time, tolerates 1`` (what a diagram or a path shows next to the child's name)."""
        parts = [f"{self.limit} at a time" if self.limit is not None else "all at once"]
        if self.tolerate:
            parts.append(f"tolerates {self.tolerate}")
        return ", ".join(parts)


@attrs.frozen
class CompensationSpec:
    """
    The undo of a step.

    .. versionadded:: 0.1.0
    """

    name: str
    fn: Callable[..., Any] = attrs.field(repr=False)
    is_async: bool
    retry: Retry
    attempted: bool = False
    """Registered when its step's attempt starts: it also undoes a failed or cut-short visit."""


@attrs.frozen
class StepSpec:
    """
    One step (a state of the machine) and its policies.

    .. versionadded:: 0.1.0
    """

    name: str
    kind: StepKind
    fn: Callable[..., Any] = attrs.field(repr=False)
    is_async: bool
    initial: bool
    final: bool
    retry: Retry
    timeout: float | None
    task: TaskSpec | None
    compensation: CompensationSpec | None
    doc: str | None = attrs.field(repr=False)
    delay: float | None = None
    message: type | None = None
    fork: bool = False
    child: type | None = None
    start: Callable[..., Any] | None = attrs.field(default=None, repr=False)
    fan: FanOutSpec | None = None
    outcome: str | None = None
    """The outcome of a declared failure end (``@failure_end``); ``None`` for every other step."""
    error: type[BaseException] | None = None
    """The error type an ``on_error`` handler step receives as its third argument (``None``: it takes none)."""

    @property
    def ends_failed(self) -> bool:
        """Whether completing this step fails the instance (a ``@failure_end``)."""
        return self.outcome is not None

    @property
    def payload_type(self) -> type | None:
        """The type of what the method receives besides ctx: the form, the message, the child or the error."""
        if self.task is not None:
            return self.task.form
        if self.error is not None:
            return self.error
        return self.message if self.message is not None else self.child


@attrs.frozen
class EdgeSpec:
    """
    A declared edge between two steps.

    An edge with ``on_error`` is taken when the source fails with one of those
    exception types; otherwise it is taken when the source completes and its
    guard holds (no guard: the default edge).

    .. versionadded:: 0.1.0
    """

    source: str
    dest: str
    guard: Callable[[Any], bool] | None = attrs.field(repr=False, eq=False)
    guard_name: str | None
    on_error: tuple[type[BaseException], ...]
    back: bool
    timeout: float | None = None
    join: bool = False
    reminder: float | None = None
    """A reminder edge: once its source has waited this long, its destination runs as a side step."""
    repeat: bool = False
    """A reminder edge's side step runs again every :attr:`reminder` while the wait lasts."""

    @property
    def is_error(self) -> bool:
        """Whether this edge routes a failure of its source."""
        return bool(self.on_error)

    @property
    def is_timeout(self) -> bool:
        """Whether this edge escalates a wait of its source that lasted too long."""
        return self.timeout is not None

    @property
    def is_reminder(self) -> bool:
        """Whether this edge runs its destination beside a wait that goes on (no transition)."""
        return self.reminder is not None

    @property
    def is_completion(self) -> bool:
        """Whether this edge is taken when its source completes."""
        return not self.on_error and self.timeout is None and self.reminder is None

    @property
    def is_default(self) -> bool:
        """Whether this is the unguarded completion edge of its source."""
        return self.guard is None and self.is_completion

    @property
    def label(self) -> str:
        """A short text for diagrams and history: the guard, the error types, or ''."""
        if self.on_error:
            return "on_error " + " | ".join(t.__name__ for t in self.on_error)
        if self.timeout is not None:
            return f"timeout {self.timeout:g}s"
        if self.reminder is not None:
            return f"reminder {'every' if self.repeat else 'after'} {self.reminder:g}s"
        return self.guard_name or ""


def negated(guard: str) -> str:
    """
    The text of a guard's negation, as a person would write it.

    ``not x`` gives ``x`` (never ``not not x``); a guard that binds looser than
    ``not`` is parenthesised (``a and b`` gives ``not (a and b)``); a comparison
    is not (``not wf.amount > 100``). Text that is not an expression (a guard
    whose source was not found) is negated as it stands.
    """
    try:
        body = ast.parse(guard.strip(), mode="eval").body
    except SyntaxError:
        return f"not {guard}"
    if isinstance(body, ast.UnaryOp) and isinstance(body.op, ast.Not):
        return ast.unparse(body.operand)
    # ast.unparse adds the parentheses the precedence of `not` needs, and only those.
    return ast.unparse(ast.UnaryOp(ast.Not(), body))


@attrs.frozen
class RegionSpec:
    """
    One branch of a fork: the steps between the fork and its join.

    Attributes:
        name: The branch's first step, which names the branch.
        edge: The fork's edge into the branch; a guard on it makes the fork inclusive.
        steps: Every step of the branch, in declaration order, nested forks' included.
        ends: The branch's steps with an edge into the join.

    .. versionadded:: 0.1.0
    """

    name: str
    edge: EdgeSpec
    steps: tuple[str, ...]
    ends: tuple[str, ...]


@attrs.frozen
class ForkSpec:
    """
    A ``@step(fork=True)`` and the join that collects its branches.

    Attributes:
        step: The fork step.
        join: The step whose ``@after(a, b, ...)`` waits for every branch started.
        regions: One per outgoing edge of the fork, in declaration order.
        parent: ``(fork, branch)`` of the fork whose branch holds this one, or ``None``.

    .. versionadded:: 0.1.0
    """

    step: str
    join: str
    regions: tuple[RegionSpec, ...]
    parent: tuple[str, str] | None = None


@attrs.frozen
class MigrationSpec:
    """
    A declared migration from an older version into this workflow class.

    .. versionadded:: 0.1.0
    """

    name: str
    source_version: str
    fn: Callable[[Any, str], tuple[Any, str]] = attrs.field(repr=False)


@attrs.frozen
class InvariantSpec:
    """
    A method marked ``@invariant``, as compiled into the spec.

    Attributes:
        name: The method's name in the class.
        fn: The function, called as ``fn(workflow)``, ``fn(workflow, status)`` or
            ``fn(workflow, status, compensated)``.
        takes_status: Whether it takes the instance's :class:`InstanceStatus` too.
        takes_compensated: Whether it also takes whether the instance's compensations ran.

    .. versionadded:: 0.1.0
    """

    name: str
    fn: Callable[..., bool] = attrs.field(repr=False, eq=False)
    takes_status: bool
    takes_compensated: bool = False

    def holds(self, workflow: object, status: InstanceStatus, compensated: bool = False) -> bool:
        """
        Call the invariant on *workflow*, whose instance is in *status* (*compensated*: its undo started).

        Returns:
            What the method returned (anything but ``True`` counts as broken).
        """
        if self.takes_compensated:
            result: object = self.fn(workflow, status, compensated)
        else:
            result = self.fn(workflow, status) if self.takes_status else self.fn(workflow)
        return result is True


@attrs.frozen
class QuerySpec:
    """
    A read-only query the workflow answers (a method marked ``@query``).

    Queries change no instance, so they are not part of the definition's
    fingerprint: adding one keeps every stored instance runnable.

    .. versionadded:: 0.1.0
    """

    name: str
    """The method's name: what ``orch query ID NAME`` asks."""
    fn: Callable[..., Any] = attrs.field(repr=False, eq=False)
    """The method as written."""
    parameters: tuple[str, ...]
    """Its parameters after ``self``, in order."""
    answer: object
    """Its return annotation (resolved when it can be), ``None`` when it has none."""
    doc: str | None = attrs.field(default=None, repr=False)
    """Its docstring."""


@attrs.frozen
class WorkflowSpec:
    """
    The compiled form of a workflow class: its fields, steps and edges.

    Built once when the class statement runs; frozen.

    Attributes:
        name: The class name.
        qualname: ``module.QualName``, unique per class.
        version: The class keyword ``version=``.
        fields: The process variables, in declaration order.
        steps: The steps, in declaration order.
        edges: The edges, in the order guards are tried per source.
        initial: The name of the initial step.
        invariants: The methods marked ``@invariant``, in declaration order.
        queries: The methods marked ``@query``, in name order (inherited ones included).

    .. versionadded:: 0.1.0
    """

    name: str
    qualname: str
    version: str
    fields: tuple[FieldSpec, ...]
    steps: tuple[StepSpec, ...]
    edges: tuple[EdgeSpec, ...]
    initial: str
    migrations: tuple[MigrationSpec, ...] = ()
    _by_name: Mapping[str, StepSpec] = attrs.field(init=False, repr=False, eq=False)
    _outgoing: Mapping[str, tuple[EdgeSpec, ...]] = attrs.field(init=False, repr=False, eq=False)
    _label: str = attrs.field(init=False, repr=False, eq=False)
    _fingerprint: str = attrs.field(init=False, repr=False, eq=False)
    invariants: tuple[InvariantSpec, ...] = ()
    forks: tuple[ForkSpec, ...] = ()
    _fork_of: Mapping[str, ForkSpec] = attrs.field(init=False, repr=False, eq=False)
    _branch_of: Mapping[str, tuple[ForkSpec, RegionSpec]] = attrs.field(init=False, repr=False, eq=False)
    _has_subflows: bool = attrs.field(init=False, repr=False, eq=False)
    _side_steps: frozenset[str] = attrs.field(init=False, repr=False, eq=False)
    queries: tuple[QuerySpec, ...] = ()

    def __attrs_post_init__(self) -> None:
        """Index steps, edges and branches by name once."""
        object.__setattr__(self, "_fork_of", MappingProxyType({f.step: f for f in self.forks}))
        branch_of: dict[str, tuple[ForkSpec, RegionSpec]] = {}
        # Outer forks first, so that a nested fork's branches overwrite: the innermost wins.
        for f in sorted(self.forks, key=lambda f: _depth(f, self.forks)):
            for r in f.regions:
                for name in r.steps:
                    branch_of[name] = (f, r)
        object.__setattr__(self, "_branch_of", MappingProxyType(branch_of))
        # Read on every compensation run: computed once.
        object.__setattr__(self, "_has_subflows", any(s.child is not None for s in self.steps))
        object.__setattr__(self, "_side_steps", frozenset(e.dest for e in self.edges if e.is_reminder))
        by_name = {s.name: s for s in self.steps}
        outgoing: dict[str, list[EdgeSpec]] = {s.name: [] for s in self.steps}
        for e in self.edges:
            outgoing.setdefault(e.source, []).append(e)
        object.__setattr__(self, "_by_name", MappingProxyType(by_name))
        frozen = {k: tuple(v) for k, v in outgoing.items()}
        object.__setattr__(self, "_outgoing", MappingProxyType(frozen))
        object.__setattr__(self, "_label", f"{self.name} version {self.version}")
        object.__setattr__(self, "_fingerprint", _fingerprint(self))

    @property
    def fingerprint(self) -> str:
        """
        A digest of the definition's shape: fields, steps, edges and their policies.

        Stores record it with each instance, so that an instance is never run by a
        different definition that happens to carry the same name and version.
        """
        return self._fingerprint

    @property
    def label(self) -> str:
        """``Name version V``, as the history's first entry says."""
        return self._label

    def step(self, name: str) -> StepSpec:
        """
        The step called *name*.

        Raises:
            KeyError: No such step.
        """
        return self._by_name[name]

    def query(self, name: str) -> QuerySpec | None:
        """The query called *name*, or ``None`` when the workflow declares none of that name."""
        return next((q for q in self.queries if q.name == name), None)

    def has_step(self, name: str) -> bool:
        """Whether *name* is a step (and not a lifecycle state)."""
        return name in self._by_name

    def outgoing(self, name: str) -> tuple[EdgeSpec, ...]:
        """The edges leaving step *name*, in the order they are tried."""
        return self._outgoing.get(name, ())

    @property
    def side_steps(self) -> frozenset[str]:
        """The steps reached by reminder edges: they run beside a wait, never as the instance's step."""
        return self._side_steps

    def is_side_step(self, name: str) -> bool:
        """Whether step *name* runs beside a wait, reached by a reminder edge."""
        return name in self._side_steps

    def reminders(self, name: str) -> tuple[EdgeSpec, ...]:
        """The reminder edges of waiting step *name*, in declaration order."""
        return tuple(e for e in self.outgoing(name) if e.is_reminder)

    @property
    def has_subflows(self) -> bool:
        """Whether any step starts a child workflow."""
        return self._has_subflows

    @property
    def has_forks(self) -> bool:
        """Whether any step forks into parallel branches."""
        return bool(self.forks)

    def fork(self, name: str) -> ForkSpec | None:
        """The fork that step *name* starts, if it is a fork step."""
        return self._fork_of.get(name)

    def branch_of(self, name: str) -> tuple[ForkSpec, RegionSpec] | None:
        """The innermost fork and branch that step *name* belongs to, or ``None`` outside every fork."""
        return self._branch_of.get(name)


def _depth(fork: ForkSpec, forks: tuple[ForkSpec, ...]) -> int:
    by_step = {f.step: f for f in forks}
    depth = 0
    parent = fork.parent
    while parent is not None and depth <= len(forks):
        depth += 1
        outer = by_step.get(parent[0])
        parent = outer.parent if outer is not None else None
    return depth


def _type_label(tp: object) -> str:
    # By name only, not module: the same definition imported as __main__ in one
    # process and as a package module in another must have one fingerprint.
    args = typing.get_args(tp)
    origin = typing.get_origin(tp)
    if origin is not None and args:
        return f"{_type_label(origin)}[{', '.join(_type_label(a) for a in args)}]"
    if isinstance(tp, type):
        return tp.__qualname__
    return repr(tp)


def _fingerprint(spec: WorkflowSpec) -> str:
    parts: list[str] = [spec.name, spec.version]
    parts += [f"field {f.name}: {_type_label(f.type)}" for f in spec.fields]
    parts += [
        f"step {s.name} {s.kind.value} initial={s.initial} final={s.final} "
        f"undo={s.compensation.name if s.compensation else None} payload={_type_label(s.payload_type)}"
        + (" undo-attempted" if s.compensation is not None and s.compensation.attempted else "")
        + (" fork" if s.fork else "")
        + (f" child={s.child.__qualname__}" if s.child is not None else "")
        + (f" fan_out limit={s.fan.limit} tolerate={s.fan.tolerate}" if s.fan is not None else "")
        + (f" outcome={s.outcome}" if s.outcome is not None else "")
        for s in spec.steps
    ]
    parts += [
        f"edge {e.source}->{e.dest} guard={e.guard_name} "
        f"on_error={[t.__name__ for t in e.on_error]} back={e.back} timeout={e.timeout}"
        + (f" reminder={e.reminder} repeat={e.repeat}" if e.reminder is not None else "")
        + (" join" if e.join else "")
        for e in spec.edges
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
