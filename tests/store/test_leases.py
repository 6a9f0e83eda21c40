"""
Issue 9: the lease, fencing and command contract of ``docs/design/leases.md``, run on every store.

``claim`` takes a free, expired or own lease (terminal instances too) and grows
the fence by one each time; ``claim_runnable`` claims the instances that need a
worker (in flight, timer due, commands waiting) in due order, up to its limit,
never those excluded, leased by another live owner or terminal; ``commanded``,
``renew``, ``release``, ``expire`` and ``owners`` keep the lease table; a commit
with a stale fence raises ``LeaseLost`` and a new record whose id exists
``InstanceExists``, both writing nothing; a commit deletes the commands it
consumed and inserts its outbox. The MemoryStore has ``leases = False`` but keeps
this contract too.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest

from statemachine_orch import Engine, InstanceStatus, MemoryStore, StoreError
from statemachine_orch._errors import InstanceExists, LeaseLost
from tests.store.flows import (
    LEASE,
    NOW,
    W1,
    W2,
    ContractPay,
    compensating,
    drive,
    ended,
    in_flight,
    load,
    new_record,
    no_change,
    noted,
    parked,
    snapshot,
    timer_at,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from statemachine_orch import Store
    from statemachine_orch._heartbeat import LeaseRenewer
    from statemachine_orch._instance import InstanceRecord
    from tests.conftest import Runner
    from tests.store.conftest import Stores

LATER = NOW + 2 * LEASE
"""A time at which every lease taken at NOW has expired."""


# --------------------------------------------------------------------------- claim


def test_claim_takes_a_free_own_or_expired_lease_and_grows_the_fence_by_one(store: Store, run: Runner) -> None:
    """Issue 9: free, own and expired leases are claimed, each claim one fence more; another's live lease is not."""
    [pay] = parked(store, run, [ContractPay()])
    fence = drive(store, pay, no_change)
    free = store.claim(pay, W1, NOW, NOW + LEASE)
    own = store.claim(pay, W1, NOW + 1, NOW + LEASE)
    taken = store.claim(pay, W2, NOW + 2, NOW + LEASE)
    expired = store.claim(pay, W2, NOW + LEASE + 1, LATER)
    assert (fence + 1, fence + 2, None, fence + 3) == (free, own, taken, expired)
    assert store.claim("nobody", W1, NOW, NOW + LEASE) is None


def test_a_terminal_instance_can_be_claimed(store: Store, run: Runner) -> None:
    """Issue 9: a completed instance's lease is claimed too (a parent undoes its completed child)."""
    [pay] = parked(store, run, [ContractPay()])
    fence = drive(store, pay, ended)
    assert fence + 1 == store.claim(pay, W2, NOW, NOW + LEASE)


# --------------------------------------------------------------------------- claim_runnable


def test_claim_runnable_claims_what_needs_a_worker_in_due_order(store: Store, run: Runner) -> None:
    """Issue 9: in flight and commanded first, then due timers earliest first; never excluded, leased, idle or ended."""
    ids = parked(store, run, [ContractPay() for _ in range(10)])
    flying, undoing, commanded, soon, sooner, excluded, held, idle, done, late = ids
    fences = {i: drive(store, i, no_change) for i in ids}
    fences[flying] = drive(store, flying, in_flight)
    fences[undoing] = drive(store, undoing, compensating)
    for instance_id, at in ((soon, NOW - 5), (sooner, NOW - 7), (excluded, NOW - 9), (held, NOW - 9)):
        fences[instance_id] = drive(store, instance_id, timer_at(at))
    fences[done] = drive(store, done, ended)
    fences[late] = drive(store, late, timer_at(NOW + 100))
    store.add_command(commanded, "wake", {})
    held_fence = store.claim(held, W2, NOW, NOW + LEASE)
    claimed = store.claim_runnable(W1, NOW, NOW + LEASE, 10, frozenset({excluded}))
    again = store.claim_runnable(W1, NOW + 1, NOW + LEASE, 10, frozenset({excluded}))
    by_w2 = store.claim_runnable(W2, NOW + 1, NOW + LEASE, 10, frozenset({excluded}))
    first = sorted([flying, undoing, commanded])
    assert [(i, fences[i] + 1) for i in [*first, sooner, soon]] == claimed
    assert ([], []) == (again, by_w2), "every candidate is leased and live"
    assert fences[held] + 1 == held_fence
    assert {idle, done, late, held, excluded}.isdisjoint(dict(claimed))


