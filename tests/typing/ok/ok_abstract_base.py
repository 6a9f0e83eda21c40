"""An abstract base sharing fields and a guard helper; the subclass's constructor has both sets of fields."""

from __future__ import annotations

from statemachine_orch import Ctx, Workflow, after, step


class Audited(Workflow, abstract=True):
    requested_by: str
    audit_log: list[str] | None = None

    def is_privileged(self) -> bool:
        return self.requested_by == "root"


class Deploy(Audited, version="3"):
    service: str = "api"
    deployed: bool = False

    @step(initial=True)
    def plan(self, ctx: Ctx) -> None:
        self.audit_log = [f"{self.requested_by} plans {self.service}"]

    @after(plan, when=Audited.is_privileged)
    @after(plan, when=lambda wf: wf.requested_by.startswith("ops-"))
    @step(final=True)
    def deploy(self, ctx: Ctx) -> None:
        self.deployed = True

    @after(plan)
    @step(final=True)
    def refuse(self, ctx: Ctx) -> None:
        self.deployed = False


def make() -> Deploy:
    return Deploy(requested_by="ops-ann", service="web")
