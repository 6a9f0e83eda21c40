"""The engine keeps the workflow type: a misspelt field of a result, or starting a non-workflow, is an error."""

from __future__ import annotations

from statemachine_orch import Ctx, Engine, Handle, Workflow, step


class OrderProcess(Workflow):
    order_id: str
    amount: float = 0

    @step(initial=True, final=True)
    def start(self, ctx: Ctx) -> None:
        self.amount = 1


class Other(Workflow):
    name: str = ""

    @step(initial=True, final=True)
    def start(self, ctx: Ctx) -> None:
        self.name = "x"


class NotAWorkflow:
    amount: float = 0


async def run(engine: Engine) -> None:
    handle = await engine.start(OrderProcess(order_id="A-1"))
    result = await handle.result()
    print(result.amont)  # E: Cannot access attribute "amont" for class "OrderProcess"  # mypy: "OrderProcess" has no attribute "amont"
    length: int = (await handle.result()).order_id  # E: "str" is not assignable to "int"  # mypy: Incompatible types in assignment (expression has type "str", variable has type "int")
    other: Handle[Other] = handle  # E: "Handle[OrderProcess]" is not assignable to "Handle[Other]"  # mypy: Incompatible types in assignment (expression has type "Handle[OrderProcess]", variable has type "Handle[Other]")
    await engine.start(NotAWorkflow())  # E: Argument of type "NotAWorkflow"  # mypy: Value of type variable "W" of "start" of "Engine" cannot be "NotAWorkflow"
    await engine.start(OrderProcess)  # E: Argument of type "type[OrderProcess]"  # mypy: Value of type variable "W" of "start" of "Engine" cannot be "type[OrderProcess]"
    print(length, other)
