"""
The engine's public API for callers.

Looking at instances (info, instances, history, progress, tasks,
statistics, children, tree), changing them (complete_task, signal, cancel,
retry_compensation, migrate: each a command to the instance's driver) and
waiting for them (the ``wait_*`` methods).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar

import attrs

from ._clock import VirtualClock
from ._driver_forks import DriverForks
from ._engine_core import K, migration_for
from ._errors import (
    InstanceExists,
    InstanceFinished,
    InstanceNotFound,
    MigrationError,
    StoreError,
    TaskAlreadyCompleted,
    TaskClaimed,
    TaskFormError,
    TaskNotAuthorized,
    TaskNotFound,
)
from ._failure import Failure, failure_of
from ._handle import EngineStatistics, Handle
from ._history import HistoryEvent, new_event
from ._instance import InstanceInfo, InstanceRecord, active_steps
from ._message_types import accepted_type, type_name
from ._progress import Progress, progress_of
from ._query import Query, ask
from ._spec import (
    COMPENSATION_FAILED,
)
from ._status import InstanceStatus
from ._tasks import Task, TaskClaim, TaskReassignment, TaskStatus, check_name, check_user, group_names
from ._validate import value_mismatch
from ._workflow import Workflow, spec_of

P = ParamSpec("P")
R = TypeVar("R")


def _groups(groups: Iterable[str]) -> tuple[str, ...]:
    # One group given as a plain string is that group, not its letters; bytes are no groups.
    return group_names(groups)


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


def _not_for(task: Task, user: str, groups: tuple[str, ...], doing: str) -> TaskNotAuthorized:
    """The refusal of a user the task is not for (neither its assignee nor in a candidate group)."""
    allowed: list[str] = []
    if task.assignee is not None:
        allowed.append(f"assignee {task.assignee!r}")
    if task.candidate_groups:
        allowed.append(f"members of {', '.join(task.candidate_groups)}")
    msg = f"user {user!r} (groups: {', '.join(groups) or 'none'}) may not {doing} it; only {' or '.join(allowed)} may"
    return TaskNotAuthorized(task.id, user, msg)


class ClientApi(DriverForks):
    """The engine's public API for callers (see :class:`Engine`)."""

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

    def quarantined(self) -> dict[str, tuple[float, str]]:
        """
        The instances this engine quarantined: id -> (when, on its clock; why).

        A record this engine cannot load (a value of the wrong type, an unknown
        version) is set aside in this process's memory, not written: another
        worker, or this one once restarted with the class fixed, may load it.
        ``orch alerts`` and :class:`~statemachine_orch.alerts.AlertWatcher`
        report them.

        .. versionadded:: 0.1.0
        """
        return dict(self._quarantine)

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

    def query(self, instance_id: str, query: Query[Any, P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """
        Ask an instance a ``@query`` of its workflow: the answer from its current variables.

        The query of that name on the instance's own class (its version's) runs on
        a copy of the variables the engine holds now (what :meth:`workflow` returns);
        any engine on the store may ask, a client included.

        Args:
            instance_id: The instance.
            query: The query as declared on the workflow class (``Order.total``).
            args: Its arguments.
            kwargs: Its keyword arguments.

        Returns:
            What the query returns.

        Raises:
            InstanceNotFound: No instance has this id.
            QueryError: Its workflow declares no such query, or the query raised (the
                exception is chained) or assigned a variable.
            UnknownWorkflowVersion: Its workflow version has no registered class here.
            StoreError: The store cannot be read, or the record cannot be loaded.

        .. versionadded:: 0.1.0
        """
        return ask(self._peek(instance_id), query, *args, **kwargs)

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
            events.append(new_event(HistoryEvent, (at, K.INSTANCE_QUARANTINED, None, 0, why)))
        return events

    def failure(self, instance_id: str) -> Failure | None:
        """
        How and why the instance did not complete: its outcome, the step, the reason and the exception.

        ``None`` while it runs normally, and for a completed instance. The
        exception is built again from the store (same class, ``args`` and
        attributes), so it is there after a restart and in another process.

        Raises:
            InstanceNotFound: No instance has this id.
            StoreError: The instance's record cannot be loaded.

        .. versionadded:: 0.1.0
        """
        rec = self._peek(instance_id)
        return failure_of(rec.failure, rec.error)

    def progress(self, instance_id: str) -> Progress:
        """
        How far the instance is: steps done, the current step, and the fewest steps left.

        Raises:
            InstanceNotFound: No instance has this id.
        """
        return progress_of(self._peek(instance_id), self.history(instance_id))

    def tasks(
        self,
        user: str | None = None,
        groups: Iterable[str] = (),
        *,
        instance_id: str | None = None,
        due_before: float | None = None,
        limit: int | None = None,
    ) -> list[Task]:
        """
        Open human tasks, oldest first; with *user*, only those that user (member of *groups*) may complete.

        A task claimed by someone is only its claimant's.

        Args:
            user: Filter to tasks this user may complete.
            groups: The user's groups (the caller vouches for them).
            instance_id: Filter to this instance's tasks.
            due_before: Filter to tasks due at or before this time (the engine clock's seconds): overdue ones.
            limit: At most this many.

        Raises:
            ValueError: *limit* is negative.

        .. versionchanged:: 0.1.0 *due_before* and *limit*.
        """
        if limit is not None and (isinstance(limit, bool) or limit < 0):
            msg = f"limit= must be a number of tasks (an int >= 0) or None; got {limit!r}"
            raise ValueError(msg)
        if due_before is None and limit is None:
            return self.store.open_tasks(user, frozenset(_groups(groups)), instance_id)
        return self.store.open_tasks(user, frozenset(_groups(groups)), instance_id, due_before=due_before, limit=limit)

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
            if task.claimed_by is not None and task.may_claim(user, group_list):
                raise TaskClaimed(task_id, user, task.claimed_by)
            raise _not_for(task, user, group_list, "complete")
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

    async def claim_task(self, task_id: str, *, user: str, groups: Iterable[str] = ()) -> Task:
        """
        Claim an open task for *user*: from now on only they may complete it, until they unclaim it.

        Those the task is for may claim it: its assignee and the members of its
        candidate groups. Claiming a task one holds already changes nothing. The
        claim is in the instance's history (``task_claimed``).

        Args:
            task_id: The task.
            user: Who claims it.
            groups: The user's groups (the caller vouches for them).

        Returns:
            The task, claimed by *user*.

        Raises:
            TaskNotFound: No such task.
            TaskAlreadyCompleted: It is no longer open.
            TaskClaimed: Another user holds it.
            TaskNotAuthorized: *user* is not the assignee and in no candidate group.
            TypeError: *user* is not a ``str``, or *groups* is not an iterable of ``str``.
            ValueError: *user* is empty or holds a control character.
            StoreError: The claim could not be written (nothing changed).

        .. versionadded:: 0.1.0
        """
        task = self._claimable(task_id, user, groups, claim=True)
        if task.claimed_by == user:
            return task
        return await self._change_claim(task, TaskClaim(task.id, user, claim=True))

    async def unclaim_task(self, task_id: str, *, user: str, groups: Iterable[str] = ()) -> Task:
        """
        Give back the claim *user* holds on an open task: all it is for may complete it again.

        Unclaiming a task nobody holds changes nothing (for one it is for). The
        release is in the instance's history (``task_unclaimed``).

        Args:
            task_id: The task.
            user: Its claimant.
            groups: The user's groups (the caller vouches for them).

        Returns:
            The task, claimed by nobody.

        Raises:
            TaskNotFound: No such task.
            TaskAlreadyCompleted: It is no longer open.
            TaskClaimed: Another user holds it.
            TaskNotAuthorized: Nobody holds it and *user* is not one it is for.
            TypeError: *user* is not a ``str``, or *groups* is not an iterable of ``str``.
            ValueError: *user* is empty or holds a control character.
            StoreError: The release could not be written (nothing changed).

        .. versionadded:: 0.1.0
        """
        task = self._claimable(task_id, user, groups, claim=False)
        if task.claimed_by is None:
            return task
        return await self._change_claim(task, TaskClaim(task.id, user, claim=False))

    def _claimable(self, task_id: str, user: str, groups: Iterable[str], *, claim: bool) -> Task:
        """The open task *user* may claim (or give back), as the store has it now; else the typed refusal."""
        check_user(user)
        group_list = _groups(groups)
        task = self.store.task(task_id)
        if task is None:
            raise TaskNotFound(task_id, "no such task")
        if task.status is not TaskStatus.OPEN:
            by = f" by {task.completed_by!r}" if task.completed_by else ""
            raise TaskAlreadyCompleted(task_id, f"is already {task.status.value}{by}; only an open task is claimed")
        if task.claimed_by == user:
            return task  # its claimant, even one no longer in its groups
        if not task.may_claim(user, group_list):
            raise _not_for(task, user, group_list, "claim" if claim else "unclaim")
        if task.claimed_by is not None:
            raise TaskClaimed(task_id, user, task.claimed_by)
        return task

    async def _change_claim(self, task: Task, change: TaskClaim) -> Task:
        """Write a claim (or its release) with its history entry, through the instance's driver."""
        self._peek(task.instance_id)  # an instance of an unregistered version fails here, plainly
        changed = attrs.evolve(task, claimed_by=change.after)
        if self._leasing:
            # The task row and the command in one transaction: a claim racing another,
            # or a completion, from any process, finds the row changed and is refused.
            body = {"task": task.id, "user": change.user, "claim": change.claim}
            await self._command(task.instance_id, "claim_task", body, self._claim_apply(task, change), claim=change)
            return changed
        await self._submit(task.instance_id, self._claim_apply(task, change, write=True))
        return changed

    async def reassign_task(
        self, task_id: str, *, assignee: str | None = None, candidate_groups: Iterable[str] = (), by: str = "operator"
    ) -> Task:
        """
        Give an open task to other people: its new assignee and candidate groups (an operator's change).

        Any claim on it is given back. The change is in the instance's history
        (``task_reassigned``: the task, who it was and is for, and *by*). From any
        process: with a shared store it is written as a command with the task's row.

        Args:
            task_id: The task.
            assignee: The new assignee (``None``: none).
            candidate_groups: The new candidate groups.
            by: Who makes the change, for the history.

        Returns:
            The task, with its new people.

        Raises:
            TaskNotFound: No such task.
            TaskAlreadyCompleted: It is no longer open (nothing changed).
            TaskClaimed: It was claimed (or its claim changed) since it was read (nothing changed).
            TypeError: A name is not a ``str``, or *candidate_groups* not names.
            ValueError: A name is empty or holds a control character, or nobody would be left.

        .. versionadded:: 0.1.0
        """
        check_name(by, "by=")
        if assignee is not None:
            check_name(assignee, "assignee=")
        groups = _groups(candidate_groups)
        for group in groups:
            check_name(group, "candidate_groups=")
        if assignee is None and not groups:
            msg = f"reassign_task({task_id!r}) needs assignee= or candidate_groups=: nobody could complete it"
            raise ValueError(msg)
        task = self._open_for_change(task_id, "reassigned")
        change = TaskReassignment(task.id, by, assignee, groups, task.claimed_by)
        return await self._change_people(task, change)

    async def delegate_task(self, task_id: str, *, user: str, groups: Iterable[str] = (), to: str) -> Task:
        """
        Hand an open task to another user: one it is for makes *to* its assignee.

        Who may complete it may delegate it (its assignee, a member of a candidate
        group, or its claimant); the candidate groups stay, any claim is given back.
        The delegation is in the instance's history (``task_delegated``).

        Args:
            task_id: The task.
            user: Who delegates it.
            groups: Their groups (the caller vouches for them).
            to: The user who becomes its assignee.

        Returns:
            The task, assigned to *to*.

        Raises:
            TaskNotFound: No such task.
            TaskAlreadyCompleted: It is no longer open (nothing changed).
            TaskNotAuthorized: *user* may not complete it.
            TaskClaimed: Another user holds its claim (nothing changed).
            TypeError: A name is not a ``str``.
            ValueError: A name is empty or holds a control character.

        .. versionadded:: 0.1.0
        """
        check_user(user)
        check_name(to, "to=")
        group_list = _groups(groups)
        task = self._open_for_change(task_id, "delegated")
        if not task.may_complete(user, group_list):
            if task.claimed_by is not None and task.may_claim(user, group_list):
                raise TaskClaimed(task_id, user, task.claimed_by)
            raise _not_for(task, user, group_list, "delegate")
        change = TaskReassignment(task.id, user, to, task.candidate_groups, task.claimed_by, delegated=True)
        return await self._change_people(task, change)

    def _open_for_change(self, task_id: str, done: str) -> Task:
        """The open task, as the store has it now; else TaskNotFound or TaskAlreadyCompleted."""
        task = self.store.task(task_id)
        if task is None:
            raise TaskNotFound(task_id, "no such task")
        if task.status is not TaskStatus.OPEN:
            raise TaskAlreadyCompleted(task_id, f"is already {task.status.value}; only an open task is {done}")
        return task

    async def _change_people(self, task: Task, change: TaskReassignment) -> Task:
        """Write a reassignment (or delegation) with its history entry, through the instance's driver."""
        self._peek(task.instance_id)  # an instance of an unregistered version fails here, plainly
        if self._leasing:
            # The task row and the command in one transaction, like a claim: a race with a
            # claim or a completion, from any process, finds the row changed and is refused.
            body = {
                "task": task.id,
                "by": change.by,
                "delegated": change.delegated,
                "from": task.assignee,
                "from_groups": list(task.candidate_groups),
                "claimant": change.claimant,
            }
            apply = self._reassign_apply(task, change)
            await self._command(task.instance_id, "reassign_task", body, apply, reassign=change)
            return change.applied_to(task)
        return await self._submit(task.instance_id, self._reassign_apply(task, change, write=True))

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
        declared = accepted_type(rec.spec, message, instance_id)
        # Filed under the declared type it matched, so every store decodes it as that type.
        if self._leasing:
            # With a wake-up for whichever worker holds (or next claims) the instance.
            self.store.add_command(instance_id, "wake", {}, signal=(type_name(declared), message))
            self._kick(instance_id)
            return
        self.store.add_signal(instance_id, type_name(declared), message)
        self._wake_for(rec, message)

    def _wake_for(self, rec: InstanceRecord, message: object) -> None:
        """Without leases: a message was kept for *rec*; run it now if it waits for one of that type."""
        waiting_here = any(
            (m := rec.spec.step(name).message) is not None and isinstance(message, m)
            for name in active_steps(rec.state)
        )
        if not waiting_here:
            return
        if rec.branches:
            self._resume(self._get(rec.id))
        elif rec.status is InstanceStatus.WAITING and rec.worker is None:
            self._enqueue(self._get(rec.id))

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
            applied, _ = await self._command(instance_id, "retry_compensation", {}, apply)
            if not applied:
                # A worker applies it: until then the instance still shows the old end.
                await self._command_taken(instance_id, "retry_compensation")
        else:
            await self._submit(instance_id, apply)
        return await self._wait_for(instance_id, terminal_only=True)

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
        migration_for(current, to)
        if current.worker is not None:
            # Refused at once rather than queued behind a step that may take long.
            raise MigrationError(instance_id, "is running a step now; migrate it while it waits")
        apply = self._migrate_apply(instance_id, to)
        if self._leasing and not self._drives:
            # A client: a worker (which knows the new version's class) applies it.
            target = spec_of(to)
            before = len(self.store.history(instance_id))  # before the command: a worker may take it at once
            self.store.add_command(instance_id, "migrate", {"workflow": target.name, "version": target.version})
            await self._command_taken(instance_id, "migrate")
            info = self.info(instance_id)
            if (info.workflow, info.version) != (target.name, target.version):
                why = [e.detail or "" for e in self.store.history(instance_id)[before:] if e.kind is K.COMMAND_REJECTED]
                detail = why[-1] if why else f"the worker that took it knows no {target.name} version {target.version}"
                raise MigrationError(instance_id, detail)
            return info
        if self._leasing:
            body = {"workflow": spec_of(to).name, "version": spec_of(to).version}
            applied, info = await self._command(instance_id, "migrate", body, apply, local_only=True)
            if not applied:
                raise MigrationError(instance_id, "is running a step in another worker now; migrate it while it waits")
            result: InstanceInfo = info
            return result
        return await self._submit(instance_id, apply)

    async def _command_taken(self, instance_id: str, kind: str) -> None:
        """Wait until no *kind* command waits for the instance any more: a worker applied (or refused) it."""
        # Another process takes it: only the store can tell, so look at it now and then.
        while any(c.kind == kind for c in self.store.commands(instance_id)):  # noqa: ASYNC110
            await asyncio.sleep(max(self.poll, 0.02))

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
        Wait until the instance is terminal (or, with ``terminal=False``, settled as :meth:`Handle.wait_idle` says).

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

    async def _wait_for(self, instance_id: str, *, terminal_only: bool) -> InstanceStatus:
        if not terminal_only:
            return await self._wait_settled(instance_id)
        return (await self._wait_record(instance_id, terminal_only=True))[0]

    async def _wait_settled(self, instance_id: str) -> InstanceStatus:
        """Wait until nothing more happens to the instance, nor to its children, unless a caller or the clock acts."""
        loop = asyncio.get_running_loop()
        while True:
            status = self._settled(instance_id)
            if status is not None:
                return status
            # Any turn may settle it (a child's, or its own parking in a backoff); another
            # process's turns are not heard here, so a leasing engine looks again now and then.
            fut: asyncio.Future[None] = loop.create_future()
            self._turn_waiters.append(fut)
            try:
                await asyncio.wait({fut}, timeout=max(self.poll, 0.02) if self._leasing else None)
            finally:
                fut.cancel()

    def _settled(self, instance_id: str) -> InstanceStatus | None:
        """
        The instance's status once it settled, else ``None``.

        Settled: ended; or waiting, and each of its children that has not ended settled
        too; or parked on a retry's backoff that only a test can move the clock past
        (a ``VirtualClock`` that does not jump).
        """
        rec = self._live.get(instance_id)
        if rec is not None and rec.worker is not None:
            return None
        if instance_id in self._queued_ids or instance_id in self._inbox:
            return None
        info = self.info(instance_id)
        status = info.status
        if status.is_terminal:
            return status
        if status is InstanceStatus.WAITING:
            children = self.children(instance_id)
            ok = all(c.status.is_terminal or self._settled(c.id) is not None for c in children)
            return status if ok else None
        clock = self.clock
        manual = isinstance(clock, VirtualClock) and not clock.autojump
        return status if manual and info.wake_at is not None and info.wake_at > clock.now() else None

    async def _wait_record(self, instance_id: str, *, terminal_only: bool) -> tuple[InstanceStatus, Any]:
        """Wait as :meth:`_wait_for`; also return the workflow object, when the turn that ended had it."""
        info = self.info(instance_id)
        rec = self._live.get(instance_id)
        # A turn in progress may have ended the instance in memory only: wait for its commit.
        running = rec is not None and rec.worker is not None
        if not running and (info.status.is_terminal or (not terminal_only and info.status is InstanceStatus.WAITING)):
            return info.status, rec.wf if rec is not None else None
        if not self._leasing:
            done = await self._waiter(instance_id, terminal_only)
            assert done is not None  # noqa: S101 - only a leasing engine nudges its waiters
            return done.status, done.wf
        # Another process may drive it: while this engine holds its lease, its own
        # driver tells (and losing or giving back the lease nudges the waiter);
        # otherwise look at the store too, now and then.
        fut = self._waiter(instance_id, terminal_only)
        try:
            while True:
                if instance_id in self._fences:
                    done = await fut
                else:
                    finished, _ = await asyncio.wait({fut}, timeout=max(self.poll, 0.02))
                    done = fut.result() if finished else None
                if done is not None:
                    return done.status, done.wf
                if fut.done():  # nudged: wait again with a new one
                    fut = self._waiter(instance_id, terminal_only)
                if instance_id in self._live and self._live[instance_id].worker is not None:
                    continue  # this engine runs it: its driver notifies
                seen = self.store.info(instance_id)
                if seen is not None and (
                    seen.status.is_terminal or (not terminal_only and seen.status is InstanceStatus.WAITING)
                ):
                    return seen.status, None
        finally:
            fut.cancel()

    def _waiter(self, instance_id: str, terminal_only: bool) -> asyncio.Future[InstanceRecord | None]:
        fut: asyncio.Future[InstanceRecord | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(instance_id, []).append((terminal_only, fut))
        return fut

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
                e.detail: e.step for e in self.history(info.id) if e.kind is K.CHILD_STARTED and e.detail is not None
            }
            for child in self.children(info.id):
                add(child, depth + 1, f"{started.get(child.id, '?')} -> ")

        add(self.info(instance_id), 0, "")
        return "\n".join(lines)
