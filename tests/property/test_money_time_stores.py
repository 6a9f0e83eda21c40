"""
Issue 10: money and time round-trip through each durable store exactly.

Hypothesis draws Decimals of any precision and exponent (NaNs and infinities
included), datetimes naive, at fixed offsets and in named zones (on either side
of a repeated hour), dates, times, timedeltas of any size, UUIDs and enums, in
plain fields, containers, an optional, and in an attrs form and message. Each
example starts an instance on a SQLite file (or a PostgreSQL database), sends
the message while the instance still waits on its task (so it is kept in the
store), completes the task, and stops the engine; a new engine on the same
store takes the instance to its end, and every value must come back *exactly*:
the same type, the same Decimal digits and exponent, the same UTC offset and
zone name, the same microseconds.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID
from zoneinfo import ZoneInfo

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statemachine_orch import (
    Ctx,
    Engine,
    InstanceStatus,
    SqliteStore,
    Store,
    VirtualClock,
    Workflow,
    after,
    human_task,
    spec_of,
    step,
    wait_for,
)

if TYPE_CHECKING:
    from tests.conftest import Runner


class Tier(enum.StrEnum):
    """A str enum."""

    GOLD = "gold"
    SILVER = "silver"


class Rank(enum.IntEnum):
    """An int enum."""

    ONE = 1
    TWO = 2


@attrs.frozen
class Stamp:
    """Money and time nested in a form and a message."""

    amount: Decimal
    at: datetime
    on: date
    wait: timedelta
    ref: UUID
    tier: Tier


class Ledger(Workflow):
    """Every kind of money-and-time value, parked on a task, then on a message."""

    amount: Decimal
    when: datetime
    day: date
    clock_time: time
    grace: timedelta
    ref: UUID
    tier: Tier
    rank: Rank
    amounts: list[Decimal]
    waits: dict[str, timedelta]
    maybe: Decimal | None
    form: Stamp | None = None
    message: Stamp | None = None

    @step(initial=True)
    def begin(self, ctx: Ctx) -> None: ...

    @after(begin)
    @human_task(assignee="clerk", form=Stamp)
    def record(self, ctx: Ctx, form: Stamp) -> None:
        self.form = form

    @after(record)
    @wait_for(Stamp)
    def receive(self, ctx: Ctx, msg: Stamp) -> None:
        self.message = msg

    @after(receive)
    @human_task(assignee="clerk", final=True)
    def archive(self, ctx: Ctx) -> None: ...


offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
ZONES = [ZoneInfo(k) for k in ("Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC")]
decimals = st.decimals(allow_nan=True, allow_infinity=True) | st.decimals(
    places=2, min_value=-(10**15), max_value=10**15
)
zones: st.SearchStrategy[tzinfo] = offsets | st.sampled_from(ZONES)
datetimes = st.datetimes() | st.datetimes(
    min_value=datetime(1900, 1, 1),  # noqa: DTZ001 - hypothesis takes naive bounds and adds the zones
    max_value=datetime(2200, 1, 1),  # noqa: DTZ001
    timezones=zones,
)
stamps = st.builds(Stamp, decimals, datetimes, st.dates(), st.timedeltas(), st.uuids(), st.sampled_from(Tier))
# Text PostgreSQL's jsonb can hold (no NUL, no lone surrogate: a documented limit of that store).
keys = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=4)
ledgers = st.builds(
    Ledger,
    amount=decimals,
    when=datetimes,
    day=st.dates(),
    clock_time=st.times(timezones=st.none() | offsets),
    grace=st.timedeltas(),
    ref=st.uuids(),
    tier=st.sampled_from(Tier),
    rank=st.sampled_from(Rank),
    amounts=st.lists(decimals, max_size=3),
    waits=st.dictionaries(keys, st.timedeltas(), max_size=3),
    maybe=st.none() | decimals,
)


def exact(value: object) -> object:
    """What equality does not see: a value's type, its Decimal digits, its zone, offset and text."""
    if isinstance(value, Decimal):
        return ("Decimal", value.as_tuple(), str(value))
    if isinstance(value, datetime):
        zone = value.tzinfo
        return ("datetime", value.isoformat(), value.utcoffset(), getattr(zone, "key", type(zone).__name__))
    if isinstance(value, time):  # fold tells the two of a repeated hour apart: nothing without a zone's rules
        return ("time", value.isoformat(), value.utcoffset())
    if isinstance(value, (date, timedelta, UUID, enum.Enum)):
        return (type(value).__name__, repr(value), str(value))
    if isinstance(value, list):
        return [exact(v) for v in cast("list[object]", value)]
    if isinstance(value, dict):
        return {k: exact(v) for k, v in cast("dict[str, object]", value).items()}
    if isinstance(value, Stamp):
        return {k: exact(v) for k, v in attrs.asdict(value, recurse=False).items()}
    return (type(value).__name__, value)


def variables(wf: Ledger) -> dict[str, object]:
    return {f.name: exact(getattr(wf, f.name)) for f in spec_of(Ledger).fields}


OpenStore = Callable[[], AbstractContextManager[Store]]
_ids = itertools.count(1)


def round_trip(run: Runner, open_store: OpenStore, wf: Ledger, form: Stamp, message: Stamp) -> dict[str, object]:
    """The variables of *wf* after its form and message went in, as a new engine on the same store reads them."""
    clock = VirtualClock()
    instance_id = f"ledger-{next(_ids)}"

    async def scenario() -> tuple[InstanceStatus, str | None, Ledger]:
        with open_store() as store:
            async with Engine(store, clock=clock, workflows=[Ledger]) as engine:
                handle = await engine.start(wf, instance_id=instance_id)
                await handle.wait_idle()
                await engine.signal(instance_id, message)  # kept in the store: it waits on its task
                [task] = [t for t in engine.tasks(user="clerk") if t.instance_id == instance_id]
                await engine.complete_task(task.id, user="clerk", form=form)
        with open_store() as store:
            async with Engine(store, clock=clock, workflows=[Ledger]) as engine:
                status = await engine.wait_instance(instance_id, terminal=False)
                reloaded: Ledger = engine.workflow(instance_id)
                return status, engine.info(instance_id).step, reloaded

    status, at_step, reloaded = run(scenario())
    assert (InstanceStatus.WAITING, "archive") == (status, at_step)
    return variables(reloaded)


def expected(wf: Ledger, form: Stamp, message: Stamp) -> dict[str, object]:
    return variables(wf) | {"form": exact(form), "message": exact(message)}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(wf=ledgers, form=stamps, message=stamps)
def test_money_and_time_round_trip_through_sqlite_exactly(
    tmp_path_factory: pytest.TempPathFactory, run: Runner, wf: Ledger, form: Stamp, message: Stamp
) -> None:
    """Issue 10: Decimal, datetime, date, time, timedelta, UUID and enum values read back from SQLite exactly."""
    path: Path = tmp_path_factory.mktemp("money") / "orch.db"
    want = expected(wf, form, message)
    assert want == round_trip(run, lambda: SqliteStore(path), wf, form, message)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(wf=ledgers, form=stamps, message=stamps)
def test_money_and_time_round_trip_through_postgres_exactly(
    pg_dsn: str, run: Runner, wf: Ledger, form: Stamp, message: Stamp
) -> None:
    """Issue 10: the same values read back from PostgreSQL (jsonb) exactly."""
    from statemachine_orch._store_postgres import PostgresStore

    def open_store() -> AbstractContextManager[Any]:
        return PostgresStore(pg_dsn, schema="money_time")  # in the session's database, dropped after it

    want = expected(wf, form, message)
    assert want == round_trip(run, open_store, wf, form, message)
