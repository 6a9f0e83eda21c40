"""
Issue 9: ``PostgresStore`` keeps the store contract on a real PostgreSQL server.

Every test gets a fresh database (``pg_store_dsn``, ``tests/pg.py``). Whole
workflows run through ``Engine(store=PostgresStore(dsn))``: the store-parity
scenarios of ``test_store_parity.py`` again, then restarts (variables, a waiting
task, a timer, a fork's branches, a child workflow), tasks by user and by group,
messages, and damaged rows (quarantined with a typed ``RecordLoadError``). The
lease contract of ``docs/design/leases.md`` is checked on the store itself: a
commit with a stale fence writes nothing and raises ``LeaseLost``, a new record
whose id exists raises ``InstanceExists``, ``claim_runnable`` claims what needs a
worker once, skipping rows another connection holds locked, ``add_command``
refuses a task that is no longer open, and ``listen`` hears ``NOTIFY
orch_commands``. Schema upgrades are idempotent, safe when several processes
start at once, and refuse a newer schema.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import contextlib
import enum
import queue
import threading
import time
from collections.abc import AsyncGenerator, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import attrs
import psycopg
import pytest

from statemachine_orch import (
    Ctx,
    Engine,
    InstanceStatus,
    RecordLoadError,
    StoreError,
    TaskAlreadyCompleted,
    TaskStatus,
    VirtualClock,
    Workflow,
    WorkflowRegistry,
    after,
    human_task,
    step,
    subflow,
    timer,
    wait_for,
)
from statemachine_orch._errors import InstanceExists, LeaseLost
from statemachine_orch._store_postgres import MIGRATIONS, SCHEMA_VERSION, PostgresStore, upgrade
from tests.integration import test_store_parity as parity
from tests.integration.helpers import entries, eventually, parked

if TYPE_CHECKING:
    from statemachine_orch._instance import InstanceRecord
    from tests.conftest import Runner

HOUR = 3600.0
WAIT = 10.0
"""Seconds a test waits for another thread (a listener, a claimer) before it counts as hung."""


# --------------------------------------------------------------------------- the parity scenarios, again


@pytest.fixture
def store(pg_store_dsn: str) -> Iterator[PostgresStore]:
    """The store-parity scenarios' store, here a PostgresStore on a fresh database."""
    with PostgresStore(pg_store_dsn) as made:
        yield made


# The scenarios of test_store_parity.py (memory and SQLite), run on PostgreSQL through
# the `store` fixture above: same outcome, same history, entry by entry.
test_parity_linear_completion = parity.test_linear_completion
test_parity_retries_with_backoff = parity.test_retries_with_backoff
test_parity_exhausted_retries = parity.test_a_step_that_exhausts_its_retries_fails_the_instance
test_parity_compensation_in_reverse_order = parity.test_compensation_in_reverse_order
test_parity_compensation_failed_then_retry = parity.test_compensation_failed_then_retry_compensation
test_parity_human_task = parity.test_human_task_refusals_change_nothing_then_completion
test_parity_cancel = parity.test_cancel_a_waiting_instance
test_parity_retry_compensation_refused = (
    parity.test_retry_compensation_of_an_instance_that_did_not_fail_its_compensation_is_refused
)


# --------------------------------------------------------------------------- workflows


class Tier(enum.Enum):
    """A customer's tier."""

    BRONZE = "bronze"
    GOLD = "gold"


@attrs.frozen
class Address:
    """A postal address."""

    street: str
    city: str
    flat: int | None = None


@attrs.frozen
class Approval:
    """The manager's form."""

    approved: bool
    by: str
    at: datetime
    limits: dict[str, float]


T0 = datetime(2026, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)
APPROVAL = Approval(approved=True, by="manager", at=T0 + timedelta(hours=2), limits={"daily": 250.5})


class PgAccount(Workflow, name="PgAccount", version="1"):
    """Prepare (changes the variables), a manager's approval, then activate."""

    owner: str
    address: Address
    since: datetime
    tier: Tier
    stock: dict[str, int]
    signature: bytes = b""
    scores: list[float] = attrs.field(factory=list[float])
    approval: Approval | None = None
    active: bool = False

    @step(initial=True)
    def prepare(self, ctx: Ctx) -> None:
        self.stock["GIFT"] = self.stock.get("GIFT", 0) - 1
        self.scores.append(0.1)

    @after(prepare)
    @human_task(assignee="manager", form=Approval)
    def approve(self, ctx: Ctx, form: Approval) -> None:
        self.approval = form

    @after(approve)
    @step(final=True)
    def activate(self, ctx: Ctx) -> None:
        self.active = self.approval is not None and self.approval.approved


def new_account() -> PgAccount:
    """An account with values of many kinds."""
    return PgAccount(
        owner="Zoë Ørsted",
        address=Address("1 Rue de la Paix", "Paris"),
        since=T0,
        tier=Tier.GOLD,
        stock={"BOOK": 7, "PEN": 0},
        signature=b"\x00\xffsig",
        scores=[1e-7, 2.5, -3.0],
    )


@attrs.frozen
class Verdict:
    """A reviewer's answer."""

    approved: bool


