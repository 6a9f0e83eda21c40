"""
Forked instances in a SQLite file survive their engine: stop it mid-fork, open a new one, finish.

A restart here is what a deployment does: the engine stops (its steps in flight
are cancelled), the store is closed, and a new ``SqliteStore`` and ``Engine``
open the same file and ``recover()``. The instance comes back inside its fork
with every branch where it was: the open task (same id, still completable by
its assignee only once), the timer (firing when due, or at once when it fell due
meanwhile), a branch step that was in flight runs again under the same
``ctx.idempotency_key``, and the saga of the steps completed in the branches
before the restart is undone if a branch fails after it.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from statemachine_orch import (
    Ctx,
    EventKind,
    InstanceStatus,
    NonRetryableError,
    Retry,
    SqliteStore,
    TaskStatus,
    VirtualClock,
    Workflow,
    WorkflowRegistry,
    after,
    human_task,
    step,
    timer,
)
from tests.integration.helpers import completions, eventually, of_kind, open_engine

if TYPE_CHECKING:
    from tests.conftest import Runner

K = EventKind
HOUR = 3600.0


@attrs.define
class Probe:
    """What one test's steps report: the idempotency keys they ran under, and a gate they wait on."""

    keys: list[tuple[str, str]] = attrs.field(factory=list[tuple[str, str]])
    gate: asyncio.Event | None = None
    slow_gate: asyncio.Event = attrs.field(factory=asyncio.Event)


_PROBES: dict[str, Probe] = {}
_tokens = itertools.count()


def new_probe() -> tuple[str, Probe]:
    """A fresh probe, and the key the workflow's ``probe`` field finds it under."""
    key = f"sqlite-probe-{next(_tokens)}"
    probe = _PROBES[key] = Probe()
    return key, probe


def probe_of(wf: Any) -> Probe:
    """The probe of a workflow object."""
    return _PROBES[wf.probe]


@attrs.frozen
class Decision:
    """The operator's form."""

    accept: bool


class FeParked(Workflow, name="FeParked", version="1"):
    """
    book (undoable), then three branches: ``review`` (an operator's task),

    ``cool_down`` (an hour) then ``notify``, and ``crunch`` (an async step held by
    the test) then ``file`` (undoable); ``finish`` joins them and fails for good
    when the operator declined.
    """

    probe: str
    accepted: bool = False
    undone: list[str] = attrs.field(factory=list[str])

    @step(initial=True, fork=True)
    def book(self, ctx: Ctx) -> None:
        probe_of(self).keys.append(("book", ctx.idempotency_key))

    @book.compensation
    def unbook(self, ctx: Ctx) -> None:
        self.undone.append("book")

    @after(book)
    @human_task(assignee="operator", form=Decision)
    def review(self, ctx: Ctx, form: Decision) -> None:
        self.accepted = form.accept

    @after(book)
    @timer(timedelta(hours=1))
    def cool_down(self, ctx: Ctx) -> None: ...

    @after(cool_down)
    @step
    def notify(self, ctx: Ctx) -> None: ...

    @after(book)
    @step
    async def crunch(self, ctx: Ctx) -> None:
        probe = probe_of(self)
        probe.keys.append(("crunch", ctx.idempotency_key))
        if probe.gate is not None:
            await probe.gate.wait()

    @after(crunch)
    @step
    def file(self, ctx: Ctx) -> None:
        probe_of(self).keys.append(("file", ctx.idempotency_key))

    @file.compensation
    def unfile(self, ctx: Ctx) -> None:
        self.undone.append("file")

    @after(review, notify, file)
    @step(final=True)
    def finish(self, ctx: Ctx) -> None:
        if not self.accepted:
            msg = "declined by the operator"
            raise NonRetryableError(msg)


PINNED = [FeParked]


@pytest.mark.parametrize("due_while_stopped", [False, True], ids=["timer-due-later", "timer-fell-due-meanwhile"])
def test_forked_instance_parked_on_a_task_and_a_timer_survives_a_restart_and_finishes(
    db_path: Path, run: Runner, due_while_stopped: bool
) -> None:
    """The task, the timer and the in-flight branch step come back after a restart; the join then fires once."""
    clock = VirtualClock(autojump=False)
    start = clock.now()
    key, probe = new_probe()
    probe.gate = asyncio.Event()

    async def scenario() -> None:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            await engine.recover()
            handle = await engine.start(FeParked(probe=key))
            iid = handle.instance_id
            await eventually(lambda: len(engine.tasks(instance_id=iid)) == 1)
            await eventually(lambda: any(e.kind is K.TIMER_SET for e in engine.history(iid)))
            await eventually(lambda: [k for k in probe.keys if k[0] == "crunch"] != [])
            [task] = engine.tasks(user="operator")
            # Stop while crunch is in flight and the other two branches wait.
        assert ["book", "crunch"] == [name for name, _ in probe.keys]
        book_key, first_crunch_key = (k for _, k in probe.keys)

        if due_while_stopped:
            clock.advance(2 * HOUR)
        probe.gate = None
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            info = engine.info(iid)
            assert (True, ["cool_down", "crunch", "review"]) == (info.in_fork, sorted(info.steps))
            assert [task.id] == [t.id for t in engine.tasks(user="operator")]
            await engine.recover()
            await eventually(lambda: any(e.kind is K.BRANCH_DONE and e.step == "file" for e in engine.history(iid)))
            if due_while_stopped:
                await eventually(
                    lambda: any(e.kind is K.BRANCH_DONE for e in engine.history(iid) if e.step == "notify")
                )
                fired = [e.at - start for e in of_kind(engine.history(iid), K.TIMER_FIRED)]
                assert [2 * HOUR] == fired
            else:
                await engine.wait_instance(iid, terminal=False)
                assert [] == of_kind(engine.history(iid), K.TIMER_FIRED)
            assert [] == of_kind(engine.history(iid), K.JOINED)
            await engine.complete_task(task.id, user="operator", form=Decision(accept=True))
            if not due_while_stopped:
                await eventually(
                    lambda: any(e.kind is K.BRANCH_DONE for e in engine.history(iid) if e.step == "review")
                )
                assert [] == of_kind(engine.history(iid), K.JOINED)
                clock.advance(HOUR)
            assert InstanceStatus.COMPLETED == await engine.wait_instance(iid)

        # The step in flight at the stop ran again under the key of its visit; nothing else re-ran.
        crunch_keys = [k for name, k in probe.keys if name == "crunch"]
        assert [first_crunch_key, first_crunch_key] == crunch_keys
        [file_key] = [k for name, k in probe.keys if name == "file"]
        assert [book_key] == [k for name, k in probe.keys if name == "book"]
        assert 3 == len({book_key, first_crunch_key, file_key}), "each visit has a key of its own"

        with SqliteStore(db_path) as store:
            store.attach(WorkflowRegistry(PINNED))
            history = store.history(iid)
            stored = store.info(iid)
        assert stored is not None
        assert (InstanceStatus.COMPLETED, False) == (stored.status, stored.in_fork)
        assert dict.fromkeys(("book", "review", "cool_down", "notify", "crunch", "file", "finish"), 1) == completions(
            history
        )
        assert [("book", "finish")] == [(e.step, e.detail) for e in of_kind(history, K.JOINED)]
        assert [("cool_down", (2 if due_while_stopped else 1) * HOUR)] == [
            (e.step, e.at - start) for e in of_kind(history, K.TIMER_FIRED)
        ]
        [done_task] = of_kind(history, K.TASK_COMPLETED)
        assert ("review", "operator") == (done_task.step, done_task.detail)

    run(scenario())


