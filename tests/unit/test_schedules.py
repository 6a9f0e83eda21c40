"""
Schedules (issue 10, item 7): ``Engine(schedules=[Schedule(...)])`` starts a workflow on a cron expression or an interval.

Each due time starts once, as the instance ``<schedule id>@<due time in UTC>``;
the store keeps how far a schedule got (a restart carries on from there); due
times missed while no engine ran are handled by ``catch_up`` (skip, one, all),
and one that comes while the last run has not ended by ``overlap`` (skip,
allow). A ``VirtualClock`` moves schedules only when advanced, and stops at
their due times on its way to a later timer.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest
import structlog.testing

from statemachine_orch import (
    CatchUp,
    Ctx,
    Engine,
    MemoryStore,
    Overlap,
    Schedule,
    ScheduleError,
    ScheduleInfo,
    SqliteStore,
    StoreError,
    VirtualClock,
    Workflow,
    after,
    human_task,
    step,
    timer,
)
from statemachine_orch._store import ScheduleState

if TYPE_CHECKING:
    from statemachine_orch import Store
    from tests.conftest import Runner

T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
"""Midnight, 1 January 2026 (UTC): where the tests' clocks start."""
HOUR = 3600.0
DAY = 24 * HOUR


class SchReport(Workflow):
    """A report for one day: one step."""

    day: str

    @step(initial=True, final=True)
    def compile(self, ctx: Ctx) -> None: ...


class SchReview(Workflow):
    """A run that waits for a person: it does not end until its task is completed."""

    day: str

    @step(initial=True)
    def draft(self, ctx: Ctx) -> None: ...

    @after(draft)
    @human_task(assignee="editor")
    def review(self, ctx: Ctx) -> None: ...

    @after(review)
    @step(final=True)
    def publish(self, ctx: Ctx) -> None: ...


class SchWait(Workflow):
    """Waits *seconds* on a timer."""

    seconds: float

    @step(initial=True)
    def begin(self, ctx: Ctx) -> None: ...

    @after(begin)
    @timer(35)
    def wait(self, ctx: Ctx) -> None: ...

    @after(wait)
    @step(final=True)
    def end(self, ctx: Ctx) -> None: ...


def report(due: datetime) -> SchReport:
    """What the schedules below start: the due time as the report's day."""
    return SchReport(day=due.isoformat())


def nightly(**options: Any) -> Schedule[SchReport]:
    """Every day at 02:00 UTC."""
    return Schedule("nightly", report, cron="0 2 * * *", **options)


def ids(engine: Engine, workflow: type[Workflow] = SchReport) -> list[str]:
    """The instances of *workflow*, in id order."""
    return sorted(i.id for i in engine.instances(workflow=workflow))


# --------------------------------------------------------------------------- the schedule itself


@pytest.mark.parametrize(
    ("kwargs", "argument", "fragment"),
    [
        ({"cron": "61 * * * *"}, "cron", "cron='61 * * * *' is not a cron expression: Bad minute"),
        ({"cron": "0 2 * *"}, "cron", "is not a cron expression: Wrong number of fields"),
        ({}, "every", "give exactly one of cron= (an expression) and every= (an interval)"),
        ({"cron": "* * * * *", "every": 5}, "cron", "give exactly one of cron="),
        ({"every": 0}, "every", "every= must be a positive interval, got 0"),
        ({"every": "5m"}, "every", "every= must be a timedelta or a number of seconds, got '5m'"),
        ({"every": 5, "tz": "Europe/Berlin"}, "tz", "tz= must be a tzinfo"),
        ({"every": 5, "catch_up": "all"}, "catch_up", "catch_up= must be a CatchUp (SKIP, ONE or ALL), got 'all'"),
        ({"every": 5, "overlap": True}, "overlap", "overlap= must be an Overlap (SKIP or ALLOW), got True"),
        ({"every": 5, "grace": -1}, "grace", "grace= must not be negative, got -1"),
    ],
)
def test_a_schedule_with_an_unusable_argument_is_refused(kwargs: dict[str, Any], argument: str, fragment: str) -> None:
    """Issue 10: ScheduleError (a ValueError) names the schedule and the argument."""
    with pytest.raises(ScheduleError) as err:
        Schedule("s", report, **kwargs)
    assert ("s", argument) == (err.value.schedule_id, err.value.argument)
    assert str(err.value).startswith("Schedule 's': ")
    assert fragment in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("bad_id", ["", "a/b", "x" * 151, "tab\there", 7])
def test_a_schedule_id_must_be_printable_without_a_slash(bad_id: Any) -> None:
    """Issue 10: ids become instance ids: printable, no '/', at most 150 characters."""
    with pytest.raises(ScheduleError, match="the id must be 1 to 150 printable characters without '/'"):
        Schedule(bad_id, report, every=5)


