"""
Issue 10, item 10: money and time out of the box.

``Decimal``, ``datetime`` (zoned too), ``date``, ``time``, ``timedelta``, ``UUID``
and enums work as variables, forms and messages without registering anything;
their JSON forms lose nothing; a type of one's own registers through
``register_type``; tasks and instance listings give their times as datetimes;
``ctx.now()`` is the engine's clock.
"""

# pyright: reportUnusedClass=false
# (classes defined only to fail their definition are never used)

from __future__ import annotations

import enum
import json
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID
from zoneinfo import ZoneInfo

import attrs
import pytest

from statemachine_orch import (
    Ctx,
    RecordLoadError,
    SignalTypeError,
    TaskFormError,
    VirtualClock,
    Workflow,
    WorkflowDefinitionError,
    WorkflowInputError,
    after,
    human_task,
    register_type,
    step,
    timer,
    wait_for,
)
from statemachine_orch._serialize import dumps, loads, structure

if TYPE_CHECKING:
    from tests.conftest import EngineFactory, Runner

PARIS = ZoneInfo("Europe/Paris")


class Currency(enum.StrEnum):
    """A str-valued enum."""

    EUR = "EUR"
    USD = "USD"


class Priority(enum.IntEnum):
    """An int-valued enum."""

    LOW = 1
    HIGH = 2


@attrs.frozen
class Refund:
    """A form of money and time."""

    amount: Decimal
    currency: Currency
    approved_at: datetime


@attrs.frozen
class Settled:
    """A message of money and time."""

    payment: UUID
    amount: Decimal
    on: date


class Invoice(Workflow):
    """Money and time in the variables; a form and a message of them."""

    total: Decimal
    currency: Currency
    issued: datetime
    due_in: timedelta
    cutoff: time
    reference: UUID
    priority: Priority = Priority.LOW
    lines: list[Decimal] = attrs.field(factory=list[Decimal])
    refund: Refund | None = None
    settled: Settled | None = None
    due: datetime | None = None

    @step(initial=True)
    def open_invoice(self, ctx: Ctx) -> None:
        self.total = sum(self.lines, Decimal("0.00"))
        self.due = self.issued + self.due_in

    @after(open_invoice)
    @human_task(assignee="clerk", form=Refund, due=timedelta(days=3))
    def review(self, ctx: Ctx, form: Refund) -> None:
        self.refund = form

    @after(review)
    @wait_for(Settled, final=True)
    def settle(self, ctx: Ctx, msg: Settled) -> None:
        self.settled = msg


ISSUED = datetime(2026, 3, 28, 9, 0, tzinfo=PARIS)
REF = UUID("12345678-1234-5678-1234-567812345678")


def new_invoice(**wrong: Any) -> Invoice:
    """An invoice of three lines; *wrong* replaces some of its values (with values of the wrong types)."""
    values: dict[str, Any] = {
        "total": Decimal(0),
        "currency": Currency.EUR,
        "issued": ISSUED,
        "due_in": timedelta(days=1),
        "cutoff": time(17, 30),
        "reference": REF,
        "lines": [Decimal("19.99"), Decimal("0.01"), Decimal("100.10")],
    }
    return Invoice(**(values | wrong))


def test_money_and_time_run_as_variables_forms_and_messages(new_engine: EngineFactory, run: Runner) -> None:
    """Issue 10: Decimal, zoned datetime, timedelta, time, UUID and enums need no registration anywhere."""
    refund = Refund(Decimal("20.00"), Currency.USD, datetime(2026, 3, 29, 10, 0, tzinfo=UTC))
    settled = Settled(REF, Decimal("120.10"), date(2026, 4, 1))

    async def scenario() -> Invoice:
        async with new_engine() as engine:
            handle = await engine.start(new_invoice())
            await handle.wait_idle()
            [task] = engine.tasks(user="clerk")
            await engine.complete_task(task.id, user="clerk", form=refund)
            await handle.wait_idle()
            await engine.signal(handle.instance_id, settled)
            return await handle.result()

    done = run(scenario())
    assert Decimal("120.10") == done.total
    assert "120.10" == str(done.total), "the sum keeps its cents"
    # One calendar day later in Paris crosses the change to summer time: 24 hours of
    # wall-clock arithmetic, kept in the zone.
    assert datetime(2026, 3, 29, 9, 0, tzinfo=PARIS) == done.due
    assert refund == done.refund
    assert settled == done.settled


