"""
Messages between instances (issue 10, item 8): ``ctx.signal``, ``ctx.start``, ``ctx.signal_with_start``.

A step's messages and starts are checked when it asks for them and happen with
the commit that records its completion: once, never for a failed attempt, noted
in its history (``signal_sent``, ``started_instance``). A caller's
``Engine.signal_with_start`` starts an instance with its first message in one
commit, or signals the existing one.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import pytest

from statemachine_orch import (
    Ctx,
    EventKind,
    InstanceExists,
    InstanceFinished,
    InstanceNotFound,
    InstanceStatus,
    Retry,
    SignalTypeError,
    Workflow,
    WorkflowInputError,
    after,
    step,
    wait_for,
)
from statemachine_orch._ctx import Ctx as CtxClass
from tests.integration.helpers import of_kind

if TYPE_CHECKING:
    from statemachine_orch import Engine
    from tests.conftest import EngineFactory, Runner

K = EventKind


@attrs.frozen
class MsgPing:
    """A message a MsgInbox waits for."""

    n: int


@attrs.frozen
class MsgOther:
    """A message nobody waits for."""

    text: str


class MsgInbox(Workflow):
    """Waits for one MsgPing, keeps its number."""

    got: int = -1

    @step(initial=True)
    def begin(self, ctx: Ctx) -> None: ...

    @after(begin)
    @wait_for(MsgPing)
    def receive(self, ctx: Ctx, msg: MsgPing) -> None:
        self.got = msg.n

    @after(receive)
    @step(final=True)
    def close(self, ctx: Ctx) -> None: ...


class MsgOutbox(Workflow):
    """Sends a MsgPing to *target*; fails its first *failures* attempts after sending."""

    target: str
    n: int = 1
    failures: int = 0
    send_other: bool = False

    @step(initial=True, final=True, retry=Retry(attempts=3, initial=1))
    def send(self, ctx: Ctx) -> None:
        ctx.signal(self.target, MsgOther("hi") if self.send_other else MsgPing(self.n))
        if ctx.attempt <= self.failures:
            raise ConnectionError("lost after sending")


class MsgLauncher(Workflow):
    """Starts inboxes: *count* without an id, one with the id *named* (if any) and a signal-with-start."""

    count: int = 1
    named: str = ""
    swst: str = ""
    started: list[str] = attrs.field(factory=list[str])

    @step(initial=True, final=True)
    def launch(self, ctx: Ctx) -> None:
        self.started = [ctx.start(MsgInbox()) for _ in range(self.count)]
        if self.named:
            self.started.append(ctx.start(MsgInbox(), instance_id=self.named))
        if self.swst:
            self.started.append(ctx.signal_with_start(MsgInbox(), MsgPing(42), instance_id=self.swst))


class MsgUndo(Workflow):
    """A compensation that tells *target* the booking was undone."""

    target: str

    @step(initial=True)
    def book(self, ctx: Ctx) -> None: ...

    @book.compensation
    def unbook(self, ctx: Ctx) -> None:
        ctx.signal(self.target, MsgPing(-7))

    @after(book)
    @step(final=True)
    def fail(self, ctx: Ctx) -> None:
        raise RuntimeError("no")


class MsgFork(Workflow):
    """Two branches: one signals and starts, the other signals and signal-with-starts."""

    @step(initial=True, fork=True)
    def split(self, ctx: Ctx) -> None: ...

    @after(split)
    @step
    async def left(self, ctx: Ctx) -> None:
        ctx.signal("in-left", MsgPing(1))
        ctx.start(MsgInbox(), instance_id="started-left")

    @after(split)
    @step
    async def right(self, ctx: Ctx) -> None:
        ctx.signal("in-right", MsgPing(2))
        ctx.signal_with_start(MsgInbox(), MsgPing(3), instance_id="started-right")

    @after(left, right)
    @step(final=True)
    def join(self, ctx: Ctx) -> None: ...


async def _parked_inbox(engine: Engine, instance_id: str = "inbox") -> None:
    handle = await engine.start(MsgInbox(), instance_id=instance_id)
    await handle.wait_idle()


def test_a_step_signals_a_waiting_instance_with_its_commit(new_engine: EngineFactory, run: Runner) -> None:
    """Issue 10: ctx.signal delivers to a waiting instance, which runs on; the sender's history notes it."""

    async def scenario() -> tuple[int, list[str]]:
        async with new_engine() as engine:
            await _parked_inbox(engine)
            sender = await engine.start(MsgOutbox(target="inbox", n=5))
            await sender.result()
            got = (await engine.handle("inbox").result()).got
            return got, [f"{e.step} {e.detail}" for e in of_kind(sender.history(), K.SIGNAL_SENT)]

    assert (5, ["send inbox MsgPing"]) == run(scenario())


