"""Issue 10: on_error handlers take the error, typed; an attempted compensation; a failure end given the error."""

from __future__ import annotations

from statemachine_orch import Ctx, Retry, Step, Workflow, after, failure_end, step


class Declined(Exception):
    code: str = ""


class Payment(Workflow):
    tries: int = 0
    note: str = ""

    @step(initial=True, retry=Retry(attempts=2))
    async def reserve(self, ctx: Ctx) -> None:
        self.tries += 1

    @reserve.compensation(attempted=True)
    async def release(self, ctx: Ctx) -> None: ...

    @after(reserve, on_error=Declined)
    @step(retry=Retry(attempts=2))
    def retry_with_other_card(self, ctx: Ctx, error: Declined) -> None:
        self.note = error.code

    @after(retry_with_other_card, on_error=TimeoutError)
    @step
    async def wait_for_bank(self, ctx: Ctx, error: TimeoutError) -> None:
        self.note = str(error.args)

    @after(reserve)
    @after(retry_with_other_card)
    @after(wait_for_bank)
    @step(final=True)
    def done(self, ctx: Ctx) -> None: ...

    @after(retry_with_other_card, on_error=Declined)
    @failure_end(outcome="declined")
    def declined(self, ctx: Ctx, error: Declined) -> str:
        return f"declined twice, last code {error.code}"


handler: Step[Payment, [Ctx, Declined], None] = Payment.retry_with_other_card
ended: Step[Payment, [Ctx, Declined], str] = Payment.declined