def test_wrong_types_for_money_and_time_are_refused_at_the_door(new_engine: EngineFactory, run: Runner) -> None:
    """Issue 10: a float where a Decimal is declared (or a str for a UUID) is a typed input error naming the field."""

    async def scenario() -> tuple[list[str], str, str]:
        found: list[str] = []
        async with new_engine() as engine:
            for bad in (
                new_invoice(total=19.99),
                new_invoice(reference=str(REF)),
                new_invoice(due_in=3600),
                new_invoice(cutoff=time(9, tzinfo=PARIS)),
            ):
                with pytest.raises(WorkflowInputError) as err:
                    await engine.start(bad)
                found.append(str(err.value))
            handle = await engine.start(new_invoice())
            await handle.wait_idle()
            [task] = engine.tasks(user="clerk")
            with pytest.raises(TaskFormError) as form_err:
                await engine.complete_task(
                    task.id,
                    user="clerk",
                    form=Refund(1.5, Currency.EUR, ISSUED),  # type: ignore[arg-type]
                )
            await engine.complete_task(task.id, user="clerk", form=Refund(Decimal("1.5"), Currency.EUR, ISSUED))
            await handle.wait_idle()
            with pytest.raises(SignalTypeError) as signal_err:
                await engine.signal(handle.instance_id, Settled(REF, Decimal(1), "2026-04-01"))  # type: ignore[arg-type]
            return found, str(form_err.value), str(signal_err.value)

    found, form_error, signal_error = run(scenario())
    assert [
        "Invoice.total: expected Decimal but got 19.99 (type=float)",
        "Invoice.reference: expected UUID but got '12345678-1234-5678-1234-567812345678' (type=str)",
        "Invoice.due_in: expected timedelta but got 3600 (type=int)",
        (
            "Invoice.cutoff: datetime.time(9, 0, tzinfo=zoneinfo.ZoneInfo(key='Europe/Paris')) cannot be stored as "
            "JSON (ValueError: the time 09:00:00 has the zone Europe/Paris but no UTC offset; store a datetime to "
            "keep a zone)"
        ),
    ] == found
    assert form_error.endswith(".amount: expected Decimal but got 1.5 (type=float)"), form_error
    assert signal_error.endswith(".on: expected date but got '2026-04-01' (type=str)"), signal_error


@pytest.mark.parametrize(
    ("value", "tp", "text"),
    [
        (Decimal("12.50"), Decimal, '"12.50"'),
        (Decimal("-0.000"), Decimal, '"-0.000"'),
        (Decimal("1E+3"), Decimal, '"1E+3"'),
        (Decimal("123456789012345678901234567890.123456789"), Decimal, '"123456789012345678901234567890.123456789"'),
        (timedelta(days=1, hours=2, minutes=3, seconds=4, microseconds=5), timedelta, '"P1DT2H3M4.000005S"'),
        (timedelta(0), timedelta, '"PT0S"'),
        (timedelta(microseconds=-1), timedelta, '"-PT0.000001S"'),
        (timedelta(hours=36), timedelta, '"P1DT12H"'),
        (time(9, 30, 15, 250), time, '"09:30:15.000250"'),
        (REF, UUID, '"12345678-1234-5678-1234-567812345678"'),
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), datetime, '"2026-01-02T03:04:05+00:00"'),
        (datetime(2026, 7, 1, 12, 0, tzinfo=PARIS), datetime, '"2026-07-01T12:00:00+02:00[Europe/Paris]"'),
        (datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=PARIS), datetime, '"2026-10-25T02:30:00+01:00[Europe/Paris]"'),
        (Currency.USD, Currency, '"USD"'),
        (Priority.HIGH, Priority, "2"),
    ],
)
def test_json_forms_of_money_and_time(value: object, tp: type, text: str) -> None:
    """Issue 10: each value is written as readable JSON and read back equal, in the same zone, offset and precision."""
    assert text == dumps(value, tp)
    back = loads(text, tp)
    assert (value, type(value), repr(value)) == (back, type(back), repr(back))


def test_the_second_of_a_repeated_hour_is_read_back_as_the_second() -> None:
    """Issue 10: 02:30 on the night summer time ends in Paris happens twice; each reads back with its own offset."""
    first = datetime(2026, 10, 25, 2, 30, fold=0, tzinfo=PARIS)
    second = first.replace(fold=1)
    back = [loads(dumps(v, datetime), datetime) for v in (first, second)]
    assert [timedelta(hours=2), timedelta(hours=1)] == [v.utcoffset() for v in back]
    assert [0, 1] == [v.fold for v in back]


