"""
Issue 13: claims from a client (``Engine(store, concurrency=0)``) beside a worker, on SQLite and PostgreSQL.

The web server is such a client. Its claim is written with its command in one
transaction, so every other client sees it at once (another user's completion
is refused with ``TaskClaimed``); the worker writes the claim into the history
when it applies the command, before the claimant's completion.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import attrs
import pytest

from statemachine_orch import (
    Ctx,
    Engine,
    EventKind,
    InstanceStatus,
    TaskClaimed,
    Workflow,
    after,
    human_task,
    step,
)
from tests.integration.test_client_commands import WAIT, Opener, open_store

if TYPE_CHECKING:
    from tests.conftest import Runner

__all__ = ["open_store"]  # the fixture, used by name


@attrs.frozen
class Sign:
    """A signature."""

    ok: bool


class Countersign(Workflow, name="Countersign", version="1"):
    """A document any signer may countersign."""

    signed: bool = False

    @step(initial=True)
    def draft(self, ctx: Ctx) -> None: ...

    @after(draft)
    @human_task(candidate_groups=("signers",), form=Sign, final=True)
    def countersign(self, ctx: Ctx, form: Sign) -> None:
        self.signed = form.ok


SIGNERS = ("signers",)


def test_a_clients_claim_holds_for_every_client_and_lands_in_the_history(open_store: Opener, run: Runner) -> None:
    """Issue 13: bob claims through one client; carol's client is refused; bob's completion ends the instance."""

    async def scenario() -> tuple[InstanceStatus, list[tuple[str, str | None]], bool]:
        stores = [open_store() for _ in range(3)]
        try:
            async with Engine(stores[0], workflows=[Countersign], poll=0.02) as worker:
                handle = await worker.start(Countersign(), instance_id="D-1")
                await asyncio.wait_for(handle.wait_idle(), WAIT)
                bobs = Engine(stores[1], workflows=[Countersign], concurrency=0, poll=0.02)
                carols = Engine(stores[2], workflows=[Countersign], concurrency=0, poll=0.02)
                async with bobs, carols:
                    [task] = carols.tasks("carol", SIGNERS)
                    await bobs.claim_task(task.id, user="bob", groups=SIGNERS)
                    assert [] == carols.tasks("carol", SIGNERS)
                    with pytest.raises(TaskClaimed):
                        await carols.complete_task(task.id, user="carol", groups=SIGNERS, form=Sign(ok=False))
                    await bobs.complete_task(task.id, user="bob", groups=SIGNERS, form=Sign(ok=True))
                    status = await asyncio.wait_for(bobs.wait_instance("D-1"), WAIT)
                    seen = {EventKind.TASK_CLAIMED, EventKind.TASK_COMPLETED, EventKind.COMMAND_REJECTED}
                    history = [(e.kind.value, e.detail) for e in bobs.history("D-1") if e.kind in seen]
                return status, history, worker.workflow("D-1").signed
        finally:
            for store in stores:
                store.close()

    status, history, signed = run(scenario())
    assert (InstanceStatus.COMPLETED, True) == (status, signed)
    assert [("task_claimed", "bob"), ("task_completed", "bob")] == history
