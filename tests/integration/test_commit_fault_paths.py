"""
Issue 8: a failed commit on any path of an instance's change leaves it correct, and nobody waits forever.

Faults are injected with ``SqliteStore(fault=...)`` at ``"before_commit"`` (the
transaction fails; nothing of it is written). The paths:

- **cancel**: a ``cancel()`` whose commit fails raises ``StoreError`` at once
  with nothing changed, or completes; it never hangs, and a second ``cancel()``
  then cancels;
- **park**: a ``cancel()`` landing while the instance commits its park at a
  human task or a ``@wait_for`` step is applied: it returns ``cancelled``;
- **child start**: when the commit that parks a parent and starts its
  ``@subflow`` child fails, the parent is never stored waiting on a child that
  was not stored; it completes, in the same engine and across a restart;
- **timer**: while commits fail for a second, a due timer's step body is not
  re-run in a tight loop (the engine backs off), and the instance completes
  once the disk is back;
- **group commit**: one instance whose variables cannot be stored does not fail
  the commits of the instances batched with it: their ``start()`` never raises
  ``StoreError`` and their step bodies are not re-run; the poisoned instance
  ends ``failed`` instead of retrying forever;
- **task at park**: a task is visible once the instance's park is committed;
  completing it then works, and never raises ``TaskAlreadyCompleted``.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter
from typing import TYPE_CHECKING, cast

import attrs
import pytest

from statemachine_orch import (
    Ctx,
    Engine,
    EventKind,
    HistoryEvent,
    InstanceStatus,
    StoreError,
    SystemClock,
    TaskAlreadyCompleted,
    TaskStatus,
    Workflow,
    after,
    human_task,
    step,
    subflow,
    timer,
    wait_for,
)
from tests.integration.helpers import completions, eventually, open_engine

if TYPE_CHECKING:
    from pathlib import Path

    from statemachine_orch import Store
    from tests.conftest import Runner

GUARD = 5.0
"""Real seconds a call may take before it counts as hung (the work itself takes milliseconds)."""

S = InstanceStatus

pytestmark = pytest.mark.timeout(60)


class Disk:
    """
    A ``SqliteStore(fault=...)`` for a disk that fails on demand (``OSError``, nothing written).

    ``fail_next`` commits fail from now on; so does every commit while
    ``time.monotonic() < broken_until``. ``failed`` counts the commits it failed.
    """

    def __init__(self) -> None:
        self.fail_next = 0
        self.broken_until = 0.0
        self.failed = 0
        self.armed = False

    def __call__(self, point: str) -> None:
        if point != "before_commit":
            return
        if self.fail_next > 0 or time.monotonic() < self.broken_until:
            self.fail_next = max(0, self.fail_next - 1)
            self.failed += 1
            raise OSError(28, "No space left on device (injected)")

    def arm_once(self) -> None:
        """Make the next commit fail, the first time only (a step that calls it may run again)."""
        if not self.armed:
            self.armed = True
            self.fail_next = 1


DISKS: dict[str, Disk] = {}
"""The disks the workflows of a test reach by the name in their ``disk`` field."""


def new_disk(name: str) -> Disk:
    """A fresh disk under *name*."""
    disk = DISKS[name] = Disk()
    return disk


@attrs.frozen
class FaultVerdict:
    """The form of a ``FaultClaim`` task."""

    ok: bool


@attrs.frozen
class FaultAck:
    """The message a ``FaultPage`` waits for."""

    by: str


class FaultClaim(Workflow):
    """A claim: filed, reviewed by Ann, closed."""

    @step(initial=True)
    def file(self, ctx: Ctx) -> None: ...

    @after(file)
    @human_task(assignee="ann", form=FaultVerdict)
    def review(self, ctx: Ctx, form: FaultVerdict) -> None: ...

    @after(review)
    @step(final=True)
    def close(self, ctx: Ctx) -> None: ...


class FaultPage(Workflow):
    """A page: sent, acknowledged by a message, closed."""

    @step(initial=True)
    def send(self, ctx: Ctx) -> None: ...

    @after(send)
    @wait_for(FaultAck)
    def acknowledged(self, ctx: Ctx, msg: FaultAck) -> None: ...

    @after(acknowledged)
    @step(final=True)
    def close(self, ctx: Ctx) -> None: ...


class FaultKid(Workflow):
    """A child workflow of one step."""

    @step(initial=True, final=True)
    def work(self, ctx: Ctx) -> None: ...


class FaultParent(Workflow):
    """Prepares, runs a ``FaultKid`` (the commit that starts it fails once), then finishes."""

    disk: str = ""

    @step(initial=True)
    def prep(self, ctx: Ctx) -> None: ...

    @after(prep)
    @subflow(FaultKid)
    def ship(self, ctx: Ctx) -> FaultKid:
        DISKS[self.disk].arm_once()  # the next commit, which parks this parent and starts the child, fails
        return FaultKid()

    @after(ship)
    @step(final=True)
    def done(self, ctx: Ctx) -> None: ...


RUNS: Counter[str] = Counter()
"""How often each step body ran, by the step visit's idempotency key."""

