"""
Issue 13: claiming a group task (``Engine.claim_task`` / ``unclaim_task``).

Those a task is for (its assignee, the members of its candidate groups) may
claim it; while it is claimed only the claimant sees it in ``tasks()``, completes
it and gives it back. Claims and releases are in the history. Every refusal is
typed and changes nothing. A hypothesis run plays random claims, releases and
completions by random users against a model of who holds the task.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statemachine_orch import (
    Ctx,
    Engine,
    EventKind,
    InstanceStatus,
    MemoryStore,
    TaskAlreadyCompleted,
    TaskClaimed,
    TaskError,
    TaskNotAuthorized,
    TaskNotFound,
    TaskStatus,
    VirtualClock,
    Workflow,
    after,
    human_task,
    step,
)
from tests.conftest import run_scenario

if TYPE_CHECKING:
    from statemachine_orch import Task
    from tests.conftest import EngineFactory, Runner


@attrs.frozen
class Decision:
    """The reviewer's answer."""

    ok: bool


class GroupReview(Workflow):
    """A review for alice or anyone in reviewers, then done."""

    decided_by_ok: bool | None = None

    @step(initial=True)
    def submit(self, ctx: Ctx) -> None: ...

    @after(submit)
    @human_task(assignee="alice", candidate_groups=("reviewers",), form=Decision, final=True)
    def review(self, ctx: Ctx, form: Decision) -> None:
        self.decided_by_ok = form.ok


REVIEWERS = ("reviewers",)


async def parked(engine: Engine) -> Task:
    """Start a GroupReview and return its open task."""
    handle = await engine.start(GroupReview())
    assert InstanceStatus.WAITING == await handle.wait_idle()
    [task] = engine.tasks(instance_id=handle.instance_id)
    return task


def kinds(engine: Engine, instance_id: str) -> list[tuple[EventKind, str | None]]:
    """The task entries of the history: kind and detail."""
    claims = {EventKind.TASK_CLAIMED, EventKind.TASK_UNCLAIMED, EventKind.TASK_COMPLETED}
    return [(e.kind, e.detail) for e in engine.history(instance_id) if e.kind in claims]


