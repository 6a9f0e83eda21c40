"""
Parallel forks at run time: what the engine guarantees for ``@step(fork=True)`` and its join.

A fork takes all its enabled edges at once (unguarded: parallel; guarded:
inclusive), its branches run concurrently under the instance's worker, and the
join runs once, after every branch that started has arrived. Inside branches:
chains, exclusive choices, nested forks, human tasks, timers, escalations,
signals and retries, each while other branches go on. A branch that fails for
good cancels its siblings (a step in flight sees ``asyncio.CancelledError``, an
open task is cancelled) and every completed step, before the fork and in every
branch, is compensated once, newest first; ``engine.cancel`` inside a fork does
the same. The compile-time rules are in ``test_forks_compile.py``; persistence
of forked instances in ``tests/integration/test_forks_sqlite.py``.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import structlog.testing
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from statemachine_orch import (
    Ctx,
    Engine,
    EventKind,
    HistoryEvent,
    InstanceStatus,
    MemoryStore,
    NoEdgeEnabled,
    NonRetryableError,
    Retry,
    TaskNotAuthorized,
    TaskStatus,
    VirtualClock,
    Workflow,
    WorkflowFailed,
    after,
    human_task,
    step,
    timer,
    wait_for,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.conftest import EngineFactory, Runner

K = EventKind


@pytest.fixture(autouse=True)
def _quiet_structlog() -> Iterator[None]:
    # The engine logs every failed instance; keep them out of the output.
    with structlog.testing.capture_logs():
        yield


# --------------------------------------------------------------------------- probes and helpers


@attrs.define
class Probe:
    """What the steps of one test's instances tell the test: gates they wait on, cancellations they saw."""

    gates: dict[str, asyncio.Event] = attrs.field(factory=dict[str, asyncio.Event])
    cancelled: list[str] = attrs.field(factory=list[str])
    ran: list[str] = attrs.field(factory=list[str])

    def gate(self, name: str) -> asyncio.Event:
        """The event named *name* (made on first use)."""
        return self.gates.setdefault(name, asyncio.Event())

    async def hold(self, name: str) -> None:
        """Wait until the test (or another branch) opens gate *name*; note a cancellation seen meanwhile."""
        try:
            await self.gate(name).wait()
        except asyncio.CancelledError:
            self.cancelled.append(name)
            raise


_PROBES: dict[str, Probe] = {}
_tokens = itertools.count()


def new_probe() -> tuple[str, Probe]:
    """A fresh probe and the key a workflow finds it under (its ``probe`` field)."""
    key = f"probe-{next(_tokens)}"
    probe = _PROBES[key] = Probe()
    return key, probe


def probe_of(wf: Any) -> Probe:
    """The probe of a workflow object (one with a ``probe: str`` field)."""
    return _PROBES[wf.probe]


def of_kind(history: Sequence[HistoryEvent], kind: EventKind) -> list[HistoryEvent]:
    """The entries of one kind, in order."""
    return [e for e in history if e.kind is kind]


def pairs(history: Sequence[HistoryEvent], kind: EventKind) -> list[tuple[str | None, str | None]]:
    """``(step, detail)`` of every entry of *kind*, in order."""
    return [(e.step, e.detail) for e in of_kind(history, kind)]


def completed(history: Sequence[HistoryEvent]) -> list[str | None]:
    """The steps that completed, in order."""
    return [e.step for e in of_kind(history, K.STEP_COMPLETED)]


def undone(history: Sequence[HistoryEvent]) -> list[str | None]:
    """The steps whose compensation completed, in order."""
    return [e.step for e in of_kind(history, K.COMPENSATION_COMPLETED)]


def index(history: Sequence[HistoryEvent], kind: EventKind, step_name: str, detail: str | None = None) -> int:
    """The position of the only entry of *kind* for *step_name* (and *detail*, when given)."""
    found = [
        i
        for i, e in enumerate(history)
        if e.kind is kind and e.step == step_name and (detail is None or e.detail == detail)
    ]
    assert 1 == len(found), f"{kind.value} {step_name} {detail}: {found}"
    return found[0]


async def eventually(condition: Callable[[], bool]) -> None:
    """Let the engine run until *condition* holds (the scenario's time limit catches a hang)."""
    while not condition():
        await asyncio.sleep(0)


def has(engine: Engine, instance_id: str, kind: EventKind, step_name: str) -> Callable[[], bool]:
    """A condition: the instance's history has an entry of *kind* for *step_name*."""
    return lambda: any(e.kind is kind and e.step == step_name for e in engine.history(instance_id))


async def failure_of(result: Any) -> WorkflowFailed:
    """Await a ``handle.result()`` that must raise WorkflowFailed, and return the error."""
    with pytest.raises(WorkflowFailed) as err:
        await result
    return err.value


@attrs.frozen
class Ok:
    """A one-field form."""

    ok: bool = True


@attrs.frozen
class Paid:
    """A payment confirmation message."""

    amount: int


# --------------------------------------------------------------------------- parallel fork of three


class FeParallel(Workflow):
    """prepare, then three branches (``a``; ``b`` → ``b2``; ``c``), joined by ``merge``."""

    probe: str
    trail: list[str] = attrs.field(factory=list[str])

    @step(initial=True, fork=True)
    def prepare(self, ctx: Ctx) -> None:
        self.trail.append("prepare")

    @after(prepare)
    @step
    async def a(self, ctx: Ctx) -> None:
        # Runs only if branch c runs while a waits: the branches are concurrent.
        await probe_of(self).hold("c-ran")
        self.trail.append("a")

    @after(prepare)
    @step
    async def b(self, ctx: Ctx) -> None:
        await asyncio.sleep(0)
        self.trail.append("b")

    @after(b)
    @step
    async def b2(self, ctx: Ctx) -> None:
        await asyncio.sleep(0)
        self.trail.append("b2")

    @after(prepare)
    @step
    async def c(self, ctx: Ctx) -> None:
        await probe_of(self).hold("release-c")
        self.trail.append("c")
        probe_of(self).gate("c-ran").set()

    @after(a, b2, c)
    @step(final=True)
    def merge(self, ctx: Ctx) -> None:
        self.trail.append("merge")


