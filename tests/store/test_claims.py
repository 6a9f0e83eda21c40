"""
Issue 13: claims of tasks in the ``Store`` contract, run on every store.

``add_command(claim=...)`` sets an open task's claimant in the command's own
transaction, only from the claimant the change expects (nobody, to claim; the
user, to give it back); a claimed task is listed for its claimant only and is
completed only by them (``add_command(complete=...)`` by another user raises
``TaskClaimed``); every refusal writes nothing. ``open_tasks`` filters by due
time and takes a limit.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import pytest

from statemachine_orch import TaskAlreadyCompleted, TaskClaim, TaskClaimed, TaskStatus
from tests.store.flows import NOW, ContractAudit, ContractEdit, Verdict, drive, parked

if TYPE_CHECKING:
    from statemachine_orch import Store, Task
    from tests.conftest import Runner
    from tests.store.conftest import Stores


def the_task(store: Store, instance_id: str) -> Task:
    """The instance's one open task."""
    [task] = store.open_tasks(None, frozenset(), instance_id)
    return task


def claim(store: Store, task: Task, user: str, *, give_back: bool = False) -> int:
    """Claim *task* for *user* (or give *user*'s claim back) with its command; the command's seq."""
    change = TaskClaim(task.id, user, claim=not give_back)
    body = {"task": task.id, "user": user, "claim": not give_back}
    return store.add_command(task.instance_id, "claim_task", body, claim=change)


def listed(store: Store, user: str, groups: set[str]) -> list[str]:
    """The ids of the open tasks *user* (in *groups*) finds."""
    return sorted(t.id for t in store.open_tasks(user, frozenset(groups), None))


def test_a_claimed_task_is_listed_for_its_claimant_only(store: Store, run: Runner) -> None:
    """Issue 13: once bob (an editor) claims the review, alice (its assignee) and other editors no longer find it."""
    [edit] = parked(store, run, [ContractEdit()])
    task = the_task(store, edit)
    seq = claim(store, task, "bob")
    stored = store.task(task.id)
    assert stored is not None
    assert ("bob", TaskStatus.OPEN) == (stored.claimed_by, stored.status)
    assert [task.id] == listed(store, "bob", {"editors"})
    assert [task.id] == listed(store, "bob", set())  # the claimant keeps it, whatever groups are given
    assert [] == listed(store, "alice", set())
    assert [] == listed(store, "carol", {"editors"})
    assert [(seq, "claim_task")] == [(c.seq, c.kind) for c in store.commands(edit)]


def test_a_second_claim_is_refused_and_writes_nothing(store: Store, run: Runner) -> None:
    """Issue 13: carol cannot claim what bob holds, nor give back his claim; no command is kept for either."""
    [edit] = parked(store, run, [ContractEdit()])
    task = the_task(store, edit)
    claim(store, task, "bob")
    with pytest.raises(TaskClaimed) as taken:
        claim(store, task, "carol")
    with pytest.raises(TaskClaimed) as not_hers:
        claim(store, task, "carol", give_back=True)
    stored = store.task(task.id)
    assert stored is not None
    assert ("bob", "bob", "carol") == (stored.claimed_by, taken.value.claimant, taken.value.user)
    assert "bob" == not_hers.value.claimant
    assert ["claim_task"] == [c.kind for c in store.commands(edit)]


def test_only_the_claimant_completes_a_claimed_task(store: Store, run: Runner) -> None:
    """Issue 13: alice's completion of the task bob holds is refused (nothing written); bob's closes it."""
    [edit] = parked(store, run, [ContractEdit()])
    task = the_task(store, edit)
    claim(store, task, "bob")

    def done(user: str) -> Task:
        return attrs.evolve(
            task, status=TaskStatus.COMPLETED, completed_by=user, completed_at=NOW, form=Verdict(approved=True)
        )

    with pytest.raises(TaskClaimed) as refused:
        store.add_command(edit, "complete_task", {"task": task.id, "user": "alice"}, complete=done("alice"))
    still = store.task(task.id)
    store.add_command(edit, "complete_task", {"task": task.id, "user": "bob"}, complete=done("bob"))
    closed = store.task(task.id)
    assert still is not None
    assert closed is not None
    assert ("alice", "bob") == (refused.value.user, refused.value.claimant)
    assert (TaskStatus.OPEN, None) == (still.status, still.completed_by)
    assert (TaskStatus.COMPLETED, "bob", "bob") == (closed.status, closed.completed_by, closed.claimed_by)
    assert ["claim_task", "complete_task"] == [c.kind for c in store.commands(edit)]


