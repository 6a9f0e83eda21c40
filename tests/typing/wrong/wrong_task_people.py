"""Issue 10: a computed assignee is a method of the workflow returning a name; anything else is an error."""

from __future__ import annotations

from statemachine_orch import Ctx, Workflow, human_task


class Other(Workflow):
    def boss(self) -> str:
        return "boss"


class Claim(Workflow):
    owner: str

    def count(self) -> int:
        return 1

    @human_task(initial=True, final=True, assignee=count)  # E: is not assignable to  # mypy: has incompatible type "Callable[[Claim], int]"
    def review(self, ctx: Ctx) -> None: ...

    @human_task(initial=True, final=True, assignee=Other.boss)  # E: "Other" is not assignable to "Claim"  # mypy: Argument 1 has incompatible type "Callable[[Claim, Ctx], None]"
    def confirm(self, ctx: Ctx) -> None: ...
