"""
Every exception the library raises.

The tree::

    OrchError
    ├── WorkflowDefinitionError (also TypeError)   a workflow class is misdeclared
    ├── WorkflowInputError (also TypeError)        bad variables given to start()
    ├── VariableTypeError (also TypeError)         a step left a variable of the wrong type
    ├── GuardError (also TypeError)                a guard returned a non-bool
    ├── NoEdgeEnabled                              a step finished and no edge could be taken
    ├── NonRetryableError                          raise it in a step: no retry
    │   └── ServiceNotFound (also LookupError)     ctx.call() to an unknown service/operation
    ├── InstanceNotFound (also LookupError)        no instance with that id
    ├── InstanceStateError                         wrong state for the operation
    │   └── InstanceFinished                       the instance is already terminal
    ├── WorkflowFailed                             result() of an instance that did not complete
    ├── SignalTypeError (also TypeError)           signal() with a message no step waits for
    ├── UnknownWorkflowVersion (also LookupError)  a stored instance's version has no class
    ├── MigrationError                             migrate() cannot move this instance
    ├── ScheduleError (also ValueError)            a Schedule declared with an unusable argument
    ├── QueryError                                 query() found no such query, or the query raised
    ├── StoreError                                 the store cannot be used or a commit failed
    │   └── RecordLoadError                        a stored value does not match its declared type
    └── TaskError
        ├── TaskNotFound (also LookupError)
        ├── TaskNotAuthorized                      user is neither assignee nor in a group
        │   └── TaskClaimed                        another user claimed the task
        ├── TaskAlreadyCompleted                   a task completes once
        └── TaskFormError (also TypeError)         the form is not the declared type
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._status import InstanceStatus


class OrchError(Exception):
    """
    Base of every exception raised by statemachine-orch.

    .. versionadded:: 0.1.0
    """


@attrs.frozen
class DefinitionProblem:
    """
    One broken rule in a workflow class.

    Attributes:
        workflow: The class name.
        step: The step (or field) the problem is about, or ``None`` for the whole class.
        rule: A short, stable identifier of the rule (``"no-initial-step"``, ...).
        message: The human-readable explanation.

    .. versionadded:: 0.1.0
    """

    workflow: str
    step: str | None
    rule: str
    message: str

    def __str__(self) -> str:
        """Render as ``Class.step: message [rule]``."""
        where = self.workflow if self.step is None else f"{self.workflow}.{self.step}"
        return f"{where}: {self.message} [{self.rule}]"


class WorkflowDefinitionError(OrchError, TypeError):
    """
    A workflow class breaks one or more rules of the DSL.

    Raised when the class statement executes, listing *every* problem at once.

    Attributes:
        workflow: The name of the class.
        problems: Each broken rule, with the step it is about.

    .. versionadded:: 0.1.0
    """

    def __init__(self, workflow: str, problems: Sequence[DefinitionProblem]) -> None:
        self.workflow = workflow
        self.problems: tuple[DefinitionProblem, ...] = tuple(problems)
        if len(self.problems) == 1:
            head = f"{workflow} is invalid: "
            msg = head + str(self.problems[0])
        else:
            reasons = "\n".join(f"  - {p}" for p in self.problems)
            msg = f"{workflow} is invalid for {len(self.problems)} reasons:\n{reasons}"
        super().__init__(msg)


class WorkflowInputError(OrchError, TypeError):
    """
    The variables given to start an instance do not match the declared field types.

    Attributes:
        workflow: The class name.
        field_path: The offending field, dotted for nested values (``"items[2].qty"``).

    .. versionadded:: 0.1.0
    """

    def __init__(self, workflow: str, field_path: str, message: str) -> None:
        self.workflow = workflow
        self.field_path = field_path
        super().__init__(f"{workflow}.{field_path}: {message}")


class VariableTypeError(OrchError, TypeError):
    """
    A step (or a compensation) left a variable whose value does not match its declared type.

    It is that attempt's failure: retried, routed by ``on_error`` or compensated
    like any other. The variables are put back to what they were before the
    attempt, so the instance can still be stored and loaded.

    Attributes:
        workflow: The class name.
        field_path: The offending field, with the path inside it (``"items[2].qty"``).

    .. versionadded:: 0.1.0
    """

    def __init__(self, workflow: str, field_path: str, message: str) -> None:
        self.workflow = workflow
        self.field_path = field_path
        super().__init__(f"{workflow}.{field_path}: {message}")


class NonRetryableError(OrchError):
    """
    Raise this (or a subclass) from a step to fail it at once, whatever its retry policy.

    .. versionadded:: 0.1.0
    """


class GuardError(OrchError, TypeError):
    """
    A guard returned something that is not a ``bool``.

    .. versionadded:: 0.1.0
    """


class NoEdgeEnabled(OrchError):
    """
    A step finished but none of its outgoing edges could be taken (no guard held, no default).

    Attributes:
        workflow: The class name.
        step: The step that finished.

    .. versionadded:: 0.1.0
    """

    def __init__(self, workflow: str, step: str) -> None:
        self.workflow = workflow
        self.step = step
        msg = f"{workflow}.{step}: no outgoing edge could be taken (no guard held and there is no default edge)"
        super().__init__(msg)


class ServiceNotFound(NonRetryableError, LookupError):
    """
    ``ctx.call()`` named a service or an operation that is not registered.

    .. versionadded:: 0.1.0
    """


class InstanceNotFound(OrchError, LookupError):
    """
    No instance has this id.

    Attributes:
        instance_id: The id that was asked for.

    .. versionadded:: 0.1.0
    """

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        super().__init__(f"no workflow instance with id {instance_id!r}")


class InstanceStateError(OrchError):
    """
    The instance is not in a state where this operation makes sense.

    Attributes:
        instance_id: The instance.
        status: Its status.

    .. versionadded:: 0.1.0
    """

    def __init__(self, instance_id: str, status: InstanceStatus, message: str) -> None:
        self.instance_id = instance_id
        self.status = status
        super().__init__(f"instance {instance_id} {message}")


class InstanceFinished(InstanceStateError):
    """
    The operation needs a running or waiting instance, but this one is terminal.

    Attributes:
        instance_id: The instance.
        status: Its terminal status.

    .. versionadded:: 0.1.0
    """

    def __init__(self, instance_id: str, status: InstanceStatus, operation: str) -> None:
        super().__init__(instance_id, status, f"is already {status.value}: cannot {operation}")


class WorkflowFailed(OrchError):
    """
    Raised by ``Handle.result()`` when the instance ended in any status but ``completed``.

    Its ``__cause__`` is :attr:`error`, so a traceback shows the step's exception too.

    Attributes:
        instance_id: The instance.
        status: How it ended (``failed``, ``cancelled`` or ``compensation_failed``).
        reason: The error or cancellation reason recorded for it.
        outcome: How it ended in the workflow's own words: ``failed``, ``cancelled``,
            or the outcome of the ``@failure_end`` it reached (``rejected``...).
        step: The step that failed, or the failure end it reached (``None``: cancelled).
        error: The exception of the step that failed (the same class, ``args`` and
            attributes, built again from the store), or ``None``.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.1.0 ``outcome``, ``step`` and ``error``.
    """

    def __init__(
        self,
        instance_id: str,
        status: InstanceStatus,
        reason: str | None,
        *,
        outcome: str | None = None,
        step: str | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.status = status
        self.reason = reason
        self.outcome = outcome if outcome is not None else status.value
        self.step = step
        self.error = error
        ended = status.value if self.outcome == status.value else f"{status.value} ({self.outcome})"
        msg = f"instance {instance_id} ended {ended}: {reason}"
        super().__init__(msg)
        self.__cause__ = error


class ChildWorkflowFailed(OrchError):
    """
    The failure of a ``@subflow`` step whose child instance did not complete.

    Route it with ``on_error=ChildWorkflowFailed``; otherwise the parent fails and
    compensates.

    Attributes:
        child_id: The child instance.
        status: How the child ended (``failed``, ``cancelled`` or ``compensation_failed``).
        reason: The child's error.

    .. versionadded:: 0.1.0
    """

    def __init__(self, child_id: str, status: InstanceStatus, reason: str | None) -> None:
        self.child_id = child_id
        self.status = status
        self.reason = reason
        super().__init__(f"child {child_id} ended {status.value}: {reason}")


class TaskError(OrchError):
    """
    Base of the errors of ``complete_task``; nothing was changed when one is raised.

    Attributes:
        task_id: The task.

    .. versionadded:: 0.1.0
    """

    def __init__(self, task_id: str, message: str) -> None:
        self.task_id = task_id
        super().__init__(f"task {task_id}: {message}")


class TaskNotFound(TaskError, LookupError):
    """
    No task has this id.

    .. versionadded:: 0.1.0
    """


class TaskNotAuthorized(TaskError):
    """
    The user is neither the task's assignee nor a member of one of its candidate groups.

    Attributes:
        user: Who tried.

    .. versionadded:: 0.1.0
    """

    def __init__(self, task_id: str, user: str, message: str) -> None:
        self.user = user
        super().__init__(task_id, message)


class TaskClaimed(TaskNotAuthorized):
    """
    The task is claimed by another user (or, to give a claim back, not claimed by this one).

    While a task is claimed only its claimant may complete it or give it back.

    Attributes:
        user: Who tried.
        claimant: Who holds the claim (``None``: nobody does).

    .. versionadded:: 0.1.0
    """

    def __init__(self, task_id: str, user: str, claimant: str | None, message: str | None = None) -> None:
        self.claimant = claimant
        if message is None:
            held = f"claimed by {claimant!r}" if claimant is not None else "not claimed"
            message = f"is {held}: only its claimant may complete it or give it back; {user!r} may not"
        super().__init__(task_id, user, message)


class TaskAlreadyCompleted(TaskError):
    """
    The task is no longer open (completed once already, or cancelled).

    .. versionadded:: 0.1.0
    """


class TaskFormError(TaskError, TypeError):
    """
    The form given to ``complete_task`` is not an instance of the task's declared form type.

    Also raised when a field of the form does not hold its declared type (or cannot
    be stored as JSON).

    Attributes:
        field_path: The offending field of the form (``"Approval.amount"``), if one.

    .. versionadded:: 0.1.0
    """

    def __init__(self, task_id: str, message: str, *, field_path: str | None = None) -> None:
        self.field_path = field_path
        super().__init__(task_id, message)


class SignalTypeError(OrchError, TypeError):
    """
    ``Engine.signal`` was given a message that no ``@wait_for`` step of the workflow accepts.

    Either its class is not one a step waits for, or a field of it does not hold
    its declared type (or cannot be stored as JSON); nothing was stored.

    Attributes:
        instance_id: The instance.
        field_path: The offending field of the message (``"Paid.amount"``), if one.

    .. versionadded:: 0.1.0
    """

    def __init__(self, instance_id: str, message: str, *, field_path: str | None = None) -> None:
        self.instance_id = instance_id
        self.field_path = field_path
        super().__init__(f"instance {instance_id}: {message}")


class UnknownWorkflowVersion(OrchError, LookupError):
    """
    A stored instance runs a workflow version whose class is not registered in this process.

    Register the class (import it, or pass it in ``Engine(workflows=[...])``) to run it.

    Attributes:
        instance_id: The instance.
        workflow: The stored workflow name.
        version: The stored version.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self, instance_id: str, workflow: str, version: str, known: list[str], *, changed: bool = False
    ) -> None:
        self.instance_id = instance_id
        self.workflow = workflow
        self.version = version
        have = ", ".join(known) or "none"
        if changed:
            msg = (
                f"instance {instance_id} was started on another definition of {workflow} version {version}: "
                "the registered class of that version has other fields, steps or edges. Give the new "
                "definition a new version= and keep the old class registered to finish old instances"
            )
        else:
            msg = (
                f"instance {instance_id} runs {workflow} version {version}, which has no registered "
                f"class (registered versions: {have}); import that class or pass it to Engine(workflows=...)"
            )
        super().__init__(msg)


