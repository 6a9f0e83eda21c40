"""
The driver's inbox: callers' changes of an instance become commands (docs/design/one-driver.md).

``_submit`` hands a command to the instance's driver and ``_wake_driver`` makes
sure someone looks; ``_apply_inbox`` applies them in the driver's turn. Across
processes a command is durable (``_command``, ``_pull_commands``,
``_decode_command``). The apply factories (``_complete_apply``, ``_claim_apply``,
``_cancel_apply``, ``_retry_apply``, ``_migrate_apply``) are what each call changes.
"""

from __future__ import annotations

import asyncio
import copy
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from ._engine_core import QUEUED, InboxCommand, InstanceBusy, K, logger, migration_for, poke_fork, sync_wake, trigger
from ._errors import (
    InstanceFinished,
    InstanceNotFound,
    InstanceStateError,
    MigrationError,
    RecordLoadError,
    StoreError,
    TaskAlreadyCompleted,
    TaskClaimed,
    UnknownWorkflowVersion,
    WorkflowInputError,
)
from ._instance import Branch, Command, InstanceInfo, InstanceRecord, active_steps
from ._machine import STATE_ATTRIBUTE
from ._runtime import Runtime
from ._spec import (
    COMPENSATION_FAILED,
    StepKind,
)
from ._status import InstanceStatus
from ._tasks import Task, TaskClaim, TaskReassignment, TaskStatus, people
from ._workflow import Workflow, spec_of

_R = TypeVar("_R")