def test_start_must_be_callable() -> None:
    """Issue 10: the builder of the workflow is checked at once."""
    with pytest.raises(ScheduleError, match=r"start= must be a callable \(due: datetime\) -> Workflow"):
        Schedule("s", "report", every=5)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]


def test_interval_due_times_are_aligned_to_the_epoch_plus_the_offset() -> None:
    """Issue 10: every=1h, offset=5min: five past each hour; ids in UTC, as precise as the interval needs."""
    hourly = Schedule("h", report, every=timedelta(hours=1), offset=timedelta(minutes=5))
    fast = Schedule("f", report, every=0.25)
    assert T0 + 5 * 60 == hourly.next_after(T0)
    assert T0 + 5 * 60 + HOUR == hourly.next_after(T0 + 5 * 60)
    assert T0 - HOUR + 5 * 60 == hourly.last_at(T0)
    assert "h@2026-01-01T00:05:00Z" == hourly.instance_id(hourly.next_after(T0))
    dues = [fast.next_after(T0)]
    for _ in range(4):
        dues.append(fast.next_after(dues[-1]))
    # one precision for all of a schedule's ids: they sort as their due times
    assert ["f@2026-01-01T00:00:00.250Z", "f@2026-01-01T00:00:00.500Z", "f@2026-01-01T00:00:01.000Z"] == [
        fast.instance_id(d) for d in (dues[0], dues[1], dues[3])
    ]
    assert fast.last_at(dues[2]) == dues[2]


def test_cron_is_evaluated_in_the_schedules_time_zone() -> None:
    """Issue 10: 09:00 in Berlin is 08:00 UTC in winter and 07:00 UTC in summer; start gets Berlin time."""
    berlin = ZoneInfo("Europe/Berlin")
    morning = Schedule("m", report, cron="0 9 * * *", tz=berlin)
    winter = morning.next_after(T0)
    summer = morning.next_after(datetime(2026, 7, 1, tzinfo=UTC).timestamp())
    assert "m@2026-01-01T08:00:00Z" == morning.instance_id(winter)
    assert "m@2026-07-01T07:00:00Z" == morning.instance_id(summer)
    assert datetime(2026, 7, 1, 9, tzinfo=berlin) == morning.due_datetime(summer)
    assert morning.due_datetime(summer).tzinfo is berlin
    assert winter == morning.last_at(winter + 59)


# --------------------------------------------------------------------------- the engine starts due times


async def _engine_at(store: Store, clock: VirtualClock, *schedules: Schedule[Any]) -> Engine:
    engine = Engine(store, clock=clock, schedules=schedules)
    await engine.__aenter__()
    await engine.wait_idle()
    return engine


def test_a_due_time_starts_its_instance_once_with_its_due_time(run: Runner) -> None:
    """Issue 10: at 02:00 the instance nightly@...T02:00:00Z starts, with the due time; nothing before or twice."""

    async def scenario() -> tuple[list[str], list[str], str, list[ScheduleInfo]]:
        clock = VirtualClock(T0, autojump=False)
        async with Engine(clock=clock, schedules=[nightly()]) as engine:
            await engine.wait_idle()
            clock.advance(2 * HOUR - 1)
            await engine.wait_idle()
            before = ids(engine)
            clock.advance(1)
            await engine.wait_idle()
            clock.advance(HOUR)
            await engine.wait_idle()
            [info] = engine.instances(workflow=SchReport)
            day = engine.workflow(info.id).day
            return before, ids(engine), day, engine.schedules()

    before, after_due, day, infos = run(scenario())
    assert [] == before
    assert ["nightly@2026-01-01T02:00:00Z"] == after_due
    assert "2026-01-01T02:00:00+00:00" == day
    due = T0 + 2 * HOUR
    assert [ScheduleInfo("nightly", due, due + DAY, "nightly@2026-01-01T02:00:00Z", 1)] == infos


@pytest.mark.parametrize(
    ("catch_up", "expected"),
    [
        (CatchUp.SKIP, []),
        (CatchUp.ONE, ["nightly@2026-01-04T02:00:00Z"]),
        (CatchUp.ALL, ["nightly@2026-01-02T02:00:00Z", "nightly@2026-01-03T02:00:00Z", "nightly@2026-01-04T02:00:00Z"]),
    ],
)
def test_missed_due_times_follow_the_catch_up_policy(catch_up: CatchUp, expected: list[str], run: Runner) -> None:
    """Issue 10: three nights missed (noticed a day late): none, the newest, or all oldest first; logged."""

    async def scenario() -> tuple[list[str], list[str]]:
        clock = VirtualClock(T0 + 3 * HOUR, autojump=False)  # after the first night's 02:00: not due
        with structlog.testing.capture_logs() as logs:
            async with Engine(clock=clock, schedules=[nightly(catch_up=catch_up, overlap=Overlap.ALLOW)]) as engine:
                await engine.wait_idle()
                clock.advance(3 * DAY + HOUR)  # 04 January, 04:00: three due times, none within grace
                await engine.wait_idle()
                started = ids(engine)
        return started, [f"{e['first']} {e['last']}" for e in logs if e["event"] == "schedule_missed"]

    started, missed = run(scenario())
    assert expected == started
    assert ["2026-01-02T02:00:00Z 2026-01-04T02:00:00Z"] == missed