class PgEdit(Workflow, name="PgEdit", version="1"):
    """A review by alice or any editor."""

    verdict: Verdict | None = None

    @step(initial=True)
    def draft(self, ctx: Ctx) -> None: ...

    @after(draft)
    @human_task(assignee="alice", candidate_groups=("editors",), form=Verdict)
    def review(self, ctx: Ctx, form: Verdict) -> None:
        self.verdict = form

    @after(review)
    @step(final=True)
    def publish(self, ctx: Ctx) -> None: ...


class PgAudit(Workflow, name="PgAudit", version="1"):
    """A check by anyone in ops or legal; nobody is its assignee."""

    @step(initial=True)
    def collect(self, ctx: Ctx) -> None: ...

    @after(collect)
    @human_task(candidate_groups=("ops", "legal"))
    def check(self, ctx: Ctx) -> None: ...

    @after(check)
    @step(final=True)
    def close(self, ctx: Ctx) -> None: ...


@attrs.frozen
class Paid:
    """The bank's message."""

    cents: int


class PgPayment(Workflow, name="PgPayment", version="1"):
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


class PgNap(Workflow, name="PgNap", version="1"):
    """Sleep an hour, then wake."""

    count: int = 0

    @timer(timedelta(hours=1), initial=True)
    def sleep(self, ctx: Ctx) -> None: ...

    @after(sleep)
    @step(final=True)
    def wake(self, ctx: Ctx) -> None: ...


class PgTrip(Workflow, name="PgTrip", version="1"):
    """Plan, then two operator tasks at once: the hotel booking, then the car; pay when both are done."""

    booked: list[str] = attrs.field(factory=list[str])

    @step(initial=True, fork=True)
    def plan(self, ctx: Ctx) -> None: ...

    # Declared hotel first: jsonb would list an object's keys shortest first (car).
    @after(plan)
    @human_task(assignee="ops")
    def hotel_booking(self, ctx: Ctx) -> None:
        self.booked.append("hotel")

    @after(plan)
    @human_task(assignee="ops")
    def car(self, ctx: Ctx) -> None:
        self.booked.append("car")

    @after(hotel_booking, car)
    @step(final=True)
    def pay(self, ctx: Ctx) -> None: ...


class PgParcel(Workflow, name="PgParcel", version="1"):
    """The child: pack, a packer's check, then label with a tracking number."""

    parcel: str
    tracking: str = ""

    @step(initial=True)
    def pack(self, ctx: Ctx) -> None: ...

    @after(pack)
    @human_task(assignee="packer")
    def check(self, ctx: Ctx) -> None: ...

    @after(check)
    @step(final=True)
    def label(self, ctx: Ctx) -> None:
        self.tracking = f"T-{self.parcel}"


class PgOrder(Workflow, name="PgOrder", version="1"):
    """The parent: ship through a child workflow, take its tracking number, bill."""

    parcel: str
    tracking: str = ""

    @subflow(PgParcel, initial=True)
    def ship(self, ctx: Ctx) -> PgParcel:
        return PgParcel(parcel=self.parcel)

    @ship.on_result
    def shipped(self, ctx: Ctx, child: PgParcel) -> None:
        self.tracking = child.tracking

    @after(ship)
    @step(final=True)
    def bill(self, ctx: Ctx) -> None: ...


class PgCrate(Workflow, name="PgCrate", version="1"):
    """Count, wait for a message, ship."""

    count: int = 0

    @step(initial=True)
    def count_items(self, ctx: Ctx) -> None:
        self.count = 3

    @after(count_items)
    @wait_for(Paid)
    def settle(self, ctx: Ctx, msg: Paid) -> None: ...

    @after(settle)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None: ...


PINNED: list[type[Workflow]] = [PgAccount, PgEdit, PgAudit, PgPayment, PgNap, PgTrip, PgParcel, PgOrder, PgCrate]
"""This module's workflows, pinned in every engine: other modules define classes too."""


# --------------------------------------------------------------------------- helpers


@contextlib.asynccontextmanager
async def pg_engine(dsn: str, clock: VirtualClock, **options: Any) -> AsyncGenerator[Engine]:
    """An engine on a new PostgresStore on *dsn*; on exit the engine stops and the store closes."""
    with PostgresStore(dsn) as store:
        async with Engine(store, clock=clock, workflows=PINNED, **options) as engine:
            yield engine


def execute(dsn: str, statement: str, *params: object) -> list[tuple[Any, ...]]:
    """Run one statement by hand, as an operator or older code might (its rows, if it returns any)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement.encode(), params)  # bytes: a statement a test builds itself
        return cur.fetchall() if cur.description is not None else []


def attached(dsn: str, **options: Any) -> PostgresStore:
    """A store on *dsn* that resolves this module's workflows."""
    made = PostgresStore(dsn, **options)
    made.attach(WorkflowRegistry(PINNED))
    return made


def waiting(dsn: str, clock: VirtualClock, run: Runner, workflows: Iterable[Workflow]) -> list[str]:
    """Start each workflow (they park on a task or a message) with an engine that then stops; their ids."""

    async def scenario() -> list[str]:
        async with pg_engine(dsn, clock) as engine:
            handles = [await engine.start(wf) for wf in workflows]
            for handle in handles:
                await handle.wait_idle()
            return [h.instance_id for h in handles]

    return run(scenario())


