"""
Not caught yet: an instance looked up by id has an untyped workflow.

``Engine.handle(instance_id)`` returns ``Handle[Any]`` and ``Engine.workflow(instance_id)``
returns ``Any``, so a misspelt field read through them passes both checkers (the handle
returned by ``start`` is typed; see ``ok/ok_engine_api.py``). An overload taking the
expected class would type them and check the class at run time::

    @overload
    def handle(self, instance_id: str) -> Handle[Workflow]: ...
    @overload
    def handle(self, instance_id: str, workflow: type[W]) -> Handle[W]: ...
    def workflow(self, instance_id: str, cls: type[W] = Workflow) -> W: ...

(``Handle[Workflow]`` instead of ``Handle[Any]`` already turns the misspelling into an
error that asks for the class.)
"""

from __future__ import annotations

from statemachine_orch import Ctx, Engine, Workflow, step


class Order(Workflow):
    amount: float = 0

    @step(initial=True, final=True)
    def work(self, ctx: Ctx) -> None:
        self.amount = 1


async def read(engine: Engine, instance_id: str) -> None:
    print((await engine.handle(instance_id).result()).amont)  # not caught: Handle[Any]
    print(engine.workflow(instance_id).amont)  # not caught: Any
