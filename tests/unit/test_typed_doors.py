"""
Issue 8: "Typed at every door" — what callers and steps hand to the engine is checked before anything is stored.

A signal's message and a task's form are checked field by field against their
declared types (and for what JSON can hold); so are the variables given to
``start()`` and those a step or a compensation leaves behind. A refused value
changes nothing; a step's bad variable is that attempt's failure, named and put
back. The arguments of ``complete_task`` are checked as arguments, and no text a
caller gives can forge a line of ``HistoryEvent.describe()``.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import attrs
import pytest

from statemachine_orch import (
    Ctx,
    EventKind,
    HistoryEvent,
    InstanceStatus,
    Retry,
    SignalTypeError,
    TaskFormError,
    TaskStatus,
    VariableTypeError,
    Workflow,
    WorkflowInputError,
    after,
    human_task,
    step,
    wait_for,
)

if TYPE_CHECKING:
    from tests.conftest import EngineFactory, Runner


@attrs.frozen
class Paid:
    """A payment notification, as a webhook would send it."""

    amount: float
    reference: str = ""


class Order(Workflow):
    """Place, wait for the payment, ship."""

    paid: float = 0.0

    @step(initial=True)
    def place(self, ctx: Ctx) -> None: ...

    @after(place)
    @wait_for(Paid)
    def payment(self, ctx: Ctx, msg: Paid) -> None:
        self.paid = msg.amount

    @after(payment)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None: ...


@attrs.frozen
class Approval:
    """The approver's form."""

    amount: int
    comment: str = ""


class Expense(Workflow):
    """Submit, approve (ann), pay."""

    approved: Approval | None = None

    @step(initial=True)
    def submit(self, ctx: Ctx) -> None: ...

    @after(submit)
    @human_task(assignee="ann", candidate_groups=("finance",), form=Approval)
    def review(self, ctx: Ctx, form: Approval) -> None:
        self.approved = form

    @after(review)
    @step(final=True)
    def pay(self, ctx: Ctx) -> None: ...


def _none_as_int() -> int:
    return cast("int", None)  # a service that replied null for a number


class Parcel(Workflow):
    """Weigh (the scale may answer nothing), then ship."""

    count: int = 0
    label: str = ""

    @step(initial=True)
    def weigh(self, ctx: Ctx) -> None:
        self.label = "weighed"
        self.count = _none_as_int()

    @after(weigh)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None: ...


def test_a_signal_with_a_field_of_the_wrong_type_is_refused_and_nothing_is_stored(
    run: Runner, new_engine: EngineFactory
) -> None:
    """Issue 8: signal(Paid(amount="12,50")) for ``amount: float`` raises SignalTypeError naming field, type and value."""

    async def scenario() -> tuple[SignalTypeError, InstanceStatus, int, InstanceStatus, float]:
        async with new_engine() as engine:
            handle = await engine.start(Order())
            await handle.wait_idle()
            with pytest.raises(SignalTypeError) as err:
                await engine.signal(handle.instance_id, Paid(amount=cast("float", "12,50")))
            waiting = engine.info(handle.instance_id).status
            stored = len(engine.store.signals(handle.instance_id))
            await engine.signal(handle.instance_id, Paid(amount=12.5))
            status, wf = await engine.wait_result(handle.instance_id)
            return err.value, waiting, stored, status, cast("Order", wf).paid

    err, waiting, stored, status, paid = run(scenario())
    assert isinstance(err, TypeError)
    assert "Paid.amount" == err.field_path
    assert f"instance {err.instance_id}: Paid.amount: expected float but got '12,50' (type=str)" == str(err)
    assert (InstanceStatus.WAITING, 0) == (waiting, stored), "nothing was stored, nothing moved"
    assert (InstanceStatus.COMPLETED, 12.5) == (status, paid), "the next, correct message is the one consumed"


