"""Human tasks: who may complete them, and their lifecycle."""

from __future__ import annotations

import datetime as dt
import enum
import re
import typing
from collections.abc import Iterable

import attrs

from ._clock import utc_datetime

if typing.TYPE_CHECKING:
    from ._spec import TaskSpec

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class TaskStatus(enum.Enum):
    """
    The lifecycle of a human task.

    .. versionadded:: 0.1.0
    """

    OPEN = "open"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


@attrs.frozen
class Task:
    """
    A human task opened by a ``@human_task`` step.

    Attributes:
        id: The task id, given to ``Engine.complete_task``.
        instance_id: The instance waiting on it.
        workflow: The workflow class name.
        step: The human-task step.
        assignee: The user who may complete it (or ``None``).
        candidate_groups: Groups whose members may complete it.
        form_type: The type the completing form must be (``None``: no form).
        created_at: When it was opened (seconds since the epoch, engine clock).
        due_at: When it is due, if the step declared ``due=``.
        status: Open, completed or cancelled.
        completed_by: Who completed it.
        completed_at: When it was completed or cancelled.
        form: The form it was completed with.
        claimed_by: The user who claimed it (``Engine.claim_task``): while it is
            claimed, only they may complete it.

    The times are seconds since the epoch; :attr:`created_datetime`,
    :attr:`due_datetime` and :attr:`completed_datetime` give them as aware
    datetimes in UTC.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.1.0 ``claimed_by``.
    .. versionchanged:: 0.1.0 the ``*_datetime`` accessors.
    """

    id: str
    instance_id: str
    workflow: str
    step: str
    assignee: str | None
    candidate_groups: tuple[str, ...]
    form_type: type | None
    created_at: float
    due_at: float | None = None
    status: TaskStatus = TaskStatus.OPEN
    completed_by: str | None = None
    completed_at: float | None = None
    form: object | None = None
    claimed_by: str | None = None

    @property
    def created_datetime(self) -> dt.datetime:
        """:attr:`created_at` as an aware datetime in UTC."""
        return utc_datetime(self.created_at)

    @property
    def due_datetime(self) -> dt.datetime | None:
        """:attr:`due_at` as an aware datetime in UTC, or ``None`` when the task has no due date."""
        return utc_datetime(self.due_at)

    @property
    def completed_datetime(self) -> dt.datetime | None:
        """:attr:`completed_at` as an aware datetime in UTC, or ``None`` while the task is open."""
        return utc_datetime(self.completed_at)

    def may_complete(self, user: str, groups: Iterable[str] = ()) -> bool:
        """
        Whether *user*, member of *groups*, may complete this task.

        The assignee may; so may any member of a candidate group; but once the
        task is claimed, only its claimant may.
        """
        if self.claimed_by is not None:
            return user == self.claimed_by
        return self.may_claim(user, groups)

    def may_claim(self, user: str, groups: Iterable[str] = ()) -> bool:
        """
        Whether *user*, member of *groups*, is one the task is for: its assignee or in a candidate group.

        Who it is for may claim it while nobody has (claiming it again is no change).

        .. versionadded:: 0.1.0
        """
        if self.assignee is not None and user == self.assignee:
            return True
        return not set(self.candidate_groups).isdisjoint(groups)


@attrs.frozen
class TaskClaim:
    """
    A claim (or its release) of an open task, as ``Store.add_command(claim=...)`` writes it.

    Attributes:
        task_id: The task.
        user: Who claims it, or who gives their claim back.
        claim: ``True`` to claim it (nobody holds it now), ``False`` to give it back
            (*user* holds it now).

    .. versionadded:: 0.1.0
    """

    task_id: str
    user: str
    claim: bool

    @property
    def before(self) -> str | None:
        """The claimant the task must have for the change to apply."""
        return None if self.claim else self.user

    @property
    def after(self) -> str | None:
        """The claimant the task has after the change."""
        return self.user if self.claim else None