def test_a_due_time_on_time_makes_one_do_without_the_missed_ones(run: Runner) -> None:
    """Issue 10: catch-up ONE starts the newest missed due time only when no due time on time starts anyway."""

    async def scenario() -> list[str]:
        clock = VirtualClock(T0, autojump=False)
        hourly = Schedule("hourly", report, cron="0 * * * *", grace=120)
        async with Engine(clock=clock, schedules=[hourly]) as engine:
            await engine.wait_idle()
            clock.advance(3 * HOUR + 60)  # 01:00 and 02:00 missed, 03:00 a minute ago: on time
            await engine.wait_idle()
            return ids(engine)

    assert ["hourly@2026-01-01T03:00:00Z"] == run(scenario())


@pytest.mark.parametrize(
    ("overlap", "expected"),
    [
        (Overlap.SKIP, ["nightly@2026-01-01T02:00:00Z", "nightly@2026-01-03T02:00:00Z"]),
        (
            Overlap.ALLOW,
            ["nightly@2026-01-01T02:00:00Z", "nightly@2026-01-02T02:00:00Z", "nightly@2026-01-03T02:00:00Z"],
        ),
    ],
)
def test_a_due_time_while_the_last_run_runs_follows_the_overlap_policy(
    overlap: Overlap, expected: list[str], run: Runner
) -> None:
    """Issue 10: the first run waits for its review through the second night: skipped (SKIP) or started (ALLOW)."""

    async def scenario() -> list[str]:
        clock = VirtualClock(T0, autojump=False)
        reviews = Schedule("nightly", lambda due: SchReview(day=due.isoformat()), cron="0 2 * * *", overlap=overlap)
        async with Engine(clock=clock, schedules=[reviews]) as engine:
            await engine.wait_idle()
            for night in range(3):
                clock.advance((2 if night == 0 else 24) * HOUR)
                await engine.wait_idle()
                if night == 1:
                    for task in engine.tasks(user="editor"):
                        await engine.complete_task(task.id, user="editor")
                    await engine.wait_idle()
            return ids(engine, SchReview)

    assert expected == run(scenario())


def test_a_start_that_raises_skips_its_due_time_only(run: Runner) -> None:
    """Issue 10: a due time whose workflow cannot be built is logged and skipped; the next one starts."""

    def flaky(due: datetime) -> SchReport:
        if due.day == 1:
            msg = "no data for the first"
            raise LookupError(msg)
        return report(due)

    async def scenario() -> tuple[list[str], list[str], int]:
        clock = VirtualClock(T0, autojump=False)
        with structlog.testing.capture_logs() as logs:
            async with Engine(clock=clock, schedules=[Schedule("nightly", flaky, cron="0 2 * * *")]) as engine:
                await engine.wait_idle()
                for hours in (2, 24):
                    clock.advance(hours * HOUR)
                    await engine.wait_idle()
                started = ids(engine)
                [info] = engine.schedules()
        return started, [e["error"] for e in logs if e["event"] == "schedule_start_failed"], info.started

    started, errors, count = run(scenario())
    assert ["nightly@2026-01-02T02:00:00Z"] == started
    assert ["LookupError: no data for the first"] == errors
    assert 1 == count


def test_a_virtual_clock_stops_at_each_due_time_on_its_way_to_a_timer(run: Runner) -> None:
    """Issue 10: autojump over a 35 s timer stops at the 10 s interval's due times: none missed."""

    async def scenario() -> list[str]:
        ticks = Schedule("tick", report, every=10, catch_up=CatchUp.SKIP, overlap=Overlap.ALLOW, grace=0)
        async with Engine(clock=VirtualClock(T0), schedules=[ticks]) as engine:
            handle = await engine.start(SchWait(seconds=35))
            await handle.result()
            await engine.wait_idle()
            return ids(engine)

    assert ["tick@2026-01-01T00:00:10Z", "tick@2026-01-01T00:00:20Z", "tick@2026-01-01T00:00:30Z"] == run(scenario())


def test_an_idle_engine_with_a_virtual_clock_does_not_run_ahead(run: Runner) -> None:
    """Issue 10: with nothing else to do, an autojumping clock stays put: schedules wait for it to be advanced."""

    async def scenario() -> tuple[float, list[str]]:
        clock = VirtualClock(T0)
        async with Engine(clock=clock, schedules=[Schedule("tick", report, every=10)]) as engine:
            await engine.wait_idle()
            return clock.now(), ids(engine)

    assert (T0, []) == run(scenario())


