"""
Issue 2: human tasks.

Entering a ``@human_task`` step opens a task and parks the instance (``waiting``);
``tasks(user=..., groups=...)`` lists what a user may complete; only the assignee or a
member of a candidate group may complete it, once, with a form of the declared type.
Every refused completion raises a typed error and changes nothing.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, TypeVar

import attrs
import pytest

from statemachine_orch import (
    Ctx,
    Engine,
    EventKind,
    Handle,
    HistoryEvent,
    InstanceStatus,
    Retry,
    Task,
    TaskAlreadyCompleted,
    TaskError,
    TaskFormError,
    TaskNotAuthorized,
    TaskNotFound,
    TaskStatus,
    VirtualClock,
    Workflow,
    after,
    human_task,
    step,
)

if TYPE_CHECKING:
    from tests.conftest import EngineFactory, Runner

W = TypeVar("W", bound=Workflow)


@attrs.frozen
class Verdict:
    """The reviewer's answer."""

    approved: bool
    note: str = ""


@attrs.frozen
class Ballot:
    """A form of another type, with the same shape."""

    approved: bool


class Review(Workflow):
    """Submit, then a review by alice or any reviewer or lead, then publish."""

    title: str = "draft"
    verdict: Verdict | None = None
    published: bool = False

    @step(initial=True)
    def submit(self, ctx: Ctx) -> None: ...

    @after(submit)
    @human_task(assignee="alice", candidate_groups=("reviewers", "leads"), form=Verdict)
    def review(self, ctx: Ctx, form: Verdict) -> None:
        self.verdict = form

    @after(review, when=lambda wf: wf.verdict is not None and wf.verdict.approved)
    @step(final=True)
    def publish(self, ctx: Ctx) -> None:
        self.published = True


class Ack(Workflow):
    """A task without a form, for the ops group only."""

    acknowledged: bool = False

    @step(initial=True)
    def alert(self, ctx: Ctx) -> None: ...

    @after(alert)
    @human_task(candidate_groups=("ops",), final=True)
    def acknowledge(self, ctx: Ctx) -> None:
        self.acknowledged = True


async def parked(engine: Engine, wf: W) -> tuple[Handle[W], Task]:
    """Start *wf*, wait until it waits on its task, and return its handle and the task."""
    handle = await engine.start(wf)
    assert InstanceStatus.WAITING == await handle.wait_idle()
    [task] = engine.tasks(instance_id=handle.instance_id)
    return handle, task


def test_entering_a_human_task_opens_a_task_and_parks_the_instance(
    run: Runner, new_engine: EngineFactory, clock: VirtualClock
) -> None:
    """Issue 2: the task names the instance, step, assignee, groups and form type; the instance waits on it."""

    async def scenario() -> tuple[str, Task, InstanceStatus, str | None, str | None, list[HistoryEvent]]:
        async with new_engine() as engine:
            handle, task = await parked(engine, Review())
            info = engine.info(handle.instance_id)
            return handle.instance_id, task, info.status, info.step, info.open_task, handle.history()

    instance_id, task, status, at, open_task, history = run(scenario())
    assert (InstanceStatus.WAITING, "review", task.id) == (status, at, open_task)
    expected = Task(
        id=task.id,
        instance_id=instance_id,
        workflow="Review",
        step="review",
        assignee="alice",
        candidate_groups=("reviewers", "leads"),
        form_type=Verdict,
        created_at=clock.now(),
    )
    assert expected == task
    assert TaskStatus.OPEN == task.status
    created = [(e.step, e.detail) for e in history if e.kind is EventKind.TASK_CREATED]
    assert [("review", task.id)] == created


