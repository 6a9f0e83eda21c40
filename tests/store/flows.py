"""
Workflows and helpers of the ``Store`` conformance suite (issue 9).

Records are made as real code makes them: a real :class:`Engine` runs these small
workflows until they park (on a human task or a message), then ``drive`` plays
one worker's turn on the store itself: claim, load, change, commit under the
fence, release. ``snapshot`` reads what a store holds of some instances through
the ``Store`` methods only, so "nothing was written" is checked the same way on
every store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import attrs

from statemachine_orch import (
    Ctx,
    Engine,
    EventKind,
    HistoryEvent,
    InstanceStatus,
    Store,
    VirtualClock,
    Workflow,
    after,
    human_task,
    step,
    wait_for,
)
from statemachine_orch._instance import InstanceRecord
from statemachine_orch._machine import STATE_ATTRIBUTE
from tests.integration.helpers import entries

if TYPE_CHECKING:
    from tests.conftest import Runner

W1 = "host:101:aaaa"
W2 = "host:202:bbbb"
NOW = 1_900_000_000.0
"""Lease times: a store compares the times it is given, not a clock (later than any engine's virtual lease)."""
LEASE = 30.0


@attrs.frozen
class Verdict:
    """A reviewer's form."""

    approved: bool


@attrs.frozen
class Paid:
    """The bank's message."""

    cents: int


PAID = f"{Paid.__module__}.{Paid.__qualname__}"
"""The type name a signal of :class:`Paid` is kept under."""


class ContractEdit(Workflow, name="ContractEdit", version="1"):
    """A review by alice or any editor."""

    title: str = "draft"
    verdict: Verdict | None = None

    @step(initial=True)
    def draft(self, ctx: Ctx) -> None:
        self.title = "ready"

    @after(draft)
    @human_task(assignee="alice", candidate_groups=("editors",), form=Verdict)
    def review(self, ctx: Ctx, form: Verdict) -> None:
        self.verdict = form

    @after(review)
    @step(final=True)
    def publish(self, ctx: Ctx) -> None: ...


class ContractAudit(Workflow, name="ContractAudit", version="1"):
    """A check by anyone in ops or legal; nobody is its assignee."""

    @step(initial=True)
    def collect(self, ctx: Ctx) -> None: ...

    @after(collect)
    @human_task(candidate_groups=("ops", "legal"))
    def check(self, ctx: Ctx) -> None: ...

    @after(check)
    @step(final=True)
    def close(self, ctx: Ctx) -> None: ...


class ContractPay(Workflow, name="ContractPay", version="1"):
    """Invoice, wait for the bank's message, then book it."""

    cents: int = 0

    @step(initial=True)
    def invoice(self, ctx: Ctx) -> None: ...

    @after(invoice)
    @wait_for(Paid)
    def paid(self, ctx: Ctx, msg: Paid) -> None:
        self.cents = msg.cents

    @after(paid)
    @step(final=True)
    def book(self, ctx: Ctx) -> None: ...


PINNED: list[type[Workflow]] = [ContractEdit, ContractAudit, ContractPay]
"""This suite's workflows, pinned in every engine and store: other modules define classes too."""


def parked(store: Store, run: Runner, workflows: Iterable[Workflow]) -> list[str]:
    """Start each workflow with a real engine on *store* until it parks (a task, a message); their ids."""

    async def scenario() -> list[str]:
        async with Engine(store, clock=VirtualClock(), workflows=PINNED) as engine:
            handles = [await engine.start(wf) for wf in workflows]
            for handle in handles:
                await handle.wait_idle()
            return [h.instance_id for h in handles]

    return run(scenario())


def load(store: Store, instance_id: str) -> InstanceRecord:
    """The stored record of an instance that exists."""
    rec = store.load(instance_id)
    assert rec is not None, instance_id
    return rec


def drive(
    store: Store,
    instance_id: str,
    change: Callable[[InstanceRecord], None],
    *,
    owner: str = W1,
    now: float = NOW,
) -> int:
    """One worker's turn on an instance: claim, load, change, commit under the fence, release; the fence."""
    fence = store.claim(instance_id, owner, now, now + LEASE)
    assert fence is not None, instance_id
    rec = load(store, instance_id)
    rec.fence = fence
    change(rec)
    store.commit([rec])
    store.release(owner, {instance_id: fence})
    return fence


def no_change(rec: InstanceRecord) -> None:
    """A turn that changes nothing (to learn the instance's fence)."""


def in_flight(rec: InstanceRecord) -> None:
    """Running, no timer: what a driver that died mid-step leaves."""
    rec.status = InstanceStatus.RUNNING
    rec.wake_at = None


def compensating(rec: InstanceRecord) -> None:
    """Compensating, no timer: what a driver that died mid-undo leaves."""
    rec.status = InstanceStatus.COMPENSATING
    rec.wake_at = None


def ended(rec: InstanceRecord) -> None:
    """Completed."""
    rec.status = InstanceStatus.COMPLETED
    rec.wake_at = None


def timer_at(at: float) -> Callable[[InstanceRecord], None]:
    """Parked on a timer due at *at*."""

    def change(rec: InstanceRecord) -> None:
        rec.wake_at = at

    return change


def noted(detail: str) -> Callable[[InstanceRecord], None]:
    """A turn that writes one history entry (status_changed, *detail*) and an error."""

    def change(rec: InstanceRecord) -> None:
        rec.error = detail
        rec.history.append(HistoryEvent(NOW, EventKind.STATUS_CHANGED, None, 0, detail))

    return change


def new_record(
    instance_id: str,
    *,
    lease: tuple[str, float] | None = None,
    fence: int = 0,
    workflow: type[Workflow] = ContractPay,
) -> InstanceRecord:
    """A new *workflow* record as ``Engine.start`` makes it: at its first step, running, its first entry."""
    spec = workflow.__orch_spec__
    wf = workflow()
    setattr(wf, STATE_ATTRIBUTE, spec.initial)
    rec = InstanceRecord(instance_id, wf, spec, workflow.__orch_machine__, NOW)
    rec.history.append(HistoryEvent(NOW, EventKind.INSTANCE_STARTED, None, 0, spec.label))
    rec.lease = lease
    rec.fence = fence
    return rec


def snapshot(store: Store, ids: Iterable[str]) -> dict[str, tuple[object, ...]]:
    """
    What *store* holds of the instances: history, commands, signals, open tasks and, on durable stores, the row.

    A MemoryStore's records are the engine's live objects, so their fields are not
    "written" by a commit: there, only what a commit files is compared.
    """
    out: dict[str, tuple[object, ...]] = {}
    for i in ids:
        seen: tuple[object, ...] = (
            entries(store.history(i)),
            [(c.seq, c.kind, c.body) for c in store.commands(i)],
            store.signals(i),
            sorted((t.id, t.status.value) for t in store.open_tasks(None, frozenset(), i)),
        )
        if store.leases:
            seen = (*seen, store.info(i))
        out[i] = seen
    return out


def variables(wf: Workflow) -> dict[str, Any]:
    """Every field of a workflow object, nested values kept as objects."""
    return attrs.asdict(cast("attrs.AttrsInstance", wf), recurse=False)
