"""
Child workflows in a SQLite file: in fork branches, cancelled, retried and nested, across engine restarts (issue 5).

A restart here is what a deployment does: the engine stops (its steps in flight
are cancelled), the store is closed, and a new ``SqliteStore`` and ``Engine``
open the same file and ``recover()``. A parent parked on its child, and the
child parked on a clerk's task, come back where they were; what the engine
guarantees for children (``dsl/README.md``, "Child workflows") then holds on
the stored data: a failing sibling branch cancels the child in flight (its task
with it) and the completed steps are undone; cancelling the parent cancels its
waiting child and that child's task; a retry of a subflow step whose child failed
starts a new child ``<id>/<visit>.2``; and a child with a child of its own
completes, and is compensated, through both levels.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
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
    TaskError,
    TaskStatus,
    VirtualClock,
    Workflow,
    WorkflowRegistry,
    after,
    human_task,
    step,
    subflow,
)
from tests.integration.helpers import completions, eventually, of_kind, open_engine

if TYPE_CHECKING:
    from statemachine_orch import Engine, HistoryEvent
    from tests.conftest import Runner

K = EventKind
S = InstanceStatus


@attrs.define
class Probe:
    """What one test's steps report: their effects and undos in the order they ran, and a gate to hold a step."""

    log: list[str] = attrs.field(factory=list[str])
    gate: asyncio.Event | None = None


_PROBES: dict[str, Probe] = {}
_tokens = itertools.count()


def new_probe() -> tuple[str, Probe]:
    """A fresh probe, and the key the workflows' ``probe`` fields find it under."""
    key = f"subflow-sqlite-probe-{next(_tokens)}"
    probe = _PROBES[key] = Probe()
    return key, probe


def log(wf: Any, entry: str) -> None:
    """Note an effect (or undo) of a step of *wf* in its probe's log."""
    _PROBES[wf.probe].log.append(entry)


def assert_once_each(history: list[HistoryEvent], who: str) -> None:
    """No step completed twice, no transition applied twice, no compensation completed twice."""
    done = [e.step for e in of_kind(history, K.STEP_COMPLETED)]
    assert len(done) == len(set(done)), f"{who}: a step completed twice: {done}"
    moves = [(e.step, e.detail) for e in of_kind(history, K.TRANSITION)]
    assert len(moves) == len(set(moves)), f"{who}: a transition applied twice: {moves}"
    undone = [e.step for e in of_kind(history, K.COMPENSATION_COMPLETED)]
    assert len(undone) == len(set(undone)), f"{who}: a compensation completed twice: {undone}"


def stored(db_path: Path, workflows: Sequence[type[Workflow]], *ids: str) -> list[tuple[S, list[HistoryEvent]]]:
    """Each instance's status and history as the file holds them, read by a fresh store."""
    out: list[tuple[S, list[HistoryEvent]]] = []
    with SqliteStore(db_path) as store:
        store.attach(WorkflowRegistry(workflows))
        for iid in ids:
            info = store.info(iid)
            assert info is not None, iid
            out.append((info.status, store.history(iid)))
    return out


def children_of(engine: Engine, iid: str) -> list[tuple[str, S]]:
    """The instance's children as ``(id, status)``, oldest first."""
    return [(c.id, c.status) for c in engine.children(iid)]


# ---------------------------------------------------------------- a child in a fork branch


@attrs.frozen
class ScPacked:
    """The packer's form."""

    ok: bool = True


class ScBranchParcel(Workflow, name="ScBranchParcel", version="1"):
    """The child: pack (undoable), a packer's check, then seal."""

    probe: str

    @step(initial=True)
    def pack(self, ctx: Ctx) -> None:
        log(self, "pack")

    @pack.compensation
    def unpack(self, ctx: Ctx) -> None:
        log(self, "unpack")

    @after(pack)
    @human_task(assignee="packer", form=ScPacked)
    def check(self, ctx: Ctx, form: ScPacked) -> None: ...

    @after(check)
    @step(final=True)
    def seal(self, ctx: Ctx) -> None:
        log(self, "seal")


