"""A guard is ``(workflow) -> bool``: returning ``str``, taking more parameters, being async or a step is an error."""

from __future__ import annotations

from statemachine_orch import Ctx, Workflow, after, goto, step


class OrderProcess(Workflow):
    order_id: str
    amount: float = 0

    def label(self) -> str:
        return self.order_id

    def above(self, limit: float) -> bool:
        return self.amount > limit

    def is_large(self) -> bool:
        return self.amount > 1000

    async def is_ready(self) -> bool:
        return self.amount > 0

    @step(initial=True)
    def start(self, ctx: Ctx) -> None:
        self.amount = 1

    @after(start, when=lambda wf: wf.order_id)  # E: Type "(wf: Self@OrderProcess) -> str" is not assignable to type "((Self@OrderProcess) -> bool) | None"  # mypy: Incompatible return value type (got "str", expected "bool")
    @after(start, when=label)  # E: Function return type "str" is incompatible with type "bool"  # mypy: Argument "when" to "after" has incompatible type "Callable[[OrderProcess], str]"; expected "Callable[[OrderProcess], bool] | None"
    @after(start, when=above)  # E: Extra parameter "limit"  # mypy: Argument "when" to "after" has incompatible type "Callable[[OrderProcess, float], bool]"
    @after(start, when=is_ready)  # E: Function return type "CoroutineType[Any, Any, bool]" is incompatible with type "bool"  # mypy: Argument "when" to "after" has incompatible type "Callable[[OrderProcess], Coroutine[Any, Any, bool]]"
    @after(start, when=lambda wf: wf.is_large)  # E: Type "(wf: Self@OrderProcess) -> (() -> bool)" is not assignable  # mypy: Incompatible return value type (got "Callable[[], bool]", expected "bool")
    @after(start, when=start)  # E: Type "Step[Self@OrderProcess, (Ctx), None]" is not assignable to type "((Self@OrderProcess) -> bool) | None"  # mypy: Argument "when" to "after" has incompatible type "Step[OrderProcess, [Ctx], None]"
    @after(start, when=lambda: True)  # E: Type "() -> Literal[True]" is not assignable  # mypy: Argument "when" to "after" has incompatible type "Callable[[], bool]"
    @goto(start, when=lambda wf: wf.amount)  # E: Type "(wf: Self@OrderProcess) -> float" is not assignable  # mypy: Incompatible return value type (got "float", expected "bool")
    @step(final=True)
    def done(self, ctx: Ctx) -> None:
        self.amount = 2
