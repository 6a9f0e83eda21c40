"""Field declarations are checked like attrs fields: a default of the wrong type, or a required field after an optional one."""

from __future__ import annotations

import attrs

from statemachine_orch import Ctx, Workflow, step


class OrderProcess(Workflow):
    order_id: str = 42  # E: "Literal[42]" is not assignable to declared type "str"  # mypy: Incompatible types in assignment (expression has type "int", variable has type "str")
    amount: float  # E: Fields without default values cannot appear after fields with default values  # mypy: Attributes without a default cannot follow attributes with one
    items: list[str] = attrs.field(factory=dict[str, str])  # E: "dict[str, str]" is not assignable to "list[str]"  # mypy-misses: mypy does not check an attrs.field() factory against the annotation

    @step(initial=True, final=True)
    def start(self, ctx: Ctx) -> None:
        self.amount = "12"  # E: Cannot assign to attribute "amount" for class "OrderProcess*"  # mypy: Incompatible types in assignment (expression has type "str", variable has type "float")