def variables(wf: Workflow) -> dict[str, Any]:
    """Every field of a workflow object, nested attrs values kept as objects."""
    return attrs.asdict(cast("attrs.AttrsInstance", wf), recurse=False)


LISTENERS = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND query LIKE 'LISTEN %%'"
)
"""The backends of this database's listening connections (their last statement was a LISTEN)."""


def load(store: PostgresStore, instance_id: str) -> InstanceRecord:
    """The stored record of an instance that exists."""
    rec = store.load(instance_id)
    assert rec is not None, instance_id
    return rec


# --------------------------------------------------------------------------- restarts


def test_variables_and_a_waiting_task_survive_a_restart(pg_store_dsn: str, clock: VirtualClock, run: Runner) -> None:
    """Issue 9: nested values, a datetime, an enum, bytes and floats come back after a restart, and the task completes."""

    async def scenario() -> tuple[dict[str, Any], PgAccount, list[str], PgAccount, InstanceStatus]:
        async with pg_engine(pg_store_dsn, clock) as engine:
            handle = await engine.start(new_account())
            await handle.wait_idle()
            before = variables(handle.workflow)
        async with pg_engine(pg_store_dsn, clock) as engine:
            await engine.recover()
            after_restart: PgAccount = engine.workflow(handle.instance_id)
            tasks = [t.step for t in engine.tasks(user="manager")]
            [task] = engine.tasks(user="manager")
            await engine.complete_task(task.id, user="manager", form=APPROVAL)
            final = await engine.handle(handle.instance_id).result()
            return before, after_restart, tasks, final, engine.info(handle.instance_id).status

    before, after_restart, tasks, final, status = run(scenario())
    expected = variables(new_account()) | {"stock": {"BOOK": 7, "PEN": 0, "GIFT": -1}, "scores": [1e-7, 2.5, -3.0, 0.1]}
    assert expected == before
    assert expected == variables(after_restart)
    assert ["approve"] == tasks
    assert expected | {"approval": APPROVAL, "active": True} == variables(final)
    assert InstanceStatus.COMPLETED == status


def test_a_timer_fires_after_a_restart_at_its_due_time(pg_store_dsn: str, run: Runner) -> None:
    """Issue 9: a timer set before a restart is kept as a double-precision due time and fires after it, when due."""
    clock = VirtualClock(autojump=False)
    start = clock.now()

    async def scenario() -> tuple[float | None, InstanceStatus, list[tuple[str, float]]]:
        async with pg_engine(pg_store_dsn, clock) as engine:
            handle = await engine.start(PgNap())
            await eventually(parked(engine, handle.instance_id))
            wake_at = engine.info(handle.instance_id).wake_at
        clock.advance(HOUR)
        async with pg_engine(pg_store_dsn, clock) as engine:
            await engine.recover()
            status = await engine.wait_instance(handle.instance_id)
            history = engine.history(handle.instance_id)
            timed = [(e.kind.value, e.at - start) for e in history if e.kind.value.startswith("timer_")]
            return wake_at, status, timed

    wake_at, status, timed = run(scenario())
    assert start + HOUR == wake_at
    assert InstanceStatus.COMPLETED == status
    assert [("timer_set", 0.0), ("timer_fired", HOUR)] == timed