def test_tasks_lists_what_a_user_may_complete(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: tasks(user=, groups=) keeps the tasks assigned to the user or offered to one of their groups."""

    async def scenario() -> dict[str, list[str]]:
        async with new_engine() as engine:
            _, review = await parked(engine, Review())
            _, ack = await parked(engine, Ack())
            names = {review.id: "review", ack.id: "ack"}

            def listed(user: str | None, *groups: str) -> list[str]:
                return sorted(names[t.id] for t in engine.tasks(user=user, groups=groups))

            return {
                "everyone": listed(None),
                "alice": listed("alice"),
                "bob": listed("bob"),
                "bob the reviewer": listed("bob", "reviewers"),
                "bob the lead": listed("bob", "leads", "finance"),
                "carol on call": listed("carol", "ops"),
                "alice on call": listed("alice", "ops"),
            }

    assert {
        "everyone": ["ack", "review"],
        "alice": ["review"],
        "bob": [],
        "bob the reviewer": ["review"],
        "bob the lead": ["review"],
        "carol on call": ["ack"],
        "alice on call": ["ack", "review"],
    } == run(scenario())


def test_the_assignee_completes_the_task_and_the_method_gets_the_typed_form(
    run: Runner, new_engine: EngineFactory, clock: VirtualClock
) -> None:
    """Issue 2: complete_task by the assignee closes the task; the step method runs with the form; the run goes on."""

    async def scenario() -> tuple[Task, Review, list[Task], list[tuple[EventKind, str | None]]]:
        async with new_engine() as engine:
            handle, task = await parked(engine, Review())
            done = await engine.complete_task(task.id, user="alice", form=Verdict(approved=True, note="ship it"))
            wf = await handle.result()
            task_events: list[tuple[EventKind, str | None]] = [
                (e.kind, e.detail)
                for e in handle.history()
                if e.kind in {EventKind.TASK_CREATED, EventKind.TASK_COMPLETED}
            ]
            return done, wf, engine.tasks(), task_events

    done, wf, still_open, task_events = run(scenario())
    assert (TaskStatus.COMPLETED, "alice", clock.now()) == (done.status, done.completed_by, done.completed_at)
    assert Verdict(approved=True, note="ship it") == done.form
    assert (Verdict(approved=True, note="ship it"), True) == (wf.verdict, wf.published)
    assert [] == still_open
    assert [(EventKind.TASK_CREATED, done.id), (EventKind.TASK_COMPLETED, "alice")] == task_events


def test_a_member_of_a_candidate_group_may_complete_the_task(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: any member of one of the candidate groups may complete the task."""

    async def scenario() -> tuple[str | None, InstanceStatus]:
        async with new_engine() as engine:
            handle, task = await parked(engine, Review())
            done = await engine.complete_task(
                task.id, user="bob", groups=["finance", "leads"], form=Verdict(approved=True)
            )
            await handle.result()
            return done.completed_by, handle.status

    assert ("bob", InstanceStatus.COMPLETED) == run(scenario())


def test_a_task_without_a_form_is_completed_without_one(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: a human task declared without form= takes no form; its method is (self, ctx)."""

    async def scenario() -> bool:
        async with new_engine() as engine:
            handle, task = await parked(engine, Ack())
            await engine.complete_task(task.id, user="carol", groups=["ops"])
            wf = await handle.result()
            return wf.acknowledged

    assert run(scenario())


def state_of(engine: Engine, instance_id: str) -> tuple[list[Task], list[HistoryEvent], InstanceStatus, object]:
    """What a refused completion must leave untouched: open tasks, history, status, the variables."""
    wf = engine.workflow(instance_id)
    return engine.tasks(), engine.history(instance_id), engine.info(instance_id).status, attrs.asdict(wf)


@pytest.mark.parametrize(
    ("user", "groups"),
    [("mallory", ()), ("mallory", ("ops", "finance")), ("ALICE", ()), ("alice-admin", ("reviewers-2",))],
)
def test_only_the_assignee_or_a_group_member_may_complete_and_nothing_changes_otherwise(
    run: Runner, new_engine: EngineFactory, user: str, groups: tuple[str, ...]
) -> None:
    """Issue 2: anybody else gets TaskNotAuthorized, and the task, history, status and variables stay as they were."""

    async def scenario() -> tuple[TaskNotAuthorized, object, object, str]:
        async with new_engine() as engine:
            handle, task = await parked(engine, Review())
            before = state_of(engine, handle.instance_id)
            with pytest.raises(TaskNotAuthorized) as err:
                await engine.complete_task(task.id, user=user, groups=groups, form=Verdict(approved=True))
            return err.value, before, state_of(engine, handle.instance_id), task.id

    err, before, after_refusal, task_id = run(scenario())
    assert before == after_refusal
    assert (task_id, user) == (err.task_id, err.user)
    shown_groups = ", ".join(groups) or "none"
    expected = (
        f"task {task_id}: user {user!r} (groups: {shown_groups}) may not complete it; "
        "only assignee 'alice' or members of reviewers, leads may"
    )
    assert expected == str(err)


def test_the_instance_still_waits_after_a_refused_completion_and_can_then_be_completed(
    run: Runner, new_engine: EngineFactory
) -> None:
    """Issue 2: a refused completion leaves the task open for the right person."""

    async def scenario() -> tuple[InstanceStatus, InstanceStatus]:
        async with new_engine() as engine:
            handle, task = await parked(engine, Review())
            with pytest.raises(TaskNotAuthorized):
                await engine.complete_task(task.id, user="mallory", form=Verdict(approved=True))
            waiting = handle.status
            await engine.complete_task(task.id, user="alice", form=Verdict(approved=True))
            await handle.result()
            return waiting, handle.status

    assert (InstanceStatus.WAITING, InstanceStatus.COMPLETED) == run(scenario())


def test_a_task_completes_once(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: completing a completed task raises TaskAlreadyCompleted (naming who did) and changes nothing."""

    async def scenario() -> tuple[TaskAlreadyCompleted, object, object, str]:
        async with new_engine() as engine:
            handle, task = await parked(engine, Review())
            await engine.complete_task(task.id, user="alice", form=Verdict(approved=True))
            await handle.result()
            before = state_of(engine, handle.instance_id)
            with pytest.raises(TaskAlreadyCompleted) as err:
                await engine.complete_task(task.id, user="bob", groups=["leads"], form=Verdict(approved=False))
            return err.value, before, state_of(engine, handle.instance_id), task.id

    err, before, after_refusal, task_id = run(scenario())
    assert before == after_refusal
    assert f"task {task_id}: is already completed by 'alice'; a task completes once" == str(err)


@pytest.mark.parametrize(
    ("form", "shown"),
    [
        (Ballot(approved=True), "got Ballot(approved=True) (Ballot)"),
        (None, "got None (NoneType)"),
        ({"approved": True}, "got {'approved': True} (dict)"),
    ],
)
def test_a_form_of_the_wrong_type_is_refused_and_nothing_changes(
    run: Runner, new_engine: EngineFactory, form: object, shown: str
) -> None:
    """Issue 2: the form must be an instance of the declared type, else TaskFormError (a TypeError) naming both."""

    async def scenario() -> tuple[TaskFormError, object, object, str]:
        async with new_engine() as engine:
            handle, task = await parked(engine, Review())
            before = state_of(engine, handle.instance_id)
            with pytest.raises(TaskFormError) as err:
                await engine.complete_task(task.id, user="alice", form=form)
            return err.value, before, state_of(engine, handle.instance_id), task.id

    err, before, after_refusal, task_id = run(scenario())
    assert isinstance(err, TypeError)
    assert before == after_refusal
    text = str(err)
    assert text.startswith(f"task {task_id}: the form must be ")
    assert "Verdict" in text
    assert text.endswith(shown)


def test_a_task_without_a_form_refuses_one(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: a task declared without form= takes none; a form is a TaskFormError."""

    async def scenario() -> tuple[TaskFormError, object, object]:
        async with new_engine() as engine:
            handle, task = await parked(engine, Ack())
            before = state_of(engine, handle.instance_id)
            with pytest.raises(TaskFormError) as err:
                await engine.complete_task(task.id, user="carol", groups=["ops"], form=Verdict(approved=True))
            return err.value, before, state_of(engine, handle.instance_id)

    err, before, after_refusal = run(scenario())
    assert before == after_refusal
    assert str(err).endswith(": takes no form, got Verdict")


def test_an_unknown_task_is_not_found(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: complete_task with an id no task has raises TaskNotFound (a LookupError)."""

    async def scenario() -> TaskNotFound:
        async with new_engine() as engine:
            await parked(engine, Review())
            with pytest.raises(TaskNotFound) as err:
                await engine.complete_task("no-such-task", user="alice", form=Verdict(approved=True))
            return err.value

    err = run(scenario())
    assert isinstance(err, LookupError)
    assert isinstance(err, TaskError)
    assert ("no-such-task", "task no-such-task: no such task") == (err.task_id, str(err))


def test_cancel_of_a_waiting_instance_cancels_its_task(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: cancelling an instance parked on a task cancels the task; completing it afterwards is refused."""

    async def scenario() -> tuple[InstanceStatus, list[Task], list[EventKind], TaskAlreadyCompleted]:
        async with new_engine() as engine:
            handle, task = await parked(engine, Review())
            status = await engine.cancel(handle.instance_id, reason="withdrawn")
            with pytest.raises(TaskAlreadyCompleted) as err:
                await engine.complete_task(task.id, user="alice", form=Verdict(approved=True))
            return status, engine.tasks(), [e.kind for e in handle.history()], err.value

    status, open_tasks, kinds, err = run(scenario())
    assert InstanceStatus.CANCELLED == status
    assert [] == open_tasks
    assert [EventKind.CANCEL_REQUESTED, EventKind.TASK_CANCELLED] == [
        k for k in kinds if k in {EventKind.CANCEL_REQUESTED, EventKind.TASK_CANCELLED}
    ]
    assert "is already cancelled; a task completes once" in str(err)


def test_a_rejected_review_with_no_edge_fails_the_instance(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: the form drives the guards; a rejection leaves no enabled edge, so the instance fails."""

    async def scenario() -> InstanceStatus:
        async with new_engine() as engine:
            handle, task = await parked(engine, Review())
            await engine.complete_task(task.id, user="alice", form=Verdict(approved=False))
            return await engine.wait_instance(handle.instance_id)

    assert InstanceStatus.FAILED == run(scenario())


class Retried(Workflow):
    """A human task whose method fails once (retried with the same form) and is compensable."""

    seen: list[str] = attrs.field(factory=list[str])
    finish_fails: bool = False

    @step(initial=True)
    def open_case(self, ctx: Ctx) -> None: ...

    @after(open_case)
    @human_task(assignee="alice", form=Verdict, retry=Retry(attempts=2, initial=1))
    def review(self, ctx: Ctx, form: Verdict) -> None:
        self.seen.append(f"review {ctx.attempt}: {form.note}")
        if ctx.attempt == 1:
            msg = "archive offline"
            raise ConnectionError(msg)

    @review.compensation
    def withdraw(self, ctx: Ctx) -> None:
        self.seen.append("withdraw")

    @after(review)
    @step(final=True)
    def finish(self, ctx: Ctx) -> None:
        if self.finish_fails:
            msg = "cannot finish"
            raise RuntimeError(msg)


@pytest.mark.parametrize(
    ("finish_fails", "status", "seen"),
    [
        # "review 1" is gone: a failed attempt's changes to the variables are undone (issue 10).
        (False, InstanceStatus.COMPLETED, ["review 2: fine"]),
        (True, InstanceStatus.FAILED, ["review 2: fine", "withdraw"]),
    ],
)
def test_a_human_task_method_is_retried_with_the_same_form_and_can_be_compensated(
    run: Runner, new_engine: EngineFactory, finish_fails: bool, status: InstanceStatus, seen: list[str]
) -> None:
    """Issue 2: the task's method has its own retries (the form is kept) and its compensation runs on failure."""

    async def scenario() -> tuple[InstanceStatus, list[str], int]:
        async with new_engine() as engine:
            handle, task = await parked(engine, Retried(finish_fails=finish_fails))
            await engine.complete_task(task.id, user="alice", form=Verdict(approved=True, note="fine"))
            final = await engine.wait_instance(handle.instance_id)
            created = sum(1 for e in handle.history() if e.kind is EventKind.TASK_CREATED)
            return final, handle.workflow.seen, created

    assert (status, seen, 1) == run(scenario())


def test_a_single_group_given_as_a_string_is_one_group(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: groups='reviewers' means the group reviewers, as candidate_groups='reviewers' does."""

    async def scenario() -> tuple[list[str], str | None]:
        async with new_engine() as engine:
            _, task = await parked(engine, Review())
            listed = [t.id for t in engine.tasks(user="bob", groups="reviewers")]
            done = await engine.complete_task(task.id, user="bob", groups="reviewers", form=Verdict(approved=True))
            return listed, done.completed_by

    listed, completed_by = run(scenario())
    assert (1, "bob") == (len(listed), completed_by)


def test_two_concurrent_completions_complete_the_task_once(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 2: of two completions racing for one task, one wins and the other gets TaskAlreadyCompleted."""

    async def scenario() -> tuple[list[str], Verdict | None, int]:
        async with new_engine() as engine:
            handle, task = await parked(engine, Review())
            results = await asyncio.gather(
                engine.complete_task(task.id, user="alice", form=Verdict(approved=True, note="alice")),
                engine.complete_task(task.id, user="bob", groups=["leads"], form=Verdict(approved=True, note="bob")),
                return_exceptions=True,
            )
            await handle.result()
            outcomes = [type(r).__name__ if isinstance(r, BaseException) else "Task" for r in results]
            runs = sum(1 for e in handle.history() if e.kind is EventKind.STEP_STARTED and e.step == "review")
            return sorted(outcomes), handle.workflow.verdict, runs

    outcomes, verdict, runs = run(scenario())
    assert (["Task", "TaskAlreadyCompleted"], 1) == (outcomes, runs)
    assert verdict in {Verdict(approved=True, note="alice"), Verdict(approved=True, note="bob")}
