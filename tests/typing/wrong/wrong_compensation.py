"""``.compensation`` exists only on steps, and the compensation is a ``(self, ctx) -> None`` method."""

from __future__ import annotations

from statemachine_orch import Ctx, Retry, Workflow, step


class OrderProcess(Workflow):
    amount: float = 0

    def helper(self, ctx: Ctx) -> None:
        self.amount = 0

    @step(initial=True, final=True)
    def pay(self, ctx: Ctx) -> None:
        self.amount = 1

    @pay.compensation
    def refund(self, ctx: Ctx) -> None:
        self.amount = 0

    @helper.compensation  # E: Cannot access attribute "compensation" for class "FunctionType"  # mypy: "Callable[[OrderProcess, Ctx], None]" has no attribute "compensation"
    def undo_helper(self, ctx: Ctx) -> None:
        self.amount = 0

    @refund.compensation  # E: Cannot access attribute "compensation" for class "Compensation[Self@OrderProcess, None]"  # mypy: "Compensation[OrderProcess, None]" has no attribute "compensation"
    def undo_refund(self, ctx: Ctx) -> None:
        self.amount = 0

    @pay.compensation  # E: Function accepts too few positional parameters  # mypy: Argument 1 to "compensation" of "Step" has incompatible type "Callable[[OrderProcess], None]"
    def refund_without_ctx(self) -> None:
        self.amount = 0

    @pay.compensation  # E: Type "int" is not assignable to type "Awaitable[None] | None"  # mypy: Value of type variable "R2" of "compensation" of "Step" cannot be "int"
    def refund_returning_int(self, ctx: Ctx) -> int:
        return 0

    @pay.compensation(retry=3)  # E: Type "Literal[3]" is not assignable to type "Retry | None"  # mypy: No overload variant of "compensation" of "Step" matches argument type "int"
    def refund_with_bad_retry(self, ctx: Ctx) -> None:
        self.amount = 0

    @pay.compensation(Retry(attempts=2))  # E: Argument of type "Retry" cannot be assigned to parameter "fn"  # mypy: No overload variant of "compensation" of "Step" matches argument type "Retry"
    def refund_positional_retry(self, ctx: Ctx) -> None:
        self.amount = 0
