"""
Not caught yet: ``ctx.log`` is ``Any``, so a misspelt logger method type-checks.

``Ctx.log`` is declared ``-> Any``; ``ctx.log.infoo(...)`` passes both checkers and
raises ``AttributeError`` inside the step, which then fails (and is retried, and
compensated). Typing it with structlog's own protocol catches it::

    @property
    def log(self) -> structlog.typing.FilteringBoundLogger: ...
"""

from __future__ import annotations

from statemachine_orch import Ctx, Workflow, step


class Order(Workflow):
    amount: float = 0

    @step(initial=True, final=True)
    def work(self, ctx: Ctx) -> None:
        ctx.log.infoo("working", amount=self.amount)  # not caught: ctx.log is Any
