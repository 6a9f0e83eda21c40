"""
The order process of the seed, end to end, on the embedded SQLite store.

validate order → check inventory → (amount > 1000: manual approval by the manager)
→ process payment (undo: refund) → update inventory (undo: restore stock)
→ send confirmation. An order the user service refuses, or the manager rejects,
ends at the declared failure end ``reject_order``: ``failed``, outcome ``rejected``.

Run it with ``python examples/order_process.py`` (on the SQLite file
``orders.db``; ``--memory`` for the in-memory store): three orders go through —
one completes, one waits for the manager's approval and then completes, and one
whose inventory update fails for good is refunded and ends ``failed``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import timedelta

import attrs
import structlog

from statemachine_orch import (
    Ctx,
    Engine,
    InstanceStatus,
    MemoryStore,
    Retry,
    SqliteStore,
    Store,
    Workflow,
    WorkflowFailed,
    after,
    failure_end,
    human_task,
    mermaid,
    step,
)


@attrs.frozen
class Approval:
    """The manager's answer on a large order."""

    approved: bool
    comment: str = ""


@attrs.frozen
class Item:
    """One line of an order."""

    sku: str
    quantity: int


class OrderProcess(Workflow, version="1"):
    """Validate, approve if large, pay, update stock, confirm; refund and restock on failure."""

    order_id: str
    customer_id: str
    amount: float
    items: list[Item] = attrs.field(factory=list[Item])
    validated: bool = False
    approved: bool = False
    approval_comment: str = ""
    payment_id: str | None = None
    confirmation_sent: bool = False

    def needs_approval(self) -> bool:
        """Orders above 1000 need the manager's approval."""
        return self.amount > 1000  # noqa: PLR2004 - the business rule

    @step(initial=True, retry=Retry(attempts=3, initial=0.01), timeout=timedelta(seconds=5))
    async def validate_order(self, ctx: Ctx) -> None:
        """Ask the user service whether the customer may place this order."""
        self.validated = await ctx.call(
            "user-service", "validateOrder", order_id=self.order_id, customer_id=self.customer_id
        )

    @after(validate_order, when=lambda wf: wf.validated)
    @step
    async def check_inventory(self, ctx: Ctx) -> None:
        """Make sure every item is in stock."""
        await ctx.call("inventory-service", "checkStock", items=self.items)

    @after(check_inventory, when=needs_approval)
    @human_task(assignee="manager", form=Approval, due=timedelta(days=2))
    def manual_approval(self, ctx: Ctx, form: Approval) -> None:
        """The manager approves (or rejects) a large order."""
        self.approved = form.approved
        self.approval_comment = form.comment
        ctx.log.info("approval_recorded", approved=form.approved, comment=form.comment)

    @after(validate_order)  # not validated
    @after(manual_approval)  # not approved
    @failure_end(outcome="rejected")
    def reject_order(self, ctx: Ctx) -> str:
        """A refused customer or a rejected approval: the order ends rejected, with the reason."""
        ctx.log.info("order_rejected", validated=self.validated)
        if not self.validated:
            return f"customer {self.customer_id} may not place orders"
        return f"rejected by the manager: {self.approval_comment or 'no comment'}"

    @after(check_inventory)
    @after(manual_approval, when=lambda wf: wf.approved)
    @step(retry=Retry(attempts=3, initial=0.01))
    async def process_payment(self, ctx: Ctx) -> None:
        """Charge the customer."""
        self.payment_id = await ctx.call(
            "payment-service", "processPayment", order_id=self.order_id, amount=self.amount
        )

    @process_payment.compensation
    async def refund_payment(self, ctx: Ctx) -> None:
        """Give the money back."""
        await ctx.call("payment-service", "refundPayment", payment_id=self.payment_id)

    @after(process_payment)
    @step(retry=Retry(attempts=3, initial=0.01))
    async def update_inventory(self, ctx: Ctx) -> None:
        """Take the items out of stock."""
        await ctx.call("inventory-service", "updateStock", order_id=self.order_id, items=self.items)

    @update_inventory.compensation
    async def restore_stock(self, ctx: Ctx) -> None:
        """Put the items back."""
        await ctx.call("inventory-service", "restoreStock", order_id=self.order_id, items=self.items)

    @after(update_inventory)
    @step(final=True)
    def send_confirmation(self, ctx: Ctx) -> None:
        """Tell the customer (the seed's script activity)."""
        ctx.log.info("confirmation_sent", order_id=self.order_id)
        self.confirmation_sent = True


class WarehouseUnavailableError(Exception):
    """The warehouse system refused a stock update."""


@attrs.define
class UserService:
    """Knows which customers may order."""

    blocked: set[str] = attrs.field(factory=set[str])

    def validateOrder(self, order_id: str, customer_id: str) -> bool:
        """Whether the customer may place the order."""
        return customer_id not in self.blocked and bool(order_id)


