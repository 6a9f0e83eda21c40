"""
A complete, correct workflow using every part of the DSL: pyright and mypy strict report nothing.

Covers sync and async steps, a human task with a form and one without, guards as
methods and as lambdas, a default edge, an ``on_error`` edge, compensations bare and
with a retry policy, and fields with defaults and an ``attrs.field`` factory.
"""

from __future__ import annotations

from datetime import timedelta

import attrs

from statemachine_orch import Ctx, Retry, Workflow, after, human_task, step


@attrs.frozen
class Approval:
    approved: bool
    comment: str = ""


@attrs.frozen
class Item:
    sku: str
    quantity: int


class PaymentDeclinedError(Exception):
    pass


class OrderFlow(Workflow, version="2"):
    order_id: str
    amount: float
    items: list[Item] = attrs.field(factory=list[Item])
    tags: dict[str, str] = attrs.field(factory=dict[str, str])
    validated: bool = False
    approved: bool = False
    reviewed: bool = False
    payment_id: str | None = None
    attempts: int = 0

    def needs_approval(self) -> bool:
        return self.amount > 1000

    @step(initial=True, retry=Retry(attempts=3, initial=0.01, non_retryable=ValueError), timeout=5)
    async def validate_order(self, ctx: Ctx) -> None:
        self.validated = bool(await ctx.call("users", "validate", order_id=self.order_id))

    @after(validate_order, when=lambda wf: wf.validated and wf.amount > 0)
    @step(timeout=timedelta(seconds=30))
    async def check_inventory(self, ctx: Ctx) -> None:
        await ctx.call("inventory", "check", items=self.items)

    @after(check_inventory, when=needs_approval)
    @human_task(assignee="manager", candidate_groups=["finance"], form=Approval, due=timedelta(days=2))
    def manual_approval(self, ctx: Ctx, form: Approval) -> None:
        self.approved = form.approved

    @after(manual_approval, when=lambda wf: not wf.approved)
    @human_task(candidate_groups=("clerks",))
    async def review_rejection(self, ctx: Ctx) -> None:
        self.reviewed = True

    @after(check_inventory)
    @after(manual_approval, when=lambda wf: wf.approved)
    @step(retry=Retry(attempts=2, initial=timedelta(milliseconds=10), backoff=3.0, max_interval=1))
    async def process_payment(self, ctx: Ctx) -> None:
        self.attempts = ctx.attempt
        self.payment_id = str(await ctx.call("payments", "charge", amount=self.amount))

    @process_payment.compensation
    async def refund_payment(self, ctx: Ctx) -> None:
        await ctx.call("payments", "refund", payment_id=self.payment_id)

    @after(process_payment)
    @step
    def update_inventory(self, ctx: Ctx) -> None:
        ctx.log.info("stock_updated", key=ctx.idempotency_key)

    @update_inventory.compensation(retry=Retry(attempts=5))
    def restore_stock(self, ctx: Ctx) -> None:
        ctx.log.info("stock_restored", undoing=ctx.undoing)

    @after(process_payment, on_error=(PaymentDeclinedError, TimeoutError))
    @step(final=True)
    def payment_declined(self, ctx: Ctx) -> None:
        self.payment_id = None

    @after(update_inventory)
    @after(review_rejection)
    @step(final=True)
    def send_confirmation(self, ctx: Ctx) -> None:
        ctx.log.info("confirmed", order_id=self.order_id)


def build() -> list[OrderFlow]:
    """The constructor is typed: required fields first, defaults optional, keywords or positions."""
    return [
        OrderFlow(order_id="A-1", amount=10.0),
        OrderFlow("A-2", 2000, [Item("BOOK", 1)]),
        OrderFlow(order_id="A-3", amount=5, items=[Item(sku="LAMP", quantity=2)], tags={"vip": "yes"}),
    ]


def read_fields(order: OrderFlow) -> tuple[str, float, int]:
    """Fields read back with their declared types."""
    total: int = sum(item.quantity for item in order.items)
    return order.order_id, order.amount, total