def test_a_forked_instance_keeps_its_branches_in_order_across_a_restart(
    pg_store_dsn: str, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: both branches' tasks survive a restart; the branches come back in their order, not jsonb's."""

    async def scenario() -> tuple[list[str], list[str], str | None, str | None, InstanceStatus, list[str]]:
        async with pg_engine(pg_store_dsn, clock) as engine:
            handle = await engine.start(PgTrip())
            await handle.wait_idle()
            first_task = engine.info(handle.instance_id).open_task
            steps = list(engine.info(handle.instance_id).steps)
        with attached(pg_store_dsn) as store:
            branches = list(load(store, handle.instance_id).branches)
        async with pg_engine(pg_store_dsn, clock) as engine:
            await engine.recover()
            open_task = engine.info(handle.instance_id).open_task
            for task in engine.tasks(user="ops"):
                await engine.complete_task(task.id, user="ops")
            wf = await engine.handle(handle.instance_id).result()
            return steps, branches, first_task, open_task, engine.info(handle.instance_id).status, wf.booked

    steps, branches, first_task, open_task, status, booked = run(scenario())
    assert ["hotel_booking", "car"] == steps
    assert ["hotel_booking", "car"] == branches
    assert first_task is not None
    assert first_task == open_task
    assert InstanceStatus.COMPLETED == status
    assert ["car", "hotel"] == sorted(booked)


def test_a_parent_waiting_on_its_child_finishes_after_a_restart(
    pg_store_dsn: str, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: a parent parked on a child that waits for a task; after a restart the child ends and resumes it."""

    async def scenario() -> tuple[str, list[tuple[str, InstanceStatus]], InstanceStatus, str, InstanceStatus]:
        async with pg_engine(pg_store_dsn, clock) as engine:
            handle = await engine.start(PgOrder(parcel="p1"))
            await engine.wait_idle()
        async with pg_engine(pg_store_dsn, clock) as engine:
            await engine.recover()
            children = [(c.id, c.status) for c in engine.children(handle.instance_id)]
            [task] = engine.tasks(user="packer")
            await engine.complete_task(task.id, user="packer")
            wf: PgOrder = await engine.handle(handle.instance_id).result()
            child_status = engine.info(children[0][0]).status
            return handle.instance_id, children, engine.info(handle.instance_id).status, wf.tracking, child_status

    parent, children, status, tracking, child_status = run(scenario())
    [(child_id, waiting_status)] = children
    assert child_id.startswith(f"{parent}/")
    assert InstanceStatus.WAITING == waiting_status
    assert (InstanceStatus.COMPLETED, "T-p1", InstanceStatus.COMPLETED) == (status, tracking, child_status)


# --------------------------------------------------------------------------- tasks and signals


def test_open_tasks_are_found_by_assignee_and_by_group(pg_store_dsn: str, clock: VirtualClock, run: Runner) -> None:
    """Issue 9: open tasks through the assignee and group indexes, oldest first; a completed one leaves both."""

    async def scenario() -> dict[str, list[str]]:
        async with pg_engine(pg_store_dsn, clock) as engine:
            edit = await engine.start(PgEdit())
            await edit.wait_idle()
            audit = await engine.start(PgAudit())
            await audit.wait_idle()
            names = {edit.instance_id: "edit", audit.instance_id: "audit"}

            def found(user: str | None, *groups: str) -> list[str]:
                return [names[t.instance_id] for t in engine.tasks(user, groups)]

            seen = {
                "alice": found("alice"),
                "bob, editors": found("bob", "editors"),
                "bob, legal": found("bob", "legal"),
                "bob, editors and ops": found("bob", "editors", "ops"),
                "bob": found("bob"),
                "everyone": found(None),
                "of the audit": [names[t.instance_id] for t in engine.tasks(instance_id=audit.instance_id)],
            }
            [task] = engine.tasks("bob", ["editors"])
            await engine.complete_task(task.id, user="bob", groups=["editors"], form=Verdict(approved=True))
            await edit.result()
            seen["bob, editors and ops, later"] = found("bob", "editors", "ops")
            seen["alice, later"] = found("alice")
            return seen

    assert {
        "alice": ["edit"],
        "bob, editors": ["edit"],
        "bob, legal": ["audit"],
        "bob, editors and ops": ["edit", "audit"],
        "bob": [],
        "everyone": ["edit", "audit"],
        "of the audit": ["audit"],
        "bob, editors and ops, later": ["audit"],
        "alice, later": [],
    } == run(scenario())
    assert [] == execute(pg_store_dsn, "SELECT grp FROM task_groups WHERE grp = 'editors'")


def test_a_message_is_delivered_and_one_kept_while_no_engine_ran_is_delivered_after_it(
    pg_store_dsn: str, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: a signal reaches the waiting step; one stored while no engine ran is delivered by the next."""
    first, second = waiting(pg_store_dsn, clock, run, [PgPayment(), PgPayment()])
    with attached(pg_store_dsn) as store:
        store.add_command(second, "wake", {}, signal=(f"{Paid.__module__}.{Paid.__qualname__}", Paid(cents=250)))

    async def scenario() -> tuple[int, int, list[tuple[str, str | None, int, str | None]]]:
        async with pg_engine(pg_store_dsn, clock) as engine:
            await engine.recover()
            await engine.signal(first, Paid(cents=100))
            one: PgPayment = await engine.handle(first).result()
            two: PgPayment = await engine.handle(second).result()
            return one.cents, two.cents, entries(engine.history(second), second)

    cents_first, cents_second, history = run(scenario())
    assert (100, 250) == (cents_first, cents_second)
    assert ("status_changed", None, 0, "completed") == history[-1]
    assert [] == execute(pg_store_dsn, "SELECT seq FROM signals")
    assert [] == execute(pg_store_dsn, "SELECT seq FROM commands")


# --------------------------------------------------------------------------- damaged rows


def test_a_value_of_the_wrong_type_quarantines_its_instance_and_names_the_field(
    pg_store_dsn: str, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: a variable edited to a wrong type raises RecordLoadError naming the field; others carry on."""
    bad, good = waiting(pg_store_dsn, clock, run, [PgCrate(), PgCrate()])
    execute(pg_store_dsn, 'UPDATE instances SET variables = \'{"count": "three"}\' WHERE id = %s', bad)

    async def scenario() -> tuple[RecordLoadError, str | None, InstanceStatus]:
        async with pg_engine(pg_store_dsn, clock) as engine:
            await engine.recover()
            with pytest.raises(RecordLoadError) as err:
                engine.workflow(bad)
            await engine.signal(good, Paid(cents=1))
            status = await engine.wait_instance(good)
            return err.value, engine.info(bad).quarantined, status

    err, quarantined, status = run(scenario())
    reason = f"instance {bad}: cannot load a stored PgCrate: PgCrate.count: expected int but got 'three' (type=str)"
    assert (bad, "PgCrate.count", reason) == (err.instance_id, err.field_path, str(err))
    assert reason == quarantined
    assert InstanceStatus.COMPLETED == status


def test_damaged_rows_raise_store_errors_naming_the_database(
    pg_store_dsn: str, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: an unknown status, a bad message and a command body that is no object: typed errors, not crashes."""
    crate, other = waiting(pg_store_dsn, clock, run, [PgCrate(), PgCrate()])
    execute(pg_store_dsn, "UPDATE instances SET status = 'bogus' WHERE id = %s", crate)
    message_type = f"{Paid.__module__}.{Paid.__qualname__}"
    execute(
        pg_store_dsn,
        'INSERT INTO signals (instance_id, type, payload) VALUES (%s, %s, \'{"cents": "12,5"}\')',
        other,
        message_type,
    )
    execute(
        pg_store_dsn,
        "INSERT INTO commands (instance_id, kind, body, created_at) VALUES (%s, 'wake', '[1]', 0)",
        other,
    )
    with attached(pg_store_dsn) as store:
        with pytest.raises(RecordLoadError) as loaded:
            store.load(crate)
        with pytest.raises(StoreError) as listed:
            store.info(crate)
        with pytest.raises(RecordLoadError) as signals:
            store.signals(other)
        with pytest.raises(StoreError) as commands:
            store.commands(other)
    assert (
        f"instance {crate}: cannot load a stored PgCrate: "
        "a stored row is damaged (ValueError: 'bogus' is not a valid InstanceStatus)"
    ) == str(loaded.value)
    assert store.database == loaded.value.path
    assert (
        f"cannot use {store.database}: reading it failed (info): "
        "a stored row is damaged (ValueError: 'bogus' is not a valid InstanceStatus)"
    ) == str(listed.value)
    assert "Paid.cents" == signals.value.field_path
    assert str(commands.value).endswith("(TypeError: the body of command 1 is not a JSON object)"), commands.value


# --------------------------------------------------------------------------- fencing and new rows


def test_a_commit_with_a_stale_fence_writes_nothing_and_raises_lease_lost(
    pg_store_dsn: str, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: once another worker claimed an instance, the old holder's commit (a batch) writes nothing at all."""
    taken, mine = waiting(pg_store_dsn, clock, run, [PgCrate(), PgCrate()])
    now = time.time()
    with attached(pg_store_dsn) as store, attached(pg_store_dsn) as other:
        fence = store.claim(taken, "w1", now, now + 30)
        stale = load(store, taken)
        stale.fence = fence or 0
        kept = load(store, mine)
        kept.fence = store.claim(mine, "w1", now, now + 30) or 0
        new_fence = other.claim(taken, "w2", now + 60, now + 90)  # w1's lease expired: w2 takes over
        stale.error = kept.error = "written by w1"
        before = execute(pg_store_dsn, "SELECT id, error, history_len, fence FROM instances ORDER BY id")
        with pytest.raises(LeaseLost) as err:
            store.commit([kept, stale])
        after_lost = execute(pg_store_dsn, "SELECT id, error, history_len, fence FROM instances ORDER BY id")
        kept.fence = 0  # unleased: no check
        store.commit([kept])
        written = store.info(mine)
    assert (fence is not None, new_fence) == (True, (fence or 0) + 1)
    assert (taken,) == err.value.instance_ids
    assert isinstance(err.value, StoreError)
    assert before == after_lost, "nothing of the batch was written"
    assert written is not None
    assert "written by w1" == written.error


def test_a_new_record_whose_id_exists_raises_instance_exists(
    pg_store_dsn: str, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: inserting an instance whose id is taken (starting twice with one id) writes nothing of the batch."""
    taken, other = waiting(pg_store_dsn, clock, run, [PgCrate(), PgCrate()])
    with attached(pg_store_dsn) as store:
        again = load(store, taken)
        again.stored = False
        again.fence = 1
        again.lease = ("w1", time.time() + 30)
        changed = load(store, other)
        changed.error = "changed"
        before = execute(pg_store_dsn, "SELECT id, error, fence, owner, history_len FROM instances ORDER BY id")
        with pytest.raises(InstanceExists) as err:
            store.commit([changed, again])
        after = execute(pg_store_dsn, "SELECT id, error, fence, owner, history_len FROM instances ORDER BY id")
    assert taken == err.value.instance_id
    assert before == after, "nothing of the batch was written"


def test_a_fault_before_commit_writes_nothing_and_one_after_commit_loses_only_the_acknowledgement(
    pg_store_dsn: str, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: the fault hook, as SqliteStore's: raising before COMMIT rolls everything back, after it nothing."""
    [crate] = waiting(pg_store_dsn, clock, run, [PgCrate()])
    armed: list[str] = []

    def fault(point: str) -> None:
        if point in armed:
            raise OSError(28, "No space left on device")

    with attached(pg_store_dsn, fault=fault) as store:
        rec = load(store, crate)
        rec.error = "first"
        armed.append("before_commit")
        with pytest.raises(OSError, match="No space left"):
            store.commit([rec])
        first = store.info(crate)
        armed[:] = ["after_commit"]
        with pytest.raises(OSError, match="No space left"):
            store.commit([rec])
        second = store.info(crate)
    assert (None, "first") == (first.error if first else "?", second.error if second else "?")


# --------------------------------------------------------------------------- leases


def test_claim_runnable_claims_what_needs_a_worker_in_order_and_once(
    pg_store_dsn: str, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: in flight and commanded first, then due timers; never a live lease of another owner, nor idle ones.

    claim() takes a terminal instance too (a parent undoes its completed child); claim_runnable never does.
    """
    ids = waiting(pg_store_dsn, clock, run, [PgCrate() for _ in range(5)])
    in_flight, due, commanded, idle, ended = ids
    now = time.time()
    execute(
        pg_store_dsn,
        "UPDATE instances SET status = 'running', owner = 'dead:1:x', lease_until = %s WHERE id = %s",
        now - 1,
        in_flight,
    )
    execute(pg_store_dsn, "UPDATE instances SET wake_at = %s WHERE id = %s", now - 5, due)
    execute(pg_store_dsn, "UPDATE instances SET status = 'completed', wake_at = %s WHERE id = %s", now - 9, ended)
    with attached(pg_store_dsn) as store:
        store.add_command(commanded, "wake", {})
        fences = dict(execute(pg_store_dsn, "SELECT id, fence FROM instances"))
        excluded = store.claim_runnable("w1", now, now + 30, 10, frozenset({due}))
        claimed = store.claim_runnable("w1", now, now + 30, 10, frozenset())
        by_another = store.claim_runnable("w2", now + 10, now + 40, 10, frozenset())
        own_again = store.claim(due, "w1", now + 10, now + 40)
        refused = (store.claim(due, "w2", now + 10, now + 40), store.claim(ended, "w2", now, now + 30))
        commanded_for = (store.commanded("w1"), store.commanded("w2"))
        expired = store.expire("w1")
        after_expiry = store.claim_runnable("w2", now + 10, now + 40, 10, frozenset())
        owners = store.owners()
    first = sorted([in_flight, commanded])
    assert [(i, fences[i] + 1) for i in first] == excluded
    assert [(due, fences[due] + 1)] == claimed
    assert [] == by_another, "every lease is w1's and live"
    assert fences[due] + 2 == own_again
    assert (None, fences[ended] + 1) == refused
    assert ([commanded], []) == commanded_for
    assert 3 == expired
    assert [(i, fences[i] + 2) for i in first] + [(due, fences[due] + 3)] == after_expiry
    assert ["w2"] == owners
    assert idle not in dict(after_expiry)


def test_renew_and_release_only_while_the_fence_and_owner_match(
    pg_store_dsn: str, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: renew reports the leases taken over; release gives back only those still held."""
    mine, lost = waiting(pg_store_dsn, clock, run, [PgCrate(), PgCrate()])
    now = time.time()
    with attached(pg_store_dsn) as store:
        held = {i: store.claim(i, "w1", now, now + 30) or 0 for i in (mine, lost)}
        store.expire("w1")
        taken = store.claim(lost, "w2", now, now + 30)
        renewed = store.renew("w1", held, now + 60)
        store.release("w1", held)
        store.release("w2", {lost: held[lost]})  # a stale fence: not released
        leases = execute(pg_store_dsn, "SELECT id, owner, lease_until FROM instances ORDER BY id")
    assert taken == held[lost] + 1
    assert [lost] == renewed
    assert sorted([(mine, None, None), (lost, "w2", now + 30)]) == leases


def test_claim_runnable_skips_rows_another_connection_holds_locked(
    pg_store_dsn: str, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: FOR UPDATE SKIP LOCKED: a row locked by another transaction is passed over at once, not waited for."""
    locked, free = waiting(pg_store_dsn, clock, run, [PgCrate(), PgCrate()])
    execute(pg_store_dsn, "UPDATE instances SET wake_at = 0")
    now = time.time()
    claimed: list[list[tuple[str, int]]] = []
    with attached(pg_store_dsn) as store, psycopg.connect(pg_store_dsn) as holder:
        holder.execute("SELECT id FROM instances WHERE id = %s FOR UPDATE", (locked,))  # transaction left open
        claimer = threading.Thread(
            target=lambda: claimed.append(store.claim_runnable("w1", now, now + 30, 10, frozenset()))
        )
        claimer.start()
        claimer.join(WAIT)
        finished_while_locked = not claimer.is_alive()
        holder.rollback()
        claimer.join()
        later = store.claim_runnable("w1", now, now + 30, 10, frozenset())
    assert finished_while_locked, "claim_runnable waited for the locked row"
    assert [[free]] == [[i for i, _ in c] for c in claimed]
    assert [locked] == [i for i, _ in later]


def test_two_workers_claiming_at_once_never_claim_one_instance_twice(
    pg_store_dsn: str, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: two stores (two pools) claiming runnable instances together split them: each exactly once."""
    ids = waiting(pg_store_dsn, clock, run, [PgCrate() for _ in range(30)])
    execute(pg_store_dsn, "UPDATE instances SET wake_at = 0")
    now = time.time()
    got: dict[str, list[str]] = {"w1": [], "w2": []}
    start = threading.Barrier(2)

    def claim_all(store: PostgresStore, owner: str) -> None:
        start.wait(WAIT)
        while found := store.claim_runnable(owner, now, now + 30, 3, frozenset()):
            got[owner].extend(i for i, _ in found)

    with attached(pg_store_dsn) as one, attached(pg_store_dsn) as two:
        workers = [threading.Thread(target=claim_all, args=(s, o)) for s, o in ((one, "w1"), (two, "w2"))]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(WAIT * 3)
        alive = [w.is_alive() for w in workers]
        owners = dict(execute(pg_store_dsn, "SELECT id, owner FROM instances"))
    assert [False, False] == alive
    assert sorted(ids) == sorted(got["w1"] + got["w2"]), "every instance claimed exactly once"
    assert {i: o for o, claimed in got.items() for i in claimed} == owners


# --------------------------------------------------------------------------- commands and notifications


def test_add_command_refuses_a_task_that_is_no_longer_open_and_writes_nothing(
    pg_store_dsn: str, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: the completion, its signal and its command are one transaction; a second completion writes none."""
    [edit] = waiting(pg_store_dsn, clock, run, [PgEdit()])
    with attached(pg_store_dsn) as store:
        [task] = store.open_tasks(None, frozenset(), edit)
        done = attrs.evolve(
            task, status=TaskStatus.COMPLETED, completed_by="alice", completed_at=1.5, form=Verdict(approved=True)
        )
        seq = store.add_command(edit, "complete_task", {"task": task.id, "user": "alice"}, complete=done)
        signal = (f"{Paid.__module__}.{Paid.__qualname__}", Paid(cents=1))
        with pytest.raises(TaskAlreadyCompleted) as err:
            store.add_command(edit, "complete_task", {"task": task.id, "user": "bob"}, complete=done, signal=signal)
        commands = [(c.seq, c.kind, c.body) for c in store.commands(edit)]
        stored = store.task(task.id)
        left = store.open_tasks("alice", frozenset({"editors"}), None)
        signals = execute(pg_store_dsn, "SELECT seq FROM signals")
    assert [(seq, "complete_task", {"task": task.id, "user": "alice"})] == commands
    assert f"task {task.id}: is no longer open; a task completes once" == str(err.value)
    assert stored is not None
    assert (TaskStatus.COMPLETED, "alice", 1.5, Verdict(approved=True)) == (
        stored.status,
        stored.completed_by,
        stored.completed_at,
        stored.form,
    )
    assert ([], []) == (left, signals)


def test_listen_hears_commands_and_outbox_commits_and_survives_a_failing_callback(
    pg_store_dsn: str, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: NOTIFY orch_commands reaches listen()'s callback with the instance id; stopping ends the thread."""
    parent, child = waiting(pg_store_dsn, clock, run, [PgCrate(), PgCrate()])
    heard: queue.Queue[str] = queue.Queue()
    raised: list[str] = []

    def callback(instance_id: str) -> None:
        heard.put(instance_id)
        if not raised:
            raised.append(instance_id)
            msg = "a callback that fails once"
            raise RuntimeError(msg)

    with attached(pg_store_dsn) as listening, attached(pg_store_dsn) as caller:
        stop = listening.listen(callback)
        caller.add_command(parent, "wake", {})
        first = heard.get(timeout=WAIT)
        rec = load(caller, child)
        rec.send(parent, "wake", {"from": child})
        caller.commit([rec])
        second = heard.get(timeout=WAIT)
        threads = {t.name for t in threading.enumerate()}
        stop()
        stop()  # again: nothing more
        threads_after = {t.name for t in threading.enumerate()}
        commands = [(c.kind, c.body) for c in caller.commands(parent)]
    assert (parent, parent) == (first, second)
    assert [("wake", {}), ("wake", {"from": child})] == commands
    assert "orch-listener" in threads
    assert "orch-listener" not in threads_after


def test_a_listener_whose_connection_is_killed_reconnects_and_hears_again(
    pg_store_dsn: str, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: when the server ends the listening connection, the thread reconnects (logging it) and hears on."""
    [crate] = waiting(pg_store_dsn, clock, run, [PgCrate()])
    heard: queue.Queue[str] = queue.Queue()
    with attached(pg_store_dsn) as listening, attached(pg_store_dsn) as caller:
        stop = listening.listen(heard.put)
        [(old,)] = execute(pg_store_dsn, LISTENERS)
        killed = execute(pg_store_dsn, "SELECT pg_terminate_backend(%s)", old)
        # Notifications sent before the new connection listens are lost: send until one is heard.
        deadline = time.monotonic() + WAIT
        got = None
        while got is None and time.monotonic() < deadline:
            caller.add_command(crate, "wake", {})
            with contextlib.suppress(queue.Empty):
                got = heard.get(timeout=0.2)
        listeners = [pid for (pid,) in execute(pg_store_dsn, LISTENERS)]
        stop()
    assert [(True,)] == killed
    assert crate == got
    assert 1 == len(listeners)
    assert old not in listeners, "a new connection listens"


def test_a_client_process_hands_a_signal_to_the_worker_that_holds_the_instance(
    pg_store_dsn: str, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: an engine on another store (another process) signals; the worker, told by NOTIFY, delivers it."""

    async def scenario() -> tuple[InstanceStatus, int]:
        async with pg_engine(pg_store_dsn, clock) as worker:
            handle = await worker.start(PgPayment())
            await handle.wait_idle()
            async with pg_engine(pg_store_dsn, clock) as client:
                await client.signal(handle.instance_id, Paid(cents=42))
            status = await worker.wait_instance(handle.instance_id)
            wf: PgPayment = worker.workflow(handle.instance_id)
            return status, wf.cents

    assert (InstanceStatus.COMPLETED, 42) == run(scenario())


# --------------------------------------------------------------------------- the schema


def test_upgrade_is_idempotent_and_records_the_version(pg_store_dsn: str) -> None:
    """Issue 9: the first upgrade creates every table from version 0; the next finds it current and does nothing."""
    found = [upgrade(pg_store_dsn, schema="orch"), upgrade(pg_store_dsn, schema="orch")]
    with psycopg.connect(pg_store_dsn) as conn:
        found.append(upgrade(conn, schema="orch"))
    tables = execute(pg_store_dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'orch' ORDER BY tablename")
    meta = execute(pg_store_dsn, "SELECT key, value FROM orch.meta ORDER BY key")
    assert [0, SCHEMA_VERSION, SCHEMA_VERSION] == found
    assert ["commands", "history", "instances", "meta", "schedules", "signals", "task_groups", "tasks"] == [
        t for (t,) in tables
    ]
    assert [("application", "statemachine-orch"), ("schema_version", str(SCHEMA_VERSION))] == meta


def test_a_schema_of_an_older_version_is_upgraded_and_then_used(
    pg_store_dsn: str, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: a schema at version 1 (no fence-check function) gets the later migrations, and then commits work."""
    with psycopg.connect(pg_store_dsn) as conn:
        conn.execute("CREATE SCHEMA old")
        conn.execute("SET search_path TO old")
        for statement in MIGRATIONS[1]:
            conn.execute(statement)
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1'), ('application', 'statemachine-orch')")
    found = upgrade(pg_store_dsn, schema="old")
    version = execute(pg_store_dsn, "SELECT value FROM old.meta WHERE key = 'schema_version'")

    async def scenario() -> tuple[InstanceStatus, int]:
        with PostgresStore(pg_store_dsn, schema="old") as store:
            async with Engine(store, clock=clock, workflows=PINNED) as engine:
                handle = await engine.start(PgPayment())
                await engine.wait_instance(handle.instance_id, terminal=False)
                await engine.signal(handle.instance_id, Paid(1250))
                status = await engine.wait_instance(handle.instance_id)
                return status, engine.workflow(handle.instance_id).cents

    assert (1, [(str(SCHEMA_VERSION),)]) == (found, version)
    assert (InstanceStatus.COMPLETED, 1250) == run(scenario())


def test_stores_starting_at_once_upgrade_the_schema_once(pg_store_dsn: str) -> None:
    """Issue 9: eight processes' upgrades at once: the advisory lock lets one create the tables, the rest find them."""
    start = threading.Barrier(8)
    found: list[int | BaseException] = []

    def starting() -> None:
        start.wait(WAIT)
        try:
            found.append(upgrade(pg_store_dsn, schema="fleet"))
        except Exception as exc:
            found.append(exc)

    threads = [threading.Thread(target=starting) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 3)
    assert sorted([0] + [SCHEMA_VERSION] * 7) == sorted(cast("list[int]", found))


def test_a_newer_schema_or_another_applications_tables_are_refused(pg_store_dsn: str) -> None:
    """Issue 9: a schema written by a newer version, or tables of another application, make the store refuse to start."""
    upgrade(pg_store_dsn)
    execute(pg_store_dsn, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    execute(pg_store_dsn, "CREATE SCHEMA theirs")
    execute(pg_store_dsn, "CREATE TABLE theirs.instances (n int)")
    with pytest.raises(StoreError) as newer:
        PostgresStore(pg_store_dsn)
    with pytest.raises(StoreError) as foreign:
        PostgresStore(pg_store_dsn, schema="theirs")
    database = newer.value.path
    assert (
        f"cannot use {database}: its schema version is 99, newer than this library's {SCHEMA_VERSION}; "
        "upgrade statemachine-orch to use it"
    ) == str(newer.value)
    assert "but no table meta: they belong to another application" in str(foreign.value)


def test_two_schemas_of_one_database_are_two_stores(pg_store_dsn: str, clock: VirtualClock, run: Runner) -> None:
    """Issue 9: PostgresStore(schema=...) keeps its tables in that schema; another schema's store sees none of them."""

    async def scenario() -> tuple[InstanceStatus, list[str]]:
        with PostgresStore(pg_store_dsn, schema="tenant_a") as a, PostgresStore(pg_store_dsn, schema="tenant_b") as b:
            async with Engine(a, clock=clock, workflows=PINNED) as engine:
                handle = await engine.start(PgNap())
                status = await engine.wait_instance(handle.instance_id)
            b.attach(WorkflowRegistry(PINNED))
            return status, [i.id for i in b.infos(None, None)]

    assert (InstanceStatus.COMPLETED, []) == run(scenario())
    assert [(1,)] == execute(pg_store_dsn, "SELECT count(*) FROM tenant_a.instances")


def test_errors_name_the_database_but_never_its_password() -> None:
    """Issue 9: a server that cannot be reached, or a connection string that does not parse: no password shown."""
    with pytest.raises(StoreError) as unreachable:
        PostgresStore("postgresql://orch:s3cret-pw@127.0.0.1:1/nowhere?connect_timeout=2")
    with pytest.raises(StoreError) as unparsable:
        PostgresStore("host=127.0.0.1 password=s3cret-pw port=1 dbname")
    assert "postgresql://orch@127.0.0.1:1/nowhere" == unreachable.value.path
    assert str(unreachable.value).startswith("cannot use postgresql://orch@127.0.0.1:1/nowhere: cannot connect: ")
    assert "s3cret" not in str(unreachable.value)
    assert "s3cret" not in str(unparsable.value)
    assert "its connection string cannot be parsed" in str(unparsable.value)