class ScForkOrder(Workflow, name="ScForkOrder", version="1"):
    """
    reserve (undoable), then a fork: ``label`` (undoable) then ``ship`` (the child);

    and ``charge`` (undoable) then ``verify`` (an async step the test holds, failing
    for good); ``finish`` joins them.
    """

    probe: str

    @step(initial=True)
    def reserve(self, ctx: Ctx) -> None:
        log(self, "reserve")

    @reserve.compensation
    def release(self, ctx: Ctx) -> None:
        log(self, "release")

    @after(reserve)
    @step(fork=True)
    def split(self, ctx: Ctx) -> None: ...

    @after(split)
    @step
    def label(self, ctx: Ctx) -> None:
        log(self, "label")

    @label.compensation
    def unlabel(self, ctx: Ctx) -> None:
        log(self, "unlabel")

    @after(label)
    @subflow(ScBranchParcel)
    def ship(self, ctx: Ctx) -> ScBranchParcel:
        return ScBranchParcel(probe=self.probe)

    @after(split)
    @step
    def charge(self, ctx: Ctx) -> None:
        log(self, "charge")

    @charge.compensation
    def refund(self, ctx: Ctx) -> None:
        log(self, "refund")

    @after(charge)
    @step
    async def verify(self, ctx: Ctx) -> None:
        gate = _PROBES[self.probe].gate
        if gate is not None:
            await gate.wait()
        msg = "fraud suspected"
        raise NonRetryableError(msg)

    @after(ship, verify)
    @step(final=True)
    def finish(self, ctx: Ctx) -> None: ...


FORK: list[type[Workflow]] = [ScForkOrder, ScBranchParcel]


def test_a_failing_sibling_branch_cancels_the_waiting_child_after_a_restart(db_path: Path, run: Runner) -> None:
    """
    The child in flight in one branch is cancelled when the sibling branch fails for good, after a restart.

    The first engine stops with the child waiting on the packer's task and the
    sibling's ``verify`` in flight; the second recovers both, ``verify`` runs again
    and fails: the child's task is cancelled, the child undoes its ``pack`` and
    ends ``cancelled``, and the parent undoes its completed steps, newest first.
    """
    clock = VirtualClock(autojump=False)
    key, probe = new_probe()
    probe.gate = asyncio.Event()

    async def scenario() -> tuple[str, str]:
        async with open_engine(db_path, clock, workflows=FORK) as engine:
            await engine.recover()
            handle = await engine.start(ScForkOrder(probe=key))
            iid = handle.instance_id
            await eventually(lambda: len(engine.tasks(user="packer")) == 1)
            await eventually(lambda: "charge" in probe.log)
            [(child, status)] = children_of(engine, iid)
            assert S.WAITING == status
            # Stop while the child waits on its task and verify is held in flight.
        probe.gate = None
        async with open_engine(db_path, clock, workflows=FORK) as engine:
            info = engine.info(iid)
            assert (True, ["ship", "verify"]) == (info.in_fork, sorted(info.steps))
            await engine.recover()
            assert S.FAILED == await engine.wait_instance(iid)
            assert S.CANCELLED == await engine.wait_instance(child)
            await engine.wait_idle()
            assert [] == engine.tasks(user="packer"), "the child's task was cancelled with it"
            assert "verify: NonRetryableError: fraud suspected" in str(engine.info(iid).error)
        return iid, child

    iid, child = run(scenario())
    [(parent_status, parent), (child_status, child_history)] = stored(db_path, FORK, iid, child)
    assert (S.FAILED, S.CANCELLED) == (parent_status, child_status)
    assert_once_each(parent, "parent")
    assert_once_each(child_history, "child")
    assert [child] == [e.detail for e in of_kind(parent, K.CHILD_STARTED)]
    assert [] == of_kind(parent, K.CHILD_FINISHED), "the parent left its fork before the child ended"
    assert [] == of_kind(parent, K.JOINED)
    # The child: pack completed and undone once, its task cancelled, seal never ran.
    assert {"pack": 1} == completions(child_history)
    assert ["pack"] == [e.step for e in of_kind(child_history, K.COMPENSATION_COMPLETED)]
    assert (1, 0, 1) == tuple(
        len(of_kind(child_history, k)) for k in (K.TASK_CREATED, K.TASK_COMPLETED, K.TASK_CANCELLED)
    )
    # The parent: its completed steps undone newest first; the unfinished subflow step is not in its saga.
    done = [e.step for e in of_kind(parent, K.STEP_COMPLETED)]
    assert {"reserve", "split", "label", "charge"} == set(done)
    undo = {"reserve": "release", "label": "unlabel", "charge": "refund"}
    newest_first = [s for s in reversed(done) if s in undo]
    assert newest_first == [e.step for e in of_kind(parent, K.COMPENSATION_COMPLETED)]
    assert 1 == probe.log.count("unpack")
    assert "seal" not in probe.log
    assert [undo[s] for s in newest_first] == [e for e in probe.log if e in undo.values()]
    with SqliteStore(db_path) as store:
        store.attach(WorkflowRegistry(FORK))
        assert [] == store.open_tasks(None, frozenset(), child), "the stored task is cancelled too"


