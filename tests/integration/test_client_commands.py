"""
Issue 9: a client (``Engine(store, concurrency=0)``) retries compensations and migrates instances that a worker runs.

The worker and the client are two engines on two store objects of one database
(a SQLite file, a PostgreSQL database), as two processes would be. A client has
no workers: its ``retry_compensation`` returns the instance's new end, once a
worker took the command and ran the compensations again (not the old
``compensation_failed`` at once); its ``migrate`` is applied by a worker (which
knows the new version) and returns the migrated instance, or raises
``MigrationError`` with the worker's reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import pytest

from statemachine_orch import (
    Ctx,
    Engine,
    EventKind,
    InstanceStatus,
    MigrationError,
    Retry,
    SqliteStore,
    Store,
    Workflow,
    after,
    human_task,
    migration,
    step,
)

if TYPE_CHECKING:
    from tests.conftest import Runner

WAIT = 30.0


@attrs.define
class Bank:
    """Refunds fail until the bank agrees."""

    agrees: bool = False
    refunds: int = 0

    async def refund(self) -> None:
        if not self.agrees:
            msg = "the bank refuses the refund now"
            raise RuntimeError(msg)
        self.refunds += 1


class ClientRefund(Workflow, name="ClientRefund", version="1"):
    """Pays, then fails for good: the refund runs (and fails until the bank agrees)."""

    @step(initial=True)
    def pay(self, ctx: Ctx) -> None: ...

    @pay.compensation(retry=Retry(attempts=1))
    async def refund(self, ctx: Ctx) -> None:
        await ctx.call("bank", "refund")

    @after(pay)
    @step(final=True, retry=Retry(attempts=1))
    def explode(self, ctx: Ctx) -> None:
        raise RuntimeError("this step always fails")


@attrs.frozen
class Verdict:
    """The reviewer's form."""

    ok: bool


class ClientClaim(Workflow, name="ClientClaim", version="1"):
    """A claim waiting for the reviewer."""

    amount: int

    @step(initial=True)
    def submit(self, ctx: Ctx) -> None: ...

    @after(submit)
    @human_task(assignee="reviewer", form=Verdict, final=True)
    def review(self, ctx: Ctx, form: Verdict) -> None: ...


class ClientClaimV2(Workflow, name="ClientClaim", version="2"):
    """Version 2: the same claim, migrated."""

    amount: int
    migrated: bool = False

    @step(initial=True)
    def submit(self, ctx: Ctx) -> None: ...

    @after(submit)
    @human_task(assignee="reviewer", form=Verdict, final=True)
    def review(self, ctx: Ctx, form: Verdict) -> None: ...

    @migration(ClientClaim)
    @staticmethod
    def from_v1(old: ClientClaim, at: str) -> tuple[ClientClaimV2, str]:
        return ClientClaimV2(amount=old.amount, migrated=True), at


FLOWS: list[type[Workflow]] = [ClientRefund, ClientClaim, ClientClaimV2]


Opener = Callable[[], Store]


@pytest.fixture(params=["sqlite", "pg"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """A function that opens another store object on this test's database."""
    if request.param == "sqlite":
        path = tmp_path / "shared.db"
        SqliteStore(path).close()  # the file and its schema, before two stores open it
        return lambda: SqliteStore(path)
    dsn = str(request.getfixturevalue("pg_store_dsn"))
    from statemachine_orch import PostgresStore

    return lambda: PostgresStore(dsn)


def test_a_clients_retry_returns_the_new_end_once_a_worker_ran_the_compensations(
    open_store: Opener, run: Runner
) -> None:
    """The instance ends failed (its refund done once), not the old compensation_failed returned at once."""
    opener = open_store
    bank = Bank()

    async def scenario() -> tuple[InstanceStatus, InstanceStatus, InstanceStatus, int, list[str]]:
        worker_store = opener()
        client_store = opener()
        try:
            async with Engine(worker_store, workflows=FLOWS, services={"bank": bank}, poll=0.02) as worker:
                handle = await worker.start(ClientRefund(), instance_id="R-1")
                first = await asyncio.wait_for(worker.wait_instance(handle.instance_id), WAIT)
                bank.agrees = True
                client = Engine(client_store, workflows=FLOWS, concurrency=0, poll=0.02)
                async with client:
                    retried = await asyncio.wait_for(client.retry_compensation("R-1"), WAIT)
                    stored = client.info("R-1").status
                kinds = [e.kind.value for e in worker.history("R-1") if e.kind is EventKind.COMMAND_REJECTED]
                return first, retried, stored, bank.refunds, kinds
        finally:
            worker_store.close()
            client_store.close()

    first, retried, stored, refunds, rejected = run(scenario())
    assert InstanceStatus.COMPENSATION_FAILED == first
    assert (InstanceStatus.FAILED, InstanceStatus.FAILED) == (retried, stored)
    assert (1, []) == (refunds, rejected)


def test_a_clients_migrate_is_applied_by_a_worker(open_store: Opener, run: Runner) -> None:
    """A waiting instance moves to version 2 through the worker; a client that has no workers does not hang."""
    opener = open_store

    async def scenario() -> tuple[str, str, bool, str]:
        worker_store = opener()
        client_store = opener()
        try:
            async with Engine(worker_store, workflows=FLOWS, poll=0.02) as worker:
                handle = await worker.start(ClientClaim(amount=7), instance_id="C-1")
                await asyncio.wait_for(handle.wait_idle(), WAIT)
                client = Engine(client_store, workflows=FLOWS, concurrency=0, poll=0.02)
                async with client:
                    info = await asyncio.wait_for(client.migrate("C-1", ClientClaimV2), WAIT)
                    with pytest.raises(MigrationError) as back:
                        await asyncio.wait_for(client.migrate("C-1", ClientClaim), WAIT)
                wf = worker.workflow("C-1")
                assert isinstance(wf, ClientClaimV2)
                return info.version, worker.info("C-1").version, wf.migrated, str(back.value)
        finally:
            worker_store.close()
            client_store.close()

    version, seen_by_worker, migrated, refused = run(scenario())
    assert ("2", "2", True) == (version, seen_by_worker, migrated)
    assert "C-1" in refused