def test_claim_runnable_takes_at_most_its_limit_and_expired_leases(store: Store, run: Runner) -> None:
    """Issue 9: a limit keeps the first in order; leases that expired are claimed again, one fence more."""
    a, b, c = parked(store, run, [ContractPay() for _ in range(3)])
    fences = {i: drive(store, i, timer_at(at)) for i, at in ((a, NOW - 3), (b, NOW - 2), (c, NOW - 1))}
    two = store.claim_runnable(W1, NOW, NOW + LEASE, 2, frozenset())
    rest = store.claim_runnable(W1, NOW, NOW + LEASE, 2, frozenset())
    none = store.claim_runnable(W1, NOW, NOW + LEASE, 0, frozenset())
    after_expiry = store.claim_runnable(W2, LATER, LATER + LEASE, 10, frozenset())
    assert [(a, fences[a] + 1), (b, fences[b] + 1)] == two
    assert [(c, fences[c] + 1)] == rest
    assert [] == none
    assert [(a, fences[a] + 2), (b, fences[b] + 2), (c, fences[c] + 2)] == after_expiry


def test_commanded_lists_the_owners_instances_with_commands(store: Store, run: Runner) -> None:
    """Issue 9: commanded(owner) names the instances owner holds that have commands; not others' nor quiet ones."""
    mine, quiet, theirs = parked(store, run, [ContractPay() for _ in range(3)])
    store.claim(mine, W1, NOW, NOW + LEASE)
    store.claim(quiet, W1, NOW, NOW + LEASE)
    store.claim(theirs, W2, NOW, NOW + LEASE)
    store.add_command(mine, "wake", {})
    store.add_command(theirs, "cancel", {"reason": "r", "compensate": False})
    assert ([mine], [theirs], []) == (store.commanded(W1), store.commanded(W2), store.commanded("host:1:none"))


# --------------------------------------------------------------------------- renew, release, expire, owners


def test_renew_extends_held_leases_and_returns_the_lost_ones(store: Store, run: Runner) -> None:
    """Issue 9: renew names the leases taken over; those it extends stay the owner's past their first end."""
    kept, lost = parked(store, run, [ContractPay(), ContractPay()])
    held = {i: store.claim(i, W1, NOW, NOW + LEASE) or 0 for i in (kept, lost)}
    store.claim(lost, W2, NOW + LEASE + 1, LATER)  # W1 stalled: W2 takes it over
    renewed = store.renew(W1, held, LATER + LEASE)
    assert [lost] == renewed
    assert store.claim(kept, W2, LATER, LATER + LEASE) is None, "renewed: still W1's"
    assert [] == store.renew(W1, {kept: held[kept]}, LATER + 2 * LEASE)


def test_a_lease_renewer_renews_on_a_connection_of_its_own_from_another_thread(durable: Stores, run: Runner) -> None:
    """
    The heartbeat's renewer (``lease_renewer()``) keeps renew's contract from another thread, beside the store.

    It extends the leases still held, names the one taken over, connects again
    after ``close`` (a failed connection is closed the same way), and an empty
    renewal asks nothing.
    """
    one, two = durable.open(), durable.open()
    kept, lost = parked(one, run, [ContractPay(), ContractPay()])
    held = {i: one.claim(i, W1, NOW, NOW + LEASE) or 0 for i in (kept, lost)}
    two.claim(lost, W2, NOW + LEASE + 1, LATER)  # W1 stalled: W2 takes it over
    make: Callable[[], LeaseRenewer] = getattr(one, "lease_renewer")  # noqa: B009 - not in the Store protocol
    renewer = make()
    try:
        with ThreadPoolExecutor(1) as pool:
            renewed = pool.submit(renewer.renew, W1, held, LATER + LEASE).result(timeout=60)
            renewer.close()
            again = pool.submit(renewer.renew, W1, {kept: held[kept]}, LATER + 2 * LEASE).result(timeout=60)
    finally:
        renewer.close()
        renewer.close()  # twice: nothing more
    assert ([lost], []) == (renewed, again)
    assert two.claim(kept, W2, LATER + LEASE + 1, LATER + 3 * LEASE) is None, "renewed: still W1's"
    assert [] == renewer.renew(W1, {}, LATER)