def test_parallel_fork_of_three_runs_every_branch_once_and_joins_once_after_all(
    run: Runner, new_engine: EngineFactory
) -> None:
    """Every branch starts at once and runs concurrently; the join runs once, after the last branch arrived."""

    async def scenario() -> None:
        key, probe = new_probe()
        engine = new_engine()
        handle = await engine.start(FeParallel(probe=key))
        iid = handle.instance_id
        # b's chain is done; a waits on c, c waits on the test: two steps in flight at once.
        await eventually(has(engine, iid, K.BRANCH_DONE, "b2"))
        info = engine.info(iid)
        assert (InstanceStatus.RUNNING, True, ("a", "c")) == (info.status, info.in_fork, tuple(sorted(info.steps)))
        assert [] == of_kind(engine.history(iid), K.JOINED)
        probe.gate("release-c").set()
        wf = await handle.result()
        history = engine.history(iid)

        assert ["prepare", "b", "b2", "c", "a", "merge"] == wf.trail
        assert {"prepare": 1, "a": 1, "b": 1, "b2": 1, "c": 1, "merge": 1} == Counter(completed(history))
        assert [("prepare", "a"), ("prepare", "b"), ("prepare", "c"), ("b", "b2"), ("merge", "@completed")] == pairs(
            history, K.TRANSITION
        )
        assert [("b2", "merge"), ("c", "merge"), ("a", "merge")] == pairs(history, K.BRANCH_DONE)
        assert [("prepare", "merge")] == pairs(history, K.JOINED)
        assert [] == of_kind(history, K.BRANCH_SKIPPED)
        # Order: the fork's step, its branches entered, each branch in chain order, the join after all.
        fork_done = index(history, K.STEP_COMPLETED, "prepare")
        joined = index(history, K.JOINED, "prepare")
        for branch in ("a", "b", "c"):
            assert fork_done < index(history, K.TRANSITION, "prepare", branch) < index(history, K.STEP_STARTED, branch)
        assert index(history, K.STEP_COMPLETED, "b") < index(history, K.STEP_STARTED, "b2")
        assert max(e_i for e_i, e in enumerate(history) if e.kind is K.BRANCH_DONE) < joined
        assert joined < index(history, K.STEP_STARTED, "merge")
        assert (False, ()) == (engine.info(iid).in_fork, engine.info(iid).steps)

    run(scenario())


# --------------------------------------------------------------------------- inclusive fork


class FeInclusive(Workflow):
    """pack always; wrap when a gift, insure when insured (wrap waits on the test); then dispatch."""

    probe: str
    gift: bool = False
    insured: bool = False

    @step(initial=True, fork=True)
    def order(self, ctx: Ctx) -> None: ...

    @after(order)
    @step
    def pack(self, ctx: Ctx) -> None: ...

    @after(order, when=lambda wf: wf.gift)
    @step
    async def wrap(self, ctx: Ctx) -> None:
        await probe_of(self).hold("wrap")

    @after(order, when=lambda wf: wf.insured)
    @step
    def insure(self, ctx: Ctx) -> None: ...

    @after(pack, wrap, insure)
    @step(final=True)
    def dispatch(self, ctx: Ctx) -> None: ...


@pytest.mark.parametrize(("gift", "insured"), [(False, False), (True, False), (False, True), (True, True)])
def test_inclusive_fork_runs_only_the_branches_whose_guard_holds_and_joins_on_those(
    run: Runner, new_engine: EngineFactory, gift: bool, insured: bool
) -> None:
    """Guards are read once at the fork; skipped branches never run and the join does not wait for them."""

    async def scenario() -> None:
        key, probe = new_probe()
        engine = new_engine()
        handle = await engine.start(FeInclusive(probe=key, gift=gift, insured=insured))
        iid = handle.instance_id
        started = ["pack", *(["wrap"] if gift else []), *(["insure"] if insured else [])]
        skipped = [b for b in ("wrap", "insure") if b not in started]
        if gift:
            # Every other started branch arrived; the join still waits for wrap.
            await eventually(lambda: len(of_kind(engine.history(iid), K.BRANCH_DONE)) == len(started) - 1)
            await asyncio.sleep(0)
            assert [] == of_kind(engine.history(iid), K.JOINED)
            assert ("wrap",) == engine.info(iid).steps
            probe.gate("wrap").set()
        await handle.result()
        history = engine.history(iid)

        assert [("order", b) for b in started] == [t for t in pairs(history, K.TRANSITION) if t[0] == "order"]
        assert [("order", b) for b in skipped] == pairs(history, K.BRANCH_SKIPPED)
        assert {"order": 1, **dict.fromkeys(started, 1), "dispatch": 1} == Counter(completed(history))
        assert sorted(started) == sorted(str(s) for s, _ in pairs(history, K.BRANCH_DONE))
        assert [("order", "dispatch")] == pairs(history, K.JOINED)

    run(scenario())


class FeNoBranch(Workflow):
    """reserve (undoable), then an inclusive fork whose every branch is guarded."""

    express: bool = False
    fragile: bool = False
    released: int = 0

    @step(initial=True)
    def reserve(self, ctx: Ctx) -> None: ...

    @reserve.compensation
    def release(self, ctx: Ctx) -> None:
        self.released += 1

    @after(reserve)
    @step(fork=True)
    def route(self, ctx: Ctx) -> None: ...

    @after(route, when=lambda wf: wf.express)
    @step
    def courier(self, ctx: Ctx) -> None: ...

    @after(route, when=lambda wf: wf.fragile)
    @step
    def padding(self, ctx: Ctx) -> None: ...

    @after(courier, padding)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None: ...


