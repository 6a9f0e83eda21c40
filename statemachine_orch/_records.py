"""
The engine's records: instances in memory and in the store.

Loading (``_get``, ``_peek``) and dropping records, saving and the group commit
(``_save``, ``_flush``, ``_commit``), the leases this engine holds (``_claim``,
``_give_back``, ``_lost``; docs/design/leases.md), quarantine (``_orphan``),
history notes and subscribers, and the waiters of an instance's end.
"""

from __future__ import annotations

import asyncio
import os
import socket

import attrs

from ._clock import VirtualClock
from ._engine_core import EngineCore, InstanceBusy, K, logger
from ._errors import (
    InstanceExists,
    InstanceNotFound,
    LeaseLost,
    RecordLoadError,
    StoreError,
    UnknownWorkflowVersion,
    WorkflowInputError,
)
from ._history import EventKind, HistoryEvent, new_event
from ._instance import InstanceInfo, InstanceRecord, Signal
from ._machine import STATE_ATTRIBUTE
from ._status import InstanceStatus
from ._workflow import Workflow


def _ended_now(rec: InstanceRecord) -> bool:
    """Whether the record's pending history holds its change to a terminal status."""
    return any(e.kind is K.STATUS_CHANGED and InstanceStatus(e.detail).is_terminal for e in rec.history)


def _pid_alive(pid_text: str) -> bool:
    """Whether a process with this pid runs on this host (a zombie counts as dead)."""
    try:
        pid = int(pid_text)
    except ValueError:
        return True  # not ours to judge
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:  # noqa: PTH123 - a /proc file
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


_RELEASE_BATCH = 0.05
"""Seconds a given-back lease waits to be written with the others given back meanwhile."""