class _LeasedWithoutRenewer(MemoryStore):
    """A store that says several processes may share it, but has no ``lease_renewer``."""

    leases = True


def test_an_engine_refuses_a_leased_store_without_a_lease_renewer() -> None:
    """Its heartbeat could not renew on a connection of its own: a TypeError names the store; a client may use it."""
    with pytest.raises(TypeError, match=r"_LeasedWithoutRenewer.*lease_renewer\(\)"):
        Engine(_LeasedWithoutRenewer())
    assert 0 == Engine(_LeasedWithoutRenewer(), concurrency=0).concurrency


def test_release_gives_back_only_leases_whose_fence_matches(store: Store, run: Runner) -> None:
    """Issue 9: release frees the owner's leases at their fence; a stale fence or another owner frees nothing."""
    a, b = parked(store, run, [ContractPay(), ContractPay()])
    fa = store.claim(a, W1, NOW, NOW + LEASE) or 0
    fb = store.claim(b, W1, NOW, NOW + LEASE) or 0
    store.release(W1, {a: fa})
    store.release(W1, {b: fb - 1})  # stale fence
    store.release(W2, {b: fb})  # not W2's
    assert fa + 1 == store.claim(a, W2, NOW + 1, NOW + LEASE)
    assert store.claim(b, W2, NOW + 1, NOW + LEASE) is None


def test_expire_lets_another_owner_claim_at_once(store: Store, run: Runner) -> None:
    """Issue 9: expire(owner) ends every lease of a dead owner, whatever its end; another owner claims them now."""
    a, b, c = parked(store, run, [ContractPay() for _ in range(3)])
    fences = {i: store.claim(i, W1, NOW, NOW + LEASE) or 0 for i in (a, b)}
    store.claim(c, W2, NOW, NOW + LEASE)
    expired = store.expire(W1)
    assert 2 == expired
    assert [fences[a] + 1, fences[b] + 1] == [store.claim(i, W2, NOW + 1, NOW + LEASE) for i in (a, b)]
    assert 0 == store.expire("host:1:none")
    assert store.claim(c, W1, NOW + 1, NOW + LEASE) is None, "W2's lease was not expired"


def test_owners_lists_who_holds_leases(store: Store, run: Runner) -> None:
    """Issue 9: owners() names each owner holding a lease once; released leases leave it."""
    a, b, c = parked(store, run, [ContractPay() for _ in range(3)])
    assert [] == store.owners()
    fences = {i: store.claim(i, W1, NOW, NOW + LEASE) or 0 for i in (a, b)}
    fc = store.claim(c, W2, NOW, NOW + LEASE) or 0
    both = store.owners()
    store.release(W1, fences)
    assert [W1, W2] == both
    assert [W2] == store.owners()
    store.release(W2, {c: fc})
    assert [] == store.owners()


def test_a_record_loaded_after_a_claim_is_the_stored_one_and_then_its_commits(store: Store, run: Runner) -> None:
    """Issue 9: load() after claim_runnable (a store may answer from the claim's rows) gives what is stored now."""
    (instance_id,) = parked(store, run, [ContractPay()])
    drive(store, instance_id, in_flight)
    before = load(store, instance_id)  # loaded before the claim: the claim's own copy is not used
    ((claimed, fence),) = store.claim_runnable(W1, LATER, LATER + LEASE, 10, frozenset())
    before.fence = fence
    noted("after the claim")(before)
    store.commit([before])
    after = load(store, instance_id)
    seen = (after.error, after.fence, after.history_len)  # a MemoryStore's record is the live one: note it now
    ((again, _),) = store.claim_runnable(W2, LATER + 2 * LEASE, LATER + 3 * LEASE, 10, frozenset())
    taken = load(store, instance_id)
    assert (instance_id, instance_id) == (claimed, again)
    assert ("after the claim", fence, before.history_len) == seen
    assert ("after the claim", before.history_len) == (taken.error, taken.history_len)


