"""The driver's child workflows: subflow steps start a child, wait for its end, cancel it and undo it."""

from __future__ import annotations

import asyncio
from typing import Any

from ._ctx import Ctx
from ._driver import Driver
from ._engine_core import K, child_id_of, trigger
from ._errors import (
    ChildWorkflowFailed,
    InstanceNotFound,
    StoreError,
)
from ._instance import Branch, InstanceRecord
from ._spec import (
    StepSpec,
)
from ._status import InstanceStatus


def _retrieved(fut: asyncio.Future[Any]) -> None:
    """Mark the outcome of a fire-and-forget command as seen."""
    if not fut.cancelled():
        fut.exception()


def undo_marker(parent: InstanceRecord, attempt: int) -> str:
    """What a child undone by its parent records as its cause (the attempt tells a retry from a failure)."""
    return f"compensated by its parent {parent.id}" + (f" (attempt {attempt})" if attempt > 1 else "")


class DriverChildren(Driver):
    """The driver's child workflows."""

    async def _child_wait(self, rec: InstanceRecord, step: StepSpec, tok: Branch | None) -> bool:
        """Start the child of a subflow step, or see whether it ended; True while the step waits."""
        t: InstanceRecord | Branch = rec if tok is None else tok
        child_id = child_id_of(rec, t)
        info = self._find_info(child_id)
        if info is None:
            ctx = Ctx(
                self.services, rec.id, rec.spec.name, step.name, t.attempt, (rec.id, t.visit, ""), clock=self.clock
            )
            start = step.start
            assert start is not None  # noqa: S101 - subflow steps always have one
            try:
                if self.before_attempt is not None:
                    self.before_attempt(ctx)
                child: object = start(rec.wf, ctx)
                if step.child is None or not isinstance(child, step.child):
                    expected = step.child.__qualname__ if step.child is not None else "a workflow"
                    msg = f"{step.name} must return a new {expected} to start as its child, got {child!r}"
                    raise TypeError(msg)
                crec = self._create(child, child_id, rec.id)
            except Exception as exc:  # noqa: BLE001 - user code: the step's failure
                return await self._step_failed(rec, step, t.attempt, exc, tok)
            self._live[child_id] = crec
            self._note(rec, K.CHILD_STARTED, step.name, t.attempt, child_id)
            self._waits(rec, tok)
            try:
                await self._save(rec, crec)
            except StoreError:
                # The parent's reload must not find a child that exists only in this
                # process's memory: it would wait for it forever.
                self._forget(crec)
                raise
            self._enqueue(crec)
            return True
        if not info.status.is_terminal:
            if self._waits(rec, tok):
                await self._save(rec)
            return True
        self._note(rec, K.CHILD_FINISHED, step.name, t.attempt, f"{child_id} {info.status.value}")
        if tok is None:
            self._set_status(rec, InstanceStatus.RUNNING)
        else:
            tok.waiting = False
        if info.status is InstanceStatus.COMPLETED:
            t.payload = self.workflow(child_id)
            return False
        return await self._step_failed(
            rec, step, t.attempt, ChildWorkflowFailed(child_id, info.status, info.error), tok
        )

    def _waits(self, rec: InstanceRecord, tok: Branch | None) -> bool:
        """Mark the instance (or branch) waiting; True when that is a change."""
        if tok is not None:
            changed = not tok.waiting
            tok.waiting = True
            return changed
        if rec.status is InstanceStatus.WAITING:
            return False
        self._set_status(rec, InstanceStatus.WAITING)
        return True

    def _child_ended(self, child: InstanceRecord) -> None:
        """A child reached its end: its parent's subflow step may go on."""
        assert child.parent is not None  # noqa: S101 - called for children only
        try:
            parent = self._get_or_orphan(child.parent)
        except InstanceNotFound:
            return
        if parent is None:
            return
        waits = parent.status is InstanceStatus.WAITING or (parent.branches and not parent.status.is_terminal)
        # A compensating parent parked without a timer waits for a child to undo itself.
        undoing = parent.status is InstanceStatus.COMPENSATING and parent.wake_at is None
        if waits or undoing:
            self._resume(parent)
        else:
            self._unpin(parent)

    def _cancel_child(self, parent: InstanceRecord, child_id: str, why: str, *, compensate: bool = True) -> None:
        if self._leasing:
            # The child may run in another worker: a command, written with the parent's next commit.
            parent.send(child_id, "cancel", {"reason": why, "compensate": compensate})
            return
        try:
            child = self._get_or_orphan(child_id)
        except InstanceNotFound:
            return
        if child is None:
            return
        if child.status.is_terminal:
            self._unpin(child)
            return
        # Not awaited: the child's driver applies it; a failed commit there is its own to retry.
        self._request_cancel(child.id, why, compensate=compensate).add_done_callback(_retrieved)

    def _children_running(self, rec: InstanceRecord) -> bool:
        """Whether a child of *rec* has not ended yet (one cancelled with it may still be undoing itself)."""
        for child in self.store.children(rec.id):
            info = self._find_info(child.id)
            if info is not None and not info.status.is_terminal:
                return True
        return False

    def _child_undo(self, rec: InstanceRecord, name: str, visit: int, attempt: int) -> tuple[str, str]:
        """
        Where the undo of a subflow step's child stands, for compensation attempt *attempt*.

        ``("kick", id)``: start it (the child completed, or an earlier attempt's undo
        failed); ``("running", id)``: it runs; ``("done", id)``: the child is undone, or
        never completed (a failed child undid itself); ``("failed", id)``: this
        attempt's undo failed.
        """
        base = f"{rec.id}/{visit}"
        attempts = rec.spec.step(name).retry.attempts
        if attempts is None:
            # Unlimited retries: which attempts started a child, only the store knows.
            started = [c.id for c in self.store.children(rec.id) if _attempt_of(c.id, base) is not None]
            ids = sorted(started, key=lambda child_id: _attempt_of(child_id, base) or 0)
        else:
            ids = [base] + [f"{base}.{a}" for a in range(2, attempts + 1)]
        # The step completed, so its last child did: earlier attempts' children failed.
        for child_id in reversed(ids):
            info = self._find_info(child_id)
            if info is None:
                continue
            status = info.status
            if status in (InstanceStatus.CANCELLED, InstanceStatus.FAILED):
                return "done", child_id
            if status is InstanceStatus.COMPLETED:
                return "kick", child_id
            if status is InstanceStatus.COMPENSATION_FAILED:
                ours = self._peek(child_id).cause == undo_marker(rec, attempt)
                return ("failed" if ours else "kick"), child_id
            return "running", child_id
        return "done", ""

    async def _kick_child_undo(self, rec: InstanceRecord, undo: tuple[str, str], attempt: int) -> bool:
        """Start the child's undo (True: the parent parks until it ends), or raise its failure."""
        word, child_id = undo
        if word == "done":
            return False
        child = self._get(child_id)
        if word == "failed":
            self._unpin(child)
            raise ChildWorkflowFailed(child_id, child.status, child.error)
        self._start_undo(child, undo_marker(rec, attempt))
        # One commit: a crash must not leave the child undoing without the parent's note that it started it.
        await self._save(rec, child)
        self._enqueue(child)
        return True

    def _start_undo(self, child: InstanceRecord, marker: str) -> None:
        """Turn a completed child (or one whose undo failed) to compensating, *marker* its cause."""
        if child.status is InstanceStatus.COMPLETED:
            child.error = child.cause = marker
            trigger(child, "undo")
        else:
            child.cause = marker
            trigger(child, "retry_undo")
            child.comp_attempt = 1
        self._set_status(child, InstanceStatus.COMPENSATING)


def _attempt_of(child_id: str, base: str) -> int | None:
    """The attempt of a subflow step's visit *base* (``<parent>/<visit>``) that started *child_id*, if it did."""
    if child_id == base:
        return 1
    suffix = child_id[len(base) + 1 :]
    if child_id.startswith(base + ".") and suffix.isdigit():
        return int(suffix)
    return None