def test_inclusive_fork_with_no_guard_holding_fails_and_compensates(run: Runner, new_engine: EngineFactory) -> None:
    """No branch can start: the instance fails as with no edge to take, and the steps before are undone."""

    async def scenario() -> None:
        engine = new_engine()
        handle = await engine.start(FeNoBranch())
        err = await failure_of(handle.result())
        history = engine.history(handle.instance_id)

        assert (InstanceStatus.FAILED, str(NoEdgeEnabled("FeNoBranch", "route"))) == (err.status, err.reason)
        assert [("route", "courier"), ("route", "padding")] == pairs(history, K.BRANCH_SKIPPED)
        assert ["reserve", "route"] == completed(history)
        assert [] == [e for e in of_kind(history, K.STEP_STARTED) if e.step in ("courier", "padding", "ship")]
        assert ["reserve"] == undone(history)
        assert 1 == handle.workflow.released

    run(scenario())


# --------------------------------------------------------------------------- chains, choices, nested forks


class FeChoice(Workflow):
    """Two chain branches: ``a1`` then (``fast`` when express, else ``slow``); ``b1`` then ``b2``."""

    express: bool

    @step(initial=True, fork=True)
    def start(self, ctx: Ctx) -> None: ...

    @after(start)
    @step
    def a1(self, ctx: Ctx) -> None: ...

    @after(a1, when=lambda wf: wf.express)
    @step
    async def fast(self, ctx: Ctx) -> None:
        await asyncio.sleep(0)

    @after(a1)
    @step
    def slow(self, ctx: Ctx) -> None: ...

    @after(start)
    @step
    async def b1(self, ctx: Ctx) -> None:
        await asyncio.sleep(0)

    @after(b1)
    @step
    def b2(self, ctx: Ctx) -> None: ...

    @after(fast, slow, b2)
    @step(final=True)
    def done(self, ctx: Ctx) -> None: ...


@pytest.mark.parametrize("express", [True, False])
def test_branch_with_an_exclusive_choice_takes_one_edge_and_its_end_reaches_the_join(
    run: Runner, new_engine: EngineFactory, express: bool
) -> None:
    """A choice inside a branch is exclusive: one of its ends runs, and that end counts as the branch's arrival."""

    async def scenario() -> None:
        engine = new_engine()
        handle = await engine.start(FeChoice(express=express))
        await handle.result()
        history = engine.history(handle.instance_id)
        chosen, other = ("fast", "slow") if express else ("slow", "fast")

        assert {"start": 1, "a1": 1, chosen: 1, "b1": 1, "b2": 1, "done": 1} == Counter(completed(history))
        assert [] == [e for e in history if e.step == other]
        assert ("a1", chosen) in pairs(history, K.TRANSITION)
        assert ("b1", "b2") in pairs(history, K.TRANSITION)
        assert sorted([(chosen, "done"), ("b2", "done")]) == sorted(pairs(history, K.BRANCH_DONE))
        assert [("start", "done")] == pairs(history, K.JOINED)

    run(scenario())


class FeNested(Workflow):
    """hire forks into accounts (which forks into email and laptop, joined by ready) and contract; welcome joins."""

    probe: str

    @step(initial=True, fork=True)
    def hire(self, ctx: Ctx) -> None: ...

    @after(hire)
    @step(fork=True)
    def accounts(self, ctx: Ctx) -> None: ...

    @after(accounts)
    @step
    async def email(self, ctx: Ctx) -> None:
        await probe_of(self).hold("email")

    @after(accounts)
    @step
    def laptop(self, ctx: Ctx) -> None: ...

    @after(email, laptop)
    @step
    def ready(self, ctx: Ctx) -> None: ...

    @after(hire)
    @step
    def contract(self, ctx: Ctx) -> None: ...

    @after(ready, contract)
    @step(final=True)
    def welcome(self, ctx: Ctx) -> None: ...


def test_nested_fork_in_a_branch_joins_before_the_outer_join(run: Runner, new_engine: EngineFactory) -> None:
    """The inner join waits for the inner branches only; the outer join waits for the inner join's branch."""

    async def scenario() -> None:
        key, probe = new_probe()
        engine = new_engine()
        handle = await engine.start(FeNested(probe=key))
        iid = handle.instance_id
        await eventually(has(engine, iid, K.BRANCH_DONE, "laptop"))
        await eventually(has(engine, iid, K.BRANCH_DONE, "contract"))
        assert [] == of_kind(engine.history(iid), K.JOINED)
        assert ("email",) == engine.info(iid).steps
        probe.gate("email").set()
        await handle.result()
        history = engine.history(iid)

        assert dict.fromkeys(("hire", "accounts", "email", "laptop", "ready", "contract", "welcome"), 1) == Counter(
            completed(history)
        )
        assert [("accounts", "ready"), ("hire", "welcome")] == pairs(history, K.JOINED)
        assert sorted([("laptop", "ready"), ("email", "ready"), ("contract", "welcome"), ("ready", "welcome")]) == (
            sorted(pairs(history, K.BRANCH_DONE))
        )
        assert index(history, K.JOINED, "accounts") < index(history, K.STEP_STARTED, "ready")
        assert index(history, K.BRANCH_DONE, "ready") < index(history, K.JOINED, "hire")

    run(scenario())


# --------------------------------------------------------------------------- tasks, timers, escalations, signals