class MigrationError(OrchError):
    """
    ``Engine.migrate`` cannot move this instance (no migration declared, busy, bad result).

    Attributes:
        instance_id: The instance.

    .. versionadded:: 0.1.0
    """

    def __init__(self, instance_id: str, message: str) -> None:
        self.instance_id = instance_id
        super().__init__(f"instance {instance_id}: {message}")


class StoreError(OrchError):
    """
    The store cannot be used (locked, read-only, corrupt, newer schema) or a commit failed.

    Nothing of a failed commit is written.

    Attributes:
        path: The store's location, when it has one.

    .. versionadded:: 0.1.0
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class RecordLoadError(StoreError):
    """
    A stored record cannot be read back: a value in it does not match its declared type.

    Written by hand, by older code or by a bug; the engine quarantines the instance
    (``InstanceInfo.quarantined``) and goes on with the others.

    Attributes:
        instance_id: The instance the record belongs to, when known.
        what: What could not be read (``"a stored Parcel"``).
        field_path: The offending field, with the path inside it (``"Parcel.count"``).
        detail: What is wrong with it (``"expected int but got None (type=NoneType)"``).

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        what: str,
        field_path: str,
        detail: str,
        *,
        instance_id: str | None = None,
        path: str | None = None,
    ) -> None:
        self.what = what
        self.field_path = field_path
        self.detail = detail
        self.instance_id = instance_id
        where = f"instance {instance_id}: " if instance_id is not None else ""
        at = f"{field_path}: " if field_path else ""
        super().__init__(f"{where}cannot load {what}: {at}{detail}", path)

    def of_instance(self, instance_id: str, what: str | None = None) -> RecordLoadError:
        """The same error, naming the instance (and, with *what*, what was read)."""
        if self.instance_id == instance_id and what is None:
            return self
        return RecordLoadError(what or self.what, self.field_path, self.detail, instance_id=instance_id, path=self.path)


