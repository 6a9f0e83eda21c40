"""
Not caught yet: steps in a class that does not derive from ``Workflow`` type-check.

The workflow type variable of ``step``/``after``/``goto`` (``W`` in ``_types.py``) has
no bound, so forgetting the base class goes unnoticed in the class body; nothing is
compiled and nothing runs. Bounding it, ``W = TypeVar("W", bound="Workflow")``,
reports the decorator on the first step (``engine.start`` already requires a
``Workflow``).
"""

from __future__ import annotations

from statemachine_orch import Ctx, step


class ForgotTheBase:
    amount: float = 0

    @step(initial=True, final=True)  # not caught: ForgotTheBase is not a Workflow
    def work(self, ctx: Ctx) -> None:
        self.amount = 1
