"""
Issue 12, "Alerts": each kind of alert is raised by real workflows and cleared when fixed, on every store.

An engine on a virtual clock drives the instances; ``scan`` reads another store
on the same file or database (the command line beside running workers), or, for
a ``MemoryStore``, the engine's own. Each test checks the alert appears when it
should, not before (a threshold not yet passed, a step that escalates), and goes
away once the cause is gone.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import TYPE_CHECKING, Any

import pytest

from statemachine_orch import Engine, InstanceStatus, MemoryStore, VirtualClock
from statemachine_orch.alerts import Alert, AlertKind, Thresholds, scan
from tests.alerts.flows import (
    HOUR,
    PINNED,
    START,
    AlertCrate,
    AlertDesk,
    AlertHang,
    AlertHotline,
    AlertNap,
    AlertRefund,
    Bank,
    Gate,
)

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import Runner
    from tests.store.conftest import Stores

WAIT = 15.0
"""Real seconds a scenario waits for the engine (generous: the machine may be busy)."""


def shape(alerts: list[Alert]) -> list[tuple[str, str, str, str | None]]:
    """Each alert as ``(kind, instance, workflow, step)``."""
    return [(a.kind.value, a.instance_id, a.workflow, a.step) for a in alerts]


def test_a_step_that_makes_no_progress_is_a_stuck_instance_until_it_moves(stores: Stores, run: Runner) -> None:
    """Issue 12: running with no timer and no change for longer than stuck_after raises stuck_instance; moving clears it."""
    clock = VirtualClock(START, autojump=False)
    gate = Gate()

    async def scenario() -> tuple[list[Alert], list[Alert], list[Alert], list[Alert], InstanceStatus]:
        reader = stores.open()
        async with Engine(stores.open(), clock=clock, workflows=PINNED, services={"gate": gate}) as engine:
            handle = await engine.start(AlertHang())
            await asyncio.wait_for(gate.entered.wait(), WAIT)
            fresh = scan(reader, now=clock.now())
            clock.advance(301)
            stuck = scan(reader, now=clock.now())
            patient = scan(reader, now=clock.now(), thresholds=Thresholds(stuck_after=600))
            gate.open()
            status = await asyncio.wait_for(engine.wait_instance(handle.instance_id), WAIT)
            return fresh, stuck, patient, scan(reader, now=clock.now()), status

    fresh, stuck, patient, after, status = run(scenario())
    assert [] == fresh, "not stuck before the threshold"
    assert 1 == len(stuck)
    [alert] = stuck
    assert (AlertKind.STUCK_INSTANCE, "AlertHang") == (alert.kind, alert.workflow)
    assert alert.step in ("prepare", "hang"), "its last committed step"
    assert START == alert.since, "its last committed change"
    assert "running with no timer and no change since 2026-01-01T00:00:00+00:00" in alert.detail
    assert [] == patient, "a longer threshold is not passed yet"
    assert (InstanceStatus.COMPLETED, []) == (status, after)


def test_an_overdue_task_raises_an_alert_unless_its_step_escalates(stores: Stores, run: Runner) -> None:
    """Issue 12: an open task past due raises overdue_task_unescalated only without a timeout edge; completing it clears it."""
    clock = VirtualClock(START, autojump=False)

    async def scenario() -> tuple[list[Alert], list[Alert], list[Alert], list[Alert], str]:
        reader = stores.open()
        async with Engine(stores.open(), clock=clock, workflows=PINNED) as engine:
            desk = await engine.start(AlertDesk())
            hotline = await engine.start(AlertHotline())
            for handle in (desk, hotline):
                await asyncio.wait_for(handle.wait_idle(), WAIT)
            before = scan(reader, now=clock.now() + HOUR - 1)
            clock.advance(HOUR + 1)
            overdue = scan(reader, now=clock.now())
            graced = scan(reader, now=clock.now(), thresholds=Thresholds(overdue_grace=60))
            [task] = engine.tasks(instance_id=desk.instance_id)
            await engine.complete_task(task.id, user="bob")
            await asyncio.wait_for(engine.wait_instance(desk.instance_id), WAIT)
            return before, overdue, graced, scan(reader, now=clock.now()), desk.instance_id

    before, overdue, graced, after, desk = run(scenario())
    assert [] == before
    assert [("overdue_task_unescalated", desk, "AlertDesk", "review")] == shape(overdue), "the hotline escalates"
    assert START + HOUR == overdue[0].since, "since its due time"
    assert f"task {desk}." in overdue[0].detail
    assert [] == graced, "within the grace period"
    assert [] == after


def test_a_failed_compensation_is_an_alert_until_it_is_retried(stores: Stores, run: Runner) -> None:
    """Issue 12: a compensation_failed instance raises compensation_failed; retry_compensation that works clears it."""
    clock = VirtualClock(START, autojump=True)
    bank = Bank()

    async def scenario() -> tuple[list[Alert], InstanceStatus, list[Alert], InstanceStatus]:
        reader = stores.open()
        async with Engine(stores.open(), clock=clock, workflows=PINNED, services={"bank": bank}) as engine:
            handle = await engine.start(AlertRefund())
            broken = await asyncio.wait_for(engine.wait_instance(handle.instance_id), WAIT)
            raised = scan(reader, now=clock.now())
            bank.down = False
            fixed = await asyncio.wait_for(engine.retry_compensation(handle.instance_id), WAIT)
            return raised, broken, scan(reader, now=clock.now()), fixed

    raised, broken, after, fixed = run(scenario())
    assert InstanceStatus.COMPENSATION_FAILED == broken
    assert [("compensation_failed", raised[0].instance_id, "AlertRefund", None)] == shape(raised)
    assert "the bank is down" in raised[0].detail
    assert (InstanceStatus.FAILED, []) == (fixed, after)


def test_a_timer_no_worker_fires_lags_until_a_worker_fires_it(stores: Stores, run: Runner) -> None:
    """Issue 12: a timer due longer than timer_lag_after ago with no worker to fire it raises timer_lag; a worker clears it."""
    clock = VirtualClock(START, autojump=False)

    async def scenario() -> tuple[list[Alert], list[Alert], list[Alert], list[Alert], InstanceStatus]:
        reader = stores.open()
        async with Engine(stores.open(), clock=clock, workflows=PINNED) as engine:
            handle = await engine.start(AlertNap())
            await asyncio.wait_for(handle.wait_idle(), WAIT)
        # No worker runs now: the timer falls due and nobody fires it.
        clock.advance(600 + 30)
        late = scan(reader, now=clock.now())
        clock.advance(31)
        lagging = scan(reader, now=clock.now())
        tolerant = scan(reader, now=clock.now(), thresholds=Thresholds(timer_lag_after=120))
        async with Engine(stores.open(), clock=clock, workflows=PINNED) as engine:
            await engine.recover()
            status = await asyncio.wait_for(engine.wait_instance(handle.instance_id), WAIT)
            return late, lagging, tolerant, scan(reader, now=clock.now()), status

    late, lagging, tolerant, after, status = run(scenario())
    assert [] == late, "30 s late is within timer_lag_after"
    assert [("timer_lag", lagging[0].instance_id, "AlertNap", "sleep")] == shape(lagging)
    assert START + 600 == lagging[0].since, "since its due time"
    assert [] == tolerant
    assert (InstanceStatus.COMPLETED, []) == (status, after)


def _damage(stores: Stores, instance_id: str, variables: dict[str, Any]) -> None:
    """Write an instance's variables by hand, as an operator or older code might have."""
    if stores.kind == "sqlite":
        db = sqlite3.connect(stores.location)
        try:
            with db:
                db.execute("UPDATE instances SET variables = ? WHERE id = ?", (json.dumps(variables), instance_id))
        finally:
            db.close()
        return
    import psycopg

    with psycopg.connect(stores.location, autocommit=True) as conn:
        conn.execute("UPDATE instances SET variables = %s::jsonb WHERE id = %s", (json.dumps(variables), instance_id))