def test_a_claim_given_back_opens_the_task_to_all_it_is_for(store: Store, run: Runner) -> None:
    """Issue 13: after bob gives his claim back, alice and the editors find the task again, and carol may claim it."""
    [edit] = parked(store, run, [ContractEdit()])
    task = the_task(store, edit)
    claim(store, task, "bob")
    claim(store, task, "bob", give_back=True)
    after_release = (listed(store, "alice", set()), listed(store, "carol", {"editors"}))
    claim(store, task, "carol")
    stored = store.task(task.id)
    assert ([task.id], [task.id]) == after_release
    assert stored is not None
    assert "carol" == stored.claimed_by


def test_a_closed_task_cannot_be_claimed(store: Store, run: Runner) -> None:
    """Issue 13: a completed task's claim raises TaskAlreadyCompleted and keeps no command."""
    [edit] = parked(store, run, [ContractEdit()])
    task = the_task(store, edit)
    done = attrs.evolve(
        task, status=TaskStatus.COMPLETED, completed_by="alice", completed_at=NOW, form=Verdict(approved=False)
    )
    store.add_command(edit, "complete_task", {"task": task.id, "user": "alice"}, complete=done)
    with pytest.raises(TaskAlreadyCompleted):
        claim(store, task, "bob")
    assert ["complete_task"] == [c.kind for c in store.commands(edit)]


def test_a_commit_of_the_instance_keeps_its_tasks_claimant(durable: Stores, run: Runner) -> None:
    """Issue 13: a driver's turn that writes the task row again (from a copy read before the claim) keeps the claim."""
    store = durable.open()
    [edit] = parked(store, run, [ContractEdit()])
    task = the_task(store, edit)
    claim(store, task, "bob")
    drive(store, edit, lambda rec: rec.add_task(attrs.evolve(task, due_at=NOW)))
    stored = store.task(task.id)
    assert stored is not None
    assert ("bob", NOW) == (stored.claimed_by, stored.due_at)
    assert [] == listed(durable.open(), "alice", set())


def test_open_tasks_take_a_due_time_and_a_limit(store: Store, run: Runner) -> None:
    """Issue 13: due_before keeps the tasks due by then; limit keeps the oldest ones."""
    edit, audit, second = parked(store, run, [ContractEdit(), ContractAudit(), ContractEdit()])
    due = NOW - 100
    drive(store, second, lambda rec: rec.add_task(attrs.evolve(the_task(store, second), due_at=due)))

    def ids(user: str | None, groups: set[str], due_before: float | None = None, limit: int | None = None) -> list[str]:
        found = store.open_tasks(user, frozenset(groups), None, due_before=due_before, limit=limit)
        return [t.instance_id for t in found]

    assert [edit, audit, second] == ids(None, set())
    assert [edit, audit] == ids(None, set(), limit=2)
    assert [second] == ids(None, set(), due_before=due)
    assert [] == ids(None, set(), due_before=due - 1)
    assert [edit, second] == ids("alice", set())
    assert [edit] == ids("alice", set(), limit=1)
    assert [second] == ids("alice", set(), due_before=NOW)
    assert [audit] == ids("dan", {"ops"}, limit=5)


def test_a_page_of_a_users_tasks_is_the_head_of_all_of_them(store: Store, run: Runner) -> None:
    """Issue 13: open_tasks(limit=k) is the first k of the full list, whichever way each task is the user's."""
    instances = parked(store, run, [ContractEdit(), ContractAudit(), ContractEdit(), ContractAudit(), ContractEdit()])
    claim(store, the_task(store, instances[2]), "bob")  # bob's now: out of dan's editors' list
    claim(store, the_task(store, instances[3]), "dan")  # dan's claim: his whatever his groups
    cases: list[tuple[str, set[str]]] = [
        ("dan", {"ops", "editors"}),
        ("alice", set()),
        ("bob", {"legal"}),
        ("dan", set()),
    ]
    for user, groups in cases:
        everything = store.open_tasks(user, frozenset(groups), None)
        pages = [store.open_tasks(user, frozenset(groups), None, limit=k) for k in range(len(everything) + 2)]
        assert [everything[:k] for k in range(len(everything) + 2)] == pages, (user, groups)
    assert [instances[3]] == [t.instance_id for t in store.open_tasks("dan", frozenset(), None)]