class FeTwoTasks(Workflow):
    """Two human tasks at once, one per branch (alice signs, bob checks); then archive."""

    signed: bool = False
    checked: bool = False

    @step(initial=True, fork=True)
    def submit(self, ctx: Ctx) -> None: ...

    @after(submit)
    @human_task(assignee="alice", form=Ok)
    def sign(self, ctx: Ctx, form: Ok) -> None:
        self.signed = form.ok

    @after(submit)
    @human_task(assignee="bob", form=Ok)
    def check(self, ctx: Ctx, form: Ok) -> None:
        self.checked = form.ok

    @after(sign, check)
    @step(final=True)
    def archive(self, ctx: Ctx) -> None: ...


@pytest.mark.parametrize("first", ["sign", "check"])
def test_two_tasks_open_at_once_complete_in_either_order_by_their_assignees_only(
    run: Runner, new_engine: EngineFactory, first: str
) -> None:
    """Both tasks are listed at once; each only for its assignee; the join runs after the second completion."""

    async def scenario() -> None:
        engine = new_engine()
        handle = await engine.start(FeTwoTasks())
        iid = handle.instance_id
        assert InstanceStatus.WAITING == await handle.wait_idle()
        tasks = {t.step: t for t in engine.tasks(instance_id=iid)}
        assert ["check", "sign"] == sorted(tasks)
        assert [tasks["sign"].id] == [t.id for t in engine.tasks(user="alice")]
        assert [tasks["check"].id] == [t.id for t in engine.tasks(user="bob")]
        assert ("check", "sign") == tuple(sorted(engine.info(iid).steps))
        who = {"sign": "alice", "check": "bob"}
        second = "check" if first == "sign" else "sign"

        with pytest.raises(TaskNotAuthorized):
            await engine.complete_task(tasks[first].id, user=who[second], form=Ok())
        assert ["check", "sign"] == sorted(t.step for t in engine.tasks(instance_id=iid))

        await engine.complete_task(tasks[first].id, user=who[first], form=Ok())
        await eventually(has(engine, iid, K.BRANCH_DONE, first))
        assert InstanceStatus.WAITING == await handle.wait_idle()
        assert [tasks[second].id] == [t.id for t in engine.tasks(instance_id=iid)]
        assert [] == of_kind(engine.history(iid), K.JOINED)
        assert (second,) == engine.info(iid).steps

        await engine.complete_task(tasks[second].id, user=who[second], form=Ok())
        wf = await handle.result()
        history = engine.history(iid)
        assert (True, True) == (wf.signed, wf.checked)
        assert [(first, who[first]), (second, who[second])] == pairs(history, K.TASK_COMPLETED)
        assert [("submit", "archive")] == pairs(history, K.JOINED)
        assert index(history, K.TASK_COMPLETED, second) < index(history, K.JOINED, "submit")
        assert {"submit": 1, "sign": 1, "check": 1, "archive": 1} == Counter(completed(history))

    run(scenario())


class FeTimerBesideTask(Workflow):
    """One branch cools down for an hour, then notifies; the other waits on a manager's task."""

    @step(initial=True, fork=True)
    def begin(self, ctx: Ctx) -> None: ...

    @after(begin)
    @timer(timedelta(hours=1))
    def cool_down(self, ctx: Ctx) -> None: ...

    @after(cool_down)
    @step
    def notify(self, ctx: Ctx) -> None: ...

    @after(begin)
    @human_task(assignee="manager", form=Ok)
    def approve(self, ctx: Ctx, form: Ok) -> None: ...

    @after(notify, approve)
    @step(final=True)
    def finish(self, ctx: Ctx) -> None: ...


def test_timer_in_one_branch_fires_while_another_branch_waits_on_a_task(
    run: Runner, new_engine: EngineFactory, clock: VirtualClock
) -> None:
    """A branch's timer fires on time while its sibling's task stays open; the join waits for the task."""

    async def scenario() -> None:
        engine = new_engine()
        t0 = clock.now()
        handle = await engine.start(FeTimerBesideTask())
        iid = handle.instance_id
        await eventually(has(engine, iid, K.BRANCH_DONE, "notify"))
        assert InstanceStatus.WAITING == await handle.wait_idle()
        history = engine.history(iid)
        fired = of_kind(history, K.TIMER_FIRED)
        assert [("cool_down", 3600.0)] == [(e.step, e.at - t0) for e in fired]
        [task] = engine.tasks(user="manager")
        assert (TaskStatus.OPEN, "approve") == (task.status, task.step)
        assert ("approve",) == engine.info(iid).steps
        assert [] == of_kind(history, K.JOINED)

        await engine.complete_task(task.id, user="manager", form=Ok())
        await handle.result()
        history = engine.history(iid)
        assert [("begin", "finish")] == pairs(history, K.JOINED)
        assert index(history, K.TIMER_FIRED, "cool_down") < index(history, K.TASK_COMPLETED, "approve")

    run(scenario())


class FeEscalation(Workflow):
    """One branch waits two days for a sign-off, else escalates; the other branch books; then close."""

    escalated: bool = False

    @step(initial=True, fork=True)
    def open_case(self, ctx: Ctx) -> None: ...

    @after(open_case)
    @human_task(assignee="lead", form=Ok)
    def sign_off(self, ctx: Ctx, form: Ok) -> None: ...

    @after(sign_off, timeout=timedelta(days=2))
    @step
    def escalate(self, ctx: Ctx) -> None:
        self.escalated = True

    @after(open_case)
    @step
    async def book(self, ctx: Ctx) -> None:
        await asyncio.sleep(0)

    @after(sign_off, escalate, book)
    @step(final=True)
    def close(self, ctx: Ctx) -> None: ...