def test_a_restart_carries_on_from_where_the_schedule_got(tmp_path: Path, run: Runner) -> None:
    """Issue 10: SQLite: the second engine starts only the due times after the first one's, all of them (ALL)."""
    path = tmp_path / "schedules.db"
    every = Schedule("ten", report, every=600, catch_up=CatchUp.ALL, overlap=Overlap.ALLOW)

    async def scenario() -> tuple[list[str], list[str], list[ScheduleInfo]]:
        clock = VirtualClock(T0, autojump=False)
        with SqliteStore(path) as store:
            first = await _engine_at(store, clock, every)
            clock.advance(1200)
            await first.wait_idle()
            before = ids(first)
            await first.aclose()
        clock.advance(1800)  # three due times while no engine runs
        with SqliteStore(path) as store:
            second = await _engine_at(store, clock, every)
            await second.wait_idle()
            after_restart = ids(second)
            infos = second.schedules()
            await second.aclose()
        return before, after_restart, infos

    before, after_restart, infos = run(scenario())
    assert ["ten@2026-01-01T00:10:00Z", "ten@2026-01-01T00:20:00Z"] == before
    assert [
        *before,
        "ten@2026-01-01T00:30:00Z",
        "ten@2026-01-01T00:40:00Z",
        "ten@2026-01-01T00:50:00Z",
    ] == after_restart
    assert 5 == infos[0].started


def test_two_engines_on_one_file_start_each_due_time_once(tmp_path: Path, run: Runner) -> None:
    """Issue 10: two workers declaring one schedule on one SQLite file: every due time once, none lost."""
    path = tmp_path / "fleet.db"
    every = Schedule("ten", report, every=600, catch_up=CatchUp.ALL, overlap=Overlap.ALLOW)

    async def scenario() -> tuple[list[str], int]:
        clock = VirtualClock(T0, autojump=False)
        with SqliteStore(path) as one, SqliteStore(path) as two:
            engines = [await _engine_at(one, clock, every), await _engine_at(two, clock, every)]
            for _ in range(6):
                clock.advance(600)
                for engine in engines:
                    await engine.wait_idle()
            for engine in engines:
                await engine.aclose()
            with SqliteStore(path) as reader:
                state = reader.schedule("ten")
            assert state is not None
            return ids(engines[0]), state.started

    started, count = run(scenario())
    assert [f"ten@2026-01-01T0{n // 6}:{n % 6}0:00Z" for n in range(1, 7)] == started
    assert 6 == count


def test_schedules_need_workers_and_distinct_ids() -> None:
    """Issue 10: a client engine starts no schedule; two schedules with one id, or a non-schedule, are refused."""
    with pytest.raises(ValueError, match=r"a client engine \(concurrency=0\) starts no schedule"):
        Engine(concurrency=0, schedules=[nightly()])
    with pytest.raises(ValueError, match="two schedules have the id 'nightly'"):
        Engine(schedules=[nightly(), nightly()])
    with pytest.raises(TypeError, match=r"Engine\(schedules=\.\.\.\) takes Schedule objects"):
        Engine(schedules=["0 2 * * *"])  # type: ignore[list-item]  # pyright: ignore[reportArgumentType]


class _FlakyStore(MemoryStore):
    """A memory store whose schedule state cannot be read once (a disk that hiccups)."""

    __slots__ = ("failures",)

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    def schedule(self, schedule_id: str) -> ScheduleState | None:
        if self.failures == 0 and super().schedule(schedule_id) is not None:
            self.failures += 1
            msg = "cannot use the store: reading it failed (schedule): disk I/O error"
            raise StoreError(msg)
        return super().schedule(schedule_id)


def test_a_store_failure_delays_the_round_without_stopping_the_engine(run: Runner) -> None:
    """Issue 10: the round is logged and retried after a backoff; the due time then starts, once."""

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        clock = VirtualClock(T0, autojump=False)
        with structlog.testing.capture_logs() as logs:
            async with Engine(_FlakyStore(), clock=clock, schedules=[nightly()]) as engine:
                await engine.wait_idle()
                clock.advance(2 * HOUR)
                await engine.wait_idle()
                before = ids(engine)
                clock.advance(0.05)  # the first backoff
                await engine.wait_idle()
                after_retry = ids(engine)
        return before, after_retry, [e["error"] for e in logs if e["event"] == "schedule_failed"]

    before, after_retry, errors = run(scenario())
    assert [] == before
    assert ["nightly@2026-01-01T02:00:00Z"] == after_retry
    assert ["cannot use the store: reading it failed (schedule): disk I/O error"] == errors