class Commands(Runtime):
    """The engine's inbox: commands for an instance's driver."""

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
            current = self._current_task(rec, task)
            if not self._leasing and current.claimed_by is not None and current.claimed_by != user:
                # Claimed since the caller's checks (a leasing store refused that in the command's transaction).
                raise TaskClaimed(task_id, user, current.claimed_by)
            done = attrs.evolve(
                current, status=TaskStatus.COMPLETED, completed_by=user, completed_at=completed_at, form=form
            )
            rec.add_task(done)
            tok: InstanceRecord | Branch = rec if branch is None else branch
            tok.payload = form
            tok.task_id = None
            tok.wake_at = None
            if branch is not None:
                sync_wake(rec)
            self._note(rec, K.TASK_COMPLETED, task.step, 0, user)
            self._set_status(rec, InstanceStatus.RUNNING)
            return done

        return apply

    def _current_task(self, rec: InstanceRecord, task: Task) -> Task:
        """*task* as the driver's turn has it: changed in this turn, else as stored (else as the caller read it)."""
        pending = next((t for t in rec.dirty_tasks if t.id == task.id), None)
        return pending or self.store.task(task.id) or task

    def _claim_apply(self, task: Task, change: TaskClaim, *, write: bool = False) -> Callable[[InstanceRecord], object]:
        """
        A claim of *task* (or its release), as its driver applies it: the history entry.

        With *write* (a store without leases) the driver checks the task again and
        changes it too; a leasing store changed the row with the command already.
        """

        def apply(rec: InstanceRecord) -> object:
            if write:
                current = self._current_task(rec, task)
                if current.status is not TaskStatus.OPEN:
                    msg = f"is already {current.status.value}; only an open task is claimed"
                    raise TaskAlreadyCompleted(task.id, msg)
                if current.claimed_by != change.before:
                    raise TaskClaimed(task.id, change.user, current.claimed_by)
                rec.add_task(attrs.evolve(current, claimed_by=change.after))
            kind = K.TASK_CLAIMED if change.claim else K.TASK_UNCLAIMED
            self._note(rec, kind, task.step, 0, change.user)
            return None

        return apply

    def _reassign_apply(
        self, task: Task, change: TaskReassignment, *, write: bool = False
    ) -> Callable[[InstanceRecord], Task]:
        """
        A reassignment or delegation of *task*, as its driver applies it: the history entry.

        With *write* (a store without leases) the driver checks the task again and
        changes it too; a leasing store changed the row with the command already.
        """

        def apply(rec: InstanceRecord) -> Task:
            current = self._current_task(rec, task)
            if write:
                if current.status is not TaskStatus.OPEN:
                    msg = f"is already {current.status.value}; only an open task is reassigned"
                    raise TaskAlreadyCompleted(task.id, msg)
                if current.claimed_by != change.claimant:
                    raise TaskClaimed(task.id, change.by, current.claimed_by)
                current = change.applied_to(current)
                rec.add_task(current)
            kind = K.TASK_DELEGATED if change.delegated else K.TASK_REASSIGNED
            before = people(task.assignee, task.candidate_groups)
            after = people(change.assignee, change.candidate_groups)
            released = f" ({change.claimant}'s claim given back)" if change.claimant is not None else ""
            self._note(rec, kind, task.step, 0, f"{task.id}: {before} -> {after} by {change.by}{released}")
            return change.applied_to(task) if not write else current

        return apply

    def _cancel_apply(self, instance_id: str, reason: str, compensate: bool) -> Callable[[InstanceRecord], object]:
        """A cancel, as the instance's driver applies it."""

        def apply(rec: InstanceRecord) -> object:
            if rec.status.is_terminal:
                raise InstanceFinished(instance_id, rec.status, "cancel")
            # An instance compensating already is not cancelled again: the caller waits for it.
            if rec.cancel is None and active_steps(rec.state):
                rec.cancel = (reason, compensate)
                self._note(rec, K.CANCEL_REQUESTED, None, 0, reason or None)
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
        if rec is not None and rec.in_step and worker is not QUEUED and isinstance(worker, asyncio.Task):
            worker.cancel()

    def _retry_apply(self, instance_id: str) -> Callable[[InstanceRecord], object]:
        """A retry of the failed compensations, as the instance's driver applies it."""

        def apply(rec: InstanceRecord) -> object:
            if rec.state != COMPENSATION_FAILED:
                msg = f"is {rec.status.value}, not compensation_failed: there is no failed compensation to retry"
                raise InstanceStateError(instance_id, rec.status, msg)
            trigger(rec, "retry_compensation")
            rec.comp_attempt = 1
            self._set_status(rec, InstanceStatus.COMPENSATING)
            return None

        return apply

    def _migrate_apply(self, instance_id: str, to: type[Workflow]) -> Callable[[InstanceRecord], InstanceInfo]:
        """A migration to *to*, as the instance's driver applies it."""
        new_spec = spec_of(to)

        def apply(rec: InstanceRecord) -> InstanceInfo:
            migration = migration_for(rec, to)  # again, in the driver's turn: it may have moved on
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
            self._note(rec, K.MIGRATED, new_state, 0, f"version {migration.source_version} -> {new_spec.version}")
            return rec.info()

        return apply

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
            queued.append(InboxCommand(apply, fut, interrupt=interrupt, seq=seq))
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
        self._drive_soon(rec)

    def _drive_soon(self, rec: InstanceRecord) -> None:
        """Queue the live *rec* for a worker, or wake its driver (a flat one looks at the inbox between moves)."""
        if rec.worker is None:
            self._enqueue(rec)
        else:
            poke_fork(rec)

    # ----------------------------------------------------------------- commands across processes

    async def _command(
        self,
        instance_id: str,
        kind: str,
        body: Mapping[str, object],
        apply: Callable[[InstanceRecord], _R],
        *,
        complete: Task | None = None,
        claim: TaskClaim | None = None,
        reassign: TaskReassignment | None = None,
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
            except InstanceBusy:
                return False, None
            return True, await self._submit(instance_id, apply, interrupt=kind == "cancel")
        if claim is not None:
            seq = self.store.add_command(instance_id, kind, body, claim=claim)
        elif reassign is not None:
            seq = self.store.add_command(instance_id, kind, body, reassign=reassign)
        else:
            seq = self.store.add_command(instance_id, kind, body, complete=complete)
        if not self._drives:
            return False, None
        try:
            self._get(instance_id)
        except InstanceBusy:
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
            logger.warning("command_deferred", instance_id=instance_id, command=kind, error=str(exc))
            return False, None

    def _pull_commands(self, rec: InstanceRecord) -> bool:
        """Queue the instance's stored commands for its driver (each once); True if any was new."""
        try:
            stored = self.store.commands(rec.id)
        except StoreError as exc:
            logger.warning("commands_unreadable", instance_id=rec.id, error=str(exc))
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
                InboxCommand(apply, None, interrupt=command.kind == "cancel", seq=command.seq, label=command.kind)
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
        if kind == "claim_task":
            task = self.store.task(str(body.get("task")))
            if task is None:
                return None
            return self._claim_apply(task, TaskClaim(task.id, str(body.get("user")), claim=bool(body.get("claim"))))
        if kind == "reassign_task":
            task = self.store.task(str(body.get("task")))
            if task is None:
                return None
            # The row changed with the command: the history says it from what the caller saw.
            change = TaskReassignment(
                task.id,
                str(body.get("by")),
                task.assignee,
                task.candidate_groups,
                _text_or_none(body.get("claimant")),
                delegated=bool(body.get("delegated")),
            )
            before = attrs.evolve(
                task, assignee=_text_or_none(body.get("from")), candidate_groups=_texts(body.get("from_groups"))
            )
            return self._reassign_apply(before, change)
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
            except (InstanceBusy, InstanceNotFound):
                return  # its owner hears of it (NOTIFY, or its next poll)
            except StoreError as exc:
                logger.warning("kick_failed", instance_id=instance_id, error=str(exc))
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
        self._drive_soon(rec)

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
                    self._note(rec, K.COMMAND_REJECTED, None, 0, f"{command.label}: {exc}")
                    logger.warning("command_rejected", instance_id=rec.id, command=command.label, error=str(exc))
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


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _texts(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in typing.cast("list[object]", value) if isinstance(v, str))