def test_escalation_inside_a_branch_cancels_the_task_and_reaches_the_join(
    run: Runner, new_engine: EngineFactory, clock: VirtualClock
) -> None:
    """A wait inside a branch that lasts too long escalates: its task is cancelled and the escalation path joins."""

    async def scenario() -> None:
        engine = new_engine()
        t0 = clock.now()
        handle = await engine.start(FeEscalation())
        wf = await handle.result()
        history = engine.history(handle.instance_id)

        assert wf.escalated
        [escalated] = of_kind(history, K.ESCALATED)
        assert ("sign_off", 2 * 86400.0) == (escalated.step, escalated.at - t0)
        [cancelled] = of_kind(history, K.TASK_CANCELLED)
        assert cancelled.step == "sign_off"
        assert cancelled.detail is not None
        assert "escalated" in cancelled.detail
        assert [] == engine.tasks()
        assert ("sign_off", "escalate") in pairs(history, K.TRANSITION)
        assert sorted([("book", "close"), ("escalate", "close")]) == sorted(pairs(history, K.BRANCH_DONE))
        assert [("open_case", "close")] == pairs(history, K.JOINED)
        assert {"open_case": 1, "escalate": 1, "book": 1, "close": 1} == Counter(completed(history))

    run(scenario())


class FeSignal(Workflow):
    """One branch prepares (held by the test), then waits for Paid; the other branch packs; then ship."""

    probe: str
    paid: int = 0

    @step(initial=True, fork=True)
    def accept(self, ctx: Ctx) -> None: ...

    @after(accept)
    @step
    async def invoice(self, ctx: Ctx) -> None:
        await probe_of(self).hold("invoice")

    @after(invoice)
    @wait_for(Paid)
    def payment(self, ctx: Ctx, message: Paid) -> None:
        self.paid = message.amount

    @after(accept)
    @step
    def pack(self, ctx: Ctx) -> None: ...

    @after(payment, pack)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None: ...


@pytest.mark.parametrize("early", [False, True], ids=["while-waiting", "before-the-branch-waits"])
def test_signal_reaches_the_waiting_branch_and_the_join_fires(
    run: Runner, new_engine: EngineFactory, early: bool
) -> None:
    """A message for a branch's ``@wait_for`` is consumed by it, whether it arrives while it waits or before."""

    async def scenario() -> None:
        key, probe = new_probe()
        engine = new_engine()
        handle = await engine.start(FeSignal(probe=key))
        iid = handle.instance_id
        await eventually(has(engine, iid, K.BRANCH_DONE, "pack"))
        if early:
            await engine.signal(iid, Paid(amount=42))
            probe.gate("invoice").set()
        else:
            probe.gate("invoice").set()
            assert InstanceStatus.WAITING == await handle.wait_idle()
            assert ("payment",) == engine.info(iid).steps
            assert [] == of_kind(engine.history(iid), K.JOINED)
            await engine.signal(iid, Paid(amount=42))
        wf = await handle.result()
        history = engine.history(iid)

        assert 42 == wf.paid
        assert [("payment", "Paid")] == pairs(history, K.MESSAGE_RECEIVED)
        assert [("accept", "ship")] == pairs(history, K.JOINED)
        assert {"accept": 1, "invoice": 1, "payment": 1, "pack": 1, "ship": 1} == Counter(completed(history))

    run(scenario())


# --------------------------------------------------------------------------- retries


class FeRetry(Workflow):
    """One branch charges (two transient failures, backoff 1s then 2s); the other logs, held by the test."""

    probe: str

    @step(initial=True, fork=True)
    def begin(self, ctx: Ctx) -> None: ...

    @after(begin)
    @step(retry=Retry(attempts=3, initial=1.0, backoff=2.0))
    async def charge(self, ctx: Ctx) -> None:
        await asyncio.sleep(0)
        if ctx.attempt < 3:
            msg = f"gateway busy ({ctx.attempt})"
            raise ConnectionError(msg)

    @after(begin)
    @step
    async def log(self, ctx: Ctx) -> None:
        await probe_of(self).hold("log")

    @after(log)
    @step
    def audit(self, ctx: Ctx) -> None: ...

    @after(charge, audit)
    @step(final=True)
    def settle(self, ctx: Ctx) -> None: ...


def test_retry_with_backoff_in_a_branch_while_another_branch_completes(run: Runner) -> None:
    """A branch's retries fire on the clock while a sibling's step is in flight; the sibling completes; then the join."""

    async def scenario() -> None:
        key, probe = new_probe()
        clock = VirtualClock(autojump=False)
        engine = Engine(MemoryStore(), clock=clock)
        t0 = clock.now()
        handle = await engine.start(FeRetry(probe=key))
        iid = handle.instance_id

        def retries() -> int:
            return len(of_kind(engine.history(iid), K.RETRY_SCHEDULED))

        await eventually(lambda: retries() == 1)
        clock.advance(1.0)  # the first backoff: attempt 2 runs (and fails) while log is still in flight
        await eventually(lambda: retries() == 2)
        assert [] == of_kind(engine.history(iid), K.BRANCH_DONE)
        probe.gate("log").set()  # log's branch completes during the second backoff
        await eventually(has(engine, iid, K.BRANCH_DONE, "audit"))
        assert ("charge",) == engine.info(iid).steps
        assert [] == of_kind(engine.history(iid), K.JOINED)
        clock.advance(2.0)
        await handle.result()
        history = engine.history(iid)
        await engine.aclose()

        starts = [(e.attempt, e.at - t0) for e in of_kind(history, K.STEP_STARTED) if e.step == "charge"]
        assert [(1, 0.0), (2, 1.0), (3, 3.0)] == starts
        assert [("charge", "in 1s"), ("charge", "in 2s")] == pairs(history, K.RETRY_SCHEDULED)
        second = [i for i, e in enumerate(history) if e.kind is K.STEP_STARTED and e.step == "charge"][1]
        assert second < index(history, K.STEP_COMPLETED, "log") < index(history, K.STEP_COMPLETED, "charge")
        assert [("begin", "settle")] == pairs(history, K.JOINED)
        assert {"begin": 1, "charge": 1, "log": 1, "audit": 1, "settle": 1} == Counter(completed(history))

    run(scenario())


# --------------------------------------------------------------------------- failure in a branch