BROKEN_RUNS: Counter[str] = Counter()
"""How often each step body ran while its test's disk was failing, by the step visit's idempotency key."""


def count_run(ctx: Ctx, disk: str) -> None:
    """Count a run of a step body; separately when it ran while *disk* was failing."""
    RUNS[ctx.idempotency_key] += 1
    if time.monotonic() < DISKS[disk].broken_until:
        BROKEN_RUNS[ctx.idempotency_key] += 1


class FaultReminder(Workflow):
    """Begins, waits 50 ms on a timer whose step calls a mail service, ends."""

    disk: str = ""

    @step(initial=True)
    def begin(self, ctx: Ctx) -> None: ...

    @after(begin)
    @timer(0.05)
    def remind(self, ctx: Ctx) -> None:
        count_run(ctx, self.disk)

    @after(remind)
    @step(final=True)
    def end(self, ctx: Ctx) -> None: ...


class FaultSync(Workflow):
    """Begins, then a plain step breaks the disk for a second the first time it runs, ends."""

    disk: str = ""

    @step(initial=True)
    def begin(self, ctx: Ctx) -> None: ...

    @after(begin)
    @step
    def sync(self, ctx: Ctx) -> None:
        disk = DISKS[self.disk]
        if not disk.armed:
            disk.armed = True
            disk.broken_until = time.monotonic() + 1.0
        count_run(ctx, self.disk)

    @after(sync)
    @step(final=True)
    def end(self, ctx: Ctx) -> None: ...


class FaultHealthy(Workflow):
    """Two async steps; each counts its runs."""

    @step(initial=True)
    async def a(self, ctx: Ctx) -> None:
        RUNS[ctx.idempotency_key] += 1
        await asyncio.sleep(0)

    @after(a)
    @step(final=True)
    async def b(self, ctx: Ctx) -> None:
        RUNS[ctx.idempotency_key] += 1
        await asyncio.sleep(0)


class FaultPoison(Workflow):
    """Its first step puts a str where a datetime is declared: its variables can no longer be stored."""

    when: dt.datetime | None = None

    @step(initial=True)
    async def stamp(self, ctx: Ctx) -> None:
        await asyncio.sleep(0)
        self.when = cast("dt.datetime", "2024-01-01T00:00:00")

    @after(stamp)
    @step(final=True)
    def done(self, ctx: Ctx) -> None: ...


PINNED: list[type[Workflow]] = [
    FaultClaim,
    FaultPage,
    FaultKid,
    FaultParent,
    FaultReminder,
    FaultSync,
    FaultHealthy,
    FaultPoison,
]
"""This module's workflows, pinned in every engine."""


def stored(engine: Engine, instance_id: str) -> InstanceStatus | None:
    """The status the store holds (committed), None when it holds no such instance."""
    info = engine.store.info(instance_id)
    return None if info is None else info.status


