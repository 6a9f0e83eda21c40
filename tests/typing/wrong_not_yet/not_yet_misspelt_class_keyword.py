"""
Not caught yet: a misspelt class keyword (``verison="2"``) type-checks.

``Workflow.__init_subclass__(cls, *, version: str = "1", abstract: bool = False,
**kwargs: Any)`` accepts any other keyword, so both checkers let ``verison=`` through;
only ``object.__init_subclass__`` rejects it when the class statement runs. Dropping the
catch-all (``def __init_subclass__(cls, *, version: str = "1", abstract: bool = False)
-> None``) makes both checkers report the unknown keyword; a mixin that needs its own
class keywords can still declare them on its own ``__init_subclass__``.
"""

from __future__ import annotations

from statemachine_orch import Ctx, Workflow, step


def define() -> type[Workflow]:
    class Misspelt(Workflow, verison="2"):  # not caught: TypeError when the class statement runs
        done: bool = False

        @step(initial=True, final=True)
        def work(self, ctx: Ctx) -> None:
            self.done = True

    return Misspelt