async def _quarantined(engine: Engine, instance_id: str) -> None:
    """Wait until *engine* has quarantined the instance."""
    while engine.info(instance_id).quarantined is None:
        await asyncio.sleep(0.01)


def test_a_quarantined_instance_is_an_alert_of_the_engine_that_holds_it(durable: Stores, run: Runner) -> None:
    """Issue 12: an engine's quarantine is reported when that engine is passed; fixing the row clears it."""
    clock = VirtualClock(START, autojump=False)

    async def scenario() -> tuple[list[Alert], list[Alert], list[Alert], str]:
        reader = durable.open()
        async with Engine(durable.open(), clock=clock, workflows=PINNED) as engine:
            handle = await engine.start(AlertCrate())
            await asyncio.wait_for(handle.wait_idle(), WAIT)
        crate = handle.instance_id
        _damage(durable, crate, {"count": None})
        async with Engine(durable.open(), clock=clock, workflows=PINNED) as engine:
            await engine.recover()
            clock.advance(60)  # its timer falls due: loading it for the timer quarantines it
            await asyncio.wait_for(_quarantined(engine, crate), WAIT)
            found = scan(reader, engine=engine)
            without = scan(reader, now=clock.now())
        _damage(durable, crate, {"count": 3})
        async with Engine(durable.open(), clock=clock, workflows=PINNED) as engine:
            await engine.recover()
            await asyncio.wait_for(engine.wait_instance(crate), WAIT)
            return found, without, scan(reader, engine=engine), crate

    found, without, after, crate = run(scenario())
    assert [("quarantined", crate, "AlertCrate", "settle")] == shape(found)
    assert "AlertCrate.count: expected int but got None" in found[0].detail
    assert START + 60 == found[0].since, "when the engine quarantined it (its clock)"
    assert [] == without, "quarantine is the engine's memory: without it, nothing to report"
    assert [] == after