def test_claim_runnable_takes_a_compensation_failed_instance_only_for_a_command(store: Store, run: Runner) -> None:
    """Issue 9: a retry of the compensations written by a client reaches a worker; other ends are never claimed."""
    stuck, done = parked(store, run, [ContractPay(), ContractPay()])

    def compensation_failed(rec: InstanceRecord) -> None:
        rec.status = InstanceStatus.COMPENSATION_FAILED
        rec.wake_at = None

    drive(store, stuck, compensation_failed)
    drive(store, done, ended)
    before = store.claim_runnable(W1, LATER, LATER + LEASE, 10, frozenset())
    store.add_command(stuck, "retry_compensation", {})
    store.add_command(done, "wake", {})  # a stale wake-up of an instance that ended
    after = store.claim_runnable(W1, LATER, LATER + LEASE, 10, frozenset())
    assert ([], [stuck]) == (before, [i for i, _ in after])


# --------------------------------------------------------------------------- fencing and new rows


def test_a_commit_with_a_stale_fence_raises_lease_lost_and_writes_nothing(store: Store, run: Runner) -> None:
    """Issue 9: once another owner claimed an instance, the old holder's whole batch writes nothing."""
    mine, taken, target = parked(store, run, [ContractPay() for _ in range(3)])
    seq = store.add_command(mine, "wake", {})
    held = {i: store.claim(i, W1, NOW, NOW + LEASE) or 0 for i in (mine, taken)}
    records = [load(store, mine), load(store, taken)]
    for rec in records:
        rec.fence = held[rec.id]
        noted("written by w1")(rec)
    records[0].add_consumed_command(seq)
    records[0].send(target, "wake", {})
    new_fence = store.claim(taken, W2, NOW + LEASE + 1, LATER)  # W1 stalled: W2 takes it over
    before = snapshot(store, [mine, taken, target])
    with pytest.raises(LeaseLost) as err:
        store.commit(records)
    after = snapshot(store, [mine, taken, target])
    assert held[taken] + 1 == new_fence
    assert (taken,) == err.value.instance_ids
    assert isinstance(err.value, StoreError)
    assert before == after, "nothing of the batch was written"


def test_a_new_record_whose_id_exists_raises_instance_exists_and_writes_nothing(store: Store, run: Runner) -> None:
    """Issue 9: inserting an instance whose id is taken (starting twice with one id) writes nothing of the batch."""
    taken, other = parked(store, run, [ContractPay(), ContractPay()])
    changed = load(store, other)
    changed.fence = store.claim(other, W1, NOW, NOW + LEASE) or 0
    noted("changed")(changed)
    again = new_record(taken, lease=(W1, NOW + LEASE), fence=1)
    fresh = new_record("fresh", lease=(W1, NOW + LEASE), fence=1)
    before = snapshot(store, [taken, other, "fresh"])
    with pytest.raises(InstanceExists) as err:
        store.commit([changed, fresh, again])
    after = snapshot(store, [taken, other, "fresh"])
    assert taken == err.value.instance_id
    assert before == after, "nothing of the batch was written"
    assert store.info("fresh") is None


