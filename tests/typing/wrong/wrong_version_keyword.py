"""The ``version=`` class keyword is a ``str``; ``abstract=`` is a ``bool``."""

from __future__ import annotations

from statemachine_orch import Ctx, Workflow, step


class OrderProcess(Workflow, version=1):  # E: "Literal[1]" is not assignable to "str"  # mypy: Argument "version" to "__init_subclass__" of "Workflow" has incompatible type "int"; expected "str"
    amount: float = 0

    @step(initial=True, final=True)
    def start(self, ctx: Ctx) -> None:
        self.amount = 1


class Base(Workflow, abstract="yes"):  # E: "Literal['yes']" is not assignable to "bool"  # mypy: Argument "abstract" to "__init_subclass__" of "Workflow" has incompatible type "str"; expected "bool"
    amount: float = 0