def test_a_message_sent_before_the_target_waits_is_kept(new_engine: EngineFactory, run: Runner) -> None:
    """Issue 10: an instance that does not wait yet consumes the message when it gets there."""

    async def scenario() -> int:
        async with new_engine() as engine:
            sender = await engine.start(MsgLauncher(count=0, named="early"))
            await sender.result()
            await engine.start(MsgOutbox(target="early", n=3))
            early: MsgInbox = await engine.handle("early").result()
            return early.got

    assert 3 == run(scenario())


def test_a_failed_attempt_sends_nothing_and_the_retry_sends_once(new_engine: EngineFactory, run: Runner) -> None:
    """Issue 10: the messages of an attempt that fails are dropped with it: one message, however many attempts."""

    async def scenario() -> tuple[int, int, int]:
        async with new_engine() as engine:
            await _parked_inbox(engine)
            sender = await engine.start(MsgOutbox(target="inbox", failures=2))
            await sender.result()
            kept = len(engine.store.signals("inbox"))
            attempts = len(of_kind(sender.history(), K.STEP_STARTED))
            return attempts, len(of_kind(sender.history(), K.SIGNAL_SENT)), kept

    # the inbox consumed the one message: none left over
    assert (3, 1, 0) == run(scenario())


def test_a_step_that_fails_for_good_sends_nothing(new_engine: EngineFactory, run: Runner) -> None:
    """Issue 10: every attempt fails after ctx.signal: the target never hears of it."""

    async def scenario() -> tuple[InstanceStatus, InstanceStatus, int]:
        async with new_engine() as engine:
            await _parked_inbox(engine)
            sender = await engine.start(MsgOutbox(target="inbox", failures=3))
            status = await engine.wait_instance(sender.instance_id)
            return status, engine.info("inbox").status, len(engine.store.signals("inbox"))

    assert (InstanceStatus.FAILED, InstanceStatus.WAITING, 0) == run(scenario())


@pytest.mark.parametrize(
    ("workflow", "error", "fragment"),
    [
        (MsgOutbox(target="nobody"), InstanceNotFound, "InstanceNotFound: no workflow instance with id 'nobody'"),
        (MsgOutbox(target="inbox", send_other=True), SignalTypeError, "MsgInbox does not wait for MsgOther"),
        (MsgOutbox(target="done"), InstanceFinished, "already completed: cannot deliver MsgPing"),
    ],
)
def test_a_message_that_cannot_be_delivered_fails_the_step(
    workflow: MsgOutbox, error: type[Exception], fragment: str, new_engine: EngineFactory, run: Runner
) -> None:
    """Issue 10: an unknown or ended target, or a type it does not wait for, is the step's typed failure."""

    async def scenario() -> tuple[InstanceStatus, str]:
        async with new_engine() as engine:
            await _parked_inbox(engine)
            launcher = await engine.start(MsgLauncher(count=0, swst="done"))
            await launcher.result()
            await engine.wait_instance("done")
            sender = await engine.start(workflow)
            status = await engine.wait_instance(sender.instance_id)
            [failed] = of_kind(sender.history(), K.STEP_FAILED)[:1]
            return status, failed.detail or ""

    status, detail = run(scenario())
    assert InstanceStatus.FAILED == status
    assert detail.startswith(error.__name__)
    assert fragment in detail


def test_a_compensation_signals_with_its_commit(new_engine: EngineFactory, run: Runner) -> None:
    """Issue 10: a compensation may signal too; the message goes with the compensation's commit."""

    async def scenario() -> tuple[InstanceStatus, int]:
        async with new_engine() as engine:
            await _parked_inbox(engine)
            saga = await engine.start(MsgUndo(target="inbox"))
            status = await engine.wait_instance(saga.instance_id)
            return status, (await engine.handle("inbox").result()).got

    assert (InstanceStatus.FAILED, -7) == run(scenario())


def test_ctx_start_starts_independent_instances_with_stable_ids(new_engine: EngineFactory, run: Runner) -> None:
    """Issue 10: ids ``<idempotency key>.<n>``; the new instances run on their own; no parent link."""

    async def scenario() -> tuple[list[str], list[str], list[str | None], list[str]]:
        async with new_engine() as engine:
            launcher = await engine.start(MsgLauncher(count=2, named="named-1"), instance_id="L")
            done = await launcher.result()
            statuses = [engine.info(i).status.value for i in done.started]
            parents = [engine.info(i).parent for i in done.started]
            notes = [e.detail or "" for e in of_kind(launcher.history(), K.STARTED_INSTANCE)]
            return done.started, statuses, parents, notes

    started, statuses, parents, notes = run(scenario())
    assert ["L:0.1", "L:0.2", "named-1"] == started
    assert ["waiting"] * 3 == statuses
    assert [None, None, None] == parents
    assert ["L:0.1 MsgInbox", "L:0.2 MsgInbox", "named-1 MsgInbox"] == notes