def test_a_failing_sibling_branch_undoes_the_child_that_completed_in_its_branch(db_path: Path, run: Runner) -> None:
    """A child that completed in its branch before the sibling failed is compensated: it undoes itself, once."""
    clock = VirtualClock(autojump=False)
    key, probe = new_probe()
    probe.gate = asyncio.Event()

    async def scenario() -> tuple[str, str]:
        async with open_engine(db_path, clock, workflows=FORK) as engine:
            await engine.recover()
            handle = await engine.start(ScForkOrder(probe=key))
            iid = handle.instance_id
            await eventually(lambda: len(engine.tasks(user="packer")) == 1)
            [task] = engine.tasks(user="packer")
            await engine.complete_task(task.id, user="packer", form=ScPacked())
            [(child, _)] = children_of(engine, iid)
            assert S.COMPLETED == await engine.wait_instance(child)
            await eventually(lambda: any(e.kind is K.BRANCH_DONE for e in engine.history(iid)))
        probe.gate = None
        async with open_engine(db_path, clock, workflows=FORK) as engine:
            await engine.recover()
            assert S.FAILED == await engine.wait_instance(iid)
            assert S.CANCELLED == await engine.wait_instance(child)
        return iid, child

    iid, child = run(scenario())
    [(_, parent), (_, child_history)] = stored(db_path, FORK, iid, child)
    assert_once_each(parent, "parent")
    assert_once_each(child_history, "child")
    assert [f"{child} completed"] == [e.detail for e in of_kind(parent, K.CHILD_FINISHED)]
    done = [e.step for e in of_kind(parent, K.STEP_COMPLETED)]
    undo = {"reserve", "label", "charge", "ship"}
    assert [s for s in reversed(done) if s in undo] == [e.step for e in of_kind(parent, K.COMPENSATION_COMPLETED)]
    assert ["pack"] == [e.step for e in of_kind(child_history, K.COMPENSATION_COMPLETED)]
    assert 1 == probe.log.count("unpack")
    assert probe.log.index("unpack") < probe.log.index("unlabel"), "the child, newer than label, is undone first"


# ---------------------------------------------------------------- cancelling a parent whose child waits


class ScCancelOrder(Workflow, name="ScCancelOrder", version="1"):
    """reserve (undoable), then the child (waiting on the packer), then done."""

    probe: str

    @step(initial=True)
    def reserve(self, ctx: Ctx) -> None:
        log(self, "reserve")

    @reserve.compensation
    def release(self, ctx: Ctx) -> None:
        log(self, "release")

    @after(reserve)
    @subflow(ScBranchParcel)
    def ship(self, ctx: Ctx) -> ScBranchParcel:
        return ScBranchParcel(probe=self.probe)

    @after(ship)
    @step(final=True)
    def done(self, ctx: Ctx) -> None: ...


CANCEL: list[type[Workflow]] = [ScCancelOrder, ScBranchParcel]