def test_an_unknown_workflow_version_does_not_stop_the_scan(tmp_path: Path, run: Runner) -> None:
    """Issue 12: rows of a version no class here knows are scanned; an overdue task's escalation is judged by its timer."""
    clock = VirtualClock(START, autojump=False)
    path = tmp_path / "unknown.db"

    async def scenario() -> tuple[str, str]:
        from statemachine_orch import SqliteStore

        with SqliteStore(path) as store:
            async with Engine(store, clock=clock, workflows=PINNED) as engine:
                desk = await engine.start(AlertDesk())
                hotline = await engine.start(AlertHotline())
                for handle in (desk, hotline):
                    await asyncio.wait_for(handle.wait_idle(), WAIT)
                return desk.instance_id, hotline.instance_id

    desk, _ = run(scenario())
    db = sqlite3.connect(path)
    try:
        with db:
            db.execute("UPDATE instances SET version = '9'")
            db.execute("UPDATE tasks SET version = '9'")
    finally:
        db.close()
    from statemachine_orch import SqliteStore

    with SqliteStore(path) as reader:
        found = scan(reader, now=START + HOUR + 1)
        counted = reader.instance_counts()
    assert [("overdue_task_unescalated", desk, "AlertDesk", "review")] == shape(found)
    assert [("AlertDesk", InstanceStatus.WAITING, 1), ("AlertHotline", InstanceStatus.WAITING, 1)] == counted


