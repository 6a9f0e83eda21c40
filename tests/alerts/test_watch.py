"""
Issue 12: the alert watcher's log events and the store's Prometheus gauges.

``AlertWatcher`` logs ``alert_raised`` (warning) when an alert first appears and
``alert_cleared`` (info) when it goes, once each however often it scans.
``StoreCollector`` serves exactly the store's gauges, computed from the store
at each scrape, parsed back here with prometheus-client's own text parser.
Importing the alerts module, and scanning, need no prometheus-client.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pytest
import structlog.testing
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.typing import EventDict

from statemachine_orch import Engine, MemoryStore, SqliteStore, VirtualClock
from statemachine_orch.alerts import AlertKind, AlertWatcher, StoreCollector, Thresholds
from tests.alerts.flows import HOUR, PINNED, START, AlertDesk, AlertHotline, AlertNap

if TYPE_CHECKING:
    from pathlib import Path

    from statemachine_orch import Store
    from tests.conftest import Runner
    from tests.store.conftest import Stores

WAIT = 15.0
"""Real seconds a scenario waits for the engine (generous: the machine may be busy)."""

LABELS: dict[str, tuple[str, ...]] = {
    "orch_instances": ("workflow", "status"),
    "orch_tasks_open": ("workflow", "step"),
    "orch_tasks_overdue": ("workflow", "step"),
    "orch_alerts": ("kind",),
    "orch_timers_overdue_seconds": (),
}
"""The store's gauges, exactly, and their labels."""
GAUGES = set(LABELS)


def _alert_logs(logs: Sequence[EventDict]) -> list[tuple[str, str, str, str]]:
    return [
        (e["event"], e["log_level"], e["kind"], e["instance_id"])
        for e in logs
        if e["event"] in ("alert_raised", "alert_cleared")
    ]


def test_the_watcher_logs_an_alert_once_when_raised_and_once_when_cleared(stores: Stores, run: Runner) -> None:
    """Issue 12: alert_raised (warning) at the first scan that finds it, alert_cleared (info) at the first that does not."""
    clock = VirtualClock(START, autojump=False)

    async def scenario() -> tuple[list[list[tuple[str, str, str, str]]], str, list[AlertKind]]:
        reader = stores.open()
        steps: list[list[tuple[str, str, str, str]]] = []
        async with Engine(stores.open(), clock=clock, workflows=PINNED) as engine:
            desk = await engine.start(AlertDesk())
            await asyncio.wait_for(engine.wait_idle(), WAIT)
            watcher = AlertWatcher(reader, engine=engine)
            for _ in range(2):
                with structlog.testing.capture_logs() as logs:
                    watcher.check()
                steps.append(_alert_logs(logs))
            clock.advance(HOUR + 1)
            for _ in range(2):
                with structlog.testing.capture_logs() as logs:
                    watcher.check()
                steps.append(_alert_logs(logs))
            raised = [a.kind for a in watcher.alerts]
            [task] = engine.tasks(instance_id=desk.instance_id)
            await engine.complete_task(task.id, user="bob")
            await asyncio.wait_for(engine.wait_instance(desk.instance_id), WAIT)
            for _ in range(2):
                with structlog.testing.capture_logs() as logs:
                    watcher.check()
                steps.append(_alert_logs(logs))
            return steps, desk.instance_id, raised

    steps, desk, raised = run(scenario())
    kind = "overdue_task_unescalated"
    assert [
        [],
        [],
        [("alert_raised", "warning", kind, desk)],
        [],
        [("alert_cleared", "info", kind, desk)],
        [],
    ] == steps
    assert [AlertKind.OVERDUE_TASK_UNESCALATED] == raised


def test_the_watcher_runs_until_cancelled_and_logs_a_store_it_cannot_read(tmp_path: Path, run: Runner) -> None:
    """Issue 12: run() scans every interval; an unreadable store is alert_scan_failed, and the loop carries on."""
    clock = VirtualClock(START, autojump=False)
    path = tmp_path / "watch.db"

    async def scenario() -> list[EventDict]:
        with structlog.testing.capture_logs() as logs:
            store = SqliteStore(path)
            async with Engine(store, clock=clock, workflows=PINNED) as engine:
                await engine.start(AlertDesk())
                await asyncio.wait_for(engine.wait_idle(), WAIT)
                clock.advance(HOUR + 1)
                reader = SqliteStore(path)
                watcher = AlertWatcher(reader, engine=engine, interval=0.01)
                task = asyncio.create_task(watcher.run())
                await asyncio.wait_for(_until(logs, "alert_raised"), WAIT)
                reader.close()  # the next scans cannot read it
                await asyncio.wait_for(_until(logs, "alert_scan_failed", 2), WAIT)
                assert not task.done()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            store.close()
        return logs

    logs = run(scenario())
    events = [e["event"] for e in logs if e["event"].startswith("alert_")]
    assert ["alert_raised", "alert_scan_failed", "alert_scan_failed"] == events[:3]
    failed = next(e for e in logs if e["event"] == "alert_scan_failed")
    assert ("error", True) == (failed["log_level"], "watch.db" in failed["error"])


