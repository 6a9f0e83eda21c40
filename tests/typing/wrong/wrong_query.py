"""A query's answer and arguments are typed, and a handle takes only its own workflow's queries."""

from __future__ import annotations

from statemachine_orch import Ctx, Engine, Handle, Schedule, Workflow, query, step


class Cart(Workflow):
    total_cents: int = 0

    @step(initial=True, final=True)
    def fill(self, ctx: Ctx) -> None:
        self.total_cents = 1

    @query
    def total(self) -> int:
        return self.total_cents

    @query
    def line(self, sku: str) -> int:
        return len(sku)


class Other(Workflow):
    @step(initial=True, final=True)
    def go(self, ctx: Ctx) -> None: ...

    @query
    def name(self) -> str:
        return "other"


async def run(engine: Engine, handle: Handle[Cart]) -> None:
    text: str = engine.query("c", Cart.total)  # E: "int" is not assignable to "str"  # mypy: Incompatible types in assignment (expression has type "int", variable has type "str")
    engine.query("c", Cart.line, 7)  # E: Argument of type "Literal[7]"  # mypy: Argument 3 to "query" of "ClientApi" has incompatible type "int"; expected "str"
    handle.query(Other.name)  # E: Argument of type "Query[Other, (), str]"  # mypy: Argument 1 to "query" of "Handle" has incompatible type "Query[Other, [], str]"; expected "Query[Cart, [], str]"
    engine.query("c", Cart.fill)  # E: Argument of type "Step[Cart, (Ctx), None]"  # mypy: Argument 2 to "query" of "ClientApi" has incompatible type
    schedule: Schedule[Other] = Schedule("s", lambda due: Cart(), every=5)  # E: is not assignable to "Schedule[Other]"  # mypy: Incompatible return value type (got "Cart", expected "Other")
    print(text, schedule)