@pytest.mark.parametrize("compensate", [True, False], ids=["compensate", "abandon"])
def test_cancelling_a_parent_after_a_restart_cancels_its_waiting_child_and_the_childs_task(
    db_path: Path, run: Runner, compensate: bool
) -> None:
    """The parent and its child waiting on a task survive a restart; cancelling the parent then ends both."""
    clock = VirtualClock(autojump=False)
    key, probe = new_probe()

    async def scenario() -> tuple[str, str, str]:
        async with open_engine(db_path, clock, workflows=CANCEL) as engine:
            await engine.recover()
            handle = await engine.start(ScCancelOrder(probe=key))
            iid = handle.instance_id
            await eventually(lambda: len(engine.tasks(user="packer")) == 1)
            [task] = engine.tasks(user="packer")
            [(child, _)] = children_of(engine, iid)
            await engine.wait_idle()
        async with open_engine(db_path, clock, workflows=CANCEL) as engine:
            await engine.recover()
            assert (S.WAITING, S.WAITING) == (engine.info(iid).status, engine.info(child).status)
            assert [task.id] == [t.id for t in engine.tasks(user="packer")]
            assert S.CANCELLED == await engine.cancel(iid, reason="customer left", compensate=compensate)
            assert S.CANCELLED == await engine.wait_instance(child)
            await engine.wait_idle()
            assert [] == engine.tasks(user="packer")
            with pytest.raises(TaskError):
                await engine.complete_task(task.id, user="packer", form=ScPacked())
        return iid, child, task.id

    iid, child, task_id = run(scenario())

    # A third engine: nothing left to run, the task stays cancelled.
    async def third() -> list[str]:
        async with open_engine(db_path, clock, workflows=CANCEL) as engine:
            report = await engine.recover()
            assert 0 == report.resumed
            task = engine.store.task(task_id)
            assert task is not None
            assert TaskStatus.CANCELLED == task.status
            return [i.status.value for i in engine.instances()]

    assert ["cancelled", "cancelled"] == run(third())
    [(_, parent), (_, child_history)] = stored(db_path, CANCEL, iid, child)
    assert_once_each(parent, "parent")
    assert_once_each(child_history, "child")
    assert [child] == [e.detail for e in of_kind(parent, K.CHILD_STARTED)]
    assert 1 == len(of_kind(child_history, K.TASK_CANCELLED))
    assert [] == of_kind(child_history, K.TASK_COMPLETED)
    expected_undone: tuple[list[str], list[str]] = (["reserve"], ["pack"]) if compensate else ([], [])
    assert expected_undone == (
        [e.step for e in of_kind(parent, K.COMPENSATION_COMPLETED)],
        [e.step for e in of_kind(child_history, K.COMPENSATION_COMPLETED)],
    )
    # The order of the child's undo and the parent's is not asserted here: see the xfail tests below.
    assert (["release", "unpack"] if compensate else []) == sorted(e for e in probe.log if e in ("unpack", "release"))


# ---------------------------------------------------------------- a parent does not wait for the child it cancels

SLOW_UNDO = 0.2
"""Real seconds the slow child's undo takes: far longer than its parent needs to end."""


class ScSlowParcel(Workflow, name="ScSlowParcel", version="1"):
    """The child: pack, undone by a slow async unpack; the packer's check; seal."""

    probe: str

    @step(initial=True)
    def pack(self, ctx: Ctx) -> None:
        log(self, "pack")

    @pack.compensation
    async def unpack(self, ctx: Ctx) -> None:
        await asyncio.sleep(SLOW_UNDO)
        log(self, "unpack")

    @after(pack)
    @human_task(assignee="packer", form=ScPacked)
    def check(self, ctx: Ctx, form: ScPacked) -> None: ...

    @after(check)
    @step(final=True)
    def seal(self, ctx: Ctx) -> None: ...


class ScSlowOrder(Workflow, name="ScSlowOrder", version="1"):
    """reserve (undoable), the slow child, done."""

    probe: str

    @step(initial=True)
    def reserve(self, ctx: Ctx) -> None:
        log(self, "reserve")

    @reserve.compensation
    def release(self, ctx: Ctx) -> None:
        log(self, "release")

    @after(reserve)
    @subflow(ScSlowParcel)
    def ship(self, ctx: Ctx) -> ScSlowParcel:
        return ScSlowParcel(probe=self.probe)

    @after(ship)
    @step(final=True)
    def done(self, ctx: Ctx) -> None: ...


class ScSlowForkOrder(Workflow, name="ScSlowForkOrder", version="1"):
    """reserve (undoable), then a fork: the slow child, and ``verify`` (held by the test, then failing)."""

    probe: str

    @step(initial=True)
    def reserve(self, ctx: Ctx) -> None:
        log(self, "reserve")

    @reserve.compensation
    def release(self, ctx: Ctx) -> None:
        log(self, "release")

    @after(reserve)
    @step(fork=True)
    def split(self, ctx: Ctx) -> None: ...

    @after(split)
    @subflow(ScSlowParcel)
    def ship(self, ctx: Ctx) -> ScSlowParcel:
        return ScSlowParcel(probe=self.probe)

    @after(split)
    @step
    async def verify(self, ctx: Ctx) -> None:
        gate = _PROBES[self.probe].gate
        if gate is not None:
            await gate.wait()
        msg = "fraud suspected"
        raise NonRetryableError(msg)

    @after(ship, verify)
    @step(final=True)
    def finish(self, ctx: Ctx) -> None: ...