def test_a_lone_commit_with_a_stale_fence_or_a_taken_id_writes_nothing(store: Store, run: Runner) -> None:
    """Issue 9: a batch of one (a step's commit, a start: the stores' fastest path) is fenced and checked too."""
    taken, other = parked(store, run, [ContractPay(), ContractPay()])
    rec = load(store, other)
    rec.fence = store.claim(other, W1, NOW, NOW + LEASE) or 0
    noted("written by w1")(rec)
    store.claim(other, W2, NOW + LEASE + 1, LATER)  # W1 stalled: W2 takes it over
    again = new_record(taken, lease=(W1, NOW + LEASE), fence=1)
    noted("started again")(again)
    before = snapshot(store, [taken, other])
    with pytest.raises(LeaseLost) as lost:
        store.commit([rec])
    with pytest.raises(InstanceExists) as exists:
        store.commit([again])
    after = snapshot(store, [taken, other])
    assert ((other,), taken) == (lost.value.instance_ids, exists.value.instance_id)
    assert before == after, "nothing of either commit was written"


def test_a_new_record_is_inserted_with_its_lease(store: Store, run: Runner) -> None:
    """Issue 9: a new instance's row carries the record's owner, lease end and fence."""
    store.commit([new_record("fresh", lease=(W1, NOW + LEASE), fence=1)])
    refused = store.claim("fresh", W2, NOW, NOW + LEASE)
    own = store.claim("fresh", W1, NOW, NOW + LEASE)
    assert (None, 2) == (refused, own)
    assert ["instance_started"] == [e.kind.value for e in store.history("fresh")]


# --------------------------------------------------------------------------- commands


def test_a_commit_deletes_its_consumed_commands_and_inserts_its_outbox(store: Store, run: Runner) -> None:
    """Issue 9: the commands a turn applied go, and those it sends to other instances come, with its commit."""
    parent, child = parked(store, run, [ContractPay(), ContractPay()])
    applied = store.add_command(parent, "wake", {})
    left = store.add_command(parent, "cancel", {"reason": "later", "compensate": True})

    def turn(rec: InstanceRecord) -> None:
        rec.add_consumed_command(applied)
        rec.send(child, "cancel", {"reason": "parent cancelled", "compensate": False})

    drive(store, parent, turn)
    [sent] = store.commands(child)
    assert [(left, "cancel", {"reason": "later", "compensate": True})] == [
        (c.seq, c.kind, c.body) for c in store.commands(parent)
    ]
    assert (child, "cancel", {"reason": "parent cancelled", "compensate": False}) == (
        sent.instance_id,
        sent.kind,
        sent.body,
    )
    assert applied < left < sent.seq


def test_commands_are_kept_oldest_first_for_their_instance(store: Store, run: Runner) -> None:
    """Issue 9: commands(instance) lists that instance's unapplied commands, oldest first, with their bodies."""
    a, b = parked(store, run, [ContractPay(), ContractPay()])
    first = store.add_command(a, "wake", {})
    other = store.add_command(b, "retry_compensation", {})
    second = store.add_command(a, "migrate", {"workflow": "ContractPay", "version": "1"})
    assert [(first, a, "wake", {}), (second, a, "migrate", {"workflow": "ContractPay", "version": "1"})] == [
        (c.seq, c.instance_id, c.kind, c.body) for c in store.commands(a)
    ]
    assert [other] == [c.seq for c in store.commands(b)]
    assert first < other < second
    assert [] == store.commands("nobody")


def test_another_process_sees_leases_and_commands(durable: Stores, run: Runner) -> None:
    """Issue 9: two stores on one file or database share leases, fences and commands (two processes)."""
    one, two = durable.open(), durable.open()
    [pay] = parked(one, run, [ContractPay()])
    fence = one.claim(pay, W1, NOW, NOW + LEASE) or 0
    refused = two.claim(pay, W2, NOW + 1, NOW + LEASE)
    seq = two.add_command(pay, "wake", {})
    commanded = one.commanded(W1)
    one.expire(W1)
    taken = two.claim(pay, W2, NOW + 1, NOW + LEASE)
    stale = load(one, pay)
    stale.fence = fence
    noted("written by w1")(stale)
    with pytest.raises(LeaseLost):
        one.commit([stale])
    assert (None, [pay], fence + 1) == (refused, commanded, taken)
    assert [seq] == [c.seq for c in one.commands(pay)]
    assert [W2] == one.owners()
    assert [] == [e for e in two.history(pay) if e.detail == "written by w1"]
