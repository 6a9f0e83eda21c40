"""An ``Expense`` version no other test module knows: its instances are an unknown version elsewhere (issue 12)."""

from __future__ import annotations

from statemachine_orch import Ctx, Workflow, step


class ExpenseV9(Workflow, name="Expense", version="9"):
    """A version only this module defines."""

    claimant: str
    amount: float

    @step(initial=True, final=True)
    def submit(self, ctx: Ctx) -> None: ...


def orch_services() -> dict[str, object]:
    """No services."""
    return {}