class FeFailing(Workflow):
    """
    reserve (undoable), then a fork of three branches.

    ``hold`` waits (held by the test) in an async step; ``pay`` → ``charge`` both
    undoable, then ``verify`` fails for good; ``review`` is a clerk's task.
    """

    probe: str
    undone: list[str] = attrs.field(factory=list[str])

    @step(initial=True)
    def reserve(self, ctx: Ctx) -> None: ...

    @reserve.compensation
    def release(self, ctx: Ctx) -> None:
        self.undone.append("reserve")

    @after(reserve)
    @step(fork=True)
    def split(self, ctx: Ctx) -> None: ...

    @split.compensation
    def unsplit(self, ctx: Ctx) -> None:
        self.undone.append("split")

    @after(split)
    @step
    async def hold(self, ctx: Ctx) -> None:
        await probe_of(self).hold("hold")

    @hold.compensation
    def unhold(self, ctx: Ctx) -> None:
        self.undone.append("hold")

    @after(split)
    @step
    async def pay(self, ctx: Ctx) -> None:
        await asyncio.sleep(0)

    @pay.compensation
    def unpay(self, ctx: Ctx) -> None:
        self.undone.append("pay")

    @after(pay)
    @step
    async def charge(self, ctx: Ctx) -> None:
        await asyncio.sleep(0)

    @charge.compensation
    def refund(self, ctx: Ctx) -> None:
        self.undone.append("charge")

    @after(charge)
    @step
    async def verify(self, ctx: Ctx) -> None:
        # Fails only once the clerk's task is open, so that there is one to cancel.
        await probe_of(self).hold("verify")
        msg = "fraud suspected"
        raise NonRetryableError(msg)

    @after(split)
    @human_task(assignee="clerk", form=Ok)
    def review(self, ctx: Ctx, form: Ok) -> None: ...

    @review.compensation
    def unreview(self, ctx: Ctx) -> None:
        self.undone.append("review")

    @after(hold, verify, review)
    @step(final=True)
    def done(self, ctx: Ctx) -> None: ...


def test_failing_branch_cancels_siblings_and_compensates_every_completed_step_newest_first(
    run: Runner, new_engine: EngineFactory
) -> None:
    """The sibling's step in flight sees CancelledError, the open task is cancelled, and the saga runs once."""

    async def scenario() -> None:
        key, probe = new_probe()
        engine = new_engine()
        handle = await engine.start(FeFailing(probe=key))
        iid = handle.instance_id
        await eventually(has(engine, iid, K.TASK_CREATED, "review"))
        await eventually(has(engine, iid, K.STEP_STARTED, "verify"))
        [task] = engine.tasks(user="clerk")
        probe.gate("verify").set()
        err = await failure_of(handle.result())
        history = engine.history(iid)

        assert InstanceStatus.FAILED == err.status
        assert "verify: NonRetryableError: fraud suspected" == err.reason
        assert ["hold"] == probe.cancelled
        [cancelled_step] = of_kind(history, K.STEP_CANCELLED)
        assert cancelled_step.step == "hold"
        assert [] == engine.tasks()
        assert [("review", f"{task.id} (a sibling branch failed: verify: NonRetryableError: fraud suspected)")] == (
            pairs(history, K.TASK_CANCELLED)
        )
        assert ["reserve", "split", "pay", "charge"] == completed(history)
        assert ["charge", "pay", "split", "reserve"] == undone(history)
        assert ["charge", "pay", "split", "reserve"] == handle.workflow.undone
        assert [] == of_kind(history, K.JOINED)

    run(scenario())


# Four branches of two steps each; branch 0 always starts, branches 1-3 when `width` says so.


class FeSagaFork(Workflow):
    """
    The property test's workflow: pre (undoable), then an inclusive fork of up to four branches.

    Branch ``i`` runs ``s{i}a`` then ``s{i}b``, both undoable; each step yields
    ``delays[step]`` times to the event loop, and the step named ``failing``
    raises for good. Every step notes a cancellation it sees.
    """

    probe: str
    width: int
    failing: str
    delays: dict[str, int] = attrs.field(factory=dict[str, int])
    undone: list[str] = attrs.field(factory=list[str])

    async def _body(self, ctx: Ctx) -> None:
        name = ctx.step
        try:
            for _ in range(self.delays.get(name, 0)):
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            probe_of(self).cancelled.append(name)
            raise
        probe_of(self).ran.append(name)
        if name == self.failing:
            msg = f"{name} broke"
            raise NonRetryableError(msg)

    def _undo(self, ctx: Ctx) -> None:
        assert ctx.undoing is not None
        self.undone.append(ctx.undoing)

    @step(initial=True)
    async def pre(self, ctx: Ctx) -> None:
        await self._body(ctx)

    @pre.compensation
    def unpre(self, ctx: Ctx) -> None:
        self._undo(ctx)

    @after(pre)
    @step(fork=True)
    def fork(self, ctx: Ctx) -> None: ...

    @fork.compensation
    def unfork(self, ctx: Ctx) -> None:
        self._undo(ctx)

    @after(fork)
    @step
    async def s0a(self, ctx: Ctx) -> None:
        await self._body(ctx)

    @s0a.compensation
    def uns0a(self, ctx: Ctx) -> None:
        self._undo(ctx)

    @after(s0a)
    @step
    async def s0b(self, ctx: Ctx) -> None:
        await self._body(ctx)

    @s0b.compensation
    def uns0b(self, ctx: Ctx) -> None:
        self._undo(ctx)

    @after(fork, when=lambda wf: wf.width > 1)
    @step
    async def s1a(self, ctx: Ctx) -> None:
        await self._body(ctx)

    @s1a.compensation
    def uns1a(self, ctx: Ctx) -> None:
        self._undo(ctx)

    @after(s1a)
    @step
    async def s1b(self, ctx: Ctx) -> None:
        await self._body(ctx)

    @s1b.compensation
    def uns1b(self, ctx: Ctx) -> None:
        self._undo(ctx)

    @after(fork, when=lambda wf: wf.width > 2)
    @step
    async def s2a(self, ctx: Ctx) -> None:
        await self._body(ctx)

    @s2a.compensation
    def uns2a(self, ctx: Ctx) -> None:
        self._undo(ctx)

    @after(s2a)
    @step
    async def s2b(self, ctx: Ctx) -> None:
        await self._body(ctx)

    @s2b.compensation
    def uns2b(self, ctx: Ctx) -> None:
        self._undo(ctx)

    @after(fork, when=lambda wf: wf.width > 3)
    @step
    async def s3a(self, ctx: Ctx) -> None:
        await self._body(ctx)

    @s3a.compensation
    def uns3a(self, ctx: Ctx) -> None:
        self._undo(ctx)

    @after(s3a)
    @step
    async def s3b(self, ctx: Ctx) -> None:
        await self._body(ctx)

    @s3b.compensation
    def uns3b(self, ctx: Ctx) -> None:
        self._undo(ctx)

    @after(s0b, s1b, s2b, s3b)
    @step(final=True)
    def join(self, ctx: Ctx) -> None: ...


