"""
Issue 9: one SQLite store shared by several workers, under leases, with durable commands.

The contract of ``docs/design/leases.md`` on ``SqliteStore``, checked on the
store itself with records a real engine made (``make_store``: tickets waiting on
their task) or built as ``Engine.start`` builds them. A commit whose fence is
stale writes nothing and raises ``LeaseLost``; a new record whose id exists
writes nothing and raises ``InstanceExists``; ``claim`` takes a free, expired or
own lease and nothing else; ``claim_runnable`` claims in-flight, due and
commanded instances in due order and never hands one instance to two live
owners, also when several processes claim from one file at once; ``renew``
names the leases that were taken over; ``release`` and ``expire`` give leases
back; ``add_command`` refuses a task that is no longer open and writes nothing
then; the commands a commit consumes and sends are written by that commit
only. Two stores of one process, or several processes, share the file.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from statemachine_orch import (
    EventKind,
    HistoryEvent,
    InstanceStatus,
    SqliteStore,
    TaskAlreadyCompleted,
    TaskStatus,
    VirtualClock,
    WorkflowRegistry,
)
from statemachine_orch._errors import InstanceExists, LeaseLost
from statemachine_orch._instance import InstanceRecord
from statemachine_orch._machine import STATE_ATTRIBUTE
from statemachine_orch._store_sqlite import FaultPoint
from tests.integration.test_bad_stores import PINNED, Ticket, at_once, make_store
from tests.store import flows
from tests.store.flows import LEASE, NOW, W1, W2, drive, ended, load, timer_at
from tests.store.flows import in_flight as running

if TYPE_CHECKING:
    from tests.conftest import Runner

DEAD = "host:999:dead"

REGISTRY = WorkflowRegistry(PINNED)

SNAPSHOT = {
    "instances": "SELECT * FROM instances ORDER BY id",
    "history": "SELECT * FROM history ORDER BY instance_id, seq",
    "tasks": "SELECT * FROM tasks ORDER BY id",
    "task_groups": "SELECT * FROM task_groups ORDER BY grp, task_id",
    "signals": "SELECT * FROM signals ORDER BY seq",
    "commands": "SELECT * FROM commands ORDER BY seq",
}
"""Every table the store writes, read whole."""

S = InstanceStatus


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def opened(path: Path, fault: Callable[[FaultPoint], None] | None = None) -> Generator[SqliteStore]:
    """A store on *path* that resolves this module's workflows."""
    with SqliteStore(path, fault=fault) as store:
        store.attach(REGISTRY)
        yield store


