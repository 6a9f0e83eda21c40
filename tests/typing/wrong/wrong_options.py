"""Decorator options are typed: retry policy, timeouts, error types, assignees and forms."""

from __future__ import annotations

from statemachine_orch import Ctx, Retry, Workflow, after, human_task, step


class OrderProcess(Workflow):
    amount: float = 0

    @step(initial=True)
    async def start(self, ctx: Ctx) -> None:
        self.amount = 1

    @after(start, on_error=ValueError())  # E: Argument of type "ValueError" cannot be assigned to parameter "on_error"  # mypy: Argument "on_error" to "after" has incompatible type "ValueError"
    @after(start, on_error=str)  # E: Argument of type "type[str]" cannot be assigned to parameter "on_error"  # mypy: Argument "on_error" to "after" has incompatible type "type[str]"
    @after(start, on_error=[KeyError, ValueError])  # E: cannot be assigned to parameter "on_error"  # mypy: Argument "on_error" to "after" has incompatible type "list[type[Exception]]"
    @step
    async def on_error_types(self, ctx: Ctx) -> None:
        self.amount = 2

    @step(retry=Retry(attempts="3"))  # E: "Literal['3']" is not assignable to "int"  # mypy: Argument "attempts" to "Retry" has incompatible type "str"; expected "int | None"
    async def retry_attempts(self, ctx: Ctx) -> None:
        self.amount = 3

    @step(retry=3)  # E: Type "Literal[3]" is not assignable to type "Retry | None"  # mypy: No overload variant of "step" matches argument type "int"
    def retry_not_a_policy(self, ctx: Ctx) -> None:
        self.amount = 4

    @step(timeout="5s")  # E: Type "Literal['5s']" is not assignable to type "timedelta | float | None"  # mypy: No overload variant of "step" matches argument type "str"
    async def timeout_as_text(self, ctx: Ctx) -> None:
        self.amount = 5

    @human_task(assignee=["manager"])  # E: Type "list[str]" is not assignable to type "str | None"  # mypy: No overload variant of "human_task" matches argument type "list[str]"
    def assignee_list(self, ctx: Ctx) -> None:
        self.amount = 6

    @human_task(form="Approval")  # E: "Literal['Approval']" is not assignable to "None"  # mypy: No overload variant of "human_task" matches argument type "str"
    def form_as_text(self, ctx: Ctx) -> None:
        self.amount = 7

    @human_task(assignee="manager", timeout=5)  # E: No overloads for "human_task" match the provided arguments  # mypy: Unexpected keyword argument "timeout" for overloaded function "human_task"
    def task_timeout(self, ctx: Ctx) -> None:
        self.amount = 8

    @step(initial=True, fnal=True)  # E: No overloads for "step" match the provided arguments  # mypy: No overload variant of "step" matches argument types "bool", "bool"
    def misspelt_option(self, ctx: Ctx) -> None:
        self.amount = 9