SLOW: list[type[Workflow]] = [ScSlowOrder, ScSlowForkOrder, ScSlowParcel]


def test_cancelling_a_parent_waits_for_its_child_to_be_undone_first(db_path: Path, run: Runner) -> None:
    """engine.cancel(parent) returns once the child it waited on is cancelled; the child's undo runs first."""
    clock = VirtualClock(autojump=False)
    key, probe = new_probe()

    async def scenario() -> tuple[S, S]:
        async with open_engine(db_path, clock, workflows=SLOW) as engine:
            await engine.recover()
            handle = await engine.start(ScSlowOrder(probe=key))
            iid = handle.instance_id
            await eventually(lambda: len(engine.tasks(user="packer")) == 1)
            [(child, _)] = children_of(engine, iid)
            await engine.cancel(iid)
            child_then = engine.info(child).status
            await engine.wait_instance(child)
            return engine.info(iid).status, child_then

    assert (S.CANCELLED, S.CANCELLED) == run(scenario()), "cancel() returned before the child was cancelled"
    assert ["reserve", "pack", "unpack", "release"] == probe.log, "the child's (newer) undo before the parent's"


def test_a_failing_sibling_branch_waits_for_the_cancelled_child_before_the_parent_ends(
    db_path: Path, run: Runner
) -> None:
    """The parent of a child cancelled by a failing sibling branch ends only after the child; the child's undo first."""
    clock = VirtualClock(autojump=False)
    key, probe = new_probe()
    probe.gate = asyncio.Event()

    async def scenario() -> tuple[S, S]:
        async with open_engine(db_path, clock, workflows=SLOW) as engine:
            await engine.recover()
            handle = await engine.start(ScSlowForkOrder(probe=key))
            iid = handle.instance_id
            await eventually(lambda: len(engine.tasks(user="packer")) == 1)
            [(child, _)] = children_of(engine, iid)
            assert probe.gate is not None
            probe.gate.set()
            status = await engine.wait_instance(iid)
            child_then = engine.info(child).status
            await engine.wait_instance(child)
            return status, child_then

    assert (S.FAILED, S.CANCELLED) == run(scenario()), "the parent ended before its child was cancelled"
    assert ["reserve", "pack", "unpack", "release"] == probe.log, "the child's (newer) undo before the parent's"


# ---------------------------------------------------------------- retrying a subflow step


class ScRetryParcel(Workflow, name="ScRetryParcel", version="1"):
    """The child: pack (undoable), then seal, which fails for good on the parent's first attempt."""

    probe: str
    attempt: int
    tracking: str = ""

    @step(initial=True)
    def pack(self, ctx: Ctx) -> None:
        log(self, f"pack {self.attempt}")

    @pack.compensation
    def unpack(self, ctx: Ctx) -> None:
        log(self, f"unpack {self.attempt}")

    @after(pack)
    @step(final=True)
    def seal(self, ctx: Ctx) -> None:
        if self.attempt == 1:
            msg = "label printer jammed"
            raise NonRetryableError(msg)
        self.tracking = f"T-{self.attempt}"


class ScRetryOrder(Workflow, name="ScRetryOrder", version="1"):
    """ship (the child, retried after 60 s when it fails), then bill (fails for good when asked to)."""

    probe: str
    fail_billing: bool = False
    tracking: str = ""

    @step(initial=True)
    def pick(self, ctx: Ctx) -> None: ...

    @after(pick)
    @subflow(ScRetryParcel, retry=Retry(attempts=3, initial=60.0))
    def ship(self, ctx: Ctx) -> ScRetryParcel:
        return ScRetryParcel(probe=self.probe, attempt=ctx.attempt)

    @ship.on_result
    def shipped(self, ctx: Ctx, child: ScRetryParcel) -> None:
        self.tracking = child.tracking

    @after(ship)
    @step(final=True)
    def bill(self, ctx: Ctx) -> None:
        if self.fail_billing:
            msg = "billing is down"
            raise NonRetryableError(msg)


RETRY: list[type[Workflow]] = [ScRetryOrder, ScRetryParcel]


