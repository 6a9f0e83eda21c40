"""Human tasks: who may complete them, and their lifecycle."""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs


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

    .. versionadded:: 0.1.0
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

    def may_complete(self, user: str, groups: Iterable[str] = ()) -> bool:
        """
        Whether *user*, member of *groups*, may complete this task.

        The assignee may; so may any member of a candidate group.
        """
        if self.assignee is not None and user == self.assignee:
            return True
        return not set(self.candidate_groups).isdisjoint(groups)
