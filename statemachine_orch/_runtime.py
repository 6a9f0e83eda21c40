"""
The engine's worker runtime: who runs which instance, and when.

The ready queue and the workers (``_enqueue``, ``_worker``), the end of a turn
(``_turn_ended``), failed commits' backoff (``_hold``, ``_reload``), timers
(``_timer_loop``, ``_fire_due``) and, with a store several processes share, the
fleet loop (``_fleet_loop``, ``_claim_round``) and the lease heartbeat's thread
(``_start_heartbeat``; ``_heartbeat.py``) with the loop's progress marks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from ._clock import VirtualClock
from ._engine_core import QUEUED, InstanceBusy, logger, sync_wake
from ._errors import (
    InstanceNotFound,
    LeaseLost,
    RecordLoadError,
    StoreError,
    UnknownWorkflowVersion,
)
from ._heartbeat import Heartbeat, LeaseRenewer
from ._instance import InstanceRecord, active_steps
from ._records import Records
from ._status import InstanceStatus

_DUE_BATCH = 256  # timers fired per store query


_RELOAD_DELAY = 0.05  # first wait before reloading an instance whose commit failed


_RELOAD_DELAY_MAX = 30.0  # the cap of that wait, doubled at each failed commit in a row


_CLAIM_BATCH = 32
"""Instances claimed per round at most: a worker whose loop is busy (CPU-bound steps) comes back for
more only once its steps yield, so an idle worker beside it claims the rest (shares the load)."""

_BUSY_RETRY = 0.005  # wait before looking again at a due timer whose instance is busy


def _backoff(failures: int) -> float:
    """How long to wait after *failures* failed tries in a row: doubling from _RELOAD_DELAY, capped."""
    return min(_RELOAD_DELAY * 2.0 ** (failures - 1), _RELOAD_DELAY_MAX)


async def _wait_event(event: asyncio.Event, seconds: float) -> None:
    # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation
    # that arrives as the event fires, and the engine would never stop.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


class Runtime(Records):
    """The engine's workers, timers, fleet loop and heartbeat."""

    def _ensure_running(self) -> None:
        if self._ready_event is not None:
            return
        self._ready_event = asyncio.Event()
        self._timer_wake = asyncio.Event()
        if not self._drives:
            return  # a client: no workers, no timers
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._worker()) for _ in range(self.concurrency)]
        if self._leasing:
            self._timer_task = loop.create_task(self._fleet_loop())
            self._start_heartbeat(loop)
            listen = getattr(self.store, "listen", None)
            if listen is not None:
                wake = self._timer_wake

                def heard(instance_id: str) -> None:  # in the store's listener thread
                    loop.call_soon_threadsafe(self._heard, instance_id, wake)

                self._stop_listening = listen(heard)
        else:
            self._timer_task = loop.create_task(self._timer_loop())

    def _heard(self, instance_id: str, wake: asyncio.Event | None) -> None:
        """The store announced a command for *instance_id* (PostgreSQL's NOTIFY)."""
        if wake is not self._timer_wake:
            return  # from before a restart of this engine
        if instance_id in self._live:
            self._kick(instance_id)
        elif wake is not None:
            self._claim_now = True
            wake.set()  # the fleet loop claims it

    # ----------------------------------------------------------------- the fleet: claims, leases, failover

    def _claim_round(self) -> tuple[int, list[str]]:
        """Claim what needs a worker (up to the free workers, a batch) and queue it; how many, and the orphans found."""
        room = min(self.concurrency - self._active, _CLAIM_BATCH)
        if room <= 0:
            return 0, []
        now = self._now()
        exclude = frozenset(self._live.keys() | self._orphans | self._held | self._queued_ids | self._fences.keys())
        claimed = self.store.claim_runnable(self.owner, now, now + self.lease, room, exclude)
        self._backlog = len(claimed) >= room
        taken = 0
        orphaned: list[str] = []
        for instance_id, fence in claimed:
            self._fences[instance_id] = fence
            if self._take(instance_id, now):
                taken += 1
            elif instance_id in self._orphans:
                orphaned.append(instance_id)
        return taken, orphaned

    def _take(self, instance_id: str, now: float) -> bool:
        """A claimed instance: run it if it needs running (else give its lease back); True if queued."""
        rec = self._get_or_orphan(instance_id)
        if rec is None:
            self._give_back(instance_id)
            return False
        if rec.worker is not None:
            return False
        if rec.wake_at is not None and rec.wake_at <= now and self._fire_due([instance_id], now):
            return True
        in_flight = (
            not rec.status.is_terminal
            and (rec.wake_at is None or bool(rec.branches))
            and rec.status in (InstanceStatus.RUNNING, InstanceStatus.COMPENSATING)
        )
        if rec.id in self._inbox or in_flight:
            if in_flight and rec.fence > 1 and self._obs is not None:
                # Claimable in flight only when its driver's lease expired (it died or
                # stalled). A start a client wrote (fence 0) was never driven: this
                # claim, its first, gave it fence 1.
                self._obs.takeover(instance_id)
            self._enqueue(rec)
            return True
        self._unpin(rec)
        return False

    async def _fleet_loop(self) -> None:
        """With a shared store: claim work (in flight of dead workers, due timers, commands) and fire timers."""
        wake = self._timer_wake
        assert wake is not None  # noqa: S101 - created with the loop
        clock = self.clock
        store = self.store
        failures = 0
        listening = self._stop_listening is not None
        interval = 1.0 if listening else self.poll
        last_sweep = last_claim = float("-inf")
        nxt: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            try:
                if self._sched_next is not None and self._sched_next <= clock.now():
                    await self._run_schedules(clock.now())
                if loop.time() - last_sweep >= interval:
                    last_sweep = loop.time()
                    self._expire_dead_owners()
                    for instance_id in store.commanded(self.owner):
                        rec = self._live.get(instance_id)
                        if rec is not None and self._pull_commands(rec):
                            self._run_commands(rec)
                claimed = 0
                # A claim when told (a NOTIFY, free workers with work left), when a timer
                # fell due, or at the poll: not at every wake-up (every idle turn wakes the
                # loop, and a sequential caller would pay a claim query per instance).
                if self._claim_now or loop.time() - last_claim >= interval or (nxt is not None and nxt <= clock.now()):
                    self._claim_now = False
                    last_claim = loop.time()
                    claimed, _ = self._claim_round()
                    # A full batch: there may be more, claimed next turn once the new ones yield.
                    self._claim_now = self._backlog and self.concurrency > self._active
                nxt = store.next_wake(self._no_timers())
            except StoreError as exc:
                failures += 1
                await _wait_out_store_error(wake, "claims_failed", exc, failures)
                continue
            failures = 0
            if claimed:
                await asyncio.sleep(0)
                continue
            if self._idle_waiters and self._is_idle():
                self._release_idle_waiters()
            now = clock.now()
            virtual = isinstance(clock, VirtualClock) and clock.autojump
            if virtual and self._active == 0 and nxt is not None and nxt > now:
                assert isinstance(clock, VirtualClock)  # noqa: S101 - for the type checker
                clock.jump_to(self._stop_at(nxt))
                continue
            # Timers of instances others hold, commands of others' instances: look again
            # after a short poll (a NOTIFY wakes the loop at once).
            delay = 1.0 if listening else self.poll
            for at in (nxt, self._sched_next):  # a timer, a schedule's due time
                if at is not None and at > now:
                    delay = min(delay, at - now)
            wake.clear()
            await _wait_event(wake, delay)

    def _start_heartbeat(self, loop: asyncio.AbstractEventLoop) -> None:
        """Renew the leases from a thread of their own, while this loop makes progress (_heartbeat.py)."""
        # Not in the Store protocol (stores without leases lack it); Engine checked that it is there.
        make: Callable[[], LeaseRenewer] = getattr(self.store, "lease_renewer")  # noqa: B009
        fences = self._fences
        heartbeat = self._heartbeat = Heartbeat(
            make(),
            owner=self.owner,
            lease=self.lease,
            now=self._now,
            # Called in the thread. Copying a dict of str keys runs no Python code: one step
            # under the GIL (a lock of the dict without it), never torn. _fences is never rebound.
            held=fences.copy,
            lost=self._renewal_lost,
            loop=loop,
        )
        heartbeat.start()
        self._lease_task = loop.create_task(self._progress_loop(heartbeat))

    async def _progress_loop(self, heartbeat: Heartbeat) -> None:
        """Tell the heartbeat that the loop turns, four times a lease."""
        while True:
            heartbeat.progress()
            await asyncio.sleep(self.lease / 4)

    def _renewal_lost(self, lost: dict[str, int]) -> None:
        """The heartbeat found these leases (id -> fence) taken over; those still held with that fence are lost."""
        for instance_id, fence in lost.items():
            if self._fences.get(instance_id) == fence:  # not given back, nor claimed again, meanwhile
                self._lost(instance_id)

    def _forget(self, rec: InstanceRecord) -> None:
        """Drop the live record: its next use reloads the committed state."""
        if self._live.get(rec.id) is rec:
            del self._live[rec.id]

    # ----------------------------------------------------------------- workers

    def _enqueue(self, rec: InstanceRecord) -> None:
        if self._ready_event is None:
            self._ensure_running()
        self._active += 1
        rec.worker = QUEUED
        self._ready.append(rec)
        self._wake_one_worker()

    def _enqueue_id(self, instance_id: str) -> None:
        """Queue an instance whose record a worker loads when it gets to it (recovery)."""
        if self._ready_event is None:
            self._ensure_running()
        self._active += 1
        self._queued_ids.add(instance_id)
        self._ready.append(instance_id)
        self._wake_one_worker()

    def _wake_one_worker(self) -> None:
        # One instance, one worker: waking every idle worker for each enqueue made
        # a sequential client pay for all of them.
        idle = self._idle_workers
        while idle:
            fut = idle.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    async def _worker(self) -> None:
        ready = self._ready
        current = asyncio.current_task()
        assert current is not None  # noqa: S101 - always inside a task
        loop = asyncio.get_running_loop()
        while True:
            if not ready:
                fut: asyncio.Future[None] = loop.create_future()
                self._idle_workers.append(fut)
                await fut
                continue
            item = ready.popleft()
            if isinstance(item, str):
                loaded = self._load_queued(item)
                if loaded is None:
                    self._active -= 1
                    continue
                rec = loaded
            else:
                rec = item
            rec.worker = current
            obs = self._obs
            turn = obs.turn_begin(rec) if obs is not None else None
            try:
                await self._drive(rec)
                if rec.consumed_commands or rec.outbox:
                    await self._save(rec)  # commands applied (or refused) with no move to carry them
            except asyncio.CancelledError:
                if (rec.cancel is None and not self._interrupting(rec.id)) or current.cancelling() > 1:
                    raise
                # Our own cancel() interrupted the instance outside a step body: drive again.
                current.uncancel()
                self._ready.appendleft(rec)
                self._active += 1
                rec.worker = QUEUED
            except LeaseLost:
                # Another worker took it over: it drives the instance from what the store holds.
                rec.worker = None
                self._active -= 1
                self._forget(rec)
                self._lost(rec.id)
                if self._active == 0:
                    self._wake_timers()
                continue
            except StoreError as exc:
                self._forget(rec)
                rec.worker = None
                self._active -= 1
                # No waiter hears of this turn: its last change was not written. The
                # reload continues from what the store holds, after a backoff, and a
                # later turn reports.
                self._hold(rec.id, exc)
                if self._active == 0:
                    self._wake_timers()
                continue
            finally:
                if rec.worker is current:
                    rec.worker = None
                if turn is not None and obs is not None:
                    obs.turn_end(turn)
            self._turn_ended(rec)

    def _load_queued(self, instance_id: str) -> InstanceRecord | None:
        """The record of a queued id, or None when it cannot or need not run now."""
        self._queued_ids.discard(instance_id)
        try:
            rec = self._get_or_orphan(instance_id)
        except (InstanceNotFound, StoreError) as exc:
            logger.error("recovery_load_failed", instance_id=instance_id, error=str(exc))
            return None
        return rec if rec is not None and rec.worker is None else None

    def _hold(self, instance_id: str, exc: StoreError) -> None:
        """
        A commit of the instance failed: reload it after a backoff that doubles at each failure in a row.

        Meanwhile no timer, caller or worker runs it: faults slow an instance down,
        never speed it up (a due timer re-fired at once would re-run its step in a
        tight loop while the disk is full).
        """
        failures = self._failures[instance_id] = self._failures.get(instance_id, 0) + 1
        delay = _backoff(failures)
        logger.error("commit_failed", instance_id=instance_id, error=str(exc), failures=failures, retry_in=delay)
        self._held.add(instance_id)
        asyncio.get_running_loop().call_later(delay, self._reload, instance_id)

    def _reload(self, instance_id: str) -> None:
        """After a failed commit and its backoff: go on from what the store holds (the commit may have landed)."""
        self._held.discard(instance_id)
        if instance_id in self._live:
            return
        try:
            rec = self._get(instance_id)
        except (InstanceNotFound, UnknownWorkflowVersion, RecordLoadError, InstanceBusy) as exc:
            # Gone, quarantined (by _peek) or taken over: nothing to retry; its callers hear why.
            for command in self._inbox.pop(instance_id, ()):
                if command.done is not None and not command.done.done():
                    command.done.set_exception(exc)
            return
        except StoreError as exc:
            self._hold(instance_id, exc)
            return
        if rec.worker is None and (
            instance_id in self._inbox
            or (
                (rec.wake_at is None or bool(rec.branches))
                and rec.status in (InstanceStatus.RUNNING, InstanceStatus.COMPENSATING)
            )
        ):
            self._enqueue(rec)
        else:
            self._notify(rec)  # those who waited for the failed turn hear what the store holds
            self._unpin(rec)
        self._wake_timers()

    def _turn_ended(self, rec: InstanceRecord) -> None:
        self._active -= 1
        if self._backlog and self.concurrency - self._active >= max(1, self.concurrency // 8):
            # Work was left behind at the last claim and workers are free again: claim
            # now (in batches of an eighth of the workers), not at the next poll.
            self._backlog = False
            self._claim_now = True
            self._wake_timers()
        if rec.worker is None and (
            rec.id in self._inbox or (rec.status is InstanceStatus.WAITING and self._message_arrived(rec))
        ):
            # A caller's change, or a signal, came while this turn was committing: take it now.
            self._enqueue(rec)
        self._notify(rec)
        # Parked or finished and fully committed: from now on it lives in the store.
        self._unpin(rec)
        if self._active == 0:
            # The timer loop recomputes the next timer when all is idle. The fleet loop
            # needs no such wake-up (a parked instance's timer woke it already), except
            # to let a virtual clock jump; a sequential caller would pay a query per instance.
            if not self._leasing or isinstance(self.clock, VirtualClock):
                self._wake_timers()
            if self._idle_waiters and self._is_idle():
                self._release_idle_waiters()

    def _message_arrived(self, rec: InstanceRecord, only: str | None = None) -> bool:
        types = [
            m
            for name in ([only] if only is not None else active_steps(rec.state))
            if (m := rec.spec.step(name).message) is not None
        ]
        if not types:
            return False
        return any(
            s.seq not in rec.consumed_signals and isinstance(s.message, tuple(types)) for s in self._signals(rec)
        )

    # ----------------------------------------------------------------- timers

    def _wake_timers(self) -> None:
        if self._timer_wake is not None:
            self._timer_wake.set()

    def _park(self, rec: InstanceRecord, delay: float) -> None:
        rec.wake_at = self.clock.now() + delay
        self._wake_timers()

    async def _timer_loop(self) -> None:
        wake = self._timer_wake
        assert wake is not None  # noqa: S101 - created with the loop
        clock = self.clock
        store = self.store
        failures = 0
        while True:
            now = clock.now()
            due: list[str] = []
            try:
                if self._sched_next is not None and self._sched_next <= now:
                    await self._run_schedules(now)
                nxt = store.next_wake(self._no_timers())
                if nxt is not None and nxt <= now:
                    due = store.due(now, _DUE_BATCH)
            except StoreError as exc:
                # The timer loop never dies of its store: it retries, slower and slower.
                failures += 1
                await _wait_out_store_error(wake, "timers_unreadable", exc, failures)
                continue
            failures = 0
            if nxt is None:
                if self._idle_waiters and self._is_idle():
                    self._release_idle_waiters()
                wake.clear()
                if self._sched_next is not None and not isinstance(clock, VirtualClock):
                    await _wait_event(wake, self._sched_next - now)  # a schedule's next due time
                else:
                    await wake.wait()
                continue
            if nxt <= now:
                if self._fire_due(due, now):
                    await asyncio.sleep(0)
                else:
                    # Every due instance is still busy finishing its turn; its next
                    # commit clears or moves the timer. Wait for that, not in a spin.
                    wake.clear()
                    await _wait_event(wake, _BUSY_RETRY)
                continue
            wake.clear()
            nxt = self._stop_at(nxt)
            if isinstance(clock, VirtualClock):
                if clock.autojump and self._active == 0:
                    clock.jump_to(nxt)
                    continue
                await wake.wait()
            else:
                await _wait_event(wake, nxt - now)

    def _stop_at(self, nxt: float) -> float:
        """
        When the loops wake (or a virtual clock jumps) for the timer due at *nxt*: at a schedule's due time before it.

        A virtual clock never jumps to a schedule's due time by itself (an idle
        engine would start instances forever), but stops at each on its way to a
        later timer, so none is missed.
        """
        sched = self._sched_next
        return nxt if sched is None or sched >= nxt else sched

    def _no_timers(self) -> frozenset[str]:
        """Instances whose timers do not fire now: orphans, and those waiting out a commit backoff."""
        return frozenset(self._orphans.union(self._held) if self._held else self._orphans)

    def _fire_due(self, instance_ids: list[str], now: float) -> int:
        fired = 0
        held = self._held
        for instance_id in instance_ids:
            if instance_id in held:
                continue  # its reload, after the backoff, sees the timer again
            rec = self._get_or_orphan(instance_id)
            if rec is None:
                continue
            if rec.branches and rec.wake_at is not None and rec.wake_at <= now:
                # Inside a fork: wake the due branches; the others keep their timers.
                # A woken branch keeps its due time until it runs: a sibling may
                # commit first, and a restart must still find the timer.
                for b in rec.branches.values():
                    if b.wake_at is not None and b.wake_at <= now:
                        if self._obs is not None and not b.woken:
                            self._obs.timer_fired(rec.spec.name, now - b.wake_at)
                        b.woken = True
                sync_wake(rec)
                self._resume(rec)
                fired += 1
                continue
            if rec.worker is not None or rec.wake_at is None or rec.wake_at > now:
                self._unpin(rec)
                continue
            if self._obs is not None:
                self._obs.timer_fired(rec.spec.name, now - rec.wake_at)
            rec.wake_at = None
            rec.woken = True
            self._enqueue(rec)
            fired += 1
        return fired


async def _wait_out_store_error(wake: asyncio.Event, event: str, exc: StoreError, failures: int) -> None:
    """A loop's store failed *failures* times in a row: log it, then wait the backoff (or a wake-up)."""
    delay = _backoff(failures)
    logger.error(event, error=str(exc), failures=failures, retry_in=delay)
    wake.clear()
    await _wait_event(wake, delay)
