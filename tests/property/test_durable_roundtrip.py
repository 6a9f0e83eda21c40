"""
Issue 3: whatever a workflow's typed fields hold, SqliteStore gives it back after a restart.

Hypothesis draws values for a workflow whose fields cover the types variables are
stored as (through cattrs and JSON): unbounded ints, floats with infinities,
any text, bytes, bools, naive and aware datetimes, dates, enums, optionals,
lists, dicts, tuples, frozensets and nested attrs classes. Each example starts
the instance on a fresh SQLite file, lets it park on a human task, stops the
engine, reloads it in a new engine on the same file and compares every
variable. A second property sends a drawn form through a completed but not yet
processed task, across a restart.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import enum
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statemachine_orch import Ctx, Engine, InstanceStatus, SqliteStore, VirtualClock, Workflow, after, human_task, step

if TYPE_CHECKING:
    from tests.conftest import Runner


class Mood(enum.Enum):
    """An enum field."""

    CALM = "calm"
    TENSE = "tense"
    NUMBER = 7


@attrs.frozen
class Point:
    """A small nested value."""

    x: float
    y: float
    label: str | None = None


@attrs.frozen
class Shape:
    """A nested value holding nested values."""

    name: str
    points: list[Point]
    tags: frozenset[str]
    meta: dict[str, int]


@attrs.frozen
class Inspection:
    """The form of the human task: nested values too."""

    passed: bool
    at: datetime
    remarks: list[str]
    shape: Shape | None


class Rich(Workflow):
    """Every kind of field; begin, then park on a clerk's inspection."""

    count: int
    ratio: float
    name: str
    flag: bool
    blob: bytes
    when: datetime
    day: date
    mood: Mood
    maybe: int | None
    items: list[str]
    table: dict[str, list[int]]
    pair: tuple[int, str]
    shape: Shape
    shapes: list[Shape]
    maybe_shape: Shape | None
    inspection: Inspection | None = None

    @step(initial=True)
    def begin(self, ctx: Ctx) -> None: ...

    @after(begin)
    @human_task(assignee="clerk", form=Inspection)
    def inspect(self, ctx: Ctx, form: Inspection) -> None:
        self.inspection = form

    @after(inspect)
    @human_task(assignee="clerk", final=True)
    def archive(self, ctx: Ctx) -> None: ...


finite_or_infinite = st.floats(allow_nan=False)
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
datetimes = st.datetimes(timezones=st.none() | st.just(UTC) | offsets)
points = st.builds(Point, finite_or_infinite, finite_or_infinite, st.none() | st.text())
shapes = st.builds(
    Shape,
    st.text(),
    st.lists(points, max_size=3),
    st.frozensets(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
riches = st.builds(
    Rich,
    count=st.integers(),
    ratio=finite_or_infinite,
    name=st.text(),
    flag=st.booleans(),
    blob=st.binary(),
    when=datetimes,
    day=st.dates(),
    mood=st.sampled_from(Mood),
    maybe=st.none() | st.integers(),
    items=st.lists(st.text(), max_size=4),
    table=st.dictionaries(st.text(), st.lists(st.integers(), max_size=3), max_size=3),
    pair=st.tuples(st.integers(), st.text()),
    shape=shapes,
    shapes=st.lists(shapes, max_size=2),
    maybe_shape=st.none() | shapes,
)
inspections = st.builds(Inspection, st.booleans(), datetimes, st.lists(st.text(), max_size=3), st.none() | shapes)


def variables(wf: Rich) -> dict[str, Any]:
    """Every field, plus what equality does not see: the datetimes' offsets and every value's type."""
    fields = attrs.asdict(cast("attrs.AttrsInstance", wf), recurse=False)
    values = dict(fields)
    values["when (iso)"] = wf.when.isoformat()
    values["types"] = {k: type(v).__name__ for k, v in fields.items()}
    if wf.inspection is not None:
        values["inspection.at (iso)"] = wf.inspection.at.isoformat()
    return values


@settings(max_examples=50, deadline=None)
@given(wf=riches)
def test_variables_round_trip_through_a_restart(
    tmp_path_factory: pytest.TempPathFactory, run: Runner, wf: Rich
) -> None:
    """Issue 3: the variables of a parked instance, reloaded by a new engine on the same file, are equal, type for type."""
    db_path: Path = tmp_path_factory.mktemp("roundtrip") / "orch.db"
    clock = VirtualClock()
    expected = variables(wf)

    async def scenario() -> tuple[InstanceStatus, dict[str, Any]]:
        with SqliteStore(db_path) as store:
            async with Engine(store, clock=clock, workflows=[Rich]) as engine:
                handle = await engine.start(wf)
                status = await handle.wait_idle()
        with SqliteStore(db_path) as store:
            async with Engine(store, clock=clock, workflows=[Rich]) as engine:
                reloaded: Rich = engine.workflow(handle.instance_id)
                return status, variables(reloaded)

    status, actual = run(scenario())
    assert InstanceStatus.WAITING == status
    assert expected == actual


@settings(max_examples=25, deadline=None)
@given(wf=riches, form=inspections)
def test_a_form_round_trips_through_a_restart(
    tmp_path_factory: pytest.TempPathFactory, run: Runner, wf: Rich, form: Inspection
) -> None:
    """Issue 3: a form completed just before the engine stops reaches its step, equal, after the restart."""
    db_path: Path = tmp_path_factory.mktemp("form") / "orch.db"
    clock = VirtualClock()

    async def scenario() -> tuple[str | None, Inspection | None, str]:
        with SqliteStore(db_path) as store:
            async with Engine(store, clock=clock, workflows=[Rich]) as engine:
                handle = await engine.start(wf)
                await handle.wait_idle()
                [task] = engine.tasks(user="clerk")
                await engine.complete_task(task.id, user="clerk", form=form)
        with SqliteStore(db_path) as store:
            async with Engine(store, clock=clock, workflows=[Rich]) as engine:
                await engine.wait_instance(handle.instance_id, terminal=False)
                reloaded: Rich = engine.workflow(handle.instance_id)
                inspection = reloaded.inspection
                return engine.info(handle.instance_id).step, inspection, inspection.at.isoformat() if inspection else ""

    at_step, inspection, at_iso = run(scenario())
    assert "archive" == at_step
    assert form == inspection
    assert form.at.isoformat() == at_iso
