"""
The driver: one turn of one instance.

``_drive`` runs steps (``_run_step``) and waits (``_wait``: tasks, timers,
messages), fires the machine's events, fails, cancels and compensates (the
saga: ``_compensate``). Forks and child workflows have modules of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

import attrs

from ._commands import Commands
from ._ctx import Ctx, effects_of
from ._engine_core import K, child_id_of, logger, sync_wake, trigger, type_label
from ._errors import (
    NoEdgeEnabled,
)
from ._failure import failure_record
from ._instance import NO_PAYLOAD, Branch, InstanceRecord, leaves
from ._machine import DONE, START
from ._reminders import due_at, escalation_due, next_wake, runs_after, started
from ._retry import wait_after
from ._spec import (
    CANCELLED,
    CANCELLING,
    COMPENSATING,
    COMPENSATION_FAILED,
    COMPLETED,
    FAILED,
    EdgeSpec,
    StepKind,
    StepSpec,
)
from ._status import InstanceStatus
from ._tasks import Task, TaskStatus, task_people

_STATUS_OF_STATE = {
    COMPLETED: InstanceStatus.COMPLETED,
    FAILED: InstanceStatus.FAILED,
    CANCELLED: InstanceStatus.CANCELLED,
    COMPENSATION_FAILED: InstanceStatus.COMPENSATION_FAILED,
    COMPENSATING: InstanceStatus.COMPENSATING,
    CANCELLING: InstanceStatus.COMPENSATING,
}


def _cancel_reason(rec: InstanceRecord) -> str | None:
    """Why the instance is being cancelled (None: it is not)."""
    return rec.cancel[0] if rec.cancel is not None else None


def _mark_overlaps(rec: InstanceRecord, tok: Branch) -> None:
    """A branch's attempt begins: note the sibling attempts it runs alongside (both overlap)."""
    tok.overlapped = False
    for other in rec.branches.values():
        if other.in_step and other is not tok:
            other.overlapped = tok.overlapped = True


def _undo_attempt(rec: InstanceRecord, kept: tuple[object, ...], tok: Branch | None) -> None:
    """
    Put the variables back as the last commit left them: the attempt failed or was cancelled.

    Inside a fork, only when no sibling branch's step ran meanwhile: branches share
    the variables, so a change made then may be the sibling's, and is kept.
    """
    if tok is None or not tok.overlapped:
        rec.wf.__orch_validate__.restore(rec.wf, kept)


def _event(rec: InstanceRecord, kind: str, step: str) -> str:
    """The name of a step's event: shared in a flat machine, the step's own with forks."""
    return f"{kind}@{step}" if rec.spec.has_forks else kind


async def _with_timeout(coro: Coroutine[Any, Any, Any], seconds: float) -> object:
    """Await *coro* and return its result, failing with TimeoutError after *seconds*; free when it never suspends."""
    # Arming a timer costs more than a whole step that only calls in-process
    # services, so run the coroutine's first slice directly and arm the timeout
    # only if it actually waits for something.
    try:
        first = coro.send(None)
    except StopIteration as stop:
        result: object = stop.value
        return result
    except BaseException:
        coro.close()
        raise
    async with asyncio.timeout(seconds):
        return await _Resumed(coro, first)