async def _until(logs: Sequence[EventDict], event: str, times: int = 1) -> None:
    while sum(e["event"] == event for e in logs) < times:
        await asyncio.sleep(0.01)


def test_watcher_interval_must_be_positive() -> None:
    """Issue 12: a watcher that would scan in a busy loop is refused."""
    with pytest.raises(ValueError, match="interval"):
        AlertWatcher(MemoryStore(), interval=0)


def scrape(
    store: Store, engine: Engine, thresholds: Thresholds | None = None
) -> dict[str, dict[tuple[str, ...], float]]:
    """The collector's families as prometheus-client parses them back: name -> label values -> value."""
    registry = CollectorRegistry()
    registry.register(StoreCollector(store, engine=engine, thresholds=thresholds or Thresholds()))
    text = generate_latest(registry).decode()
    found: dict[str, dict[tuple[str, ...], float]] = {}
    for family in text_string_to_metric_families(text):
        assert "gauge" == family.type, family.name
        names = LABELS[family.name]
        assert all(set(names) == set(s.labels) for s in family.samples), family.name
        found[family.name] = {tuple(s.labels[n] for n in names): s.value for s in family.samples}
    return found


def test_the_collector_serves_the_store_gauges_computed_at_scrape_time(stores: Stores, run: Runner) -> None:
    """Issue 12: instances by workflow and status, open and overdue tasks, alerts by kind, and the largest timer lag."""
    clock = VirtualClock(START, autojump=False)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        reader = stores.open()
        async with Engine(stores.open(), clock=clock, workflows=PINNED) as engine:
            for wf in (AlertDesk(), AlertDesk(), AlertHotline(), AlertNap()):
                await engine.start(wf)
            await asyncio.wait_for(engine.wait_idle(), WAIT)
            early = scrape(reader, engine)
            clock.advance(HOUR + 1)  # the nap's timer fires; the tasks fall overdue
            await asyncio.wait_for(engine.wait_idle(), WAIT)
            late = scrape(reader, engine)
        # No worker runs now: the hotline's escalation timer falls due and nobody fires it.
        clock.jump_to(START + 2 * HOUR + 90)
        return early, late, scrape(reader, engine)

    early, late, stalled = run(scenario())
    assert GAUGES == set(early) == set(late) == set(stalled)
    assert {
        ("AlertDesk", "waiting"): 2,
        ("AlertHotline", "waiting"): 1,
        ("AlertNap", "waiting"): 1,
    } == {k: v for k, v in early["orch_instances"].items() if v}
    assert 3 * 7 == len(early["orch_instances"]), "every status of every workflow present, zeros included"
    assert {("AlertDesk", "review"): 2, ("AlertHotline", "answer"): 1} == early["orch_tasks_open"]
    assert {("AlertDesk", "review"): 0, ("AlertHotline", "answer"): 0} == early["orch_tasks_overdue"]
    assert {(k.value,): 0 for k in AlertKind} == early["orch_alerts"]
    assert {(): 0} == early["orch_timers_overdue_seconds"]

    assert 1 == late["orch_instances"][("AlertNap", "completed")]
    assert {("AlertDesk", "review"): 2, ("AlertHotline", "answer"): 1} == late["orch_tasks_overdue"]
    assert 2 == late["orch_alerts"][("overdue_task_unescalated",)], "the hotline escalates"
    assert {(): 0} == late["orch_timers_overdue_seconds"]

    assert {(): 90} == stalled["orch_timers_overdue_seconds"]
    assert 1 == stalled["orch_alerts"][("timer_lag",)]


def test_registering_the_collector_reads_no_store_and_a_failing_store_skips_a_scrape(tmp_path: Path) -> None:
    """Issue 12: describe() needs no store; a store that cannot be read is logged, and the other metrics still serve."""
    store = SqliteStore(tmp_path / "closed.db")
    store.close()
    registry = CollectorRegistry()
    registry.register(StoreCollector(store))
    names = {m.name for c in [StoreCollector(store)] for m in c.describe()}
    with structlog.testing.capture_logs() as logs:
        text = generate_latest(registry).decode()
    assert GAUGES == names
    assert "" == text
    assert ["store_metrics_failed"] == [e["event"] for e in logs]


def test_importing_the_alerts_and_scanning_need_no_prometheus_client(tmp_path: Path) -> None:
    """Issue 12: prometheus-client is the `metrics` extra: only a collector's scrape imports it."""
    code = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None\n"
        "import statemachine_orch\n"
        "from statemachine_orch.alerts import StoreCollector, scan\n"
        "from statemachine_orch import MemoryStore\n"
        "print(scan(MemoryStore()))\n"
        "try:\n"
        "    StoreCollector(MemoryStore()).collect()\n"
        "except ImportError as exc:\n"
        "    print('ImportError', exc.name, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    hint = "StoreCollector needs prometheus-client: pip install 'statemachine-orch[metrics]'"
    assert (0, f"[]\nImportError prometheus_client {hint}\n") == (done.returncode, done.stdout), done.stderr
