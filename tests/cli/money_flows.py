"""
A workflow of money and time for the command-line tests (issue 10): its fields are stored as JSON text.

``Invoice`` waits for a payment (a ``@wait_for`` message) after it is started.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import attrs

from statemachine_orch import Ctx, Workflow, after, step, wait_for


@attrs.frozen
class Payment:
    """A payment of the invoice."""

    amount: Decimal
    paid_on: date


class Invoice(Workflow):
    """An amount, a reference, a due date and terms; then a payment."""

    amount: Decimal
    reference: UUID
    due: datetime
    terms: timedelta = timedelta(days=30)
    note: str = ""
    discount: Decimal | None = None
    paid: Decimal | None = None

    @step(initial=True)
    def issue(self, ctx: Ctx) -> None: ...

    @after(issue)
    @wait_for(Payment, final=True)
    def settle(self, ctx: Ctx, payment: Payment) -> None:
        self.paid = payment.amount
