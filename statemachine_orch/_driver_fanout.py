"""
The driver's fan-outs: a child workflow per item, a bounded number at a time, joined in item order.

A ``@fan_out`` step's visit builds its children once (``_fan_build``), starts as
many as its limit allows in the commit that records them (``_fan_wait``), and
each time the parent is resumed sees which ended, starts the next, and finally
hands the results, in item order, to the step's handler. When more children fail
than it tolerates, it unwinds (``_fan_unwind``): the running ones are cancelled,
the pending ones never start, the completed ones are undone newest first, then
the step fails. ``_fan_abandon`` leaves a fan-out the instance is cancelled out
of, and ``_fan_undo`` is the saga's undo of a fan-out step's children.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._ctx import Ctx
from ._driver_children import DriverChildren, undo_marker
from ._engine_core import K, child_id_of
from ._errors import ChildWorkflowFailed, StoreError
from ._fanout import FanOut, child_of, visit_pattern
from ._instance import Branch, InstanceRecord
from ._machine import STATE_ATTRIBUTE
from ._spec import StepSpec
from ._status import InstanceStatus

_S = InstanceStatus


class DriverFanOut(DriverChildren):
    """The driver's fan-outs."""

    async def _fan_wait(self, rec: InstanceRecord, step: StepSpec, tok: Branch | None) -> bool:
        """Enter a fan-out step or move it on; True while it waits for its children."""
        t: InstanceRecord | Branch = rec if tok is None else tok
        fan = t.fan
        if fan is None:
            built = self._fan_build(rec, step, t)
            if isinstance(built, Exception):
                return await self._step_failed(rec, step, t.attempt, built, tok)
            fan = t.fan = built
        prefix = child_id_of(rec, t)
        changed = self._fan_observe(rec, step, t, fan, prefix)
        policy = step.fan
        assert policy is not None  # noqa: S101 - fan-out steps always have one
        if len(fan.failed()) > policy.tolerate:
            return await self._fan_unwind(rec, step, tok, fan, prefix, changed=changed)
        new: list[InstanceRecord] = []
        room = (policy.limit or fan.total) - len(fan.running())
        while room > 0 and fan.pending:
            child_id = child_of(prefix, fan.started)
            crec = self._create(fan.pending.popleft(), child_id, rec.id)
            self._live[child_id] = crec
            fan.started += 1
            self._note(rec, K.CHILD_STARTED, step.name, t.attempt, child_id)
            new.append(crec)
            room -= 1
        if len(fan.ended) == fan.total:
            t.payload = self._fan_results(fan, prefix)
            t.fan = None
            self._resumed(rec, tok)
            return False
        if self._waits(rec, tok) or new or changed:
            try:
                await self._save(rec, *new)
            except StoreError:
                # The parent's reload must not find children that exist only in this process's memory.
                for crec in new:
                    self._forget(crec)
                raise
            for crec in new:
                self._enqueue(crec)
        return True

    def _fan_build(self, rec: InstanceRecord, step: StepSpec, t: InstanceRecord | Branch) -> FanOut | Exception:
        """Call the step's method for its children and check them; what goes wrong is the step's failure."""
        ctx = Ctx(self.services, rec.id, rec.spec.name, step.name, t.attempt, (rec.id, t.visit, ""), clock=self.clock)
        start = step.start
        child = step.child
        assert start is not None  # noqa: S101 - fan-out steps always have both
        assert child is not None  # noqa: S101
        try:
            if self.before_attempt is not None:
                self.before_attempt(ctx)
            built: object = start(rec.wf, ctx)
            return FanOut(_checked_children(step.name, child, built))
        except Exception as exc:  # noqa: BLE001 - user code: the step's failure
            return exc

    def _fan_observe(
        self, rec: InstanceRecord, step: StepSpec, t: InstanceRecord | Branch, fan: FanOut, prefix: str
    ) -> bool:
        """Note the running children that ended since the parent last looked; True if any did."""
        changed = False
        for i in fan.running():
            child_id = child_of(prefix, i)
            info = self._find_info(child_id)
            if info is None or not info.status.is_terminal:
                continue
            fan.ended.append((i, info.status))
            self._note(rec, K.CHILD_FINISHED, step.name, t.attempt, f"{child_id} {info.status.value}")
            changed = True
        return changed

    def _fan_results(self, fan: FanOut, prefix: str) -> list[object]:
        """The children's results in item order: a completed child's workflow, a failed one's error."""
        status = dict(fan.ended)
        out: list[object] = []
        for i in range(fan.total):
            child_id = child_of(prefix, i)
            if status[i] is _S.COMPLETED:
                out.append(self.workflow(child_id))
            else:
                info = self._find_info(child_id)
                out.append(ChildWorkflowFailed(child_id, status[i], info.error if info is not None else None))
        return out

    def _resumed(self, rec: InstanceRecord, tok: Branch | None) -> None:
        """The instance (or branch) no longer waits: its step runs, or fails, now."""
        if tok is None:
            self._set_status(rec, _S.RUNNING)
        else:
            tok.waiting = False

    async def _fan_unwind(
        self, rec: InstanceRecord, step: StepSpec, tok: Branch | None, fan: FanOut, prefix: str, *, changed: bool
    ) -> bool:
        """
        More children failed than the step tolerates: stop the others, undo the completed ones, fail the step.

        True while it waits (for a cancelled child to end, or a completed one's undo).
        """
        t: InstanceRecord | Branch = rec if tok is None else tok
        failed = fan.failed()
        first_id = child_of(prefix, failed[0][0])
        first = self._find_info(first_id)
        cause = ChildWorkflowFailed(first_id, failed[0][1], first.error if first is not None else None)
        if fan.pending:
            fan.pending.clear()  # never started now: a stored fan-out that unwinds starts no more
            changed = True
        running = fan.running()
        for i in running:
            if i not in fan.asked:
                fan.asked.add(i)
                why = f"a sibling child of {step.name} failed: {cause}"
                self._cancel_child(rec, child_of(prefix, i), why)
                changed = changed or self._leasing  # the cancel is a command in the next commit
        if running:
            return await self._fan_park(rec, tok, changed=changed)
        for i in reversed(fan.completed()):
            child_id = child_of(prefix, i)
            info = self._find_info(child_id)
            status = info.status if info is not None else _S.CANCELLED
            if status is _S.CANCELLED:
                continue
            if status is _S.COMPLETED:
                self._note(rec, K.COMPENSATION_STARTED, step.name, t.attempt, child_id)
                return await self._fan_park(rec, tok, changed=True, undo=child_id)
            if not status.is_terminal:
                return await self._fan_park(rec, tok, changed=changed)
            why = f"its undo failed ({info.error if info is not None else '?'}) after {cause}"
            cause = ChildWorkflowFailed(child_id, status, why)
            break
        t.fan = None
        self._resumed(rec, tok)
        return await self._step_failed(rec, step, t.attempt, cause, tok)

    async def _fan_park(
        self, rec: InstanceRecord, tok: Branch | None, *, changed: bool, undo: str | None = None
    ) -> bool:
        """Wait for the children (committing what changed); with *undo*, start undoing that completed child."""
        waits = self._waits(rec, tok)
        if undo is not None:
            child = self._get(undo)
            # Undone as a compensated parent undoes a subflow's child: through its own compensations.
            self._start_undo(child, undo_marker(rec, 1))
            await self._save(rec, child)
            self._enqueue(child)
        elif waits or changed:
            await self._save(rec)
        return True

    def _fan_moved(self, rec: InstanceRecord, name: str, branch: Branch) -> bool:
        """Whether a fork branch waiting at a fan-out step has something to do: a child ended, one to undo..."""
        fan = branch.fan
        if fan is None:
            return False  # it waits out a retry's backoff: its timer wakes it
        policy = rec.spec.step(name).fan
        assert policy is not None  # noqa: S101 - the branch waits at a fan-out step
        prefix = child_id_of(rec, branch)
        running = fan.running()
        for i in running:
            info = self._find_info(child_of(prefix, i))
            if info is None or info.status.is_terminal:
                return True
        unwinding = len(fan.failed()) > policy.tolerate
        if running:
            return unwinding and any(i not in fan.asked for i in running)  # cancels to ask (again, after a restart)
        if unwinding:
            for i in reversed(fan.completed()):
                info = self._find_info(child_of(prefix, i))
                if info is None or info.status is _S.CANCELLED:
                    continue
                return info.status is not _S.COMPENSATING
        return True

    def _fan_abandon(
        self, rec: InstanceRecord, step: StepSpec, t: InstanceRecord | Branch, why: str, *, compensate: bool
    ) -> None:
        """
        The instance leaves the fan-out step unfinished (cancelled, or a sibling branch failed).

        The running children are cancelled with it, and the step goes on the saga
        (once it started a child), so that compensating the instance undoes the
        completed ones, newest first: those it saw complete, and any that completed
        instead of being cancelled.
        """
        fan = t.fan
        if fan is None:
            return
        t.fan = None
        prefix = child_id_of(rec, t)
        self._fan_observe(rec, step, t, fan, prefix)
        for i in fan.running():
            self._cancel_child(rec, child_of(prefix, i), why, compensate=compensate)
        if fan.started:
            rec.add_saga(step.name, t.visit)

    def _fan_undo(self, rec: InstanceRecord, name: str, visit: int, attempt: int) -> tuple[str, str]:
        """
        Where the undo of a fan-out step's children stands, for compensation attempt *attempt*.

        The completed children are undone newest first, one at a time: ``("kick",
        id)`` the next one (or again, after an earlier attempt's undo of it
        failed); ``("running", id)`` its undo runs; ``("failed", id)`` this attempt's
        undo of it failed; ``("done", "")`` every one is undone.
        """
        for child_id in reversed(self._fan_completed(rec, name, visit)):
            info = self._find_info(child_id)
            if info is None or info.status in (_S.CANCELLED, _S.FAILED):
                continue
            if info.status is _S.COMPLETED:
                return "kick", child_id
            if info.status is _S.COMPENSATION_FAILED:
                ours = self._peek(child_id).cause == undo_marker(rec, attempt)
                return ("failed" if ours else "kick"), child_id
            return "running", child_id
        return "done", ""

    def _fan_completed(self, rec: InstanceRecord, name: str, visit: int) -> list[str]:
        """
        The completed children of one visit of fan-out step *name*, in the order the parent saw them complete.

        That order is its history's (``child_finished``). A child that ended
        while the parent was being cancelled, unseen, is noted now, as the newest.
        """
        pattern = visit_pattern(rec.id, visit)
        seen: set[str] = set()
        done: list[str] = []
        for e in (*self.store.history(rec.id), *rec.history):
            if e.kind is not K.CHILD_FINISHED or e.step != name or e.detail is None:
                continue
            child_id, _, how = e.detail.rpartition(" ")
            if pattern.fullmatch(child_id):
                seen.add(child_id)
                if how == _S.COMPLETED.value:
                    done.append(child_id)
        for child in self.store.children(rec.id):
            if child.id in seen or not pattern.fullmatch(child.id):
                continue
            info = self._find_info(child.id)
            if info is not None and info.status.is_terminal:
                self._note(rec, K.CHILD_FINISHED, name, 0, f"{child.id} {info.status.value}")
                if info.status is _S.COMPLETED:
                    done.append(child.id)
        return done


def _checked_children(step: str, child: type, built: object) -> list[object]:
    """The children a fan-out step's method built, checked: a list of new, distinct objects of the child class."""
    expected = child.__qualname__
    if not isinstance(built, Sequence) or isinstance(built, (str, bytes)):
        msg = f"{step} must return a list of new {expected} objects to start as its children, got {built!r}"
        raise TypeError(msg)
    children: list[object] = list(built)  # pyright: ignore[reportUnknownArgumentType]
    seen: dict[int, int] = {}
    for i, c in enumerate(children):
        if not isinstance(c, child) or getattr(c, STATE_ATTRIBUTE, None) is not None:
            msg = f"{step} must return new {expected} objects to start as its children; item {i} is {c!r}"
            raise TypeError(msg)
        if id(c) in seen:
            msg = f"{step} returned the same {expected} object as items {seen[id(c)]} and {i}; build one per item"
            raise TypeError(msg)
        seen[id(c)] = i
        validate = getattr(type(c), "__orch_validate__")  # noqa: B009 - every workflow class has one
        validate.start(c)
    return children
