"""``after``/``goto`` take steps: a plain function, a guard or a compensation is an error, as a source or as the decorated target."""

from __future__ import annotations

from statemachine_orch import Ctx, Workflow, after, goto, step


def helper(wf: object, ctx: Ctx) -> None:
    pass


class OrderProcess(Workflow):
    amount: float = 0

    def needs_approval(self) -> bool:
        return self.amount > 1000

    def not_a_step(self, ctx: Ctx) -> None:
        self.amount = 1

    @step(initial=True)
    def start(self, ctx: Ctx) -> None:
        self.amount = 2

    @start.compensation
    def undo_start(self, ctx: Ctx) -> None:
        self.amount = 0

    @after(helper)  # E: "FunctionType" is incompatible with protocol "StepOf[W@after]"  # mypy: Argument 1 to "after" has incompatible type "Callable[[object, Ctx], None]"; expected "StepOf[
    @after(not_a_step)  # E: "FunctionType" is incompatible with protocol "StepOf[W@after]"  # mypy: Argument 1 to "after" has incompatible type "Callable[[OrderProcess, Ctx], None]"; expected "StepOf[
    @after(needs_approval)  # E: "FunctionType" is incompatible with protocol "StepOf[W@after]"  # mypy: Argument 1 to "after" has incompatible type "Callable[[OrderProcess], bool]"; expected "StepOf[
    @after(undo_start)  # E: "Compensation[Self@OrderProcess, None]" is incompatible with protocol "StepOf[W@after]"  # mypy: Argument 1 to "after" has incompatible type "Compensation[OrderProcess, None]"; expected "StepOf[
    @goto(not_a_step)  # E: "FunctionType" is incompatible with protocol "StepOf[W@goto]"  # mypy: Argument 1 to "goto" has incompatible type "Callable[[OrderProcess, Ctx], None]"; expected "StepOf[
    @after(start, not_a_step)  # E: cannot be assigned to parameter "more_sources"  # mypy: Argument 2 to "after" has incompatible type "Callable[[OrderProcess, Ctx], None]"; expected "StepOf[Any]"
    @step(final=True)
    def done(self, ctx: Ctx) -> None:
        self.amount = 3

    @after(start)  # E: "FunctionType" is not assignable to "Step[WD@__call__, P@__call__, RS@__call__]"  # mypy: Argument 1 to "__call__" of "EdgeDecorator" has incompatible type "Callable[[OrderProcess, Ctx], None]"; expected "Step[
    def forgot_step_decorator(self, ctx: Ctx) -> None:
        self.amount = 4

    @goto(start)  # E: "FunctionType" is not assignable to "Step[WD@__call__, P@__call__, RS@__call__]"  # mypy: Argument 1 to "__call__" of "EdgeDecorator" has incompatible type "Callable[[OrderProcess, Ctx], None]"; expected "Step[
    def forgot_step_decorator_too(self, ctx: Ctx) -> None:
        self.amount = 5