@st.composite
def saga_plans(draw: st.DrawFn) -> tuple[int, str, dict[str, int]]:
    """A width (2-4 branches), the step that fails (in a started branch), and each branch step's yields."""
    width = draw(st.integers(2, 4))
    failing = draw(st.sampled_from([f"s{i}{part}" for i in range(width) for part in "ab"]))
    names = [f"s{i}{part}" for i in range(width) for part in "ab"]
    delays = {name: draw(st.integers(0, 6)) for name in names}
    return width, failing, delays


@settings(max_examples=60, deadline=None, database=None)
@given(plan=saga_plans())
def test_property_a_failing_branch_compensates_every_completed_step_once_newest_first(
    run: Runner, plan: tuple[int, str, dict[str, int]]
) -> None:
    """
    Whatever the width, the failing step and the timing, a branch failing for good undoes everything done.

    The instance fails; each sibling step in flight saw CancelledError and is recorded STEP_CANCELLED;
    the compensations are exactly those of the completed steps (before the fork and in every branch),
    each once, in reverse global completion order.
    """
    width, failing, delays = plan
    note(f"width={width} failing={failing} delays={delays}")

    async def scenario() -> None:
        key, probe = new_probe()
        engine = Engine(MemoryStore(), clock=VirtualClock(autojump=True))
        handle = await engine.start(FeSagaFork(probe=key, width=width, failing=failing, delays=delays))
        err = await failure_of(handle.result())
        history = engine.history(handle.instance_id)
        await engine.aclose()
        note("\n".join(str(e) for e in history))
        event(f"steps cancelled in flight: {len(probe.cancelled)}")

        assert InstanceStatus.FAILED == err.status
        assert f"{failing}: NonRetryableError: {failing} broke" == err.reason
        done = completed(history)
        assert len(done) == len(set(done)), "a step completed twice"
        assert {"pre", "fork"} <= set(done)
        assert failing not in done
        assert list(reversed(done)) == undone(history)
        assert list(reversed(done)) == handle.workflow.undone
        # The sibling steps in flight saw CancelledError, each recorded STEP_CANCELLED, none completed.
        assert sorted(probe.cancelled) == sorted(str(e.step) for e in of_kind(history, K.STEP_CANCELLED))
        assert set() == set(probe.cancelled) & set(done)
        # Every branch step that started either completed, failed (the failing one), or was cancelled.
        started = [e.step for e in of_kind(history, K.STEP_STARTED) if e.step not in ("pre", "fork")]
        assert len(started) == len(set(started))
        ended = set(done) | {failing} | set(probe.cancelled)
        assert set(started) == ended & set(started)
        assert set(started) == set(done) - {"pre", "fork"} | {failing} | set(probe.cancelled)
        # No step of a branch the fork did not start ran; the join never fired.
        assert all(int(name[1]) < width for name in started if name)
        assert [] == of_kind(history, K.JOINED)
        assert [] == [e for e in of_kind(history, K.STEP_STARTED) if e.step == "join"]

    run(scenario())


class FeLostCancel(Workflow):
    """Three branches: ``fails`` (after two yields), ``quick`` → ``quick2``, and ``busy`` (yielding)."""

    probe: str

    @step(initial=True, fork=True)
    def split(self, ctx: Ctx) -> None: ...

    @after(split)
    @step
    async def fails(self, ctx: Ctx) -> None:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        msg = "boom"
        raise NonRetryableError(msg)

    @after(split)
    @step
    async def quick(self, ctx: Ctx) -> None: ...

    @after(quick)
    @step
    async def quick2(self, ctx: Ctx) -> None: ...

    @after(split)
    @step
    async def busy(self, ctx: Ctx) -> None:
        try:
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            probe_of(self).cancelled.append("busy")
            raise

    @after(fails, quick2, busy)
    @step(final=True)
    def join(self, ctx: Ctx) -> None: ...


def test_sibling_step_cancelled_while_the_fork_driver_is_woken_is_recorded_cancelled(
    run: Runner, new_engine: EngineFactory
) -> None:
    """Every sibling step that saw CancelledError because a branch failed has its STEP_CANCELLED entry."""

    async def scenario() -> None:
        key, probe = new_probe()
        engine = new_engine()
        handle = await engine.start(FeLostCancel(probe=key))
        await failure_of(handle.result())
        history = engine.history(handle.instance_id)

        assert ["busy"] == probe.cancelled
        assert ["busy"] == [e.step for e in of_kind(history, K.STEP_CANCELLED)]

    run(scenario())