def test_a_claimed_task_is_the_claimants_only(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 13: bob claims; carol (a reviewer) and alice (the assignee) no longer see it nor complete it; bob does."""

    async def scenario() -> None:
        async with new_engine() as engine:
            task = await parked(engine)
            claimed = await engine.claim_task(task.id, user="bob", groups=REVIEWERS)
            assert "bob" == claimed.claimed_by
            assert [] == engine.tasks("carol", REVIEWERS)
            assert [] == engine.tasks("alice")
            assert [task.id] == [t.id for t in engine.tasks("bob", REVIEWERS)]
            for user, groups in (("carol", REVIEWERS), ("alice", ())):
                with pytest.raises(TaskClaimed) as refused:
                    await engine.complete_task(task.id, user=user, groups=groups, form=Decision(ok=False))
                assert ("bob", user) == (refused.value.claimant, refused.value.user)
            done = await engine.complete_task(task.id, user="bob", groups=REVIEWERS, form=Decision(ok=True))
            status, wf = await engine.wait_result(task.instance_id)
            assert (TaskStatus.COMPLETED, "bob", "bob") == (done.status, done.completed_by, done.claimed_by)
            assert (InstanceStatus.COMPLETED, True) == (status, wf.decided_by_ok)
            assert [(EventKind.TASK_CLAIMED, "bob"), (EventKind.TASK_COMPLETED, "bob")] == kinds(
                engine, task.instance_id
            )

    run(scenario())


def test_a_claim_given_back_lets_the_others_complete_it(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 13: bob claims then unclaims; carol completes; the history has both entries."""

    async def scenario() -> None:
        async with new_engine() as engine:
            task = await parked(engine)
            await engine.claim_task(task.id, user="bob", groups=REVIEWERS)
            released = await engine.unclaim_task(task.id, user="bob", groups=REVIEWERS)
            assert released.claimed_by is None
            assert [task.id] == [t.id for t in engine.tasks("carol", REVIEWERS)]
            await engine.complete_task(task.id, user="carol", groups=REVIEWERS, form=Decision(ok=True))
            assert [
                (EventKind.TASK_CLAIMED, "bob"),
                (EventKind.TASK_UNCLAIMED, "bob"),
                (EventKind.TASK_COMPLETED, "carol"),
            ] == kinds(engine, task.instance_id)

    run(scenario())


def test_claiming_again_or_giving_back_an_unclaimed_task_changes_nothing(
    run: Runner, new_engine: EngineFactory
) -> None:
    """Issue 13: a second claim by the claimant, or a release of a task nobody holds, writes no history."""

    async def scenario() -> None:
        async with new_engine() as engine:
            task = await parked(engine)
            before = len(engine.history(task.instance_id))
            free = await engine.unclaim_task(task.id, user="alice")
            await engine.claim_task(task.id, user="alice")
            again = await engine.claim_task(task.id, user="alice")
            assert (None, "alice") == (free.claimed_by, again.claimed_by)
            assert before + 1 == len(engine.history(task.instance_id))

    run(scenario())


def test_refused_claims_are_typed_and_change_nothing(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 13: an outsider, another's claim, an unknown id, a closed task and a bad user are refused plainly."""

    async def scenario() -> None:
        async with new_engine() as engine:
            task = await parked(engine)
            with pytest.raises(TaskNotAuthorized) as outsider:
                await engine.claim_task(task.id, user="mallory", groups=("sales",))
            assert not isinstance(outsider.value, TaskClaimed)
            assert "may not claim it; only assignee 'alice' or members of reviewers may" in str(outsider.value)
            await engine.claim_task(task.id, user="bob", groups=REVIEWERS)
            with pytest.raises(TaskClaimed, match="is claimed by 'bob'"):
                await engine.claim_task(task.id, user="carol", groups=REVIEWERS)
            with pytest.raises(TaskClaimed):
                await engine.unclaim_task(task.id, user="alice")
            with pytest.raises(TaskNotAuthorized) as outsider_again:
                await engine.unclaim_task(task.id, user="mallory")
            assert not isinstance(outsider_again.value, TaskClaimed)
            with pytest.raises(TaskNotFound):
                await engine.claim_task("no-such-task", user="bob")
            with pytest.raises(ValueError, match="control characters"):
                await engine.claim_task(task.id, user="bob\nforged")
            with pytest.raises(TypeError):
                await engine.unclaim_task(task.id, user="bob", groups=b"reviewers")  # type: ignore[arg-type]
            stored = engine.tasks(instance_id=task.instance_id)
            assert ["bob"] == [t.claimed_by for t in stored]
            await engine.complete_task(task.id, user="bob", form=Decision(ok=True))
            with pytest.raises(TaskAlreadyCompleted):
                await engine.claim_task(task.id, user="bob")
            with pytest.raises(TaskAlreadyCompleted):
                await engine.unclaim_task(task.id, user="bob")

    run(scenario())


def test_tasks_take_a_limit_and_a_due_time(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 13: Engine.tasks(limit=..., due_before=...) pages the list; a negative limit is a ValueError."""

    async def scenario() -> None:
        async with new_engine() as engine:
            first = await parked(engine)
            second = await parked(engine)
            assert [first.id] == [t.id for t in engine.tasks("alice", limit=1)]
            assert [first.id, second.id] == [t.id for t in engine.tasks("alice", limit=10)]
            assert [] == engine.tasks("alice", due_before=engine.clock.now() + 1e9)  # no due time: never overdue
            with pytest.raises(ValueError, match="limit="):
                engine.tasks(limit=-1)

    run(scenario())


USERS = ("alice", "bob", "carol", "mallory")
"""alice is the assignee, bob and carol reviewers, mallory nobody."""

GROUPS = {"alice": (), "bob": REVIEWERS, "carol": REVIEWERS, "mallory": ("sales",)}

Op = tuple[str, str]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["claim", "unclaim", "complete"]), st.sampled_from(USERS)), max_size=12))
def test_claims_follow_the_model_of_who_holds_the_task(ops: list[Op]) -> None:
    """Issue 13 (property): each call succeeds or is refused exactly as a model of the claimant says; nothing else."""

    async def scenario() -> None:
        async with Engine(MemoryStore(), clock=VirtualClock(autojump=True)) as engine:
            task = await parked(engine)
            holder: str | None = None
            completed_by: str | None = None
            for op, user in ops:
                groups = GROUPS[user]
                is_for = user == "alice" or bool(groups and groups[0] == "reviewers")
                if completed_by is not None:
                    expected: type[Exception] | None = TaskAlreadyCompleted
                elif holder == user:
                    expected = None
                elif not is_for:
                    expected = TaskNotAuthorized
                elif holder is not None:
                    expected = TaskClaimed
                else:
                    expected = None
                refused: type[Exception] | None = None
                try:
                    if op == "claim":
                        await engine.claim_task(task.id, user=user, groups=groups)
                    elif op == "unclaim":
                        await engine.unclaim_task(task.id, user=user, groups=groups)
                    else:
                        await engine.complete_task(task.id, user=user, groups=groups, form=Decision(ok=True))
                except TaskError as exc:
                    refused = type(exc)
                assert expected == refused, (op, user)
                if refused is not None:
                    continue
                if op == "claim":
                    holder = user
                elif op == "unclaim":
                    holder = None
                else:
                    completed_by = user
            stored = engine.store.task(task.id)
            assert stored is not None
            if completed_by is None:
                assert (TaskStatus.OPEN, holder) == (stored.status, stored.claimed_by)
            else:
                assert (TaskStatus.COMPLETED, completed_by) == (stored.status, stored.completed_by)

    run_scenario(scenario())
