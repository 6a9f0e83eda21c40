"""A misspelt constructor field is an error (the constructor is generated from the typed fields)."""

from __future__ import annotations

from statemachine_orch import Ctx, Workflow, step


class OrderProcess(Workflow):
    order_id: str
    amount: float
    approved: bool = False

    @step(initial=True, final=True)
    def validate_order(self, ctx: Ctx) -> None:
        self.approved = True


OrderProcess(order_id="A-1", amont=12.5)  # E: No parameter named "amont"  # mypy: Unexpected keyword argument "amont"
OrderProcess(order_id="A-1")  # E: Argument missing for parameter "amount"  # mypy: Missing positional argument "amount"
OrderProcess(order_id="A-1", amount=1, aproved=True)  # E: No parameter named "aproved"  # mypy: Unexpected keyword argument "aproved"
OrderProcess("A-1", 1.0, True, "extra")  # E: Expected 3 positional arguments  # mypy: Too many arguments
