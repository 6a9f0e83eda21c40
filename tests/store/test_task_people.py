"""
Issue 10, item 4: reassigning and delegating a task from another process, on the stores several processes share.

A worker engine runs the instances; a client (``Engine(store, concurrency=0)`` on a
second store object of the same file or database, as another process would be)
reassigns and delegates their open tasks: the task rows change with the command
(groups included, any claim given back), the worker writes the history entries,
and the new people complete the tasks.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from statemachine_orch import Ctx, Engine, EventKind, InstanceStatus, Workflow, after, human_task, step

if TYPE_CHECKING:
    from tests.conftest import Runner
    from tests.store.conftest import Stores

K = EventKind


class PeopleReview(Workflow, name="PeopleReview"):
    """A review for the author's team, computed from the variables."""

    team: str

    def reviewers(self) -> list[str]:
        return [self.team]

    @human_task(initial=True, candidate_groups=reviewers)
    def review(self, ctx: Ctx) -> None: ...

    @after(review)
    @step(final=True)
    def merge(self, ctx: Ctx) -> None: ...


async def _history_has(engine: Engine, instance_id: str, kind: EventKind) -> list[str]:
    async with asyncio.timeout(30):
        while True:
            found = [e.detail or "" for e in engine.history(instance_id) if e.kind is kind]
            if found:
                return found
            await asyncio.sleep(0.02)


def test_a_client_reassigns_and_delegates_tasks_a_worker_runs(durable: Stores, run: Runner) -> None:
    """Issue 10: the rows change at once (groups and claim too); the worker's history says who changed what."""

    async def scenario() -> None:
        async with Engine(durable.open(), workflows=[PeopleReview], poll=0.02) as worker:
            one = await worker.start(PeopleReview(team="core"))
            two = await worker.start(PeopleReview(team="docs"))
            await one.wait_idle()
            await two.wait_idle()
            client = Engine(durable.open(), workflows=[PeopleReview], concurrency=0, poll=0.02)
            [first] = client.tasks(instance_id=one.instance_id)
            [second] = client.tasks(instance_id=two.instance_id)
            assert ("core",) == first.candidate_groups
            await client.claim_task(first.id, user="ann", groups=["core"])
            moved = await client.reassign_task(first.id, candidate_groups=["release"], by="ops")
            assert (None, ("release",), None) == (moved.assignee, moved.candidate_groups, moved.claimed_by)
            assert [] == client.tasks(user="ann", groups=["core"])
            assert [first.id] == [t.id for t in client.tasks(user="rob", groups=["release"])]
            handed = await client.delegate_task(second.id, user="dan", groups=["docs"], to="eve")
            assert "eve" == handed.assignee
            assert [second.id] == [t.id for t in client.tasks(user="eve")]
            [reassigned] = await _history_has(worker, one.instance_id, K.TASK_REASSIGNED)
            [delegated] = await _history_has(worker, two.instance_id, K.TASK_DELEGATED)
            assert f"{first.id}: group core -> group release by ops (ann's claim given back)" == reassigned
            assert f"{second.id}: group docs -> eve, group docs by dan" == delegated
            await client.complete_task(first.id, user="rob", groups=["release"])
            await client.complete_task(second.id, user="eve")
            assert InstanceStatus.COMPLETED == await worker.wait_instance(one.instance_id)
            assert InstanceStatus.COMPLETED == await worker.wait_instance(two.instance_id)
            await client.aclose()

    run(scenario())