async def ends(engine: Engine, instance_ids: list[str]) -> list[InstanceStatus]:
    """The instances' terminal statuses, waiting at most GUARD for all; the status then of any still going."""
    waits = [asyncio.ensure_future(engine.wait_instance(i)) for i in instance_ids]
    await asyncio.wait(waits, timeout=GUARD)
    for fut in waits:
        fut.cancel()
    return [engine.info(i).status for i in instance_ids]


def kinds(history: list[HistoryEvent], kind: EventKind) -> int:
    """How many entries of *kind* the history has."""
    return sum(1 for e in history if e.kind is kind)


# ----------------------------------------------------------------------------- cancel


def test_a_cancel_whose_commit_fails_raises_store_error_or_completes_and_a_second_cancel_works(
    db_path: Path, run: Runner
) -> None:
    """Issue 8: cancel() whose commit fails once raises StoreError promptly (nothing changed) or cancels; never hangs.

    After a StoreError the instance still waits with its task open, and a second
    cancel() cancels it; either way the instance ends cancelled and its task too.
    """

    async def scenario() -> tuple[object, object, InstanceStatus | None, TaskStatus | None, str]:
        disk = Disk()
        async with open_engine(db_path, SystemClock(), workflows=PINNED, fault=disk) as engine:
            handle = await engine.start(FaultClaim())
            await asyncio.wait_for(handle.wait_idle(), GUARD)
            [task] = engine.tasks(user="ann")
            disk.fail_next = 1
            first: object
            second: object = "not needed"
            try:
                first = await asyncio.wait_for(engine.cancel(handle.instance_id, reason="withdrawn"), GUARD)
            except StoreError:
                info = engine.info(handle.instance_id)
                first = ("StoreError", info.status, [t.id for t in engine.tasks()] == [task.id])
                try:
                    second = await asyncio.wait_for(engine.cancel(handle.instance_id, reason="withdrawn"), GUARD)
                except TimeoutError:
                    second = "hung"
            except TimeoutError:
                first = "hung"
            stored_task = engine.store.task(task.id)
            return (
                first,
                second,
                stored(engine, handle.instance_id),
                None if stored_task is None else stored_task.status,
                f"{disk.failed} failed commit(s)",
            )

    first, second, status, task_status, failed = run(scenario())
    assert "1 failed commit(s)" == failed
    if isinstance(first, tuple):
        assert ("StoreError", S.WAITING, True) == first  # nothing changed
        assert S.CANCELLED == second
    else:
        assert S.CANCELLED == first
    assert (S.CANCELLED, TaskStatus.CANCELLED) == (status, task_status)


# ----------------------------------------------------------------------------- park


@pytest.mark.parametrize("workflow", [FaultClaim, FaultPage], ids=["human_task", "wait_for"])
def test_a_cancel_landing_while_the_instance_commits_its_park_is_applied(
    store: Store, workflow: type[Workflow], run: Runner
) -> None:
    """Issue 8: cancel() issued as the instance records its park (task or wait) returns cancelled; nothing stays open."""

    async def scenario() -> tuple[object, InstanceStatus | None, list[str]]:
        async with Engine(store, workflows=PINNED) as engine:
            cancels: list[asyncio.Future[InstanceStatus]] = []

            def on_event(instance_id: str, event: HistoryEvent) -> None:
                if event.kind is EventKind.STATUS_CHANGED and event.detail == "waiting" and not cancels:
                    cancels.append(asyncio.ensure_future(engine.cancel(instance_id, reason="withdrawn")))

            engine.subscribe(on_event)
            handle = await engine.start(workflow())
            await eventually(lambda: bool(cancels))
            outcome: object
            try:
                outcome = await asyncio.wait_for(cancels[0], GUARD)
            except TimeoutError:
                outcome = "hung"
            return outcome, stored(engine, handle.instance_id), [t.id for t in engine.tasks()]

    assert (S.CANCELLED, S.CANCELLED, []) == run(scenario())


# ----------------------------------------------------------------------------- child start