def test_a_huge_int_in_a_signal_is_a_signal_type_error(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 8: an int JSON cannot hold (more digits than Python prints) is refused as a SignalTypeError."""

    async def scenario() -> tuple[SignalTypeError, int]:
        async with new_engine() as engine:
            handle = await engine.start(Order())
            await handle.wait_idle()
            with pytest.raises(SignalTypeError) as err:
                await engine.signal(handle.instance_id, Paid(amount=10**5000))
            return err.value, len(engine.store.signals(handle.instance_id))

    err, stored = run(scenario())
    assert "Paid.amount" == err.field_path
    assert "expected int of at most 4300 digits but got <an int of 16610 bits> (type=int)" in str(err)
    assert 0 == stored


def test_a_form_with_a_field_of_the_wrong_type_is_refused_and_nothing_changes(
    run: Runner, new_engine: EngineFactory
) -> None:
    """Issue 8: complete_task(form=Approval(amount="12.50")) for ``amount: int`` raises TaskFormError; the task stays open."""

    async def scenario() -> tuple[TaskFormError, TaskStatus, InstanceStatus, list[HistoryEvent]]:
        async with new_engine() as engine:
            handle = await engine.start(Expense())
            await handle.wait_idle()
            [task] = engine.tasks(user="ann")
            with pytest.raises(TaskFormError) as err:
                await engine.complete_task(task.id, user="ann", form=Approval(amount=cast("int", "12.50")))
            stored = engine.store.task(task.id)
            assert stored is not None
            history = engine.history(handle.instance_id)
            return err.value, stored.status, engine.info(handle.instance_id).status, history

    err, task_status, status, history = run(scenario())
    assert isinstance(err, TypeError)
    assert "Approval.amount" == err.field_path
    assert f"task {err.task_id}: Approval.amount: expected int but got '12.50' (type=str)" == str(err)
    assert (TaskStatus.OPEN, InstanceStatus.WAITING) == (task_status, status)
    assert [] == [e for e in history if e.kind is EventKind.TASK_COMPLETED]


def test_a_step_that_leaves_a_wrong_type_fails_and_its_variables_are_put_back(
    run: Runner, new_engine: EngineFactory
) -> None:
    """Issue 8: ``self.count = None`` for ``count: int`` fails the step (named), and every variable is as before it."""

    async def scenario() -> tuple[InstanceStatus, list[str | None], int, str]:
        async with new_engine() as engine:
            handle = await engine.start(Parcel())
            status, wf = await engine.wait_result(handle.instance_id)
            failed = [e.detail for e in engine.history(handle.instance_id) if e.kind is EventKind.STEP_FAILED]
            parcel = cast("Parcel", wf)
            return status, failed, parcel.count, parcel.label

    status, failed, count, label = run(scenario())
    assert InstanceStatus.FAILED == status
    assert ["VariableTypeError: Parcel.count: expected int but got None (type=NoneType)"] == failed
    assert (0, "") == (count, label), "the variables are those from before the step"


class Counter(Workflow):
    """A step that counts past what JSON can hold."""

    count: int = 0

    @step(initial=True, final=True)
    def count_up(self, ctx: Ctx) -> None:
        self.count = 10**5000


def test_a_step_that_leaves_an_int_too_long_for_json_fails(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 8: even on the memory store, a variable no JSON store could hold fails the step that set it."""

    async def scenario() -> tuple[InstanceStatus, list[str | None], int]:
        async with new_engine() as engine:
            handle = await engine.start(Counter())
            status, wf = await engine.wait_result(handle.instance_id)
            failed = [e.detail for e in engine.history(handle.instance_id) if e.kind is EventKind.STEP_FAILED]
            return status, failed, cast("Counter", wf).count

    status, failed, count = run(scenario())
    assert (InstanceStatus.FAILED, 0) == (status, count)
    assert [
        "VariableTypeError: Counter.count: expected int of at most 4300 digits but got <an int of 16610 bits> (type=int)"
    ] == failed


class Scale(Workflow):
    """Weigh with a retry: the first reading is nothing, the second a number."""

    count: int = 0
    readings: list[int] = attrs.field(factory=list[int])

    @step(initial=True, retry=Retry(attempts=2, initial=1))
    def weigh(self, ctx: Ctx) -> None:
        self.readings.append(ctx.attempt)
        self.count = _none_as_int() if ctx.attempt == 1 else 3

    @after(weigh)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None: ...


def test_a_wrong_type_is_retried_like_any_failure(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 8: the mismatch is the attempt's failure: the retry starts from the variables before the first attempt."""

    async def scenario() -> tuple[InstanceStatus, int, list[int], list[tuple[str, str | None, int]]]:
        async with new_engine() as engine:
            handle = await engine.start(Scale())
            status, wf = await engine.wait_result(handle.instance_id)
            kinds = (EventKind.STEP_FAILED, EventKind.RETRY_SCHEDULED, EventKind.STEP_COMPLETED)
            history = [(e.kind.value, e.step, e.attempt) for e in engine.history(handle.instance_id) if e.kind in kinds]
            scale = cast("Scale", wf)
            return status, scale.count, scale.readings, history

    status, count, readings, history = run(scenario())
    assert (InstanceStatus.COMPLETED, 3) == (status, count)
    assert [2] == readings, "a failed attempt's changes are undone, in place ones too, on every store (issue 10)"
    assert [
        ("step_failed", "weigh", 1),
        ("retry_scheduled", "weigh", 2),
        ("step_completed", "weigh", 2),
        ("step_completed", "ship", 1),
    ] == history


class Routed(Workflow):
    """A wrong type routed by on_error to a handler step."""

    count: int = 0
    why: str = ""

    @step(initial=True)
    def weigh(self, ctx: Ctx) -> None:
        self.count = _none_as_int()

    @after(weigh)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None: ...

    @after(weigh, on_error=VariableTypeError)
    @step(final=True)
    def weigh_by_hand(self, ctx: Ctx) -> None:
        self.count = 1


def test_a_wrong_type_is_routed_by_on_error(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 8: ``@after(step, on_error=VariableTypeError)`` catches a step's mismatched variable."""

    async def scenario() -> tuple[InstanceStatus, int, list[str | None]]:
        async with new_engine() as engine:
            handle = await engine.start(Routed())
            status, wf = await engine.wait_result(handle.instance_id)
            moves = [e.detail for e in engine.history(handle.instance_id) if e.kind is EventKind.TRANSITION]
            return status, cast("Routed", wf).count, moves

    status, count, moves = run(scenario())
    assert (InstanceStatus.COMPLETED, 1) == (status, count)
    assert ["weigh_by_hand", "@completed"] == moves


class Refund(Workflow):
    """Charge, then fail; the refund's compensation leaves a wrong type."""

    refunded: bool = False

    @step(initial=True)
    def charge(self, ctx: Ctx) -> None: ...

    @charge.compensation
    def refund(self, ctx: Ctx) -> None:
        self.refunded = cast("bool", "yes")

    @after(charge)
    @step(final=True)
    def explode(self, ctx: Ctx) -> None:
        msg = "boom"
        raise RuntimeError(msg)


def test_a_compensation_that_leaves_a_wrong_type_fails_visibly(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 8: a compensation's mismatched variable is that compensation's failure (compensation_failed), put back."""

    async def scenario() -> tuple[InstanceStatus, list[str | None], bool]:
        async with new_engine() as engine:
            handle = await engine.start(Refund())
            status, wf = await engine.wait_result(handle.instance_id)
            failed = [e.detail for e in engine.history(handle.instance_id) if e.kind is EventKind.COMPENSATION_FAILED]
            return status, failed, cast("Refund", wf).refunded

    status, failed, refunded = run(scenario())
    assert InstanceStatus.COMPENSATION_FAILED == status
    assert ["VariableTypeError: Refund.refunded: expected bool but got 'yes' (type=str)"] * 3 == failed, (
        "each of the compensation's three attempts"
    )
    assert refunded is False


class Ledger(Workflow):
    """Variables of every kind start() checks deeply."""

    total: int = 0
    approval: Approval | None = None
    lines: list[Approval] = attrs.field(factory=list[Approval])

    @step(initial=True, final=True)
    def book(self, ctx: Ctx) -> None: ...


@pytest.mark.parametrize(
    ("workflow", "field_path", "message"),
    [
        (
            lambda: Ledger(total=10**5000),
            "total",
            "Ledger.total: expected int of at most 4300 digits but got <an int of 16610 bits> (type=int)",
        ),
        (
            lambda: Ledger(approval=Approval(amount=cast("int", "12.50"))),
            "approval.amount",
            "Ledger.approval.amount: expected int but got '12.50' (type=str)",
        ),
        (
            lambda: Ledger(lines=[Approval(1), Approval(amount=cast("int", None))]),
            "lines[1].amount",
            "Ledger.lines[1].amount: expected int but got None (type=NoneType)",
        ),
    ],
    ids=["too-big-for-json", "inside-an-attrs-field", "inside-a-list"],
)
def test_start_refuses_variables_that_would_not_load_back(
    run: Runner, new_engine: EngineFactory, workflow: object, field_path: str, message: str
) -> None:
    """Issue 8: start() checks inside attrs fields and lists, and what JSON can hold: WorkflowInputError, nothing started."""
    make = cast("type[Ledger]", workflow)

    async def scenario() -> tuple[WorkflowInputError, int]:
        async with new_engine() as engine:
            with pytest.raises(WorkflowInputError) as err:
                await engine.start(make())
            return err.value, len(engine.instances())

    err, count = run(scenario())
    assert (field_path, message) == (err.field_path, str(err))
    assert 0 == count


@pytest.mark.parametrize(
    ("user", "error", "message"),
    [
        (None, TypeError, "user= must be the name of who completes the task, a str; got None (NoneType)"),
        ("", ValueError, "user= must be a non-empty name without control characters (newlines...); got ''"),
        (
            "ann\n12:00:00.000  task_completed review - boss",
            ValueError,
            (
                "user= must be a non-empty name without control characters (newlines...); "
                "got 'ann\\n12:00:00.000  task_completed review - boss'"
            ),
        ),
    ],
    ids=["none", "empty", "newline"],
)
def test_complete_task_refuses_a_user_that_is_not_a_name(
    run: Runner, new_engine: EngineFactory, user: object, error: type[Exception], message: str
) -> None:
    """Issue 8: ``user=None`` (or a name that could forge a history line) is the caller's error; the task stays open."""

    async def scenario() -> tuple[Exception, TaskStatus]:
        async with new_engine() as engine:
            handle = await engine.start(Expense())
            await handle.wait_idle()
            [task] = engine.tasks(user="ann")
            with pytest.raises(error) as err:
                await engine.complete_task(task.id, user=cast("str", user), groups=("finance",), form=Approval(1))
            stored = engine.store.task(task.id)
            assert stored is not None
            return err.value, stored.status

    err, status = run(scenario())
    assert message == str(err)
    assert TaskStatus.OPEN == status


def test_groups_given_as_bytes_are_refused_by_name(run: Runner, new_engine: EngineFactory) -> None:
    """Issue 8: ``groups=b"finance"`` raises a TypeError naming ``groups``, not one from deep inside."""

    async def scenario() -> tuple[TypeError, TypeError, TaskStatus]:
        async with new_engine() as engine:
            handle = await engine.start(Expense())
            await handle.wait_idle()
            [task] = engine.tasks(user="ann")
            with pytest.raises(TypeError) as completing:
                await engine.complete_task(task.id, user="bob", groups=cast("tuple[str]", b"finance"), form=Approval(1))
            with pytest.raises(TypeError) as listing:
                engine.tasks(user="bob", groups=cast("tuple[str]", b"finance"))
            stored = engine.store.task(task.id)
            assert stored is not None
            return completing.value, listing.value, stored.status

    completing, listing, status = run(scenario())
    assert "groups= must be group names (str), not bytes: got b'finance'" == str(completing)
    assert str(completing) == str(listing)
    assert TaskStatus.OPEN == status


def test_describe_escapes_control_characters() -> None:
    """Issue 8: a detail holding a newline (a user name, an error message) stays on one line in describe()."""
    event = HistoryEvent(0.0, EventKind.TASK_COMPLETED, "review", 0, "ann\n12:00:00.000  task_completed review\x1b[2J")
    assert "task_completed review - ann\\n12:00:00.000  task_completed review\\x1b[2J" == event.describe()
    moved = HistoryEvent(0.0, EventKind.TRANSITION, "a", 0, "b\r\nc")
    assert "transition    a -> b\\r\\nc" == moved.describe()