@pytest.mark.parametrize("fail_billing", [False, True], ids=["completes", "compensates"])
def test_a_retry_after_a_failed_child_starts_a_new_child_dot_2_across_a_restart(
    db_path: Path, run: Runner, fail_billing: bool
) -> None:
    """
    The failed child stays; the retry, due while no engine ran, starts ``<id>/<visit>.2``.

    Compensating the parent later undoes the completed ``.2`` only: the failed
    first child undid its own ``pack`` already.
    """
    clock = VirtualClock(autojump=False)
    key, probe = new_probe()

    async def scenario() -> tuple[str, str]:
        async with open_engine(db_path, clock, workflows=RETRY) as engine:
            await engine.recover()
            handle = await engine.start(ScRetryOrder(probe=key, fail_billing=fail_billing))
            iid = handle.instance_id
            await eventually(lambda: any(e.kind is K.RETRY_SCHEDULED for e in engine.history(iid)))
            await engine.wait_idle()
            [(first, status)] = children_of(engine, iid)
            assert S.FAILED == status
            assert engine.info(iid).wake_at is not None, "parked on the retry's backoff"
        clock.advance(61.0)
        async with open_engine(db_path, clock, workflows=RETRY) as engine:
            await engine.recover()
            status, wf = await engine.wait_result(iid)
            assert (S.FAILED if fail_billing else S.COMPLETED) == status
            assert "T-2" == wf.tracking, "the result of the second child"
            children = children_of(engine, iid)
            second = f"{first}.2"
            assert [(first, S.FAILED), (second, S.CANCELLED if fail_billing else S.COMPLETED)] == children
            assert [iid, iid] == [c.parent for c in engine.children(iid)]
        return iid, first

    iid, first = run(scenario())
    second = f"{first}.2"
    assert first.startswith(f"{iid}/")
    assert "." not in first.removeprefix(f"{iid}/"), "the first attempt's child has no attempt suffix"
    [(_, parent), (_, h1), (_, h2)] = stored(db_path, RETRY, iid, first, second)
    for who, history in (("parent", parent), ("first", h1), ("second", h2)):
        assert_once_each(history, who)
    assert [first, second] == [e.detail for e in of_kind(parent, K.CHILD_STARTED)]
    assert [(1, f"{first} failed"), (2, f"{second} completed")] == [
        (e.attempt, e.detail) for e in of_kind(parent, K.CHILD_FINISHED)
    ]
    assert ["pack"] == [e.step for e in of_kind(h1, K.COMPENSATION_COMPLETED)]
    if fail_billing:
        assert ["ship"] == [e.step for e in of_kind(parent, K.COMPENSATION_COMPLETED)]
        assert ["pack"] == [e.step for e in of_kind(h2, K.COMPENSATION_COMPLETED)]
        assert ["pack 1", "unpack 1", "pack 2", "unpack 2"] == probe.log
    else:
        assert [] == of_kind(h2, K.COMPENSATION_COMPLETED)
        assert ["pack 1", "unpack 1", "pack 2"] == probe.log


# ---------------------------------------------------------------- nested children


class ScNestLeaf(Workflow, name="ScNestLeaf", version="1"):
    """The grandchild: pack (undoable), the packer's check, then seal."""

    probe: str
    tracking: str = ""

    @step(initial=True)
    def pack(self, ctx: Ctx) -> None:
        log(self, "leaf pack")

    @pack.compensation
    def unpack(self, ctx: Ctx) -> None:
        log(self, "leaf unpack")

    @after(pack)
    @human_task(assignee="packer", form=ScPacked)
    def check(self, ctx: Ctx, form: ScPacked) -> None: ...

    @after(check)
    @step(final=True)
    def seal(self, ctx: Ctx) -> None:
        self.tracking = "T-leaf"


class ScNestMid(Workflow, name="ScNestMid", version="1"):
    """The child: prep (undoable), the grandchild, then close."""

    probe: str
    tracking: str = ""

    @step(initial=True)
    def prep(self, ctx: Ctx) -> None:
        log(self, "mid prep")

    @prep.compensation
    def unprep(self, ctx: Ctx) -> None:
        log(self, "mid unprep")

    @after(prep)
    @subflow(ScNestLeaf)
    def inner(self, ctx: Ctx) -> ScNestLeaf:
        return ScNestLeaf(probe=self.probe)

    @inner.on_result
    def inner_done(self, ctx: Ctx, child: ScNestLeaf) -> None:
        self.tracking = f"{child.tracking}+mid"

    @after(inner)
    @step(final=True)
    def close(self, ctx: Ctx) -> None:
        log(self, "mid close")


