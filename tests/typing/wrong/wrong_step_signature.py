"""A step method is ``(self, ctx: Ctx) -> None`` or async, or an error handler ``(self, ctx, error: SomeError)``."""

from __future__ import annotations

from statemachine_orch import Ctx, Workflow, step


class OrderProcess(Workflow):
    amount: float = 0

    @step(initial=True)  # E: Function accepts too few positional parameters; expected 2 but received 1  # mypy: has incompatible type "Callable[[OrderProcess], None]"
    def missing_ctx(self) -> None:
        self.amount = 1

    @step  # E: Type "int" is not assignable to type "Awaitable[None] | None"  # mypy: Value of type variable "R2" of "step" cannot be "int"
    def returns_int(self, ctx: Ctx) -> int:
        return 1

    @step  # E: "CoroutineType[Any, Any, str]" is not assignable to "Awaitable[None]"  # mypy: Value of type variable "R2" of "step" cannot be "Coroutine[Any, Any, str]"
    async def async_returns_str(self, ctx: Ctx) -> str:
        return "x"

    @step  # E: Extra parameter "amount"  # mypy: Value of type variable "E" of "step" cannot be "float"
    def extra_parameter(self, ctx: Ctx, amount: float) -> None:
        self.amount = amount

    @step(final=True)  # E: Parameter 2: type "Ctx" is incompatible with type "str"  # mypy: has incompatible type "Callable[[OrderProcess, str], None]"
    def ctx_wrong_type(self, ctx: str) -> None:
        self.amount = len(ctx)