class FeCleanup(Workflow):
    """
    ``fails`` fails for good once the test opens its gate; ``slow``, in flight meanwhile, cleans up when cancelled.

    Its cleanup awaits (an abort sent to a remote service, say), then re-raises the
    cancellation, or, with ``swallow``, returns as if it had completed.
    """

    probe: str
    swallow: bool = False
    undone: list[str] = attrs.field(factory=list[str])

    @step(initial=True, fork=True)
    def split(self, ctx: Ctx) -> None: ...

    @after(split)
    @step
    async def fails(self, ctx: Ctx) -> None:
        await probe_of(self).gate("fail").wait()
        msg = "boom"
        raise NonRetryableError(msg)

    @after(split)
    @step
    async def slow(self, ctx: Ctx) -> None:
        probe = probe_of(self)
        try:
            await probe.gate("never").wait()
        except asyncio.CancelledError:
            probe.cancelled.append("slow")
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            probe.ran.append("cleanup done")
            if not self.swallow:
                raise

    @slow.compensation
    def unslow(self, ctx: Ctx) -> None:
        self.undone.append("slow")

    @after(fails, slow)
    @step(final=True)
    def join(self, ctx: Ctx) -> None: ...


@pytest.mark.parametrize("how", ["sibling-fails", "engine-cancel"])
def test_sibling_step_cancelled_in_flight_may_finish_its_async_cleanup_and_is_recorded_cancelled(
    run: Runner, new_engine: EngineFactory, how: str
) -> None:
    """A step cancelled in flight sees one CancelledError: its async cleanup runs to the end; STEP_CANCELLED."""

    async def scenario() -> None:
        key, probe = new_probe()
        engine = new_engine()
        handle = await engine.start(FeCleanup(probe=key))
        iid = handle.instance_id
        await eventually(has(engine, iid, K.STEP_STARTED, "slow"))
        if how == "sibling-fails":
            probe.gate("fail").set()
            await engine.wait_instance(iid)
        else:
            await engine.cancel(iid, compensate=True)
        history = engine.history(iid)

        assert (["slow"], ["cleanup done"]) == (probe.cancelled, probe.ran)
        in_flight = ["slow"] if how == "sibling-fails" else ["fails", "slow"]
        assert in_flight == sorted(str(e.step) for e in of_kind(history, K.STEP_CANCELLED))

    run(scenario())


def test_sibling_step_that_ignores_its_cancellation_and_completes_is_compensated(
    run: Runner, new_engine: EngineFactory
) -> None:
    """A sibling step that ignores its cancellation and completes is recorded completed, and undone by the saga."""

    async def scenario() -> None:
        key, probe = new_probe()
        engine = new_engine()
        handle = await engine.start(FeCleanup(probe=key, swallow=True))
        iid = handle.instance_id
        await eventually(has(engine, iid, K.STEP_STARTED, "slow"))
        probe.gate("fail").set()
        status, wf = await engine.wait_result(iid)
        history = engine.history(iid)

        assert InstanceStatus.FAILED == status
        assert ["split", "slow"] == completed(history)
        assert ["slow"] == undone(history)
        assert ["slow"] == wf.undone

    run(scenario())


# --------------------------------------------------------------------------- cancel mid-fork


class FeCancel(Workflow):
    """pay (undoable), then a fork: ``work`` (undoable) → ``slow`` (held); ``ask`` (a task); then end."""

    probe: str
    undone: list[str] = attrs.field(factory=list[str])

    @step(initial=True, fork=True)
    def pay(self, ctx: Ctx) -> None: ...

    @pay.compensation
    def refund(self, ctx: Ctx) -> None:
        self.undone.append("pay")

    @after(pay)
    @step
    def work(self, ctx: Ctx) -> None: ...

    @work.compensation
    def unwork(self, ctx: Ctx) -> None:
        self.undone.append("work")

    @after(work)
    @step
    async def slow(self, ctx: Ctx) -> None:
        await probe_of(self).hold("slow")

    @slow.compensation
    def unslow(self, ctx: Ctx) -> None:
        self.undone.append("slow")

    @after(pay)
    @human_task(assignee="clerk", form=Ok)
    def ask(self, ctx: Ctx, form: Ok) -> None: ...

    @after(slow, ask)
    @step(final=True)
    def end(self, ctx: Ctx) -> None: ...


@pytest.mark.parametrize("compensate", [True, False])
def test_cancel_mid_fork_cancels_every_branch_and_compensates_when_asked(
    run: Runner, new_engine: EngineFactory, compensate: bool
) -> None:
    """``cancel(id)`` inside a fork: the step in flight sees CancelledError, the task is cancelled, the saga runs."""

    async def scenario() -> None:
        key, probe = new_probe()
        engine = new_engine()
        handle = await engine.start(FeCancel(probe=key))
        iid = handle.instance_id
        await eventually(has(engine, iid, K.STEP_STARTED, "slow"))
        await eventually(has(engine, iid, K.TASK_CREATED, "ask"))
        [task] = engine.tasks(user="clerk")
        status = await engine.cancel(iid, reason="customer left", compensate=compensate)
        history = engine.history(iid)

        assert InstanceStatus.CANCELLED == status
        assert InstanceStatus.CANCELLED == engine.info(iid).status
        assert ["slow"] == probe.cancelled
        assert ["slow"] == [e.step for e in of_kind(history, K.STEP_CANCELLED)]
        assert [] == engine.tasks()
        [task_cancelled] = of_kind(history, K.TASK_CANCELLED)
        assert task_cancelled.detail is not None
        assert (task.id, "ask") == (task_cancelled.detail.split()[0], task_cancelled.step)
        assert ["pay", "work"] == completed(history)
        expected = ["work", "pay"] if compensate else []
        assert expected == undone(history)
        assert expected == handle.workflow.undone
        assert [] == of_kind(history, K.JOINED)

    run(scenario())