def test_scan_sorts_by_kind_then_instance_and_judges_by_the_engine_clock(run: Runner) -> None:
    """Issue 12: alerts come sorted (kind, instance, step); without `now`, the engine's clock is the judge."""
    clock = VirtualClock(START, autojump=False)
    store = MemoryStore()

    async def scenario() -> tuple[list[Alert], list[Alert], list[str]]:
        async with Engine(store, clock=clock, workflows=PINNED) as engine:
            desks = [await engine.start(AlertDesk()) for _ in range(3)]
            nap = await engine.start(AlertNap())
            await asyncio.wait_for(engine.wait_idle(), WAIT)
            ids = [h.instance_id for h in desks]
            # The scanner's clock is ahead of the engine's: the engine fired nothing yet.
            ahead = scan(store, now=clock.now() + HOUR + 1)
            return ahead, scan(store, engine=engine), [*ids, nap.instance_id]

    ahead, by_engine_clock, ids = run(scenario())
    expected = [("overdue_task_unescalated", i, "AlertDesk", "review") for i in sorted(ids[:3])]
    expected.append(("timer_lag", ids[3], "AlertNap", "sleep"))
    assert expected == shape(ahead)
    assert ahead == sorted(ahead, key=lambda a: (a.kind.value, a.instance_id))
    assert [] == by_engine_clock


def test_thresholds_must_not_be_negative() -> None:
    """Issue 12: a negative threshold is a ValueError naming it."""
    with pytest.raises(ValueError, match=r"Thresholds\(stuck_after=-1\)"):
        Thresholds(stuck_after=-1)
    with pytest.raises(ValueError, match="timer_lag_after"):
        Thresholds(timer_lag_after=float("nan"))


def test_the_alerts_module_exports_are_pinned_and_documented() -> None:
    """Issue 12: statemachine_orch.alerts exports exactly the reviewed names, each with a docstring."""
    from statemachine_orch import alerts

    assert ["Alert", "AlertKind", "AlertWatcher", "StoreCollector", "Thresholds", "scan"] == alerts.__all__
    for name in alerts.__all__:
        obj = getattr(alerts, name)
        assert (obj.__doc__ or "").strip(), name
        assert "statemachine_orch.alerts" == obj.__module__, name
    assert [
        "stuck_instance",
        "overdue_task_unescalated",
        "compensation_failed",
        "quarantined",
        "timer_lag",
    ] == [k.value for k in AlertKind]


SCANNER = """
import json, sys
from statemachine_orch import SqliteStore
from statemachine_orch.alerts import scan
from statemachine_orch._registry import default_registry
assert default_registry.resolve("AlertDesk", "1") is None, "this process must not know the class"
with SqliteStore(sys.argv[1]) as store:
    found = scan(store, now=float(sys.argv[2]))
print(json.dumps([[a.kind.value, a.instance_id, a.workflow, a.step, a.since] for a in found]))
"""
"""Another process, without the test's workflow classes (a command line without the user's module), scanning."""


def test_another_process_without_the_classes_scans_the_store_a_worker_is_using(tmp_path: Path, run: Runner) -> None:
    """Issue 12: a process that never imported the workflows finds the stuck instance and the unescalated overdue task."""
    import subprocess
    import sys

    from statemachine_orch import SqliteStore

    clock = VirtualClock(START, autojump=False)
    gate = Gate()
    path = tmp_path / "shared.db"

    async def scenario() -> tuple[list[list[Any]], dict[str, str]]:
        with SqliteStore(path) as store:
            async with Engine(store, clock=clock, workflows=PINNED, services={"gate": gate}) as engine:
                desk = await engine.start(AlertDesk())
                hotline = await engine.start(AlertHotline())
                hang = await engine.start(AlertHang())
                await asyncio.wait_for(gate.entered.wait(), WAIT)
                clock.advance(HOUR + 1)
                argv = [sys.executable, "-c", SCANNER, str(path), str(clock.now())]
                done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)
                assert 0 == done.returncode, done.stderr
                gate.open()
                await asyncio.wait_for(engine.wait_instance(hang.instance_id), WAIT)
                ids = {"desk": desk.instance_id, "hotline": hotline.instance_id, "hang": hang.instance_id}
                return json.loads(done.stdout), ids

    found, ids = run(scenario())
    assert [
        ["overdue_task_unescalated", ids["desk"], "AlertDesk", "review", START + HOUR],
        ["stuck_instance", ids["hang"], "AlertHang", found[1][3], START],
    ] == found, "the hotline's task waits on its escalation timer: not reported"
    assert found[1][3] in ("prepare", "hang")