class ScNestTop(Workflow, name="ScNestTop", version="1"):
    """The parent: reserve (undoable), the child, then bill (fails for good when asked to)."""

    probe: str
    fail_billing: bool = False
    tracking: str = ""

    @step(initial=True)
    def reserve(self, ctx: Ctx) -> None:
        log(self, "top reserve")

    @reserve.compensation
    def release(self, ctx: Ctx) -> None:
        log(self, "top release")

    @after(reserve)
    @subflow(ScNestMid)
    def outer(self, ctx: Ctx) -> ScNestMid:
        return ScNestMid(probe=self.probe)

    @outer.on_result
    def outer_done(self, ctx: Ctx, child: ScNestMid) -> None:
        self.tracking = f"{child.tracking}+top"

    @after(outer)
    @step(final=True)
    def bill(self, ctx: Ctx) -> None:
        if self.fail_billing:
            msg = "billing is down"
            raise NonRetryableError(msg)


NEST: list[type[Workflow]] = [ScNestTop, ScNestMid, ScNestLeaf]


@pytest.mark.parametrize("fail_billing", [False, True], ids=["completes", "compensates"])
def test_nested_children_complete_and_compensate_through_two_levels_across_a_restart(
    db_path: Path, run: Runner, fail_billing: bool
) -> None:
    """
    A child with a child of its own: the grandchild waits on a task across a restart, then all three end.

    Results travel up both levels; when the top's last step fails, the child is
    undone, which undoes the grandchild first (newest), then the child's own
    step, then the top's: each once.
    """
    clock = VirtualClock(autojump=False)
    key, probe = new_probe()

    async def scenario() -> tuple[str, str, str]:
        async with open_engine(db_path, clock, workflows=NEST) as engine:
            await engine.recover()
            handle = await engine.start(ScNestTop(probe=key, fail_billing=fail_billing))
            top = handle.instance_id
            await eventually(lambda: len(engine.tasks(user="packer")) == 1)
            [(mid, _)] = children_of(engine, top)
            [(leaf, _)] = children_of(engine, mid)
            await engine.wait_idle()
        async with open_engine(db_path, clock, workflows=NEST) as engine:
            await engine.recover()
            assert [S.WAITING] * 3 == [engine.info(i).status for i in (top, mid, leaf)]
            assert (top, mid) == (engine.info(mid).parent, engine.info(leaf).parent)
            [task] = engine.tasks(user="packer")
            assert leaf == task.instance_id
            await engine.complete_task(task.id, user="packer", form=ScPacked())
            status, wf = await engine.wait_result(top)
            expected = (S.FAILED, S.CANCELLED, S.CANCELLED) if fail_billing else (S.COMPLETED,) * 3
            assert expected == (status, await engine.wait_instance(mid), await engine.wait_instance(leaf))
            assert "T-leaf+mid+top" == wf.tracking, "the results travelled up both levels"
        return top, mid, leaf

    top, mid, leaf = run(scenario())
    assert mid.startswith(f"{top}/")
    assert leaf.startswith(f"{mid}/")
    [(_, h_top), (_, h_mid), (_, h_leaf)] = stored(db_path, NEST, top, mid, leaf)
    for who, history in (("top", h_top), ("mid", h_mid), ("leaf", h_leaf)):
        assert_once_each(history, who)
    assert [mid] == [e.detail for e in of_kind(h_top, K.CHILD_STARTED)]
    assert [leaf] == [e.detail for e in of_kind(h_mid, K.CHILD_STARTED)]
    assert [f"{leaf} completed"] == [e.detail for e in of_kind(h_mid, K.CHILD_FINISHED)]
    assert [f"{mid} completed"] == [e.detail for e in of_kind(h_top, K.CHILD_FINISHED)]
    undone = [[e.step for e in of_kind(h, K.COMPENSATION_COMPLETED)] for h in (h_top, h_mid, h_leaf)]
    forward = ["top reserve", "mid prep", "leaf pack", "mid close"]
    if fail_billing:
        assert [["outer", "reserve"], ["inner", "prep"], ["pack"]] == undone
        assert [*forward, "leaf unpack", "mid unprep", "top release"] == probe.log
    else:
        assert [[], [], []] == undone
        assert forward == probe.log