class Records(EngineCore):
    """The engine's records: memory, store, group commit and leases held."""

    def _create(self, workflow: object, instance_id: str | None = None, parent: str | None = None) -> InstanceRecord:
        if not isinstance(workflow, Workflow) or type(workflow).__orch_abstract__:
            msg = f"start() needs an instance of a concrete Workflow subclass, got {workflow!r}"
            raise TypeError(msg)
        cls = type(workflow)
        spec = cls.__orch_spec__
        if getattr(workflow, STATE_ATTRIBUTE, None) is not None:
            msg = "this object was started already; construct a new one for a new instance"
            raise WorkflowInputError(spec.name, "<instance>", msg)
        cls.__orch_validate__.start(workflow)
        if cls not in self._known:
            self._known.add(cls)
            self.registry.register(cls)
        setattr(workflow, STATE_ATTRIBUTE, spec.initial)
        now = self._now()
        rec_id = instance_id if instance_id is not None else f"{self._prefix}-{next(self._ids):x}"
        rec = InstanceRecord(rec_id, workflow, spec, cls.__orch_machine__, now)
        rec.parent = parent
        if self._leasing and self._drives:
            # Born leased to this engine: no other worker runs it before it parks.
            rec.fence = 1
            rec.lease = (self.owner, now + self.lease)
            self._fences[rec_id] = 1
        rec.history.append(new_event(HistoryEvent, (now, K.INSTANCE_STARTED, None, 0, spec.label)))
        if self._subscribers:
            self._publish(rec.id, rec.history[-1])
        return rec

    def _find_info(self, instance_id: str) -> InstanceInfo | None:
        """A snapshot of the live record, else of the stored one, else None."""
        rec = self._live.get(instance_id)
        info = rec.info() if rec is not None else self.store.info(instance_id)
        if self._quarantine and info is not None and instance_id in self._quarantine:
            info = attrs.evolve(info, quarantined=self._quarantine[instance_id][1])
        return info

    def _is_idle(self) -> bool:
        if self._active:
            return False
        if self._sched_next is not None and self._sched_next <= self.clock.now():
            return False  # a schedule's due time has come: its round has not run yet
        nxt = self.store.next_wake(self._no_timers())
        if nxt is None:
            return True
        # A virtual clock that does not jump only moves when the test moves it:
        # until then, a future timer cannot make anything happen.
        clock = self.clock
        return isinstance(clock, VirtualClock) and not clock.autojump and nxt > clock.now()

    def _notify(self, rec: InstanceRecord) -> None:
        if self._turn_waiters:
            turn_waiters, self._turn_waiters = self._turn_waiters, []
            for turn in turn_waiters:
                if not turn.done():
                    turn.set_result(None)
        waiters = self._waiters.get(rec.id)
        if not waiters:
            return
        status = rec.status
        idle = status is InstanceStatus.WAITING or status.is_terminal
        keep: list[tuple[bool, asyncio.Future[InstanceRecord | None]]] = []
        for terminal_only, fut in waiters:
            if fut.done():
                continue
            if status.is_terminal or (idle and not terminal_only):
                fut.set_result(rec)
            else:
                keep.append((terminal_only, fut))
        if keep:
            self._waiters[rec.id] = keep
        else:
            del self._waiters[rec.id]

    def _nudge(self, instance_id: str) -> None:
        """This engine no longer holds the instance's lease: its waiters look at the store from now on."""
        for _, fut in self._waiters.pop(instance_id, ()):
            if not fut.done():
                fut.set_result(None)

    def _release_idle_waiters(self) -> None:
        for fut in self._idle_waiters:
            if not fut.done():
                fut.set_result(None)
        self._idle_waiters.clear()

    # ----------------------------------------------------------------- records and commits

    def _get(self, instance_id: str) -> InstanceRecord:
        """
        The live record, loading it (and keeping it live) if needed: for changes.

        With a shared store, loading it claims its lease first (raising
        ``_InstanceBusy`` when another live worker holds it) and takes the commands
        waiting for it.
        """
        rec = self._live.get(instance_id)
        if rec is None:
            if not self._leasing:
                rec = self._peek(instance_id)
                self._live[instance_id] = rec
                return rec
            fresh = instance_id not in self._fences and instance_id not in self._releasing
            fence = self._claim(instance_id)
            try:
                rec = self._peek(instance_id)
                rec.fence = fence
                self._live[instance_id] = rec
                self._pull_commands(rec)
            except BaseException:
                if fresh and instance_id not in self._live:
                    self._give_back(instance_id)
                raise
        return rec

    def _claim(self, instance_id: str) -> int:
        """The fence of this engine's lease on the instance, claiming it if needed."""
        fence = self._fences.get(instance_id)
        if fence is not None:
            return fence
        fence = self._releasing.pop(instance_id, None)  # given back but not written yet: keep it
        if fence is None:
            now = self._now()
            fence = self.store.claim(instance_id, self.owner, now, now + self.lease)
            if fence is None:
                raise InstanceBusy(instance_id)
        self._fences[instance_id] = fence
        return fence

    def _give_back(self, instance_id: str) -> None:
        """
        Release the instance's lease, batched: written within ``_RELEASE_BATCH`` seconds with the others.

        One write transaction per instance and turn would cost a sequential worker
        a sixth of its throughput; a command for the instance meanwhile reuses the
        lease (``_claim``), and another worker waits at most that long for it.
        """
        fence = self._fences.pop(instance_id, None)
        if fence is None:
            return
        if self._waiters:
            self._nudge(instance_id)
        if not self._releasing:
            asyncio.get_running_loop().call_later(_RELEASE_BATCH, self._flush_releases)
        self._releasing[instance_id] = fence

    def _flush_releases(self) -> None:
        batch, self._releasing = self._releasing, {}
        if not batch:
            return
        try:
            self.store.release(self.owner, batch)
        except StoreError as exc:
            # They expire by themselves; meanwhile nobody else runs those instances.
            logger.warning("lease_release_failed", owner=self.owner, error=str(exc), leases=len(batch))

    def _peek(self, instance_id: str) -> InstanceRecord:
        """The live record, or a fresh load that is not kept: for reading."""
        rec = self._live.get(instance_id)
        if rec is None:
            try:
                rec = self.store.load(instance_id)
            except RecordLoadError as exc:
                # A record no engine can load: quarantine it, name it, never crash a loop on it.
                err = exc.of_instance(instance_id)
                self._orphan(instance_id, err)
                raise err from exc
            if rec is None:
                raise InstanceNotFound(instance_id)
        return rec

    def _unpin(self, rec: InstanceRecord) -> None:
        """Drop a record from memory once nothing runs it and all of it is committed (its lease goes too)."""
        if rec.worker is None and not rec.history and rec.id not in self._inbox and self._live.get(rec.id) is rec:
            del self._live[rec.id]
            if self._leasing:
                self._give_back(rec.id)

    def _get_or_orphan(self, instance_id: str) -> InstanceRecord | None:
        """The live record, or None (and a log line, once) when its version has no class or it cannot be loaded."""
        if instance_id in self._orphans:
            return None
        try:
            return self._get(instance_id)
        except UnknownWorkflowVersion as exc:
            self._orphan(instance_id, exc, "orphaned_instance")
            return None
        except RecordLoadError:
            return None  # quarantined by _peek
        except InstanceBusy:
            return None  # another worker drives it
        except StoreError as exc:
            # The store could not be read now (I/O): try again later, after a backoff.
            if instance_id not in self._held:
                self._hold(instance_id, exc)
            return None

    def _orphan(self, instance_id: str, why: Exception | str, event: str = "quarantined_instance", **log: str) -> None:
        """
        Quarantine an instance: no worker or timer runs it again in this engine.

        Once per instance: logged as *event*, and its reason shown by info(),
        instances() and history() (an instance_quarantined entry).
        """
        if instance_id in self._orphans:
            return
        self._orphans.add(instance_id)
        at = self._now()
        reason = str(why)
        self._quarantine[instance_id] = (at, reason)
        logger.error(event, instance_id=instance_id, error=reason, **log)
        if self._subscribers:
            self._publish(instance_id, new_event(HistoryEvent, (at, K.INSTANCE_QUARANTINED, None, 0, reason)))

    def _signals(self, rec: InstanceRecord) -> list[Signal]:
        """The instance's stored messages; none when they cannot be loaded (then it is quarantined)."""
        try:
            return self.store.signals(rec.id)
        except RecordLoadError as exc:
            self._orphan(rec.id, exc.of_instance(rec.id))
            return []

    async def _save(self, rec: InstanceRecord, *more: InstanceRecord, effects: bool = True) -> None:
        """Commit *rec* (and *more*, in the same transaction); with a group-committing store, with others' changes."""
        if self._heartbeat is not None:
            self._heartbeat.progress()  # a turn reached a commit: the loop is not hung (a busy loop may not tick)
        if effects and (rec.spawned or rec.signals_out):
            # Instances its step started, messages it sent: in this commit, then run and woken.
            await self._save_sending(rec, more)
            return
        if self._leasing:
            for r in (rec, *more):
                if r.parent is not None and r.status.is_terminal and _ended_now(r):
                    # The parent may live in another worker: the end and its wake-up are one commit.
                    r.send(r.parent, "wake", {})
        if not self._group:
            self._commit((rec, *more))
            return
        batch = self._batch
        if batch is None:
            batch = self._batch = []
            self._batch_done = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._flush)
        done = self._batch_done
        assert done is not None  # noqa: S101 - created with the batch
        index = len(batch)
        batch.append((rec, *more) if more else (rec,))
        failed = await asyncio.shield(done)
        if failed is not None and (exc := failed.get(index)) is not None:
            raise exc

    def _flush(self) -> None:
        batch, done = self._batch, self._batch_done
        self._batch = self._batch_done = None
        assert batch is not None  # noqa: S101 - scheduled with a batch
        assert done is not None  # noqa: S101
        try:
            self._commit(tuple(dict.fromkeys(rec for group in batch for rec in group)))
        except (StoreError, InstanceExists) as exc:
            if len(batch) == 1:
                done.set_result({0: exc})
                return
            # One record may be what failed (its variables cannot be written, its
            # lease was taken over): commit each change alone, so that the others are
            # written once and only its own callers hear of the failure.
            failed: dict[int, StoreError | InstanceExists] = {}
            for index, group in enumerate(batch):
                try:
                    self._commit(group)
                except (StoreError, InstanceExists) as alone:
                    failed[index] = alone
            done.set_result(failed)
        else:
            done.set_result(None)

    def _commit(self, records: tuple[InstanceRecord, ...]) -> None:
        obs = self._obs
        seen = obs.commit_begin(records) if obs is not None else None
        try:
            self.store.commit(records)
        except (StoreError, InstanceExists):
            raise
        except Exception as exc:
            msg = f"commit of {len(records)} instance change(s) failed: {type(exc).__name__}: {exc}"
            raise StoreError(msg) from exc
        self._commits += 1
        self._committed_records += len(records)
        if obs is not None:
            obs.committed(seen, len(records))
        if self._failures:
            for rec in records:
                self._failures.pop(rec.id, None)

    def _lost(self, instance_id: str) -> None:
        """Another worker took the instance over: drop this engine's copy (it writes nothing more)."""
        if self._fences.pop(instance_id, None) is None:
            return
        logger.warning("lease_lost", instance_id=instance_id, owner=self.owner)
        if self._obs is not None:
            self._obs.lease_lost(instance_id)
        self._nudge(instance_id)
        rec = self._live.get(instance_id)
        if rec is not None and rec.worker is None:
            del self._live[instance_id]
        for command in self._inbox.pop(instance_id, ()):
            if command.done is not None and not command.done.done():
                command.done.set_exception(LeaseLost([instance_id]))

    def _expire_dead_owners(self) -> None:
        """Expire at once the leases of this host's workers that died (their pid is gone)."""
        host = socket.gethostname()
        for owner in self.store.owners():
            parts = owner.split(":")
            if len(parts) != 3 or parts[0] != host or owner in self._dead_owners:  # noqa: PLR2004 - host:pid:random
                continue
            if owner != self.owner and not _pid_alive(parts[1]):
                # Once: a dead worker takes no new lease, and its name may stay on the
                # rows it ended (their leases are expired, and ended rows are not claimed).
                self._dead_owners.add(owner)
                expired = self.store.expire(owner)
                logger.info("dead_worker_expired", owner=owner, leases=expired)

    # ----------------------------------------------------------------- running

    def _note(self, rec: InstanceRecord, kind: EventKind, step: str | None, attempt: int, detail: str | None) -> None:
        event = new_event(HistoryEvent, (self._now(), kind, step, attempt, detail))
        rec.history.append(event)
        if self._subscribers:
            self._publish(rec.id, event)

    def _publish(self, instance_id: str, event: HistoryEvent) -> None:
        for callback in list(self._subscribers):
            try:
                callback(instance_id, event)
            except Exception:  # noqa: BLE001 - a subscriber must never break an instance
                logger.exception("subscriber_failed", instance_id=instance_id, kind=event.kind.value)

    def _set_status(self, rec: InstanceRecord, status: InstanceStatus) -> None:
        if rec.status is not status:
            if self._obs is not None:
                self._obs.status_changed(rec, rec.status, status)
            rec.status = status
            self._note(rec, K.STATUS_CHANGED, None, 0, status.value)
