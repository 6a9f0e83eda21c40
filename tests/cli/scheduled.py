"""
A module with a schedule, for ``orch worker`` (issue 10): ``ORCH_MODULES=tests.cli.scheduled``.

Its ``orch_schedules`` starts a ``CliTick`` every half second; workers that
import the module run it.
"""

from __future__ import annotations

from statemachine_orch import Ctx, Schedule, Workflow, step


class CliTick(Workflow, name="CliTick", version="1"):
    """What the schedule starts: one step."""

    due: str

    @step(initial=True, final=True)
    def tick(self, ctx: Ctx) -> None: ...


def orch_schedules() -> list[Schedule[CliTick]]:
    """The schedules of this module's workers."""
    return [Schedule("cli-tick", lambda due: CliTick(due=due.isoformat()), every=0.5)]
