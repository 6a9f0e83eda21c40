"""
``@fan_out`` type-checks with pyright and mypy strict: the builder returns the children, the handler gets their results.

Without ``tolerate=`` the handler takes ``Sequence[Child]``; with it,
``Sequence[Child | ChildWorkflowFailed]`` (issue 10, item 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from statemachine_orch import ChildWorkflowFailed, Ctx, Retry, Workflow, after, fan_out, step


class Shipment(Workflow):
    parcel: str
    tracking: str = ""

    @step(initial=True, final=True)
    def book(self, ctx: Ctx) -> None:
        self.tracking = f"T-{self.parcel}"


class Order(Workflow):
    parcels: list[str] = attrs.field(factory=list[str])
    tracking: list[str] = attrs.field(factory=list[str])
    lost: int = 0

    @step(initial=True)
    def pick(self, ctx: Ctx) -> None: ...

    @after(pick)
    @fan_out(Shipment, limit=2, retry=Retry(attempts=2))
    def ship(self, ctx: Ctx) -> list[Shipment]:
        return [Shipment(parcel=p) for p in self.parcels]

    @ship.on_result
    def shipped(self, ctx: Ctx, shipments: Sequence[Shipment]) -> None:
        self.tracking = [s.tracking for s in shipments]

    @after(ship)
    @fan_out(Shipment, tolerate=1)
    def reship(self, ctx: Ctx) -> list[Shipment]:
        return [Shipment(parcel=p) for p in self.parcels]

    @reship.on_result
    def reshipped(self, ctx: Ctx, results: Sequence[Shipment | ChildWorkflowFailed]) -> None:
        self.lost = sum(isinstance(r, ChildWorkflowFailed) for r in results)

    @after(reship)
    @after(ship, on_error=ChildWorkflowFailed)
    @step(final=True)
    def bill(self, ctx: Ctx) -> None: ...
