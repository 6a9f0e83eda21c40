"""A misspelt attribute in a guard lambda is an error: the lambda's parameter is typed with the workflow."""

from __future__ import annotations

from statemachine_orch import Ctx, Workflow, after, goto, step


class OrderProcess(Workflow):
    order_id: str
    amount: float
    validated: bool = False

    @step(initial=True)
    def validate_order(self, ctx: Ctx) -> None:
        self.validated = True

    @after(validate_order, when=lambda wf: wf.validatd)  # E: Cannot access attribute "validatd" for class "OrderProcess*"  # mypy: "OrderProcess" has no attribute "validatd"
    @after(validate_order, when=lambda wf: wf.amont > 1000)  # E: Cannot access attribute "amont"  # mypy: has no attribute "amont"
    @goto(validate_order, when=lambda wf: wf.order_idd == "")  # E: Cannot access attribute "order_idd"  # mypy: has no attribute "order_idd"
    @step
    def check_inventory(self, ctx: Ctx) -> None:
        self.amount = self.amont  # E: Cannot access attribute "amont"  # mypy: has no attribute "amont"

    @after(check_inventory)
    @step(final=True)
    def done(self, ctx: Ctx) -> None:
        self.validated = False
