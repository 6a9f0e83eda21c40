"""
Issue 8: "No record takes another down" and "Typed at every door", on SQLite files.

A stored record that cannot be loaded (a value of the wrong type, written by hand
or by older code) stops that instance only: it is quarantined — shown by
``info()``, ``instances()``, its history and the log, with the reason — and reading
it raises a typed :class:`RecordLoadError` naming the instance and the field. No
worker and no timer loop dies on it; every other instance carries on. A step that
leaves a variable of the wrong type fails, and its record stays loadable.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import TYPE_CHECKING, Any, cast

import attrs
import pytest
import structlog.testing

from statemachine_orch import (
    Ctx,
    Engine,
    EventKind,
    InstanceStatus,
    RecordLoadError,
    SqliteStore,
    StoreError,
    Workflow,
    WorkflowInputError,
    after,
    human_task,
    step,
    timer,
    wait_for,
)
from tests.integration.helpers import open_engine

if TYPE_CHECKING:
    from pathlib import Path

    from statemachine_orch import InstanceInfo, VirtualClock
    from tests.conftest import Runner


class Crate(Workflow):
    """Count, wait a minute, ship."""

    count: int = 0

    @step(initial=True)
    def count_items(self, ctx: Ctx) -> None:
        self.count = 3

    @after(count_items)
    @timer(60)
    def settle(self, ctx: Ctx) -> None: ...

    @after(settle)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None: ...


@attrs.frozen
class Delivered:
    """A carrier's message."""

    parcels: int


class Delivery(Workflow):
    """Wait for the carrier's message, then close."""

    parcels: int = 0

    @step(initial=True)
    def book(self, ctx: Ctx) -> None: ...

    @after(book)
    @wait_for(Delivered)
    def delivered(self, ctx: Ctx, msg: Delivered) -> None:
        self.parcels = msg.parcels

    @after(delivered)
    @step(final=True)
    def close(self, ctx: Ctx) -> None: ...


@attrs.frozen
class Sign:
    """The approver's form."""

    amount: int


class Claim(Workflow):
    """Submit, sign (ann), pay."""

    signed: Sign | None = None

    @step(initial=True)
    def submit(self, ctx: Ctx) -> None: ...

    @after(submit)
    @human_task(assignee="ann", form=Sign)
    def sign(self, ctx: Ctx, form: Sign) -> None:
        self.signed = form

    @after(sign)
    @step(final=True)
    def pay(self, ctx: Ctx) -> None: ...


class Scale(Workflow):
    """The scale answers nothing for a number."""

    weight: int = 0

    @step(initial=True, final=True)
    def weigh(self, ctx: Ctx) -> None:
        self.weight = cast("int", None)


class Tagged(Workflow):
    """Free-form tags: any JSON value."""

    tags: dict[str, Any] = attrs.field(factory=dict[str, Any])

    @step(initial=True, final=True)
    def tag(self, ctx: Ctx) -> None: ...


class Readings(Workflow):
    """A step that appends a reading of the wrong type to a list in place."""

    readings: list[int] = attrs.field(factory=list[int])

    @step(initial=True, final=True)
    def read(self, ctx: Ctx) -> None:
        self.readings.append(1)
        self.readings.append(cast("int", "two"))


PINNED = (Crate, Delivery, Claim, Scale, Tagged, Readings)


def _edit(db_path: Path, sql: str, *params: object) -> None:
    """Change the file by hand, as an operator or older code might have."""
    db = sqlite3.connect(db_path)
    try:
        with db:
            db.execute(sql, params)
    finally:
        db.close()