class _Resumed:
    """An awaitable that continues a coroutine already started with ``send(None)``."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: object) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self.coro
        pending = self.first
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - forwarded into the step, as `await` would
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


class Driver(Commands):
    """The engine's driver: one turn of one instance (steps, waits, saga)."""

    async def _drive(self, rec: InstanceRecord) -> None:
        inbox = self._inbox
        while True:
            if inbox and rec.id in inbox:
                if not await self._apply_inbox(rec) and rec.status.is_terminal:
                    return  # every change was refused (it had ended): nothing to drive
                if (
                    rec.wake_at is not None
                    and rec.status is not InstanceStatus.WAITING
                    and rec.cancel is None
                    and not rec.branches
                ):
                    return  # woken for a caller's change only: it still waits out its retry backoff
            spec = rec.spec  # a migration may have changed it
            state = rec.state
            if state.__class__ is list:
                if rec.cancel is not None:
                    await self._apply_cancel(rec)
                elif await self._drive_fork(rec):
                    return
                continue
            if spec.has_step(state):
                if rec.cancel is not None:
                    await self._apply_cancel(rec)
                    continue
                step = spec.step(state)
                if step.kind.waits and rec.payload is NO_PAYLOAD:
                    if await self._wait(rec, step):
                        return
                    continue
                if await self._run_step(rec, step):
                    return
            elif state in (COMPENSATING, CANCELLING):
                if await self._compensate(rec):
                    return
            else:
                self._set_status(rec, _STATUS_OF_STATE[state])
                stray_timer = rec.wake_at is not None
                if stray_timer:
                    rec.wake_at = None  # an ended instance has no timer: a stored one would fire forever
                if rec.history or stray_timer:
                    await self._save(rec)
                if rec.parent is not None:
                    self._child_ended(rec)
                return

    # ----------------------------------------------------------------- waiting steps

    def _take_message(self, rec: InstanceRecord, step: StepSpec) -> object:
        """Consume the oldest stored message a ``@wait_for`` step takes (``NO_PAYLOAD``: none); the caller notes it."""
        message_type = step.message
        assert message_type is not None  # noqa: S101 - wait_for steps always have one
        for sig in self._signals(rec):
            if sig.seq not in rec.consumed_signals and isinstance(sig.message, message_type):
                rec.add_consumed_signal(sig.seq)
                return sig.message
        return NO_PAYLOAD

    async def _wait(self, rec: InstanceRecord, step: StepSpec) -> bool:
        """Enter or re-check a waiting step; True when the instance stays parked."""
        woken, rec.woken = rec.woken, False
        if step.kind is StepKind.SUBFLOW:
            return await self._child_wait(rec, step, None)
        if step.kind is StepKind.FAN_OUT:
            return await self._fan_wait(rec, step, None)
        timeout = next((e for e in rec.spec.outgoing(step.name) if e.is_timeout), None)
        if step.kind is StepKind.TIMER:
            if woken:
                self._note(rec, K.TIMER_FIRED, step.name, 0, None)
                rec.payload = None
                self._set_status(rec, InstanceStatus.RUNNING)
                return False
            if rec.status is not InstanceStatus.WAITING:
                delay = step.delay or 0.0
                self._park(rec, delay)
                self._set_status(rec, InstanceStatus.WAITING)
                self._note(rec, K.TIMER_SET, step.name, 0, f"in {delay:g}s")
                await self._save(rec)
            return True
        if woken and timeout is not None and escalation_due(rec.waited, timeout, self.clock.now()):
            rec.waited = None
            if rec.task_id is not None:
                self._close_task(rec, "escalated")
            self._set_status(rec, InstanceStatus.RUNNING)
            self._note(rec, K.ESCALATED, step.name, 0, f"waited {timeout.timeout:g}s")
            trigger(rec, _event(rec, "timeout", step.name), rec.wf)
            self._moved(rec, step.name)
            await self._save(rec)
            return False
        if woken and rec.waited is not None:
            await self._remind(rec, step, timeout)  # the wait goes on: the side steps that fell due run
        if step.kind is StepKind.WAIT_FOR and (message := self._take_message(rec, step)) is not NO_PAYLOAD:
            rec.payload = message
            rec.wake_at = None
            rec.waited = None
            self._set_status(rec, InstanceStatus.RUNNING)
            self._note(rec, K.MESSAGE_RECEIVED, step.name, 0, type_label(step.message))
            return False
        if rec.status is InstanceStatus.WAITING:
            return True
        if step.kind is StepKind.HUMAN_TASK:
            if not self._open_task(rec, step):
                await self._save(rec)
                return False
        else:
            assert step.message is not None  # noqa: S101
            self._note(rec, K.MESSAGE_AWAITED, step.name, 0, step.message.__name__)
        now = self.clock.now()
        reminders = rec.spec.reminders(step.name)
        rec.waited = started(now, reminders)
        if reminders:
            wake = next_wake(rec.waited, reminders, timeout)
            if wake is not None:
                self._park(rec, wake - now)
        elif timeout is not None and timeout.timeout is not None:
            self._park(rec, timeout.timeout)
        self._set_status(rec, InstanceStatus.WAITING)
        await self._save(rec)
        return True

    async def _remind(
        self, rec: InstanceRecord, step: StepSpec, escalation: EdgeSpec | None, tok: Branch | None = None
    ) -> None:
        """Run the side steps of *step*'s reminders that fell due, set the wait's next timer, and commit."""
        t: InstanceRecord | Branch = rec if tok is None else tok
        reminders = rec.spec.reminders(step.name)
        waited = t.waited
        assert waited is not None  # noqa: S101 - the caller checked
        if len(waited[1]) != len(reminders):  # migrated to a version with other reminders: count afresh
            waited = (waited[0], (0,) * len(reminders))
        now = self.clock.now()
        for i, edge in enumerate(reminders):
            due = due_at(waited, i, edge)
            if due is None or due > now:
                continue
            n = runs_after(waited, i, edge, now)
            waited = (waited[0], (*waited[1][:i], n, *waited[1][i + 1 :]))
            t.waited = waited
            self._note(rec, K.REMINDED, step.name, 0, f"{edge.dest} (reminder {n})")
            await self._side_step(rec, rec.spec.step(edge.dest), tok, f":remind{i}.{n}")
        t.waited = waited
        t.wake_at = next_wake(waited, reminders, escalation)
        if tok is not None:
            sync_wake(rec)
        self._wake_timers()
        await self._save(rec)

    async def _side_step(self, rec: InstanceRecord, side: StepSpec, tok: Branch | None, key: str) -> None:
        """
        Run a reminder's side step once (*key*: its run's idempotency suffix); a failure is noted, not retried.

        The wait it runs beside goes on either way: a reminder that could not be sent
        must not end the process it reminds of.
        """
        t: InstanceRecord | Branch = rec if tok is None else tok
        wf = rec.wf
        ctx = Ctx(
            self.services,
            rec.id,
            rec.spec.name,
            side.name,
            1,
            (rec.id, t.visit, key),
            clock=self.clock,
            outbox=self._outbox,
        )
        self._note(rec, K.STEP_STARTED, side.name, 1, None)
        variables = wf.__orch_validate__
        kept = variables.snapshot(wf)
        try:
            if self.before_attempt is not None:
                self.before_attempt(ctx)
            if side.is_async:
                coro = side.fn(wf, ctx)
                await (coro if side.timeout is None else _with_timeout(coro, side.timeout))
            else:
                side.fn(wf, ctx)
            if self.after_attempt is not None:
                self.after_attempt(ctx)
            if self._strict_vars or not variables.settled(wf, kept):
                variables.check_step(wf, kept, tok is None, self._strict_vars)
        except Exception as exc:  # noqa: BLE001 - user code: the side step's failure, and the wait goes on
            _undo_attempt(rec, kept, tok)
            self._note(rec, K.STEP_FAILED, side.name, 1, f"{type(exc).__name__}: {exc}")
            logger.warning(
                "side_step_failed", instance_id=rec.id, workflow=rec.spec.name, step=side.name, error=str(exc)
            )
            return
        if effects := effects_of(ctx):
            self._stage_effects(rec, side.name, effects)
        self._note(rec, K.STEP_COMPLETED, side.name, 1, None)

    def _open_task(self, rec: InstanceRecord, step: StepSpec, tok: InstanceRecord | Branch | None = None) -> bool:
        """Open the task of *step*; False when who it is for could not be computed (the instance then fails)."""
        t = rec if tok is None else tok
        spec_task = step.task
        assert spec_task is not None  # noqa: S101 - human tasks always have one
        try:
            assignee, groups = task_people(spec_task, rec.wf)
        except Exception as exc:  # noqa: BLE001 - user code (or what it returned): the instance's failure
            self._fail(rec, f"{step.name}: who the task is for: {type(exc).__name__}: {exc}", step.name, exc)
            return False
        now = self.clock.now()
        task = Task(
            id=f"{rec.id}.{t.visit}",
            instance_id=rec.id,
            workflow=rec.spec.name,
            step=step.name,
            assignee=assignee,
            candidate_groups=groups,
            form_type=spec_task.form,
            created_at=now,
            due_at=now + spec_task.due if spec_task.due is not None else None,
        )
        rec.add_task(task)
        t.task_id = task.id
        self._note(rec, K.TASK_CREATED, step.name, 0, task.id)
        return True

    def _close_task(self, rec: InstanceRecord, why: str, tok: InstanceRecord | Branch | None = None) -> None:
        t = rec if tok is None else tok
        task_id = t.task_id
        t.task_id = None
        if task_id is None:
            return
        task = self.store.task(task_id)
        # The instance still waits on the task, so it is open for it even when the store
        # shows it completed: that is a completion written as a command (by another
        # process, or a caller here) that the driver has not applied, and now refuses.
        if task is not None and task.status is not TaskStatus.CANCELLED:
            cancelled = attrs.evolve(
                task, status=TaskStatus.CANCELLED, completed_by=None, completed_at=self.clock.now(), form=None
            )
            rec.add_task(cancelled)
            self._note(rec, K.TASK_CANCELLED, task.step, 0, f"{task.id} ({why})")

    async def _run_step(self, rec: InstanceRecord, step: StepSpec, tok: Branch | None = None) -> bool:
        """Run one attempt of *step* (of branch *tok*); True when it parks (a retry timer)."""
        t: InstanceRecord | Branch = rec if tok is None else tok
        t.woken = False
        attempt = t.attempt
        wf = rec.wf
        name = step.name
        comp = step.compensation
        if comp is not None and comp.attempted and (name, t.visit) not in rec.saga:
            # Registered before the call, durably (Temporal's saga sample does the same): a
            # crash or a cancel in the middle of an attempt, or its failure, still undoes it.
            rec.add_saga(name, t.visit)
            await self._save(rec)
        ctx = Ctx(
            self.services,
            rec.id,
            rec.spec.name,
            name,
            attempt,
            (rec.id, t.visit, ""),
            clock=self.clock,
            outbox=self._outbox,
        )
        self._note(rec, K.STEP_STARTED, name, attempt, None)
        payload = t.payload
        args = (wf, ctx) if payload is NO_PAYLOAD or step.payload_type is None else (wf, ctx, payload)
        variables = wf.__orch_validate__
        strict = self._strict_vars
        # With copies of the variables that can change in place, on every store: a
        # failed attempt is undone from it (restore()), so that it changes nothing.
        kept = variables.snapshot(wf)
        obs = self._obs
        seen = obs.attempt_begin(ctx) if obs is not None else None
        if tok is not None:
            _mark_overlaps(rec, tok)
        t.in_step = True
        try:
            if self.before_attempt is not None:
                self.before_attempt(ctx)
            if step.is_async:
                if step.timeout is None:
                    result: object = await step.fn(*args)
                else:
                    result = await _with_timeout(step.fn(*args), step.timeout)
            else:
                result = step.fn(*args)
            if self.after_attempt is not None:
                self.after_attempt(ctx)
            if step.outcome is not None and not isinstance(result, str):
                msg = f"the failure end {name} must return the reason (a str), got {result!r}"
                raise TypeError(msg)
            # A variable of the wrong type fails the attempt (and is put back) before
            # anything is committed: the record must stay loadable.
            if strict or not variables.settled(wf, kept):
                variables.check_step(wf, kept, tok is None, strict)
        except asyncio.CancelledError:
            t.in_step = False
            if seen is not None and obs is not None:
                obs.attempt_ended(ctx, seen, "cancelled")
            current = asyncio.current_task()
            why = tok.cancelled if tok is not None else _cancel_reason(rec)
            ours = (
                rec.cancel is not None
                or (tok is not None and tok.cancelled is not None)
                or (tok is None and self._interrupting(rec.id))
            )
            if not ours or current is None or current.cancelling() > 1:
                raise
            current.uncancel()
            _undo_attempt(rec, kept, tok)
            if tok is None and rec.cancel is None:
                # The cancel that interrupted the step is still in the inbox: apply it first.
                await self._apply_inbox(rec)
                why = _cancel_reason(rec)
            self._note(rec, K.STEP_CANCELLED, name, attempt, why or None)
            return False
        except Exception as exc:  # noqa: BLE001 - any failure of user code is the step's failure
            t.in_step = False
            _undo_attempt(rec, kept, tok)
            if isinstance(exc, TimeoutError) and step.timeout is not None and not str(exc):
                exc = TimeoutError(f"attempt {attempt} exceeded the step's timeout of {step.timeout:g}s")
            if seen is not None and obs is not None:
                obs.attempt_ended(ctx, seen, "failed", exc)
            return await self._step_failed(rec, step, attempt, exc, tok)
        t.in_step = False
        if seen is not None and obs is not None:
            obs.attempt_ended(ctx, seen, "completed")
        self._note(rec, K.STEP_COMPLETED, name, attempt, None)
        if effects := effects_of(ctx):
            self._stage_effects(rec, name, effects)  # messages sent, instances started: with this commit
        if comp is not None and not comp.attempted:
            rec.add_saga(name, t.visit)
        t.payload = NO_PAYLOAD
        t.attempt = 1
        if step.outcome is not None:
            # A declared failure end: the instance fails with the reason the method gave.
            assert isinstance(result, str)  # noqa: S101 - checked above
            # Reached by an on_error edge with the error: the failure keeps that error too.
            error = payload if isinstance(payload, BaseException) else None
            self._fail(rec, result, name, error, outcome=step.outcome)
            await self._save(rec)
            return False
        if tok is not None and name not in rec.branches:
            # The instance left the fork while this step ran (a sibling failed, and
            # the step ignored its cancellation): its completion is compensated.
            await self._save(rec)
            return False
        before = leaves(rec.state) if tok is not None else None
        try:
            moved = trigger(rec, _event(rec, "next", name), wf)
        except Exception as exc:  # noqa: BLE001 - a guard raised
            self._fail(rec, f"{name}: a guard raised {type(exc).__name__}: {exc}", name, exc)
        else:
            if moved:
                self._moved(rec, name, before)
            else:
                gap = NoEdgeEnabled(rec.spec.name, name)
                self._fail(rec, str(gap), name, gap)
        await self._save(rec)
        return False

    def _moved(self, rec: InstanceRecord, source: str, before: list[str] | None = None) -> None:
        rec.visit += 1
        state = rec.state
        if before is None and type(state) is str:
            self._note(rec, K.TRANSITION, source, 0, state)
            if state == COMPLETED:
                self._set_status(rec, InstanceStatus.COMPLETED)
            return
        # Into a fork (entering its branches is noted as they start), or inside one.
        old = set(before or ())
        for leaf in leaves(state):
            if leaf in old:
                continue
            if leaf.endswith("." + DONE):
                held = rec.spec.branch_of(source)
                join = held[0].join if held is not None else "?"
                self._note(rec, K.BRANCH_DONE, source, 0, join)
            elif not leaf.endswith("." + START):
                self._note(rec, K.TRANSITION, source, 0, leaf.rpartition(".")[2])
        self._sync_branches(rec)

    async def _step_failed(
        self, rec: InstanceRecord, step: StepSpec, attempt: int, exc: Exception, tok: Branch | None = None
    ) -> bool:
        t: InstanceRecord | Branch = rec if tok is None else tok
        error = f"{type(exc).__name__}: {exc}"
        self._note(rec, K.STEP_FAILED, step.name, attempt, error)
        retries = step.retry.retries(exc, attempt)
        if self._obs is not None:
            ctx = Ctx(self.services, rec.id, rec.spec.name, step.name, attempt, "")
            self._obs.failed(ctx, error, wait_after(step.retry, exc, attempt) if retries else None)
        if retries:
            delay = wait_after(step.retry, exc, attempt)
            t.attempt = attempt + 1
            self._note(rec, K.RETRY_SCHEDULED, step.name, attempt + 1, f"in {delay:g}s")
            if tok is None:
                self._park(rec, delay)
            else:
                tok.waiting = True
                tok.wake_at = self.clock.now() + delay
                sync_wake(rec)
                self._wake_timers()
            await self._save(rec)
            return True
        t.attempt = 1
        t.payload = NO_PAYLOAD
        if tok is not None and step.name not in rec.branches:
            await self._save(rec)  # the instance left the fork meanwhile
            return False
        before = leaves(rec.state) if tok is not None else None
        if any(e.is_error for e in rec.spec.outgoing(step.name)) and trigger(
            rec, _event(rec, "error", step.name), rec.wf, exc
        ):
            self._moved(rec, step.name, before)
            self._hand_error(rec, step, exc)
        else:
            self._fail(rec, f"{step.name}: {error}", step.name, exc)
        await self._save(rec)
        return False

    def _hand_error(self, rec: InstanceRecord, step: StepSpec, exc: Exception) -> None:
        """The step the on_error edge of *step* just entered gets *exc*, when its method takes an error."""
        spec = rec.spec
        # The machine tries the error edges in declaration order: the first that matches was taken.
        dest = next((e.dest for e in spec.outgoing(step.name) if e.is_error and isinstance(exc, e.on_error)), None)
        if dest is None or not spec.has_step(dest) or spec.step(dest).error is None:
            return
        if rec.branches:
            branch = rec.branches.get(dest)
            if branch is not None:
                branch.payload = exc
        elif rec.state == dest:
            rec.payload = exc

    def _fail(
        self, rec: InstanceRecord, error: str, step: str, exc: BaseException | None = None, *, outcome: str = "failed"
    ) -> None:
        """The instance fails at *step* (with *exc*, or at a failure end of *outcome*): its saga runs next."""
        rec.error = rec.cause = error
        rec.failure = failure_record(outcome, step, exc)
        self._note(rec, K.INSTANCE_FAILED, step, 0, error if outcome == "failed" else f"{outcome}: {error}")
        if rec.branches:
            self._leave_fork(rec, f"a sibling branch failed: {error}")
        trigger(rec, "fail")
        self._set_status(rec, InstanceStatus.COMPENSATING)
        logger.warning("instance_failed", instance_id=rec.id, workflow=rec.spec.name, error=error, outcome=outcome)

    async def _apply_cancel(self, rec: InstanceRecord) -> None:
        assert rec.cancel is not None  # noqa: S101 - checked by the caller
        reason, compensate = rec.cancel
        self._close_task(rec, "cancelled")
        state = rec.state
        if state.__class__ is str and rec.spec.has_step(state) and (step := rec.spec.step(state)).child is not None:
            why = f"its parent was cancelled: {reason}"
            if step.fan is not None:
                self._fan_abandon(rec, step, rec, why, compensate=compensate)
            else:
                self._cancel_child(rec, child_id_of(rec, rec), why, compensate=compensate)
        if rec.branches:
            self._leave_fork(rec, f"cancelled: {reason}" if reason else "cancelled", compensate=compensate)
        rec.wake_at = None
        rec.payload = NO_PAYLOAD
        rec.error = rec.cause = f"cancelled: {reason}" if reason else "cancelled"
        rec.failure = failure_record("cancelled", None)
        trigger(rec, "cancel" if compensate else "abandon")
        self._set_status(rec, InstanceStatus.COMPENSATING if compensate else InstanceStatus.CANCELLED)
        await self._save(rec)

    async def _compensate(self, rec: InstanceRecord) -> bool:
        """Run the compensations newest first; True when parked (a retry timer, a child undoing itself)."""
        rec.woken = False
        spec = rec.spec
        if spec.has_subflows and self._children_running(rec):
            # A child cancelled with its parent undoes its own steps first: they are
            # newer. The parent parks without a worker; the child's end resumes it.
            return True
        while rec.saga:
            name, visit = rec.saga[-1]
            step = spec.step(name)
            comp = step.compensation
            assert comp is not None  # noqa: S101 - only steps with one enter the saga
            attempt = rec.comp_attempt
            undo = None
            if step.fan is not None:
                undo = self._fan_undo(rec, name, visit, attempt)
            elif step.child is not None:
                undo = self._child_undo(rec, name, visit, attempt)
            if undo is not None and undo[0] == "running":
                return True
            ctx = Ctx(
                self.services,
                rec.id,
                spec.name,
                comp.name,
                attempt,
                (rec.id, visit, ":undo"),
                name,
                clock=self.clock,
                outbox=self._outbox,
            )
            if undo is None or undo[0] == "kick":
                # A fan-out's children are undone one at a time: each start names the child.
                detail = undo[1] if undo is not None and step.fan is not None else comp.name
                self._note(rec, K.COMPENSATION_STARTED, name, attempt, detail)
            obs = self._obs
            seen = obs.attempt_begin(ctx) if obs is not None and undo is None else None
            try:
                if undo is not None:
                    if await self._kick_child_undo(rec, undo, attempt):
                        return True
                else:
                    variables = rec.wf.__orch_validate__
                    kept = variables.snapshot(rec.wf)
                    if self.before_attempt is not None:
                        self.before_attempt(ctx)
                    try:
                        if comp.is_async:
                            await comp.fn(rec.wf, ctx)
                        else:
                            comp.fn(rec.wf, ctx)
                        if self.after_attempt is not None:
                            self.after_attempt(ctx)
                        variables.check_step(rec.wf, kept, True, self._strict_vars)  # noqa: FBT003
                    except Exception:
                        variables.restore(rec.wf, kept)  # a failed attempt changes nothing
                        raise
            except asyncio.CancelledError:
                if seen is not None and obs is not None:
                    obs.attempt_ended(ctx, seen, "cancelled")
                raise
            except Exception as exc:  # noqa: BLE001 - user code
                error = f"{type(exc).__name__}: {exc}"
                self._note(rec, K.COMPENSATION_FAILED, name, attempt, error)
                retries = comp.retry.retries(exc, attempt)
                if seen is not None and obs is not None:
                    obs.attempt_ended(ctx, seen, "failed", exc)
                    obs.failed(ctx, error, wait_after(comp.retry, exc, attempt) if retries else None)
                if retries:
                    delay = wait_after(comp.retry, exc, attempt)
                    rec.comp_attempt = attempt + 1
                    self._note(rec, K.RETRY_SCHEDULED, name, attempt + 1, f"in {delay:g}s")
                    self._park(rec, delay)
                    await self._save(rec)
                    return True
                rec.comp_attempt = 1
                rec.error = f"compensation {comp.name} of {name} failed: {error} (after: {rec.cause})"
                trigger(rec, "compensation_error")
                self._set_status(rec, InstanceStatus.COMPENSATION_FAILED)
                await self._save(rec)
                return False
            if seen is not None and obs is not None:
                obs.attempt_ended(ctx, seen, "completed")
            if effects := effects_of(ctx):
                self._stage_effects(rec, name, effects)
            rec.saga.pop()
            rec.comp_attempt = 1
            self._note(rec, K.COMPENSATION_COMPLETED, name, attempt, comp.name)
            await self._save(rec)
        trigger(rec, "compensated")
        rec.error = rec.cause
        self._set_status(rec, _STATUS_OF_STATE[rec.state])
        await self._save(rec)
        return False
