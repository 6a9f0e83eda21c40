"""A fan-out's builder returns children of its class, and its handler takes what the policy gives (issue 10)."""

from __future__ import annotations

from collections.abc import Sequence

from statemachine_orch import Ctx, Workflow, after, fan_out, step


class Shipment(Workflow):
    parcel: str

    @step(initial=True, final=True)
    def book(self, ctx: Ctx) -> None: ...


class Refund(Workflow):
    amount: int

    @step(initial=True, final=True)
    def pay(self, ctx: Ctx) -> None: ...


class Order(Workflow):
    parcels: list[str]

    @step(initial=True)
    def pick(self, ctx: Ctx) -> None: ...

    @after(pick)
    @fan_out(Shipment)  # E: "Refund" is not assignable to "Shipment"  # mypy: Argument 1 has incompatible type
    def ship(self, ctx: Ctx) -> list[Refund]:
        return [Refund(amount=1)]

    @after(ship)
    @fan_out(Shipment, tolerate=1)
    def reship(self, ctx: Ctx) -> list[Shipment]:
        return [Shipment(parcel=p) for p in self.parcels]

    @reship.on_result  # E: "Sequence[Shipment | ChildWorkflowFailed]" is not assignable to "Sequence[Shipment]"  # mypy: Argument 1 to "on_result" of "Step" has incompatible type
    def reshipped(self, ctx: Ctx, results: Sequence[Shipment]) -> None: ...

    @after(reship)
    @step(final=True)
    def bill(self, ctx: Ctx) -> None: ...
