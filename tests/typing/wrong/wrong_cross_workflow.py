"""A step, guard or compensation of another workflow class cannot be used in this one."""

from __future__ import annotations

from statemachine_orch import Ctx, Workflow, after, step


class Billing(Workflow):
    paid: bool = False

    def is_paid(self) -> bool:
        return self.paid

    @step(initial=True, final=True)
    def charge(self, ctx: Ctx) -> None:
        self.paid = True


class Shipping(Workflow):
    shipped: bool = False

    @step(initial=True)
    def pack(self, ctx: Ctx) -> None:
        self.shipped = False

    @after(pack, when=Billing.is_paid)  # E: Type "(self: Billing) -> bool" is not assignable to type "((Self@Shipping) -> bool) | None"  # mypy: Argument "when" to "after" has incompatible type "Callable[[Billing], bool]"; expected "Callable[[Shipping], bool] | None"
    @step(final=True)
    def ship(self, ctx: Ctx) -> None:
        self.shipped = True

    @Billing.charge.compensation  # E: cannot be assigned to parameter "fn" of type "(Billing, Ctx) -> R2@compensation"  # mypy: Argument 1 to "compensation" of "Step" has incompatible type "Callable[[Shipping, Ctx], None]"; expected "Callable[[Billing, Ctx], None]"
    def undo_billing(self, ctx: Ctx) -> None:
        self.shipped = False
