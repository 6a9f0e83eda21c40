"""A constructor argument of the wrong type is an error."""

from __future__ import annotations

import attrs

from statemachine_orch import Ctx, Workflow, step


@attrs.frozen
class Item:
    sku: str
    quantity: int


class OrderProcess(Workflow):
    order_id: str
    amount: float
    items: list[Item] = attrs.field(factory=list[Item])
    approved: bool = False

    @step(initial=True, final=True)
    def validate_order(self, ctx: Ctx) -> None:
        self.approved = True


OrderProcess(order_id=1, amount=2.0)  # E: "Literal[1]" is not assignable to "str"  # mypy: Argument "order_id" to "OrderProcess" has incompatible type "int"; expected "str"
OrderProcess(order_id="A-1", amount="12")  # E: "Literal['12']" is not assignable to "float"  # mypy: Argument "amount" to "OrderProcess" has incompatible type "str"; expected "float"
OrderProcess("A-1", 3.0, [("BOOK", 1)])  # E: "tuple[str, int]" is not assignable to "Item"  # mypy: List item 0 has incompatible type "tuple[str, int]"; expected "Item"
OrderProcess(order_id="A-1", amount=1, approved=None)  # E: "None" is not assignable to "bool"  # mypy: Argument "approved" to "OrderProcess" has incompatible type "None"; expected "bool"