class LeaseLost(StoreError):
    """
    This worker's lease on an instance was taken over; its commit wrote nothing.

    Another worker claimed the instance (this one was paused, partitioned or slow
    past the lease's expiry) and drives it now from what the store holds. The
    engine drops its copy and logs ``lease_lost``.

    Attributes:
        instance_ids: The instances whose fence did not match.

    .. versionadded:: 0.1.0
    """

    def __init__(self, instance_ids: Sequence[str], path: str | None = None) -> None:
        self.instance_ids = tuple(instance_ids)
        names = ", ".join(self.instance_ids)
        super().__init__(f"lease lost on {names}: another worker claimed it; nothing was written", path)


class InstanceExists(OrchError):
    """
    An instance with this id exists already; the start wrote nothing.

    ``Engine.start(..., instance_id=...)`` and ``Client.start`` catch it and return
    the existing instance (a start with a given id is idempotent); it reaches a
    caller only when the existing instance runs another workflow.

    Attributes:
        instance_id: The id.

    .. versionadded:: 0.1.0
    """

    def __init__(self, instance_id: str, message: str = "an instance with this id exists already") -> None:
        self.instance_id = instance_id
        super().__init__(f"instance {instance_id}: {message}")


class ScheduleError(OrchError, ValueError):
    """
    A :class:`Schedule` was declared with an argument it cannot use (a cron expression that does not parse...).

    Attributes:
        schedule_id: The schedule's id.
        argument: The argument that is wrong (``"cron"``, ``"every"``, ``"start"``...).

    .. versionadded:: 0.1.0
    """

    def __init__(self, schedule_id: str, argument: str, message: str) -> None:
        self.schedule_id = schedule_id
        self.argument = argument
        super().__init__(f"Schedule {schedule_id!r}: {message}")


class QueryError(OrchError):
    """
    A query could not be answered: the instance's workflow has no such query, or the query raised or changed a variable.

    Attributes:
        instance_id: The instance queried.
        query: The query's name.

    .. versionadded:: 0.1.0
    """

    def __init__(self, instance_id: str, query: str, message: str) -> None:
        self.instance_id = instance_id
        self.query = query
        super().__init__(f"instance {instance_id}: query {query}: {message}")
