"""
The child workflow the fan-out tests share (issue 10, item 1): a leg that waits for its carrier's verdict.

``Leg`` books (logging ``book <item>``; its undo logs ``unbook <item>``), waits
for a ``Verdict`` message (a refusal fails it for good), and closes with its
item upper-cased as its result. Because each leg waits for its verdict, a test
decides in which order the children of a fan-out end. ``LOG`` collects what the
legs and the tests' parents did outside; an ``asyncio.Event`` in ``HOLD`` under
an item holds that leg's undo until it is set (an engine's stop cancels the wait).
"""

from __future__ import annotations

import asyncio

import attrs

from statemachine_orch import Ctx, NonRetryableError, Workflow, after, step, wait_for

LOG: list[str] = []
"""``book <item>``, ``unbook <item>`` and whatever the parents log, in the order it happened."""

HOLD: dict[str, asyncio.Event] = {}
"""The undo of the leg of an item in here waits for its event."""


@attrs.frozen
class Verdict:
    """What a leg's carrier answers."""

    ok: bool


class Leg(Workflow, name="FanoutLeg"):
    """A child: book (undoable), wait for the carrier's verdict, close."""

    item: str
    result: str = ""

    @step(initial=True)
    def book(self, ctx: Ctx) -> None:
        LOG.append(f"book {self.item}")

    @book.compensation
    async def unbook(self, ctx: Ctx) -> None:
        if self.item in HOLD:
            await HOLD[self.item].wait()
        LOG.append(f"unbook {self.item}")

    @after(book)
    @wait_for(Verdict)
    def settle(self, ctx: Ctx, msg: Verdict) -> None:
        if not msg.ok:
            raise NonRetryableError(f"{self.item} refused")
        self.result = self.item.upper()

    @after(settle)
    @step(final=True)
    def close(self, ctx: Ctx) -> None: ...


def undone() -> list[str]:
    """The entries of ``LOG`` that are not bookings."""
    return [e for e in LOG if not e.startswith("book ")]
