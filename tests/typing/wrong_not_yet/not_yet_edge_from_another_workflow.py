"""
Not caught yet: an unguarded edge from a step of an unrelated workflow class type-checks.

Since issue 10 (reusable steps), ``@after``/``@goto`` take a step of the class or of
any base class of it (``StepOf[W]``, contravariant), and the decorated step keeps its
own class: a type checker types the edge before it sees the decorated step, so it
cannot require that class to be a subclass of the source's. The class statement
still refuses it at run time (``foreign-step``). An ``EdgeDecorator`` generic in the
source's class, whose ``__call__`` takes ``self: EdgeDecorator[WD]`` and
``step: Step[WD, ...]``, would catch it if checkers solved ``WD`` from the step
rather than from ``self`` (pyright 1.1.414 and mypy 1.x both solve it from ``self``).
A guarded edge is caught (the guard is typed with the source's class).
"""

from __future__ import annotations

from statemachine_orch import Ctx, Workflow, after, step


class Billing(Workflow):
    paid: bool = False

    @step(initial=True, final=True)
    def charge(self, ctx: Ctx) -> None:
        self.paid = True


def ship_after_billing_edge() -> None:
    """Kept in a function that nothing calls: the class statement would refuse the edge (foreign-step)."""

    class Shipping(Workflow):
        shipped: bool = False

        @step(initial=True)
        def pack(self, ctx: Ctx) -> None:
            self.shipped = False

        @after(pack)
        @after(Billing.charge)  # not caught: Billing.charge is not a step of Shipping
        @step(final=True)
        def ship(self, ctx: Ctx) -> None:
            self.shipped = True

    del Shipping