@attrs.define
class InventoryService:
    """An in-process inventory, with a warehouse that can refuse SKUs."""

    stock: dict[str, int] = attrs.field(factory=dict[str, int])
    offline_skus: set[str] = attrs.field(factory=set[str])
    applied: dict[str, str] = attrs.field(factory=dict[str, str])
    restored: list[str] = attrs.field(factory=list[str])

    def checkStock(self, items: list[Item]) -> bool:
        """Raise when an item is short."""
        for item in items:
            if self.stock.get(item.sku, 0) < item.quantity:
                msg = f"only {self.stock.get(item.sku, 0)} of {item.sku} in stock"
                raise ValueError(msg)
        return True

    def updateStock(self, order_id: str, items: list[Item], idempotency_key: str) -> None:
        """Take the items out, once per idempotency key."""
        if idempotency_key in self.applied:
            return
        for item in items:
            if item.sku in self.offline_skus:
                msg = f"the warehouse holding {item.sku} refuses updates"
                raise WarehouseUnavailableError(msg)
        for item in items:
            self.stock[item.sku] -= item.quantity
        self.applied[idempotency_key] = order_id

    def restoreStock(self, order_id: str, items: list[Item]) -> None:
        """Put the items back."""
        self.restored.append(order_id)
        for item in items:
            self.stock[item.sku] += item.quantity


@attrs.define
class PaymentService:
    """Charges and refunds, deduplicated by idempotency key."""

    charges: dict[str, tuple[str, float]] = attrs.field(factory=dict[str, tuple[str, float]])
    by_key: dict[str, str] = attrs.field(factory=dict[str, str])
    refunds: list[str] = attrs.field(factory=list[str])

    def processPayment(self, order_id: str, amount: float, idempotency_key: str) -> str:
        """Charge once per idempotency key (a re-run returns the first payment); return its id."""
        if idempotency_key not in self.by_key:
            payment_id = f"pay-{len(self.by_key) + 1}"
            self.by_key[idempotency_key] = payment_id
            self.charges[payment_id] = (order_id, amount)
        return self.by_key[idempotency_key]

    def refundPayment(self, payment_id: str) -> None:
        """Refund a payment."""
        self.refunds.append(payment_id)
        self.charges.pop(payment_id, None)


def orch_services() -> dict[str, object]:
    """The example's services, for ``orch worker examples.order_process`` (a DESK's stock update fails)."""
    inventory = InventoryService(stock={"BOOK": 10**6, "LAMP": 10**6, "DESK": 10**6}, offline_skus={"DESK"})
    return {"user-service": UserService(), "inventory-service": inventory, "payment-service": PaymentService()}


def make_engine(store: Store | None = None) -> tuple[Engine, InventoryService, PaymentService]:
    """An engine on *store* (default: in memory) with the three services registered."""
    inventory = InventoryService(stock={"BOOK": 10, "LAMP": 5, "DESK": 2}, offline_skus={"DESK"})
    payments = PaymentService()
    engine = Engine(
        store if store is not None else MemoryStore(),
        services={"user-service": UserService(), "inventory-service": inventory, "payment-service": payments},
    )
    return engine, inventory, payments


def print_history(engine: Engine, instance_id: str, title: str) -> None:
    """Print an instance's history, one readable line per entry."""
    history = engine.history(instance_id)
    start = history[0].at
    print(f"\n== {title}  [{instance_id}]")
    for event in history:
        print(f"  +{(event.at - start) * 1000:7.1f} ms  {event.describe()}")


async def main(db: str | None = None) -> int:
    """
    Run the three orders; return a process exit code (0 when all went as expected).

    Args:
        db: A SQLite file to run on (the embedded default store); ``None`` runs in memory.
    """
    store = SqliteStore(db) if db is not None else None
    engine, inventory, payments = make_engine(store)
    try:
        return await _run(engine, inventory, payments)
    finally:
        if store is not None:
            store.close()


async def _run(engine: Engine, inventory: InventoryService, payments: PaymentService) -> int:
    async with engine:
        small = await engine.start(
            OrderProcess(order_id="ORD-001", customer_id="CUST-001", amount=500, items=[Item("BOOK", 2)])
        )
        large = await engine.start(
            OrderProcess(order_id="ORD-002", customer_id="CUST-002", amount=5000, items=[Item("LAMP", 1)])
        )
        doomed = await engine.start(
            OrderProcess(order_id="ORD-003", customer_id="CUST-003", amount=800, items=[Item("DESK", 1)])
        )

        await small.result()
        print_history(engine, small.instance_id, "ORD-001, amount 500: straight through")

        status = await large.wait_idle()
        [task] = engine.tasks(user="manager", instance_id=large.instance_id)
        print(f"\nORD-002 is {status.value}: task {task.id} at {task.step} for {task.assignee}")
        await engine.complete_task(task.id, user="manager", form=Approval(approved=True, comment="ok"))
        await large.result()
        print_history(engine, large.instance_id, "ORD-002, amount 5000: approved by the manager")

        try:
            await doomed.result()
        except WorkflowFailed as failed:
            print_history(engine, doomed.instance_id, f"ORD-003: {failed.status.value}")
            print(f"  reason: {failed.reason}")

        print("\nDiagram (Mermaid):\n" + mermaid(OrderProcess))
        print("This run's instances:")
        for handle in (small, large, doomed):
            info = engine.info(handle.instance_id)
            print(f"  {info.id}  {info.workflow} v{info.version}  {info.status.value}")
        print(f"Payments refunded: {payments.refunds}; stock now: {inventory.stock}")
    expected = [InstanceStatus.COMPLETED, InstanceStatus.COMPLETED, InstanceStatus.FAILED]
    return 0 if [engine.handle(h.instance_id).status for h in (small, large, doomed)] == expected else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--db", default="orders.db", help="SQLite file to run on (default: %(default)s)")
    parser.add_argument("--memory", action="store_true", help="run on the in-memory store instead")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    sys.exit(asyncio.run(main(None if args.memory else args.db)))
