"""
The lease heartbeat: a thread that renews an engine's leases while its event loop makes progress.

The engine's steps run on its event loop; a step that keeps the CPU busy (or many
short ones in a row) keeps the loop from doing anything else. A heartbeat on the
loop would then miss its renewals, the leases would run out, and another worker
would take the instances over and run their steps again, although this worker
was doing their work all along. So the renewals come from a thread of their own,
through a connection of their own (``lease_renewer()`` of the store).

A worker that is stuck must not keep its instances for ever, though: the loop
(and every commit its turns reach) marks *progress*, and the thread renews only
while the last mark is younger than the lease. A loop that made no progress for
a lease (a step that never returns, a deadlock) is taken for hung: the thread
stops renewing and logs ``loop_stalled``; its leases run out at most one lease
later (two leases after the last progress), and another worker takes the
instances over; the stalled worker's late commits are refused by their fences.
Once the loop moves again the thread renews what it still holds, and the
instances taken over meanwhile are handed to the loop as lost.

A stopped process (SIGSTOP) stops its heartbeat thread as well: its leases run
out one lease after their last renewal, as they did with a heartbeat on the loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import structlog

from ._errors import StoreError

logger: Any = structlog.get_logger("statemachine_orch.engine")


class LeaseRenewer(Protocol):
    """What a store's ``lease_renewer()`` returns: ``renew`` on a connection of its own, used by one thread."""

    def renew(self, owner: str, fences: Mapping[str, int], until: float) -> list[str]:
        """Extend *owner*'s leases (id -> fence) to *until*; return the ids it no longer holds."""
        ...

    def close(self) -> None:
        """Close its connection."""
        ...


class Heartbeat:
    """
    A daemon thread renewing leases every third of the lease, while the loop made progress within the lease.

    Args:
        renewer: The store's renewer (its own connection); closed when the thread ends.
        owner: The engine's owner name.
        lease: The lease length (seconds).
        now: The engine's clock, as the leases' expiry times are written.
        held: The leases held now (id -> fence), called in the thread.
        lost: Called in the loop's thread with the leases (id -> fence) a renewal found taken over.
        loop: The engine's event loop.
    """

    def __init__(
        self,
        renewer: LeaseRenewer,
        *,
        owner: str,
        lease: float,
        now: Callable[[], float],
        held: Callable[[], dict[str, int]],
        lost: Callable[[dict[str, int]], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._renewer = renewer
        self._owner = owner
        self._lease = lease
        self._now = now
        self._held = held
        self._lost = lost
        self._loop = loop
        self._last = time.monotonic()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"orch-heartbeat-{owner}", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._last = time.monotonic()
        self._thread.start()

    def progress(self) -> None:
        """The loop moved (a tick, a commit point): the thread may renew for another lease. Called in the loop."""
        self._last = time.monotonic()

    def stalled(self) -> float:
        """Seconds since the loop's last progress."""
        return time.monotonic() - self._last

    def stop(self) -> None:
        """Stop the thread and wait for it (a renewal under way ends first); no renewal follows."""
        self._stopping.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        stalled_since: float | None = None
        try:
            while not self._stopping.wait(self._lease / 3):
                if self._loop.is_closed():
                    return  # the engine's loop ended without aclose(): nothing drives its instances
                stalled = self.stalled()
                if stalled >= self._lease:
                    if stalled_since != self._last:
                        stalled_since = self._last
                        held = len(self._held())
                        logger.error("loop_stalled", owner=self._owner, stalled=round(stalled, 1), leases=held)
                    continue
                if stalled_since is not None:
                    stalled_since = None
                    logger.warning("loop_moves_again", owner=self._owner)
                self._beat()
        finally:
            self._renewer.close()

    def _beat(self) -> None:
        """Renew every lease held now; hand those taken over to the loop."""
        fences = self._held()
        if not fences:
            return
        try:
            lost = self._renewer.renew(self._owner, fences, self._now() + self._lease)
        except StoreError as exc:
            logger.warning("lease_renewal_failed", owner=self._owner, error=str(exc), leases=len(fences))
            return
        if lost and not self._stopping.is_set():
            gone = {i: fences[i] for i in lost}
            try:
                self._loop.call_soon_threadsafe(self._lost, gone)
            except RuntimeError:
                return  # the loop closed meanwhile: nobody is left to tell
