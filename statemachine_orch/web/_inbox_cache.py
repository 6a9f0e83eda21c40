"""
The inbox's answers kept in the server process, until a task changes (PostgreSQL only).

A page of a user's open tasks is asked for again and again, and changes only
when a task row does. ``InboxCache`` keeps the encoded answer of each question
(user, groups, instance filter, limit) and forgets them all when it hears that a
task row changed: a trigger on the ``tasks`` table (schema 7) notifies
``orch_tasks`` in the same transaction as every change, from whatever process
makes it, and :meth:`PostgresStore.watch_tasks` calls :meth:`InboxCache.changed`
once it committed. The process's own writes (any request other than GET or HEAD)
forget them at once too, before their answer leaves (:class:`ForgetOnWrite`), so
that whoever wrote reads what they wrote without waiting for the notification.

What is kept is current, in these terms:

- Each answer carries the *generation* it was read at (the count of changes
  heard when its read began): it is served only while no change was heard since,
  so an answer read before a change but stored after it is never served.
- While the listening connection is lost, nothing is served nor kept (changes
  made then would not be heard); once it listens again, all that was kept is
  forgotten.
- An answer says which of its tasks are overdue; it is served only until the
  earliest due time of its tasks that had not passed when it was read.
- And at most ``max_age`` seconds, whatever happens (a last resort should a
  connection die without its listener noticing for a while).

Answers of the overdue filter (``overdue=true``: which tasks are in it changes
with the clock alone) are not kept. SQLite and memory stores have no cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Final

import attrs
from starlette.types import ASGIApp, Message, Receive, Scope, Send

InboxKey = tuple[str, tuple[str, ...], str | None, int]
"""What an inbox answer depends on besides the store: user, groups asked with, instance filter, limit."""

SIZE: Final = 10_000
"""The most answers kept (the oldest is dropped first)."""

MAX_AGE: Final = 60.0
"""The longest an answer is served (seconds), even when no change is heard."""


@attrs.frozen
class Kept:
    """
    One kept answer.

    Attributes:
        body: The answer's JSON, encoded.
        etag: Its entity tag (a digest of *body*: equal answers, from any process, have equal tags).
        generation: The count of changes heard when its read began.
        expires: The engine clock's time its overdue flags go stale (the earliest due time still to come).
        born: ``time.monotonic()`` when it was kept.
    """

    body: bytes
    etag: str
    generation: int
    expires: float
    born: float


def etag_of(body: bytes) -> str:
    """A strong entity tag for *body*."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


class InboxCache:
    """
    Inbox answers of this process, current as long as no task change was heard since they were read.

    :meth:`changed` is called from the store's listening thread; the rest from the
    event loop. An entry stores its generation, so a change heard between a
    check and a store only makes the entry unusable, never wrong.

    Args:
        size: The most answers kept.
        max_age: The longest one answer is served, in seconds.
    """

    def __init__(self, *, size: int = SIZE, max_age: float = MAX_AGE) -> None:
        self.size = size
        self.max_age = max_age
        self.generation = 0
        """How many changes (and losses of the listening connection) were heard."""
        self.live = False
        """Whether changes are being heard (the listening connection is up)."""
        self.hits = 0
        """How many answers were served from the cache."""
        self.losses = 0
        """How many times the listening connection was lost."""
        self._kept: dict[InboxKey, Kept] = {}
        self._flights: dict[tuple[InboxKey, int], asyncio.Future[Kept | None]] = {}
        self._heard = threading.Condition()

    def changed(self, live: bool = True) -> None:
        """
        A task may have changed (*live*: changes are heard; false: the listening connection was lost).

        Every kept answer is forgotten.
        """
        with self._heard:
            self.generation += 1
            self.losses += self.live and not live
            self.live = live
            self._kept.clear()
            self._heard.notify_all()

    def forget(self) -> None:
        """Forget every kept answer (this process changed a task), listening or not."""
        with self._heard:
            self.generation += 1
            self._kept.clear()
            self._heard.notify_all()

    def wait_past(self, generation: int, timeout: float) -> bool:
        """Wait until a change after *generation* is heard (at most *timeout* seconds); whether it was."""
        with self._heard:
            return self._heard.wait_for(lambda: self.generation > generation, timeout)

    def ticket(self) -> int | None:
        """The generation to read at, taken before reading (``None``: not listening, keep nothing)."""
        return self.generation if self.live else None

    def get(self, key: InboxKey, now: float) -> Kept | None:
        """The answer kept for *key*, if it may still be served at the engine clock's *now*."""
        kept = self._kept.get(key)
        if kept is None:
            return None
        fresh = (
            self.live
            and kept.generation == self.generation
            and now < kept.expires
            and time.monotonic() - kept.born < self.max_age
        )
        if not fresh:
            self._kept.pop(key, None)
            return None
        self.hits += 1
        return kept

    def put(self, key: InboxKey, ticket: int | None, body: bytes, expires: float) -> Kept:
        """
        Keep *body* for *key* if no change was heard since *ticket* was taken; the answer either way.

        Args:
            key: The question.
            ticket: :meth:`ticket`, taken before the read (``None``: keep nothing).
            body: The answer's JSON.
            expires: The engine clock's time it goes stale.
        """
        kept = Kept(body, etag_of(body), ticket if ticket is not None else -1, expires, time.monotonic())
        if ticket is None or ticket != self.generation:
            return kept
        if len(self._kept) >= self.size:
            self._kept.pop(next(iter(self._kept)), None)
        self._kept[key] = kept
        return kept

    async def answer(self, key: InboxKey, now: float, read: Callable[[], Awaitable[tuple[bytes, float]]]) -> Kept:
        """
        The answer for *key*: kept, or read by *read* (``(body, expires)``) and kept.

        Requests asking the same question at the same generation while it is read
        wait for that one read (the first one's: a change heard meanwhile starts
        a new generation, whose askers read again), so that after a change 50
        clients of one user cost one read, not 50. An answer a waiter gets whose
        overdue flags went stale by its *now* is read again by the waiter.
        """
        kept = self.get(key, now)
        if kept is not None:
            return kept
        ticket = self.ticket()
        if ticket is not None and (flight := self._flights.get((key, ticket))) is not None:
            shared = await asyncio.shield(flight)
            if shared is not None and now < shared.expires:
                return shared
            ticket = self.ticket()
        if ticket is None:
            body, expires = await read()
            return self.put(key, None, body, expires)
        flight = asyncio.get_running_loop().create_future()
        self._flights[key, ticket] = flight
        result: Kept | None = None
        try:
            body, expires = await read()
            result = self.put(key, ticket, body, expires)
            return result
        finally:
            # Waiters of a read that failed (or was cancelled) read for themselves.
            flight.set_result(result)
            if self._flights.get((key, ticket)) is flight:
                del self._flights[key, ticket]


class ForgetOnWrite:
    """
    ASGI middleware: a request other than GET or HEAD forgets the kept inbox answers before its answer starts.

    A request that changes a task (a claim, a completion, a cancel...) has done so
    by the time it answers; the notification of its change comes a little later.
    """

    def __init__(self, app: ASGIApp, cache: InboxCache) -> None:
        self.app = app
        self.cache = cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; forget the kept answers when a writing one answers."""
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return

        async def forgetting(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.cache.forget()
            await send(message)

        await self.app(scope, receive, forgetting)