def rows(path: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """What a plain SQLite connection reads from the file."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql, args).fetchall()


def lease_of(path: Path, instance_id: str) -> tuple[str | None, float | None, int]:
    """The stored ``(owner, lease_until, fence)`` of an instance."""
    [row] = rows(path, "SELECT owner, lease_until, fence FROM instances WHERE id = ?", instance_id)
    return row[0], row[1], row[2]


def fences(path: Path) -> dict[str, int]:
    """Every instance's stored fence."""
    found: dict[str, int] = dict(rows(path, "SELECT id, fence FROM instances"))
    return found


def snapshot(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table the store writes."""
    return {table: rows(path, sql) for table, sql in SNAPSHOT.items()}


def new_record(instance_id: str, *, lease: tuple[str, float] | None = None, fence: int = 0) -> InstanceRecord:
    """A new Ticket record as ``Engine.start`` makes it: at its first step, running, its first history entry."""
    return flows.new_record(instance_id, lease=lease, fence=fence, workflow=Ticket)


class Breaker:
    """A ``SqliteStore(fault=...)`` that fails the next commit inside its transaction once armed."""

    def __init__(self) -> None:
        self.armed = False

    def __call__(self, point: FaultPoint) -> None:
        if point == "before_commit" and self.armed:
            self.armed = False
            raise OSError(5, "Input/output error (injected)")


# --------------------------------------------------------------------------- fencing


def test_a_commit_with_a_stale_fence_writes_nothing_and_raises_lease_lost(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: once another worker (another store) claimed an instance, the old holder's batch writes nothing at all."""
    mine, taken = make_store(db_path, clock, run, tickets=2)
    with opened(db_path) as first, opened(db_path) as second:
        held = {i: first.claim(i, W1, NOW, NOW + LEASE) or 0 for i in (mine, taken)}
        records = [load(first, mine), load(first, taken)]
        for rec in records:
            rec.fence = held[rec.id]
            rec.error = "written by w1"
            rec.history.append(HistoryEvent(NOW, EventKind.STATUS_CHANGED, None, 0, "running"))
        # w1 stalled past its lease: w2 takes the instance over.
        new_fence = second.claim(taken, W2, NOW + LEASE + 1, NOW + 3 * LEASE)
        before = snapshot(db_path)
        with pytest.raises(LeaseLost) as err:
            first.commit(records)
        after_lost = snapshot(db_path)
        # The new owner commits under its fence; the instance w1 still holds commits alone.
        winner = load(second, taken)
        winner.fence = new_fence or 0
        winner.error = "written by w2"
        second.commit([winner])
        first.commit(records[:1])
        errors = [(i.id, i.error) for i in second.infos(None, None)]
    assert held[taken] + 1 == new_fence
    assert ((taken,), str(db_path)) == (err.value.instance_ids, err.value.path)
    assert f"lease lost on {taken}: another worker claimed it; nothing was written" == str(err.value)
    assert before == after_lost
    assert sorted([(mine, "written by w1"), (taken, "written by w2")]) == sorted(errors)


def test_a_new_record_whose_id_exists_writes_nothing_and_raises_instance_exists(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: a batch starting an id that is stored, or the same id twice, writes nothing: InstanceExists names it."""
    [existing] = make_store(db_path, clock, run, tickets=1)
    with opened(db_path) as store:
        before = snapshot(db_path)
        with pytest.raises(InstanceExists) as stored:
            store.commit([new_record("fresh-1"), new_record(existing)])
        with pytest.raises(InstanceExists) as twice:
            store.commit([new_record("fresh-2", lease=(W1, NOW + LEASE), fence=1), new_record("fresh-2")])
        after = snapshot(db_path)
    assert (existing, "fresh-2") == (stored.value.instance_id, twice.value.instance_id)
    assert before == after


def test_a_new_record_is_inserted_with_its_lease_which_later_commits_leave_alone(db_path: Path) -> None:
    """Issue 9: a new instance is born leased to its starter; its later commits never touch owner, lease or fence."""
    with opened(db_path) as store:
        rec = new_record("born-1", lease=(W1, NOW + LEASE), fence=1)
        store.commit([rec])
        born = lease_of(db_path, "born-1")
        refused = store.claim("born-1", W2, NOW, NOW + LEASE)
        rec.error = "a second commit: an update under fence 1"
        store.commit([rec])
        kept = lease_of(db_path, "born-1")
        again = load(store, "born-1")
    assert (True, (W1, NOW + LEASE, 1)) == (store.leases, born)
    assert refused is None
    assert born == kept
    assert (1, True, "a second commit: an update under fence 1") == (again.fence, again.stored, again.error)


# --------------------------------------------------------------------------- claiming


def test_claim_takes_a_free_expired_or_own_lease_and_nothing_else(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: claim takes a free, expired or own lease (the fence grows by one), an ended instance's too; not another's."""
    ticket, done = make_store(db_path, clock, run, tickets=2)
    with opened(db_path) as store:
        drive(store, done, ended, owner=W1, now=NOW - 100)
        start, ended_at = fences(db_path)[ticket], fences(db_path)[done]
        later = NOW + 3 + 2 * LEASE
        outcomes = [
            store.claim(ticket, W1, NOW, NOW + LEASE),  # free
            store.claim(ticket, W2, NOW + 1, NOW + 1 + LEASE),  # W1's live lease
            store.claim(ticket, W1, NOW + 2, NOW + 2 + LEASE),  # its own
            store.claim(ticket, W2, NOW + 2 + LEASE, NOW + 2 + LEASE),  # live at its last instant
            store.claim(ticket, W2, NOW + 3 + LEASE, later),  # expired
            store.claim(done, W1, NOW, NOW + LEASE),  # ended: a parent may have to undo it
            store.claim("no-such-instance", W1, NOW, NOW + LEASE),
            store.claim("\ud800", W1, NOW, NOW + LEASE),  # an id that cannot be stored
        ]
        lease = lease_of(db_path, ticket)
    assert [start + 1, None, start + 2, None, start + 3, ended_at + 1, None, None] == outcomes
    assert (W2, later, start + 3) == lease


def test_claim_runnable_claims_in_flight_due_and_commanded_instances_in_due_order(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: in-flight, due and commanded instances are claimed (no due time first, then by due time), each once."""
    ids = make_store(db_path, clock, run, tickets=9)
    parked, in_flight, due_late, due_early, commanded, not_due, done, held, orphan = ids
    with opened(db_path) as store:
        before = NOW - 100  # turns of an earlier worker, whose leases are long over
        drive(store, in_flight, running, owner=DEAD, now=before)
        drive(store, due_late, timer_at(NOW - 10), owner=DEAD, now=before)
        drive(store, due_early, timer_at(NOW - 20), owner=DEAD, now=before)
        store.add_command(commanded, "wake", {})
        drive(store, not_due, timer_at(NOW + 100), owner=DEAD, now=before)
        drive(store, done, ended, owner=DEAD, now=before)
        store.add_command(done, "wake", {})  # a command for an ended instance: nobody needs to run it
        drive(store, held, running, owner=DEAD, now=before)
        store.claim(held, W2, NOW, NOW + LEASE)  # in flight, but W2 drives it
        drive(store, orphan, running, owner=DEAD, now=before)
        store.claim(orphan, DEAD, before, NOW - 1)  # in flight under a lease that ran out
        stored = fences(db_path)
        nothing = store.claim_runnable(W1, NOW, NOW + LEASE, 0, frozenset())
        first = store.claim_runnable(W1, NOW, NOW + LEASE, 2, frozenset({in_flight}))
        rest = store.claim_runnable(W1, NOW, NOW + LEASE, 10, frozenset())
        by_another = store.claim_runnable(W2, NOW + 1, NOW + 1 + LEASE, 10, frozenset())
        polls = (store.commanded(W1), store.commanded(W2))
        owners = dict(rows(db_path, "SELECT id, owner FROM instances"))
    order = [*sorted([in_flight, commanded, orphan]), due_early, due_late]
    expected = [(i, stored[i] + 1) for i in order]
    expected_first = [claim for claim in expected if claim[0] != in_flight][:2]
    assert ([], expected_first) == (nothing, first)
    assert [claim for claim in expected if claim not in expected_first] == rest
    assert [] == by_another
    assert ([commanded], []) == polls
    assert dict.fromkeys(order, W1) == {i: owners[i] for i in order}
    assert (None, W2) == (owners[parked], owners[held])


def test_a_forked_instance_on_a_timer_is_in_flight_once_its_lease_ran_out(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: in a fork one branch may wait on a timer while another runs: a lease run out, not given back, frees it."""
    expired, live, released = make_store(db_path, clock, run, tickets=3)

    def forked(rec: InstanceRecord) -> None:
        rec.status = S.RUNNING
        rec.wake_at = NOW + 100  # one branch's timer, not due
        setattr(rec.wf, STATE_ATTRIBUTE, ["f@fork.a@branch.handle", "f@fork.b@branch.@start"])

    with opened(db_path) as store:
        held: dict[str, int] = {}
        for i in (expired, live, released):
            held[i] = store.claim(i, W2, NOW - 100, NOW - 1) or 0  # W2 drove them; its leases ran out
            rec = load(store, i)
            rec.fence = held[i]
            forked(rec)
            store.commit([rec])
        store.claim(live, W2, NOW, NOW + LEASE)  # W2 is back on this one
        store.release(W2, {released: held[released]})  # parked: given back
        claimed = store.claim_runnable(W1, NOW, NOW + LEASE, 10, frozenset())
    assert [(expired, held[expired] + 1)] == claimed


CLAIMER = """
import json, sys
from statemachine_orch import SqliteStore
path, owner, mode, now, *ids = sys.argv[1:]
now = float(now)
store = SqliteStore(path)
print("ready", flush=True)
sys.stdin.readline()
claimed = []
if mode == "claim_runnable":
    while batch := store.claim_runnable(owner, now, now + 3600, 3, frozenset()):
        claimed.extend(batch)
else:
    for i in ids:
        fence = store.claim(i, owner, now, now + 3600)
        if fence is not None:
            claimed.append([i, fence])
store.close()
print(json.dumps(claimed))
"""
"""A worker process: once released, claims (all it can get, 3 at a time, or each id in its order); prints its claims."""


@pytest.mark.parametrize("mode", ["claim_runnable", "claim"])
def test_processes_claiming_from_one_file_at_once_never_share_an_instance(db_path: Path, mode: str) -> None:
    """Issue 9: six processes claim 60 in-flight instances at once: each claimable one goes to exactly one of them."""
    ids = [f"race-{n:02d}" for n in range(60)]
    with opened(db_path) as store:
        store.commit([new_record(i) for i in ids])
        for i in ids[:15]:
            store.claim(i, DEAD, NOW - 100, NOW - 1)  # expired: claimable
        for i in ids[15:25]:
            store.claim(i, W1, NOW, NOW + 3600)  # live: never claimed
    claimable = sorted([*ids[:15], *ids[25:]])
    before = fences(db_path)
    owners = [f"host:{n}:racer" for n in range(6)]
    # Each process walks the ids from another starting point, so that they collide.
    argvs = [[str(db_path), owner, mode, str(NOW), *ids[n * 10 :], *ids[: n * 10]] for n, owner in enumerate(owners)]
    results = at_once(CLAIMER, argvs)
    assert [0] * 6 == [r.returncode for r in results], [r.stderr for r in results]
    claims: list[list[tuple[str, int]]] = [[(i, f) for i, f in json.loads(r.stdout)] for r in results]
    got = sorted(i for claimed in claims for i, _ in claimed)
    stored = {i: (owner, fence) for i, owner, fence in rows(db_path, "SELECT id, owner, fence FROM instances")}
    assert claimable == got  # each exactly once
    reported = {i: (owners[n], fence) for n, claimed in enumerate(claims) for i, fence in claimed}
    assert {i: (reported[i][0], before[i] + 1) for i in claimable} == reported
    assert {i: stored[i] for i in claimable} == reported
    assert {i: (W1, before[i]) for i in ids[15:25]} == {i: stored[i] for i in ids[15:25]}


WORKER = """
import json, sys
from statemachine_orch import EventKind, HistoryEvent, SqliteStore, WorkflowRegistry
from tests.integration.test_bad_stores import PINNED
path, owner, now = sys.argv[1], sys.argv[2], float(sys.argv[3])
store = SqliteStore(path)
store.attach(WorkflowRegistry(PINNED))
print("ready", flush=True)
sys.stdin.readline()
turns = {}
for _ in range(15):
    for i, fence in store.claim_runnable(owner, now, now + 3600, 2, frozenset()):
        rec = store.load(i)
        rec.fence = fence
        rec.history.append(HistoryEvent(now, EventKind.STATUS_CHANGED, None, 0, owner))
        store.commit([rec])
        store.release(owner, {i: fence})
        turns[i] = turns.get(i, 0) + 1
store.close()
print(json.dumps(turns))
"""
"""A worker process: once released, 15 rounds of claiming up to two instances, one commit each, releasing them."""


def test_workers_in_several_processes_drive_one_file_and_every_commit_lands_once(db_path: Path) -> None:
    """Issue 9: six processes claim, commit and release at once: no one fails on the lock, no turn is lost or doubled."""
    ids = [f"busy-{n}" for n in range(8)]
    with opened(db_path) as store:
        store.commit([new_record(i) for i in ids])
    owners = [f"host:{n}:worker" for n in range(6)]
    results = at_once(WORKER, [[str(db_path), owner, str(NOW)] for owner in owners])
    assert [0] * 6 == [r.returncode for r in results], [r.stderr for r in results]
    turns: list[dict[str, int]] = [json.loads(r.stdout) for r in results]
    with opened(db_path) as store:
        written = {i: [e.detail for e in store.history(i)[1:]] for i in ids}
        lengths = {i: len(store.history(i)) for i in ids}
    assert {i: [(o, t.get(i, 0)) for o, t in zip(owners, turns, strict=True)] for i in ids} == {
        i: [(o, written[i].count(o)) for o in owners] for i in ids
    }
    assert {i: 1 + sum(t.get(i, 0) for t in turns) for i in ids} == lengths
    assert sum(sum(t.values()) for t in turns) > 0


# --------------------------------------------------------------------------- renew, release, expire


def test_renew_extends_the_leases_still_held_and_names_the_lost(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: renew extends each lease whose owner and fence still match; it names the others and leaves them."""
    kept, reclaimed, taken = make_store(db_path, clock, run, tickets=3)
    with opened(db_path) as store:
        held = {i: store.claim(i, W1, NOW, NOW + LEASE) or 0 for i in (kept, reclaimed, taken)}
        store.claim(reclaimed, W1, NOW + 1, NOW + 1 + LEASE)  # claimed again: the old fence is stale
        store.claim(taken, W2, NOW + LEASE + 1, NOW + 3 * LEASE)  # W1 was too slow: W2 took it over
        lost = store.renew(W1, held, NOW + 2 * LEASE)
        nothing = store.renew(W1, {}, NOW + 2 * LEASE)
        leases = [lease_of(db_path, i) for i in (kept, reclaimed, taken)]
    assert ([reclaimed, taken], []) == (lost, nothing)
    expected = [
        (W1, NOW + 2 * LEASE, held[kept]),
        (W1, NOW + 1 + LEASE, held[reclaimed] + 1),
        (W2, NOW + 3 * LEASE, held[taken] + 1),
    ]
    assert expected == leases


def test_release_gives_back_only_the_leases_whose_owner_and_fence_match(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: release frees an owner's leases at their fence; one taken over, or another owner's, stays."""
    mine, taken = make_store(db_path, clock, run, tickets=2)
    with opened(db_path) as store:
        held = {i: store.claim(i, W1, NOW, NOW + LEASE) or 0 for i in (mine, taken)}
        store.claim(taken, W2, NOW + LEASE + 1, NOW + 3 * LEASE)
        store.release(W2, {mine: held[mine]})  # not W2's
        store.release(W1, held)
        store.release(W1, {})
        leases = [lease_of(db_path, i) for i in (mine, taken)]
        again = store.claim(mine, W2, NOW, NOW + LEASE)
    assert [(None, None, held[mine]), (W2, NOW + 3 * LEASE, held[taken] + 1)] == leases
    assert held[mine] + 1 == again


def test_expire_ends_every_lease_of_a_dead_owner_at_once(db_path: Path, clock: VirtualClock, run: Runner) -> None:
    """Issue 9: expire ends each lease of an owner found dead, so its instances are claimed without waiting."""
    first, second, other = make_store(db_path, clock, run, tickets=3)
    with opened(db_path) as store:
        store.claim(first, DEAD, NOW, NOW + LEASE)
        store.claim(second, DEAD, NOW, NOW + LEASE)
        fence = store.claim(other, W1, NOW, NOW + LEASE)
        owners = store.owners()
        refused = store.claim(first, W1, NOW + 1, NOW + 1 + LEASE)
        count = store.expire(DEAD)
        taken = store.claim(first, W1, NOW + 1, NOW + 1 + LEASE)
        nobody = store.expire("host:1:nobody")
        owners_after = store.owners()
        untouched = lease_of(db_path, other)
    assert [W1, DEAD] == owners
    assert (None, 2, 0) == (refused, count, nobody)
    assert taken is not None
    assert [W1, DEAD] == owners_after  # DEAD's expired lease on `second` is still its own until claimed
    assert (W1, NOW + LEASE, fence) == untouched


# --------------------------------------------------------------------------- commands


def test_add_command_with_a_task_no_longer_open_writes_nothing(db_path: Path, clock: VirtualClock, run: Runner) -> None:
    """Issue 9: a completion's command completes the task row with it; a second completion raises and writes nothing."""
    [ticket] = make_store(db_path, clock, run, tickets=1)
    with opened(db_path) as store:
        [task] = store.open_tasks(None, frozenset(), ticket)
        by_ann = attrs.evolve(task, status=TaskStatus.COMPLETED, completed_by="ann", completed_at=NOW)
        seq = store.add_command(ticket, "complete_task", {"task": task.id, "user": "ann"}, complete=by_ann)
        before = snapshot(db_path)
        by_bob = attrs.evolve(task, status=TaskStatus.COMPLETED, completed_by="bob", completed_at=NOW + 1)
        with pytest.raises(TaskAlreadyCompleted) as err:
            store.add_command(
                ticket, "complete_task", {"task": task.id, "user": "bob"}, complete=by_bob, signal=("x.Note", "hi")
            )
        after = snapshot(db_path)
        done = store.task(task.id)
        commands = [(c.seq, c.instance_id, c.kind, c.body) for c in store.commands(ticket)]
        still_open = store.open_tasks("ann", frozenset({"support"}), None)
    assert task.id == err.value.task_id
    assert before == after
    assert done is not None
    assert (TaskStatus.COMPLETED, "ann", NOW) == (done.status, done.completed_by, done.completed_at)
    assert [(seq, ticket, "complete_task", {"task": task.id, "user": "ann"})] == commands
    assert [] == still_open


def test_add_command_keeps_a_message_with_its_command_and_commands_come_oldest_first(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: a signal's row and its wake command are written together; commands read back oldest first, decoded."""
    [ticket] = make_store(db_path, clock, run, tickets=1)
    with opened(db_path) as store:
        start = time.time()
        wake = store.add_command(ticket, "wake", {}, signal=("x.Parcel", {"n": 1}))
        cancel = store.add_command(ticket, "cancel", {"reason": "withdrawn", "compensate": False})
        end = time.time()
        signals = rows(db_path, "SELECT instance_id, type, payload FROM signals")
        commands = store.commands(ticket)
    assert [(ticket, "x.Parcel", '{"n": 1}')] == signals
    expected: list[tuple[int, str, str, dict[str, object]]] = [
        (wake, ticket, "wake", {}),
        (cancel, ticket, "cancel", {"reason": "withdrawn", "compensate": False}),
    ]
    assert expected == [(c.seq, c.instance_id, c.kind, c.body) for c in commands]
    assert wake < cancel
    assert all(start <= c.created_at <= end for c in commands)


def test_the_commands_a_commit_consumes_and_sends_are_written_by_that_commit_only(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 9: a commit deletes the commands it applied and inserts those it sends; failing before COMMIT, neither."""
    parent, child = make_store(db_path, clock, run, tickets=2)
    breaker = Breaker()
    with opened(db_path, fault=breaker) as store:
        applied = store.add_command(child, "cancel", {"reason": "withdrawn", "compensate": True})
        later = store.add_command(child, "wake", {})
        fence = store.claim(child, W1, NOW, NOW + LEASE)
        rec = load(store, child)
        rec.fence = fence or 0
        rec.add_consumed_command(applied)
        rec.status = S.CANCELLED
        rec.send(parent, "wake", {"child": child})
        before = snapshot(db_path)
        breaker.armed = True
        with pytest.raises(OSError, match="injected"):
            store.commit([rec])
        after_fault = snapshot(db_path)
        store.commit([rec])  # the driver's retry writes it all, once
        left = [c.seq for c in store.commands(child)]
        sent = [(c.kind, c.body) for c in store.commands(parent)]
        info = store.info(child)
    assert before == after_fault
    assert [later] == left
    assert [("wake", {"child": child})] == sent
    assert info is not None
    assert S.CANCELLED == info.status
