"""Issue 10: a failure end returns its reason, a ``str``; a method returning anything else is an error."""

from __future__ import annotations

from statemachine_orch import Ctx, Workflow, failure_end


class Refusal(Workflow):
    @failure_end  # E: Type "None" is not assignable to type "Awaitable[str] | str"  # mypy: Value of type variable "RR" of "failure_end" cannot be "None"
    def forgot_the_reason(self, ctx: Ctx) -> None: ...

    @failure_end(outcome="declined")  # E: is not assignable to  # mypy: Value of type variable "RR" of "__call__" of "FailureEndMaker" cannot be "int"
    def returns_a_code(self, ctx: Ctx) -> int:
        return 1

    @failure_end  # E: No overloads for "failure_end" match  # mypy: Value of type variable "E" of "failure_end" cannot be "str"
    def error_not_an_exception(self, ctx: Ctx, error: str) -> str:
        return error
