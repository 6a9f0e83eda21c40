"""
Issue 10: what an instance keeps about its failure comes back from every store.

A failure end's outcome and reason (``InstanceInfo.outcome`` from ``info`` and
``infos``, ``Engine.failure``), and the exception of the step that failed: the
same class, ``args`` and attributes, read by another store on the same data (for
a durable store, another process).
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from statemachine_orch import Ctx, Engine, Failure, InstanceStatus, VirtualClock, Workflow, after, failure_end, step

if TYPE_CHECKING:
    from tests.conftest import Runner
    from tests.store.conftest import Stores


class Tier(enum.Enum):
    """A card tier, kept as an enum attribute of an exception."""

    GOLD = "gold"


class StoreCardDeclined(Exception):
    """A payment refusal with attributes of its own."""

    def __init__(self, code: str, tier: Tier) -> None:
        super().__init__(f"declined ({code})")
        self.code = code
        self.tier = tier
        self.handle = object()  # not JSON: left out


class StoreRefusal(Workflow):
    """Refuses at a failure end, or fails at a step."""

    refuse: bool

    @step(initial=True)
    def charge(self, ctx: Ctx) -> None:
        if not self.refuse:
            raise StoreCardDeclined("51", Tier.GOLD)

    @after(charge)
    @failure_end(outcome="refused")
    def refused(self, ctx: Ctx) -> str:
        return "refused by policy"


def test_outcome_reason_and_exception_come_back_from_the_store(stores: Stores, run: Runner) -> None:
    """Issue 10: info, infos and failure() read the outcome and the rebuilt exception back, from any store."""

    async def write() -> tuple[str, str]:
        async with Engine(stores.open(), clock=VirtualClock()) as engine:
            ended = await engine.start(StoreRefusal(refuse=True))
            failed = await engine.start(StoreRefusal(refuse=False))
            await engine.wait_instance(ended.instance_id)
            await engine.wait_instance(failed.instance_id)
            return ended.instance_id, failed.instance_id

    ended, failed = run(write())
    reader = Engine(stores.open(), clock=VirtualClock())
    assert ("refused", "failed") == (reader.info(ended).outcome, reader.info(failed).outcome)
    listed = {i.id: i.outcome for i in reader.instances(status=InstanceStatus.FAILED)}
    assert {ended: "refused", failed: "failed"} == listed
    assert Failure("refused", "refused", "refused by policy") == reader.failure(ended)
    why = reader.failure(failed)
    assert why is not None
    error = why.error
    assert isinstance(error, StoreCardDeclined)
    assert ("failed", "charge", "charge: StoreCardDeclined: declined (51)") == (why.outcome, why.step, why.reason)
    assert (("declined (51)",), "51", Tier.GOLD, "declined (51)") == (error.args, error.code, error.tier, str(error))
    assert not hasattr(error, "handle")