def test_a_failed_commit_starting_a_child_does_not_strand_the_parent(db_path: Path, run: Runner) -> None:
    """Issue 8: the commit that parks a parent and starts its child fails once: the child still runs, the parent completes."""

    async def scenario() -> tuple[int, object, list[tuple[str, InstanceStatus]], int]:
        disk = new_disk("child-start")
        async with open_engine(db_path, SystemClock(), workflows=PINNED, fault=disk) as engine:
            handle = await engine.start(FaultParent(disk="child-start"))
            outcome: object
            try:
                outcome = (await asyncio.wait_for(engine.wait_instance(handle.instance_id), GUARD)).value
            except TimeoutError:
                outcome = (
                    f"still {engine.info(handle.instance_id).status.value} at {engine.info(handle.instance_id).step}"
                )
            children = [(c.workflow, c.status) for c in engine.store.children(handle.instance_id)]
            started = kinds(engine.history(handle.instance_id), EventKind.CHILD_STARTED)
            return disk.failed, outcome, children, started

    assert (1, "completed", [("FaultKid", S.COMPLETED)], 1) == run(scenario())


def test_a_parent_whose_child_start_failed_completes_across_a_restart(db_path: Path, run: Runner) -> None:
    """Issue 8: after the failed child start, a parent stored as waiting has its child stored; a restarted engine finishes it.

    The first engine runs until the store holds the parent as waiting on its
    child (or finished); the children stored then must include that child. The
    engine stops, a new one opens the file and recovers, and the parent completes.
    """

    async def first_engine() -> tuple[str, InstanceStatus | None, list[str]]:
        disk = new_disk("child-restart")
        async with open_engine(db_path, SystemClock(), workflows=PINNED, fault=disk) as engine:
            handle = await engine.start(FaultParent(disk="child-restart"))
            await asyncio.wait_for(eventually(lambda: disk.failed > 0), GUARD)
            parked = (S.WAITING, S.COMPLETED)
            seen: list[tuple[InstanceStatus | None, list[str]]] = []

            def parked_now() -> bool:
                # Read together: the parent moves on (running again, then completed) once its child ends.
                status = stored(engine, handle.instance_id)
                seen.append((status, [c.workflow for c in engine.store.children(handle.instance_id)]))
                return status in parked

            await asyncio.wait_for(eventually(parked_now), GUARD)
            status, children = seen[-1]
            return handle.instance_id, status, children

    async def second_engine(parent_id: str) -> object:
        async with open_engine(db_path, SystemClock(), workflows=PINNED) as engine:
            await engine.recover()
            try:
                return (await asyncio.wait_for(engine.wait_instance(parent_id), GUARD)).value
            except TimeoutError:
                return f"still {engine.info(parent_id).status.value} at {engine.info(parent_id).step}"

    parent_id, status, children = run(first_engine())
    assert status in (S.WAITING, S.COMPLETED)
    assert ["FaultKid"] == children
    assert "completed" == run(second_engine(parent_id))


# ----------------------------------------------------------------------------- timer


@pytest.mark.parametrize("kind", ["timer_step", "plain_step"])
def test_while_commits_fail_a_step_is_not_rerun_in_a_tight_loop(db_path: Path, kind: str, run: Runner) -> None:
    """Issue 8: commits fail for a second as a step's completion is committed: its body runs at most 10 times then.

    Failed commits back off (capped exponential backoff), where a tight loop
    would call the step's services hundreds of times a second. Once the disk is
    back the instance completes, the step recorded as completed once.
    """

    async def scenario() -> tuple[dict[str, int], object, dict[str | None, int]]:
        name = f"storm-{kind}"
        disk = new_disk(name)
        async with open_engine(db_path, SystemClock(), workflows=PINNED, fault=disk) as engine:
            if kind == "timer_step":
                reminder = await engine.start(FaultReminder(disk=name))
                await asyncio.wait_for(reminder.wait_idle(), GUARD)  # parked on its 50 ms timer
                disk.broken_until = time.monotonic() + 1.0  # then the disk is full for a second
                instance_id = reminder.instance_id
            else:
                instance_id = (await engine.start(FaultSync(disk=name))).instance_id
            outcome: object
            try:
                outcome = (await asyncio.wait_for(engine.wait_instance(instance_id), GUARD + 1.0)).value
            except TimeoutError:
                outcome = f"still {engine.info(instance_id).status.value}"
            broken = {k.partition(":")[2]: n for k, n in BROKEN_RUNS.items() if k.startswith(instance_id)}
            return broken, outcome, completions(engine.history(instance_id))

    broken, outcome, done = run(scenario())
    [(visit, runs)] = broken.items()
    assert runs <= 10, f"the step body of visit {visit} ran {runs} times in the second commits failed"
    assert "completed" == outcome
    assert {"begin": 1, "remind" if kind == "timer_step" else "sync": 1, "end": 1} == done