@pytest.mark.parametrize(
    ("data", "tp", "expected"),
    [
        (12, Decimal, Decimal(12)),
        (0.1, Decimal, Decimal("0.1")),
        (90, timedelta, timedelta(minutes=1, seconds=30)),
        (0.25, timedelta, timedelta(milliseconds=250)),
        ("PT1H30M", timedelta, timedelta(hours=1, minutes=30)),
        ("P2D", timedelta, timedelta(days=2)),
        ("2026-01-02T03:04:05Z", datetime, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ],
)
def test_json_from_outside_may_say_the_same_another_way(data: object, tp: type, expected: object) -> None:
    """Issue 10: a number for a Decimal or for seconds, a short duration, a 'Z' time: read as meant."""
    assert expected == structure(data, tp)


@pytest.mark.parametrize(
    ("data", "tp", "detail"),
    [
        ("twelve", Decimal, "expected Decimal but got 'twelve' (type=str)"),
        (True, Decimal, "expected Decimal but got True (type=bool)"),
        ("P", timedelta, "expected timedelta but got 'P' (type=str)"),
        ("1 hour", timedelta, "expected timedelta but got '1 hour' (type=str)"),
        (42, UUID, "expected UUID but got 42 (type=int)"),
        ("2026-01-02T03:04:05+01:00[Mars/Olympus]", datetime, "expected datetime but got"),
    ],
)
def test_json_that_is_no_such_value_is_a_load_error(data: object, tp: type, detail: str) -> None:
    """Issue 10: a stored value that does not fit its type is a RecordLoadError naming the type and the value."""
    with pytest.raises(RecordLoadError) as err:
        structure(data, tp)
    assert str(err.value.detail).startswith(detail), err.value.detail


def test_task_and_instance_times_as_datetimes(new_engine: EngineFactory, clock: VirtualClock, run: Runner) -> None:
    """Issue 10: Task.created_at/due_at/completed_at and InstanceInfo.created_at/wake_at also come as UTC datetimes."""

    class Reminder(Workflow):
        @step(initial=True)
        def begin(self, ctx: Ctx) -> None: ...

        @after(begin)
        @human_task(assignee="ann", due=timedelta(days=2))
        def answer(self, ctx: Ctx) -> None: ...

        @after(answer)
        @timer(timedelta(hours=1), final=True)
        def later(self, ctx: Ctx) -> None: ...

    clock.autojump = False
    start = datetime.fromtimestamp(clock.now(), UTC)

    async def scenario() -> None:
        async with new_engine() as engine:
            handle = await engine.start(Reminder())
            await handle.wait_idle()
            [task] = engine.tasks(user="ann")
            assert (start, start + timedelta(days=2), None) == (
                task.created_datetime,
                task.due_datetime,
                task.completed_datetime,
            )
            assert task.created_at == task.created_datetime.timestamp()
            info = engine.info(handle.instance_id)
            assert (start, None) == (info.created_datetime, info.wake_datetime)
            clock.advance(60)
            done = await engine.complete_task(task.id, user="ann")
            assert start + timedelta(minutes=1) == done.completed_datetime
            await handle.wait_idle()
            info = engine.info(handle.instance_id)
            assert start + timedelta(hours=1, minutes=1) == info.wake_datetime
            assert info.wake_datetime is not None
            assert info.wake_at == info.wake_datetime.timestamp()

    run(scenario())


def test_ctx_now_is_the_engines_clock(new_engine: EngineFactory, clock: VirtualClock, run: Runner) -> None:
    """Issue 10: ctx.now() gives step code the engine's (here virtual) time, as an aware UTC datetime."""
    seen: list[datetime] = []

    class Stamped(Workflow):
        stamp: datetime | None = None

        @step(initial=True)
        def first(self, ctx: Ctx) -> None:
            self.stamp = ctx.now()
            seen.append(ctx.now())

        @after(first)
        @timer(timedelta(days=30), final=True)
        def month_later(self, ctx: Ctx) -> None:
            seen.append(ctx.now())

    start = datetime.fromtimestamp(clock.now(), UTC)

    async def scenario() -> Stamped:
        async with new_engine() as engine:
            return await (await engine.start(Stamped())).result()

    done = run(scenario())
    assert [start, start + timedelta(days=30)] == seen
    assert start == done.stamp
    assert UTC == seen[0].tzinfo


class Money:
    """A type of one's own, not attrs: amount and currency."""

    def __init__(self, amount: Decimal, currency: str) -> None:
        self.amount = amount
        self.currency = currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (self.amount, self.currency) == (other.amount, other.currency)

    def __hash__(self) -> int:
        return hash((self.amount, self.currency))

    def __repr__(self) -> str:
        return f"Money({self.amount!r}, {self.currency!r})"


def money_to_json(value: Money) -> str:
    return f"{value.amount} {value.currency}"


def money_from_json(data: object) -> Money:
    if not isinstance(data, str):
        msg = f"expected '<amount> <currency>', got {data!r}"
        raise TypeError(msg)
    amount, currency = data.split(" ")
    return Money(Decimal(amount), currency)


def test_a_type_of_ones_own_registers_through_register_type(new_engine: EngineFactory, run: Runner) -> None:
    """Issue 10: register_type makes a plain class storable: as a variable, in a form, written as its JSON form."""
    register_type(Money, to_json=money_to_json, from_json=money_from_json)

    @attrs.frozen
    class Quote:
        price: Money

    class Sale(Workflow):
        price: Money
        agreed: Money | None = None

        @step(initial=True)
        def offer(self, ctx: Ctx) -> None: ...

        @after(offer)
        @human_task(assignee="buyer", form=Quote, final=True)
        def accept(self, ctx: Ctx, form: Quote) -> None:
            self.agreed = form.price

    async def scenario() -> Sale:
        async with new_engine() as engine:
            handle = await engine.start(Sale(Money(Decimal("9.90"), "EUR")))
            await handle.wait_idle()
            [task] = engine.tasks(user="buyer")
            await engine.complete_task(task.id, user="buyer", form=Quote(Money(Decimal("9.50"), "EUR")))
            return await handle.result()

    done = run(scenario())
    assert Money(Decimal("9.50"), "EUR") == done.agreed
    assert '{"price":"9.90 EUR","agreed":null}' == json.dumps(
        json.loads(dumps(done, Sale)) | {"agreed": None}, separators=(",", ":")
    )
    assert Money(Decimal("1.00"), "USD") == loads('"1.00 USD"', Money)


class Opaque:
    """A plain class nobody registered."""


class Corner(enum.Enum):
    """An enum whose values are tuples: JSON gives lists back."""

    TOP_LEFT = (0, 0)
    BOTTOM_RIGHT = (1, 1)


def test_an_unregistered_class_is_a_definition_error_that_says_how_to_register_it() -> None:
    """Issue 10: a plain class as a field type names register_type in the definition error."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Holder(Workflow):
            thing: Opaque | None = None

            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

    [problem] = err.value.problems
    assert (
        "field 'thing' cannot be persisted: its type 'Opaque' cannot be stored as JSON; make it an attrs class, or "
        "register its JSON form with statemachine_orch.register_type(Opaque, to_json=..., from_json=...) before "
        "this class"
    ) == problem.message


def test_an_enum_whose_values_json_cannot_give_back_is_a_definition_error() -> None:
    """Issue 10: enums are stored by value; a member whose value would not read back is refused when the class is made."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Drawing(Workflow):
            corner: Corner = Corner.TOP_LEFT

            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

    [problem] = err.value.problems
    assert (
        "field 'corner' cannot be persisted: its enum 'Corner' has the member TOP_LEFT = (0, 0), which is stored by "
        "its value and would not read back; give the members str or int values"
    ) == problem.message


@pytest.mark.parametrize(
    ("tp", "kwargs", "error", "message"),
    [
        ("Money", {"to_json": str, "from_json": str}, TypeError, "register_type() takes a class, got 'Money' (str)"),
        (
            Decimal,
            {"to_json": str, "from_json": Decimal},
            ValueError,
            "register_type(Decimal): Decimal is stored out of the box and cannot be replaced",
        ),
        (
            Money,
            {"to_json": "amount", "from_json": money_from_json},
            TypeError,
            "register_type(Money, to_json=...) must be a function, got 'amount'",
        ),
    ],
)
def test_register_type_refuses_what_it_cannot_register(
    tp: object, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    """Issue 10: a non-class, a built-in type or a non-callable hook is refused, saying which."""
    with pytest.raises(error) as err:
        register_type(tp, **kwargs)  # type: ignore[arg-type]
    assert message == str(err.value)
