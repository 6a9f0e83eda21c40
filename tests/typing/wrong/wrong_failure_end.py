"""Issue 10: a failure end returns its reason, a ``str``; a method returning anything else is an error."""

from __future__ import annotations

from statemachine_orch import Ctx, Workflow, after, failure_end, step


class Refusal(Workflow):
    @step(initial=True)
    def begin(self, ctx: Ctx) -> None: ...

    @after(begin, when=lambda wf: True)  # mypy: Value of type variable "RR" of "failure_end" cannot be "None"
    @failure_end  # E: Type "None" is not assignable to type "Awaitable[str] | str"  # mypy-misses: it reports on the first decorator's line
    def forgot_the_reason(self, ctx: Ctx) -> None: ...

    @after(begin)  # mypy: Value of type variable "RR" of function cannot be "int"
    @failure_end(outcome="declined")  # E: is not assignable to  # mypy-misses: it reports on the first decorator's line
    def returns_a_code(self, ctx: Ctx) -> int:
        return 1