def test_a_record_edited_to_a_wrong_type_is_quarantined_and_the_others_carry_on(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 8: a timer due on an unloadable record no longer kills the timer loop: that one is quarantined, visibly."""

    async def scenario() -> tuple[list[InstanceStatus], InstanceInfo, list[InstanceInfo], Any, RecordLoadError, Any]:
        clock.autojump = False  # every instance stays parked on its timer
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            bad = await engine.start(Crate())
            good = [await engine.start(Crate()) for _ in range(3)]
            for handle in (bad, *good):
                await handle.wait_idle()
        _edit(db_path, "UPDATE instances SET variables = ? WHERE id = ?", json.dumps({"count": None}), bad.instance_id)
        clock.autojump = True
        with structlog.testing.capture_logs() as logs:
            async with open_engine(db_path, clock, workflows=PINNED) as engine:
                await engine.recover()
                statuses = [await engine.wait_instance(h.instance_id) for h in good]
                info = engine.info(bad.instance_id)
                listed = [i for i in engine.instances() if i.quarantined is not None]
                last = engine.history(bad.instance_id)[-1]
                with pytest.raises(RecordLoadError) as err:
                    engine.workflow(bad.instance_id)
        quarantined = [e for e in logs if e["event"] == "quarantined_instance"]
        return statuses, info, listed, last, err.value, quarantined

    statuses, info, listed, last, err, logged = run(scenario())
    assert [InstanceStatus.COMPLETED] * 3 == statuses, "the timers of every other instance fire"
    reason = f"instance {info.id}: cannot load a stored Crate: Crate.count: expected int but got None (type=NoneType)"
    assert (InstanceStatus.WAITING, reason) == (info.status, info.quarantined)
    assert [info] == listed
    assert (EventKind.INSTANCE_QUARANTINED, reason) == (last.kind, last.detail)
    assert isinstance(err, StoreError)
    assert (info.id, "Crate.count", reason) == (err.instance_id, err.field_path, str(err))
    assert [(info.id, reason)] == [(e["instance_id"], e["error"]) for e in logged], "logged once"


def test_a_row_with_damaged_json_is_quarantined_and_the_others_timers_fire(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 8: variables that are not JSON at all (damaged bytes) quarantine that instance, not the timer loop."""

    async def scenario() -> tuple[list[InstanceStatus], InstanceInfo]:
        clock.autojump = False  # every instance stays parked on its timer
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            bad = await engine.start(Crate())
            good = [await engine.start(Crate()) for _ in range(3)]
            for handle in (bad, *good):
                await handle.wait_idle()
        _edit(db_path, "UPDATE instances SET variables = ? WHERE id = ?", '{"count": 3', bad.instance_id)
        clock.autojump = True
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            await engine.recover()
            statuses = [await asyncio.wait_for(engine.wait_instance(h.instance_id), 10) for h in good]
            return statuses, engine.info(bad.instance_id)

    statuses, info = run(scenario())
    assert [InstanceStatus.COMPLETED] * 3 == statuses, "the timers of every other instance fire"
    assert InstanceStatus.WAITING == info.status
    assert info.quarantined is not None
    assert info.quarantined.startswith(f"instance {info.id}: cannot load a stored Crate: a stored row is damaged (")


def test_an_in_flight_record_that_cannot_be_loaded_does_not_stop_recovery(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 8: recover() of an unloadable running record neither raises nor kills a worker; wait_idle() returns."""

    async def scenario() -> tuple[str | None, InstanceStatus]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            bad = await engine.start(Crate())
            await engine.wait_idle()
        _edit(
            db_path,
            "UPDATE instances SET variables = ?, status = 'running', wake_at = NULL WHERE id = ?",
            json.dumps({"count": "three"}),
            bad.instance_id,
        )
        async with open_engine(db_path, clock, workflows=PINNED, concurrency=1) as engine:
            await engine.recover()
            await engine.wait_idle()
            # The one worker is still alive: it runs the next instance.
            fresh = await engine.start(Crate())
            status = await engine.wait_instance(fresh.instance_id)
            # The public list is the one the alerts read: only the bad instance is in it.
            assert [bad.instance_id] == list(engine.quarantined())
            assert engine.quarantined()[bad.instance_id][1] == engine.info(bad.instance_id).quarantined
            return engine.info(bad.instance_id).quarantined, status

    quarantined, status = run(scenario())
    assert quarantined is not None
    assert quarantined.endswith("Crate.count: expected int but got 'three' (type=str)")
    assert InstanceStatus.COMPLETED == status


def test_a_stored_message_that_cannot_be_loaded_quarantines_only_its_instance(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 8: a bad message row (written by older code) no longer makes every later recover() fail."""

    async def scenario() -> tuple[str | None, InstanceStatus]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            bad = await engine.start(Delivery())
            good = await engine.start(Delivery())
            await engine.wait_idle()
        message_type = f"{Delivered.__module__}.{Delivered.__qualname__}"
        _edit(
            db_path,
            "INSERT INTO signals (instance_id, type, payload) VALUES (?, ?, ?)",
            bad.instance_id,
            message_type,
            json.dumps({"parcels": "12,5"}),
        )
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            await engine.recover()
            await engine.signal(good.instance_id, Delivered(parcels=2))
            status = await engine.wait_instance(good.instance_id)
            return engine.info(bad.instance_id).quarantined, status

    quarantined, status = run(scenario())
    assert quarantined is not None
    assert quarantined.endswith("Delivered.parcels: expected int but got '12,5' (type=str)")
    assert InstanceStatus.COMPLETED == status


def test_a_stored_form_that_cannot_be_loaded_raises_a_typed_error(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 8: store.task(id) on a hand-edited form raises RecordLoadError naming the field, not cattrs' error."""

    async def scenario() -> str:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            handle = await engine.start(Claim())
            await handle.wait_idle()
            [task] = engine.tasks(user="ann")
            await engine.complete_task(task.id, user="ann", form=Sign(amount=12))
            await engine.wait_instance(handle.instance_id)
        _edit(db_path, "UPDATE tasks SET form = ? WHERE id = ?", json.dumps({"v": {"amount": "12.50"}}), task.id)
        return task.id

    task_id = run(scenario())
    with SqliteStore(db_path) as store:
        store.attach(Engine(store, workflows=PINNED).registry)
        with pytest.raises(RecordLoadError) as err:
            store.task(task_id)
    assert "Sign.amount" == err.value.field_path
    assert "cannot load a stored Sign: Sign.amount: expected int but got '12.50' (type=str)" in str(err.value)


def test_a_step_that_leaves_a_wrong_type_keeps_its_record_loadable(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 8: ``self.weight = None`` fails the step; the stored record loads, and other instances' timers fire."""

    async def scenario() -> tuple[InstanceStatus, int, list[InstanceStatus], str | None]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            scale = await engine.start(Scale())
            crates = [await engine.start(Crate()) for _ in range(3)]
            status = await engine.wait_instance(scale.instance_id)
            statuses = [await engine.wait_instance(c.instance_id) for c in crates]
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            weight = cast("Scale", engine.workflow(scale.instance_id)).weight
            return status, weight, statuses, engine.info(scale.instance_id).error

    status, weight, statuses, error = run(scenario())
    assert (InstanceStatus.FAILED, 0) == (status, weight)
    assert "weigh: VariableTypeError: Scale.weight: expected int but got None (type=NoneType)" == error
    assert [InstanceStatus.COMPLETED] * 3 == statuses


def test_a_list_changed_in_place_to_hold_a_wrong_type_is_checked_and_put_back(
    db_path: Path, clock: VirtualClock, run: Runner
) -> None:
    """Issue 8: on a store that writes JSON, a list a step changed in place is checked too, and restored."""

    async def scenario() -> tuple[InstanceStatus, str | None, list[int]]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            handle = await engine.start(Readings(readings=[0]))
            status = await engine.wait_instance(handle.instance_id)
            error = engine.info(handle.instance_id).error
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            return status, error, cast("Readings", engine.workflow(handle.instance_id)).readings

    status, error, readings = run(scenario())
    assert InstanceStatus.FAILED == status
    assert "read: VariableTypeError: Readings.readings[2]: expected int but got 'two' (type=str)" == error
    assert [0] == readings, "the list as it was before the step"


@pytest.mark.parametrize(
    ("workflow", "message"),
    [
        (lambda: Crate(count=10**5000), "expected int of at most 4300 digits but got <an int of 16610 bits>"),
        (
            lambda: Tagged(tags={"phase": 1j}),
            "Tagged.tags: {'phase': 1j} cannot be stored as JSON (TypeError: Object of type complex is not JSON serializable)",
        ),
    ],
    ids=["too-big-for-json", "not-json-at-all"],
)
def test_start_with_a_value_that_cannot_be_stored_is_an_input_error(
    db_path: Path, clock: VirtualClock, run: Runner, workflow: object, message: str
) -> None:
    """Issue 8: such input is a WorkflowInputError raised before anything is stored, not a StoreError from the commit."""
    make = cast("type[Workflow]", workflow)

    async def scenario() -> tuple[WorkflowInputError, int]:
        async with open_engine(db_path, clock, workflows=PINNED) as engine:
            with pytest.raises(WorkflowInputError) as err:
                await engine.start(make())
            return err.value, len(engine.instances())

    err, count = run(scenario())
    assert message in str(err)
    assert 0 == count


def test_an_engine_whose_recovery_fails_stops_its_workers(db_path: Path, clock: VirtualClock, run: Runner) -> None:
    """Issue 8: when recover() raises inside ``async with Engine(...)``, no worker or timer task is left running."""

    async def scenario() -> tuple[StoreError, int]:
        running = len(asyncio.all_tasks())
        store = SqliteStore(db_path)
        store.close()
        with pytest.raises(StoreError) as err:
            async with Engine(store, clock=clock, workflows=PINNED):
                pass
        await asyncio.sleep(0)
        return err.value, len(asyncio.all_tasks()) - running

    err, left = run(scenario())
    assert "cannot use" in str(err)
    assert 0 == left