# ----------------------------------------------------------------------------- group commit


def test_an_instance_that_cannot_be_stored_does_not_fail_the_commits_batched_with_it(
    db_path: Path, run: Runner
) -> None:
    """Issue 8: one instance's unstorable variables never fail its batch-mates' start() or re-run their steps.

    The poisoned instance ends failed, not retrying forever; every healthy
    instance completes with each step body run once.
    """

    async def scenario() -> tuple[int, int, dict[str, int], list[InstanceStatus], object]:
        RUNS.clear()
        async with open_engine(db_path, SystemClock(), workflows=PINNED) as engine:
            poison = await engine.start(FaultPoison())
            healthy: list[str] = []
            start_errors = 0
            for _ in range(40):  # waves of starts while the poisoned instance commits (and maybe retries)
                started = await asyncio.gather(
                    *(engine.start(FaultHealthy()) for _ in range(5)), return_exceptions=True
                )
                for one in started:
                    if isinstance(one, StoreError):
                        start_errors += 1
                    elif isinstance(one, BaseException):
                        raise one
                    else:
                        healthy.append(one.instance_id)
                await asyncio.sleep(0.002)
            statuses = await ends(engine, healthy)
            poisoned: object
            try:
                poisoned = await asyncio.wait_for(engine.wait_instance(poison.instance_id), GUARD)
            except TimeoutError:
                poisoned = f"still {engine.info(poison.instance_id).status.value}"
            reruns = {k: n for k, n in RUNS.items() if n != 1}
            return start_errors, len(healthy), reruns, statuses, poisoned

    start_errors, started, reruns, statuses, poisoned = run(scenario())
    assert 0 == start_errors
    assert {} == reruns
    assert [S.COMPLETED] * started == statuses
    assert S.FAILED == poisoned


# ----------------------------------------------------------------------------- task at park


def test_completing_a_task_as_soon_as_it_is_visible_works(store: Store, run: Runner) -> None:
    """Issue 8: a task listed by tasks() can be completed at once, while its instance is finishing its park commit.

    Clerks complete each task the moment it shows up: no completion raises
    TaskAlreadyCompleted (nobody else completed it), and every claim completes.
    """

    async def scenario() -> tuple[dict[str, str], list[InstanceStatus]]:
        async with Engine(store, workflows=PINNED) as engine:
            handles = await asyncio.gather(*(engine.start(FaultClaim()) for _ in range(10)))
            refused: dict[str, str] = {}
            completed: set[str] = set()

            async def clerk() -> None:
                while len(completed) < len(handles):
                    for task in engine.tasks(user="ann"):
                        try:
                            await engine.complete_task(task.id, user="ann", form=FaultVerdict(ok=True))
                            completed.add(task.id)
                        except TaskAlreadyCompleted as exc:  # noted; the task is tried again while it is open
                            refused.setdefault(task.id, str(exc).partition(": ")[2])
                    await asyncio.sleep(0)

            await asyncio.wait_for(clerk(), GUARD)
            return refused, await ends(engine, [h.instance_id for h in handles])

    refused, statuses = run(scenario())
    assert {} == refused
    assert [S.COMPLETED] * 10 == statuses