def test_failure_after_a_restart_compensates_branch_steps_completed_before_it(db_path: Path, run: Runner) -> None:
    """The saga of steps completed in branches before a restart is kept: a later failure undoes them, newest first."""
    clock = VirtualClock(autojump=False)
    key, _ = new_probe()

    async def scenario() -> None:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            await engine.recover()
            handle = await engine.start(FeParked(probe=key))
            iid = handle.instance_id
            await eventually(lambda: any(e.kind is K.BRANCH_DONE for e in engine.history(iid) if e.step == "file"))
            await engine.wait_instance(iid, terminal=False)
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            await engine.recover()
            [task] = engine.tasks(user="operator")
            assert TaskStatus.OPEN == task.status
            await engine.complete_task(task.id, user="operator", form=Decision(accept=False))
            clock.advance(HOUR)
            status, wf = await engine.wait_result(iid)
            history = engine.history(iid)

        assert InstanceStatus.FAILED == status
        assert ["file", "book"] == [e.step for e in of_kind(history, K.COMPENSATION_COMPLETED)]
        assert ["file", "book"] == wf.undone
        assert 1 == Counter(e.step for e in of_kind(history, K.STEP_FAILED))["finish"]

    run(scenario())


class FeRetryRestart(Workflow, name="FeRetryRestart", version="1"):
    """Two branches: ``flaky`` (first attempt fails, retried after 1s; attempt 2 held), ``slow`` (held)."""

    probe: str

    @step(initial=True, fork=True)
    def split(self, ctx: Ctx) -> None: ...

    @after(split)
    @step(retry=Retry(attempts=3, initial=1.0))
    async def flaky(self, ctx: Ctx) -> None:
        if ctx.attempt == 1:
            msg = "busy"
            raise RuntimeError(msg)
        probe = probe_of(self)
        probe.keys.append(("flaky", ctx.idempotency_key))
        if probe.gate is not None:
            await probe.gate.wait()

    @after(split)
    @step
    async def slow(self, ctx: Ctx) -> None:
        probe = probe_of(self)
        if probe.gate is not None:
            await probe.slow_gate.wait()

    @after(flaky, slow)
    @step(final=True)
    def join(self, ctx: Ctx) -> None: ...


def test_branch_retry_due_when_a_sibling_commits_survives_a_restart(db_path: Path, run: Runner) -> None:
    """A branch whose retry came due just before a stop runs that retry after the restart, and the join fires."""
    clock = VirtualClock(autojump=False)
    key, probe = new_probe()
    probe.gate = asyncio.Event()

    async def scenario() -> None:
        async with open_engine(db_path, clock, workflows=[FeRetryRestart]) as engine:
            await engine.recover()
            handle = await engine.start(FeRetryRestart(probe=key))
            iid = handle.instance_id
            await eventually(lambda: any(e.kind is K.RETRY_SCHEDULED for e in engine.history(iid)))
            clock.advance(1.0)  # flaky's backoff is due...
            probe.slow_gate.set()  # ...as its sibling completes and commits
            await eventually(lambda: any(e.kind is K.BRANCH_DONE for e in engine.history(iid)))
            await eventually(lambda: probe.keys != [])  # attempt 2 runs; the engine stops before it commits
        probe.gate = None
        async with open_engine(db_path, clock, workflows=[FeRetryRestart]) as engine:
            await engine.recover()
            status = await asyncio.wait_for(engine.wait_instance(iid), 2)
            history = engine.history(iid)
            await asyncio.wait_for(engine.wait_idle(), 2)  # no stray timer left behind to fire forever
            stored = engine.store.info(iid)
        assert InstanceStatus.COMPLETED == status
        assert [("split", "join")] == [(e.step, e.detail) for e in of_kind(history, K.JOINED)]
        assert stored is not None
        assert stored.wake_at is None, "an ended instance keeps no timer"

    run(scenario())