@attrs.frozen
class TaskReassignment:
    """
    A new assignee and candidate groups for an open task, as ``Store.add_command(reassign=...)`` writes them.

    The row changes only while its claimant is still :attr:`claimant` (the one the
    caller saw); the change gives any claim back: the task is for its new people.

    Attributes:
        task_id: The task.
        by: Who made the change (the delegating user, or the operator).
        assignee: The new assignee (``None``: none).
        candidate_groups: The new candidate groups.
        claimant: The claimant the task must have now (``None``: unclaimed).
        delegated: Whether one the task was for handed it on (``Engine.delegate_task``),
            rather than an operator reassigning it.

    .. versionadded:: 0.1.0
    """

    task_id: str
    by: str
    assignee: str | None
    candidate_groups: tuple[str, ...]
    claimant: str | None
    delegated: bool = False

    def applied_to(self, task: Task) -> Task:
        """*task* with its new people, and no claimant."""
        return attrs.evolve(task, assignee=self.assignee, candidate_groups=self.candidate_groups, claimed_by=None)


def people(assignee: str | None, groups: tuple[str, ...]) -> str:
    """Who a task is for, as the history says it: ``ann``, ``ann, group sales``, ``groups sales, ops``."""
    parts = [assignee] if assignee is not None else []
    if groups:
        parts.append(("group " if len(groups) == 1 else "groups ") + ", ".join(groups))
    return ", ".join(parts) or "nobody"


def task_people(spec: TaskSpec, workflow: object) -> tuple[str | None, tuple[str, ...]]:
    """
    Who a task opened now is for: its declared assignee and groups, or those its callables compute.

    Raises:
        TypeError: A callable returned something else than a name (or ``None``) / group names.
        ValueError: A name is empty or holds a control character, or nobody is left.
        Exception: Whatever a callable raised.
    """
    assignee = spec.assignee
    groups = spec.candidate_groups
    if spec.assignee_of is not None:
        value = spec.assignee_of(workflow)
        assignee = None if value is None else check_name(value, f"the assignee {spec.assignee_name}() returned")
    if spec.groups_of is not None:
        groups = group_names(typing.cast("Iterable[str]", spec.groups_of(workflow)))
        for group in groups:
            check_name(group, f"the candidate groups {spec.groups_name}() returned")
    if assignee is None and not groups:
        msg = "no assignee and no candidate group: nobody could complete it"
        raise ValueError(msg)
    return assignee, groups


def check_name(value: object, what: str, meaning: str = "a name") -> str:
    """
    *value* as a user or group name: a non-empty ``str`` without control characters.

    *what* names it in errors (``assignee=``), *meaning* says what it names.

    Raises:
        TypeError: It is not a ``str``.
        ValueError: It is empty or holds a control character.
    """
    if not isinstance(value, str):
        msg = f"{what} must be {meaning}, a str; got {value!r} ({type(value).__name__})"
        raise TypeError(msg)
    if not value or _CONTROL.search(value) is not None:
        msg = f"{what} must be a non-empty name without control characters (newlines...); got {value!r}"
        raise ValueError(msg)
    return value


def check_user(user: object) -> str:
    """
    *user* as given to ``complete_task``: a user name.

    It is recorded in the task and in the history, so it must be a non-empty text
    that cannot forge a line of its own there.

    Raises:
        TypeError: *user* is not a ``str`` (``None`` included).
        ValueError: It is empty or holds a control character (a newline...).
    """
    return check_name(user, "user=", "the name of who completes the task")


def group_names(groups: Iterable[str]) -> tuple[str, ...]:
    """
    *groups* as given to ``complete_task`` or ``tasks``: group names.

    One group given as a plain string is that group, not its letters.

    Raises:
        TypeError: *groups* is not an iterable of ``str`` (``bytes`` included).
    """
    if isinstance(groups, str):
        return (groups,)
    if isinstance(groups, (bytes, bytearray, memoryview)):
        msg = f"groups= must be group names (str), not {type(groups).__name__}: got {groups!r}"
        raise TypeError(msg)
    try:
        names = tuple(typing.cast("Iterable[object]", groups))  # a caller's value, of any type
    except TypeError:
        msg = f"groups= must be an iterable of group names (str); got {groups!r} ({type(groups).__name__})"
        raise TypeError(msg) from None
    for name in names:
        if not isinstance(name, str):
            msg = f"groups= must hold group names (str); got {name!r} ({type(name).__name__}) in {groups!r}"
            raise TypeError(msg)
    return typing.cast("tuple[str, ...]", names)
