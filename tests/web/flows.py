"""
Workflows of the web tests (issue 13): a form with every kind of field, a message, a compensation that fails.

``Purchase`` waits for an approval by the ``boss`` or anyone in ``buyers``, whose
form has a field of each type the pages render; ``Delivery`` waits for a
message; ``ClientRefund`` (of the client tests) pays, fails, and its refund fails
until the bank agrees (``compensation_failed``, for a retry).
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
from datetime import timedelta

import attrs

from statemachine_orch import Ctx, Workflow, after, human_task, step, wait_for
from tests.integration.test_client_commands import Bank, ClientRefund

__all__ = ["FLOWS", "Arrived", "Bank", "ClientRefund", "Decision", "Delivery", "Priority", "Purchase"]


class Priority(enum.Enum):
    """How urgent."""

    LOW = "low"
    HIGH = "high"


@attrs.frozen
class Decision:
    """The approver's form: one field of each kind."""

    approved: bool
    note: str
    quantity: int
    weight: float
    price: decimal.Decimal
    priority: Priority
    deliver_on: dt.date
    remind_at: dt.datetime | None = None
    budget: int | None = None
    tags: list[str] = attrs.field(factory=list[str])


class Purchase(Workflow, name="Purchase", version="1"):
    """A purchase request: approved by the boss or a buyer, then ordered."""

    item: str
    amount: int
    decision: Decision | None = None
    ordered: bool = False

    @step(initial=True)
    def request(self, ctx: Ctx) -> None: ...

    @after(request)
    @human_task(assignee="boss", candidate_groups=("buyers",), form=Decision, due=timedelta(days=1))
    def approve(self, ctx: Ctx, form: Decision) -> None:
        self.decision = form

    @after(approve)
    @step(final=True)
    def order(self, ctx: Ctx) -> None:
        self.ordered = True


@attrs.frozen
class Arrived:
    """The carrier's message."""

    parcel: str


class Delivery(Workflow, name="Delivery", version="1"):
    """Ship, then wait for the carrier's message."""

    parcel: str = ""

    @step(initial=True)
    def ship(self, ctx: Ctx) -> None: ...

    @after(ship)
    @wait_for(Arrived)
    def arrived(self, ctx: Ctx, message: Arrived) -> None:
        self.parcel = message.parcel

    @after(arrived)
    @step(final=True)
    def close(self, ctx: Ctx) -> None: ...


FLOWS: list[type[Workflow]] = [Purchase, Delivery, ClientRefund]
