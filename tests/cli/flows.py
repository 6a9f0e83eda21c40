"""
Workflows the command-line tests run (issue 12), in worker processes and in the test process.

``Expense``: submit → the manager approves (a human task with a form) → pay (undo:
refund) → book; a rejected expense ends ``failed``. ``Parcel``: waits for a
``Delivered`` message; ``Shipment`` runs one as its child. ``Refundable``: pays, then fails for good; its refund fails
until the file named by ``$ORCH_TEST_REFUND_OK`` exists (``compensation_failed``,
then ``orch retry``). ``ExpenseV2`` migrates a waiting ``Expense``. ``Expense``'s queries ``owed`` and ``share`` are
for ``orch query``.

The services are ``orch_services``: workers (``orch worker tests.cli.flows``) take them.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from statemachine_orch import Ctx, Retry, Workflow, after, human_task, migration, query, step, subflow, wait_for


@attrs.frozen
class Decision:
    """The manager's answer."""

    approved: bool
    note: str = ""


@attrs.frozen
class Delivered:
    """The carrier's message."""

    signed_by: str
    pieces: int = 1


class Bank:
    """Payments and refunds; a refund works once the marker file exists (when one is named)."""

    def pay(self, amount: float) -> str:
        return f"pay-{int(amount)}"

    def refund(self, payment: str) -> None:
        marker = os.environ.get("ORCH_TEST_REFUND_OK")
        if marker is not None and not Path(marker).exists():
            msg = f"the bank refuses to refund {payment} now"
            raise RuntimeError(msg)


def orch_services() -> dict[str, object]:
    """The services of these workflows (taken by ``orch worker``)."""
    return {"bank": Bank()}


class Expense(Workflow, version="1"):
    """An expense claim: the manager approves it, then it is paid and booked."""

    claimant: str
    amount: float
    approved: bool = False
    payment: str | None = None
    booked: bool = False

    @step(initial=True)
    def submit(self, ctx: Ctx) -> None:
        ctx.log.info("submitted", claimant=self.claimant)

    @after(submit)
    @human_task(assignee="manager", form=Decision)
    def approve(self, ctx: Ctx, form: Decision) -> None:
        self.approved = form.approved

    @after(approve, when=lambda wf: wf.approved)
    @step(retry=Retry(attempts=2, initial=0.01))
    async def pay(self, ctx: Ctx) -> None:
        self.payment = await ctx.call("bank", "pay", amount=self.amount)

    @pay.compensation
    async def refund(self, ctx: Ctx) -> None:
        await ctx.call("bank", "refund", payment=self.payment)

    @after(pay)
    @step(final=True)
    def book(self, ctx: Ctx) -> None:
        self.booked = True

    @query
    def owed(self) -> float:
        """What the claimant is owed now: the amount once approved and not yet paid."""
        return self.amount if self.approved and self.payment is None else 0.0

    @query
    def share(self, parts: int, *, rounded: bool = True) -> float:
        """The amount split in *parts*."""
        each = self.amount / parts
        return round(each, 2) if rounded else each


class ExpenseV2(Workflow, name="Expense", version="2"):
    """Version 2: the same claim, approved by the director."""

    claimant: str
    amount: float
    approved: bool = False
    migrated: bool = False

    @step(initial=True)
    def submit(self, ctx: Ctx) -> None: ...

    @after(submit)
    @human_task(assignee="director", form=Decision, final=True)
    def approve(self, ctx: Ctx, form: Decision) -> None:
        self.approved = form.approved

    @migration(Expense)
    @staticmethod
    def from_v1(old: Expense, step: str) -> tuple[ExpenseV2, str]:
        return ExpenseV2(claimant=old.claimant, amount=old.amount, migrated=True), step


class Parcel(Workflow, version="1"):
    """Ships a parcel and waits until the carrier says it was delivered."""

    ref: str
    signed_by: str = ""

    @step(initial=True)
    def ship(self, ctx: Ctx) -> None: ...

    @after(ship)
    @wait_for(Delivered, final=True)
    def delivered(self, ctx: Ctx, msg: Delivered) -> None:
        self.signed_by = msg.signed_by


class Shipment(Workflow, version="1"):
    """Ships a parcel as a child instance (a ``Parcel``), then files it."""

    ref: str

    @subflow(Parcel, initial=True)
    def send(self, ctx: Ctx) -> Parcel:
        return Parcel(ref=self.ref)

    @after(send)
    @step(final=True)
    def file(self, ctx: Ctx) -> None: ...


class BrokenError(Exception):
    """The step that always fails."""


class Refundable(Workflow, version="1"):
    """Pays, then fails for good: the refund runs (and fails until the bank agrees)."""

    amount: float
    payment: str | None = None

    @step(initial=True)
    async def pay(self, ctx: Ctx) -> None:
        self.payment = await ctx.call("bank", "pay", amount=self.amount)

    @pay.compensation(retry=Retry(attempts=1))
    async def refund(self, ctx: Ctx) -> None:
        await ctx.call("bank", "refund", payment=self.payment)

    @after(pay)
    @step(final=True, retry=Retry(attempts=1))
    def explode(self, ctx: Ctx) -> None:
        raise BrokenError("this step always fails")