def test_ctx_start_of_an_existing_id_leaves_it_as_it_is(new_engine: EngineFactory, run: Runner) -> None:
    """Issue 10: a start whose id exists (same workflow) starts nothing; another workflow's id fails the step."""

    async def scenario() -> tuple[list[str], InstanceStatus, str]:
        async with new_engine() as engine:
            await _parked_inbox(engine, "taken")
            first = await engine.start(MsgLauncher(count=0, named="taken"))
            await first.result()
            clash = await engine.start(MsgLauncher(count=0, named=first.instance_id))
            status = await engine.wait_instance(clash.instance_id)
            [failed] = of_kind(clash.history(), K.STEP_FAILED)
            notes = [e.detail or "" for e in of_kind(first.history(), K.STARTED_INSTANCE)]
            return notes, status, failed.detail or ""

    notes, status, detail = run(scenario())
    assert [] == notes
    assert InstanceStatus.FAILED == status
    assert detail.startswith(InstanceExists.__name__)
    assert "it is an instance of MsgLauncher, not of MsgInbox" in detail


def test_signal_with_start_from_a_step_starts_or_signals(new_engine: EngineFactory, run: Runner) -> None:
    """Issue 10: a new instance starts with its message kept (it never waits); a waiting one is signalled."""

    async def scenario() -> tuple[int, int, list[str], list[str]]:
        async with new_engine() as engine:
            fresh = await engine.start(MsgLauncher(count=0, swst="fresh"))
            await fresh.result()
            new_got = (await engine.handle("fresh").result()).got
            await _parked_inbox(engine, "parked")
            again = await engine.start(MsgLauncher(count=0, swst="parked"))
            await again.result()
            parked_got = (await engine.handle("parked").result()).got
            kinds = [e.kind.value for e in engine.history("fresh") if e.kind in (K.MESSAGE_AWAITED, K.MESSAGE_RECEIVED)]
            notes = [
                f"{e.kind.value} {e.detail}" for e in again.history() if e.kind in (K.SIGNAL_SENT, K.STARTED_INSTANCE)
            ]
            return new_got, parked_got, kinds, notes

    new_got, parked_got, kinds, notes = run(scenario())
    assert (42, 42) == (new_got, parked_got)
    assert ["message_received"] == kinds
    assert ["signal_sent parked MsgPing"] == notes


def test_engine_signal_with_start_starts_once_then_signals(new_engine: EngineFactory, run: Runner) -> None:
    """Issue 10: the caller's signal-with-start: one instance, every message kept; typed errors change nothing."""

    async def scenario() -> tuple[int, int, list[str]]:
        async with new_engine() as engine:
            handle = await engine.signal_with_start(MsgInbox(), MsgPing(1), instance_id="S")
            first = (await handle.result()).got
            errors: list[str] = []
            for call in (
                engine.signal_with_start(MsgInbox(), MsgPing(2), instance_id="S"),
                engine.signal_with_start(MsgInbox(), MsgOther("x"), instance_id="T"),
                engine.signal_with_start(MsgInbox(), MsgPing(3), instance_id="a/b"),
                engine.signal_with_start(MsgLauncher(), MsgPing(3), instance_id="U"),
            ):
                try:
                    await call
                except (InstanceFinished, SignalTypeError, WorkflowInputError) as exc:
                    errors.append(type(exc).__name__)
            return first, len(engine.instances()), errors

    assert (
        1,
        1,
        ["InstanceFinished", "SignalTypeError", "WorkflowInputError", "SignalTypeError"],
    ) == run(scenario())


def test_engine_signal_with_start_signals_a_live_instance(new_engine: EngineFactory, run: Runner) -> None:
    """Issue 10: the instance exists and waits: it gets the message (and the new workflow object is not used)."""

    async def scenario() -> tuple[int, bool]:
        async with new_engine() as engine:
            await _parked_inbox(engine, "S")
            unused = MsgInbox()
            handle = await engine.signal_with_start(unused, MsgPing(8), instance_id="S")
            return (await handle.result()).got, unused.got == -1

    assert (8, True) == run(scenario())


def test_a_context_outside_an_engine_cannot_send() -> None:
    """Issue 10: a Ctx made by hand (not by an engine) says so instead of dropping the message."""
    ctx = CtxClass(None, "i", "W", "s", 1, "i:0")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    with pytest.raises(RuntimeError, match="only a step run by an engine can"):
        ctx.signal("x", MsgPing(1))


def test_branches_of_a_fork_send_with_their_own_commits(new_engine: EngineFactory, run: Runner) -> None:
    """Issue 10: each branch's messages and starts go with that branch's step."""

    async def scenario() -> tuple[list[int], InstanceStatus]:
        async with new_engine() as engine:
            for inbox in ("in-left", "in-right"):
                await _parked_inbox(engine, inbox)
            await (await engine.start(MsgFork())).result()
            got = [(await engine.handle(i).result()).got for i in ("in-left", "in-right", "started-right")]
            return got, engine.info("started-left").status

    assert ([1, 2, 3], InstanceStatus.WAITING) == run(scenario())
