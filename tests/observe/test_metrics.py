"""
Issue 12: the engine's Prometheus metrics, read back with prometheus-client's own parser.

Real workflows run on an engine with ``metrics=Metrics()``: retries, a saga that
fails and compensates, a timer on a virtual clock, a lease taken over on a SQLite
file two engines share; the figures are parsed from the text format, once over
real HTTP from ``Metrics.serve``.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from statemachine_orch import Engine, EventKind, InstanceStatus, MemoryStore, SqliteStore, VirtualClock
from statemachine_orch.metrics import Metrics
from tests.integration.helpers import eventually
from tests.observe.flows import OBSERVED, Gate, ObsFlaky, ObsGated, ObsNap, ObsStuckRefund, ObsTrip

if TYPE_CHECKING:
    from tests.conftest import Runner

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

NAMES = (
    "orch_step_attempts_total",
    "orch_step_duration_seconds",
    "orch_step_retries_total",
    "orch_compensations_total",
    "orch_instances_started_total",
    "orch_instances_ended_total",
    "orch_timer_lag_seconds",
    "orch_commit_duration_seconds",
    "orch_commit_batch_size",
    "orch_lease_takeovers_total",
    "orch_leases_lost_total",
)


def parse(text: str) -> Samples:
    """Every sample of the exposition, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def engine_on(metrics: Metrics, clock: VirtualClock | None = None) -> Engine:
    return Engine(MemoryStore(), clock=clock or VirtualClock(autojump=True), metrics=metrics, workflows=OBSERVED)


def test_every_metric_is_exposed_under_its_documented_name_before_anything_ran() -> None:
    """Issue 12: the names other engineers' alert rules use, all present (counters without labels at 0)."""
    metrics = Metrics()
    families = {f.name for f in text_string_to_metric_families(metrics.exposition())}
    families = {f for f in families if not f.endswith("_created")}  # prometheus-client's creation times
    # The parser names a counter's family without its _total suffix.
    expected = {n.removesuffix("_total") for n in NAMES}
    assert expected == families
    samples = parse(metrics.exposition())
    assert 0.0 == value(samples, "orch_lease_takeovers_total")
    assert 0.0 == value(samples, "orch_leases_lost_total")


def test_commit_and_step_figures_land_in_their_buckets() -> None:
    """The hot paths' kept figures (batch sizes looked up, not searched) give what the bounds say, le inclusive."""
    metrics = Metrics()
    for size in (1, 3, 4, 512, 513, 2000):
        metrics.count_commit(0.0003, size, [])
    metrics.count_step("Wf", "s", "completed", 0.0005)
    metrics.count_step("Wf", "s", "completed", 0.002)
    metrics.count_step("Wf", "s", "failed", 7.0)
    s = parse(metrics.exposition())
    batch = "orch_commit_batch_size_bucket"
    assert [1, 1, 3, 3, 4, 6] == [value(s, batch, le=le) for le in ("1.0", "2.0", "4.0", "256.0", "512.0", "+Inf")]
    assert 1 + 3 + 4 + 512 + 513 + 2000 == value(s, "orch_commit_batch_size_sum")
    duration = "orch_commit_duration_seconds_bucket"
    assert [0, 6] == [value(s, duration, le=le) for le in ("0.00025", "0.0005")]
    step = "orch_step_duration_seconds_bucket"
    completed = {"workflow": "Wf", "step": "s", "outcome": "completed"}
    assert [1, 1, 2] == [value(s, step, le=le, **completed) for le in ("0.0005", "0.001", "0.0025")]
    assert [0, 1] == [value(s, step, le=le, workflow="Wf", step="s", outcome="failed") for le in ("5.0", "10.0")]
    assert 2 == value(s, "orch_step_attempts_total", **completed)


def test_retries_count_attempts_by_outcome_and_time_them(run: Runner) -> None:
    """Issue 12: two failed attempts, two retries, one completed attempt; starts and ends counted at commit."""
    metrics = Metrics()

    async def scenario() -> None:
        async with engine_on(metrics) as engine:
            handle = await engine.start(ObsFlaky())
            assert InstanceStatus.COMPLETED == await handle.wait_idle()

    run(scenario())
    s = parse(metrics.exposition())
    wf = "ObsFlaky"
    assert 2.0 == value(s, "orch_step_attempts_total", workflow=wf, step="fetch", outcome="failed")
    assert 1.0 == value(s, "orch_step_attempts_total", workflow=wf, step="fetch", outcome="completed")
    assert 1.0 == value(s, "orch_step_attempts_total", workflow=wf, step="store", outcome="completed")
    assert 2.0 == value(s, "orch_step_retries_total", workflow=wf, step="fetch")
    assert 0.0 == value(s, "orch_step_retries_total", workflow=wf, step="store")
    assert 2.0 == value(s, "orch_step_duration_seconds_count", workflow=wf, step="fetch", outcome="failed")
    assert 1.0 == value(
        s, "orch_step_duration_seconds_bucket", workflow=wf, step="fetch", outcome="completed", le="+Inf"
    )
    assert 1.0 == value(s, "orch_instances_started_total", workflow=wf)
    assert 1.0 == value(s, "orch_instances_ended_total", workflow=wf, status="completed")
    assert 0.0 == value(s, "orch_instances_ended_total", workflow=wf, status="failed")
    commits = value(s, "orch_commit_duration_seconds_count")
    assert commits >= 3  # the start, each retry's park, the end
    assert commits == value(s, "orch_commit_batch_size_count")
    assert value(s, "orch_commit_batch_size_sum") >= commits


def test_a_failed_step_compensates_and_the_instance_ends_failed(run: Runner) -> None:
    """Issue 12: the failure, the compensation's outcome (labelled with the step it undoes) and the end status."""
    metrics = Metrics()

    async def scenario() -> None:
        async with engine_on(metrics) as engine:
            handle = await engine.start(ObsTrip())
            assert InstanceStatus.FAILED == await handle.wait_idle()

    run(scenario())
    s = parse(metrics.exposition())
    wf = "ObsTrip"
    assert 1.0 == value(s, "orch_step_attempts_total", workflow=wf, step="book_flight", outcome="completed")
    assert 1.0 == value(s, "orch_step_attempts_total", workflow=wf, step="book_hotel", outcome="failed")
    assert 0.0 == value(s, "orch_step_retries_total", workflow=wf, step="book_hotel")
    assert 1.0 == value(s, "orch_compensations_total", workflow=wf, step="book_flight", outcome="completed")
    assert 0.0 == value(s, "orch_compensations_total", workflow=wf, step="book_flight", outcome="failed")
    assert 1.0 == value(s, "orch_instances_ended_total", workflow=wf, status="failed")


def test_a_compensation_that_fails_counts_as_failed_and_the_instance_ends_compensation_failed(run: Runner) -> None:
    """Issue 12: the failed undo is counted with its outcome, and the end status is the one alerts look for."""
    metrics = Metrics()

    async def scenario() -> int:
        async with engine_on(metrics) as engine:
            handle = await engine.start(ObsStuckRefund())
            assert InstanceStatus.COMPENSATION_FAILED == await handle.wait_idle()
            return len([e for e in handle.history() if e.kind is EventKind.COMPENSATION_FAILED])

    attempts = run(scenario())
    assert attempts >= 1  # the compensation's own retries come first
    s = parse(metrics.exposition())
    wf = "ObsStuckRefund"
    assert attempts == value(s, "orch_compensations_total", workflow=wf, step="charge", outcome="failed")
    assert 0.0 == value(s, "orch_compensations_total", workflow=wf, step="charge", outcome="completed")
    assert 1.0 == value(s, "orch_instances_ended_total", workflow=wf, status="compensation_failed")


def test_timer_lag_is_the_fire_time_minus_the_due_time(run: Runner) -> None:
    """Issue 12: a one-hour timer found due 30 minutes late (a virtual clock moved by hand) lags 1800 s."""
    clock = VirtualClock(autojump=False)
    metrics = Metrics()

    async def scenario() -> None:
        async with engine_on(metrics, clock) as engine:
            handle = await engine.start(ObsNap())
            await handle.wait_idle()
            clock.advance(timedelta(minutes=90).total_seconds())
            await handle.result()
            assert InstanceStatus.COMPLETED == handle.status

    run(scenario())
    s = parse(metrics.exposition())
    assert 1.0 == value(s, "orch_timer_lag_seconds_count", workflow="ObsNap")
    assert 1800.0 == value(s, "orch_timer_lag_seconds_sum", workflow="ObsNap")
    assert 0.0 == value(s, "orch_timer_lag_seconds_bucket", workflow="ObsNap", le="300.0")
    assert 1.0 == value(s, "orch_timer_lag_seconds_bucket", workflow="ObsNap", le="+Inf")


def test_a_lease_taken_over_counts_for_the_taker_and_as_lost_for_the_stuck_owner(tmp_path: Path, run: Runner) -> None:
    """Issue 12: two engines on one SQLite file; the first is stuck in a step and its lease ends; the second takes it."""
    path = tmp_path / "shared.db"
    stuck_metrics, taker_metrics = Metrics(), Metrics()
    stuck_gate, open_gate = Gate(opened=False), Gate(opened=True)

    async def scenario() -> None:
        with SqliteStore(path) as s1, SqliteStore(path) as s2, SqliteStore(path) as admin:
            stuck = Engine(s1, services={"gate": stuck_gate}, metrics=stuck_metrics, workflows=OBSERVED, lease=0.6)
            taker = Engine(s2, services={"gate": open_gate}, metrics=taker_metrics, workflows=OBSERVED, poll=0.02)
            try:
                await stuck.recover()
                handle = await stuck.start(ObsGated())
                await eventually(lambda: stuck_gate.entered == 1)
                # The stuck worker's lease ends as if it had stopped renewing it.
                assert 1 == admin.expire(stuck.owner)
                await taker.recover()
                await eventually(lambda: taker.info(handle.instance_id).status is InstanceStatus.COMPLETED)
                await eventually(lambda: value(parse(stuck_metrics.exposition()), "orch_leases_lost_total") == 1.0)
            finally:
                await asyncio.gather(stuck.aclose(), taker.aclose())

    run(scenario())
    taken = parse(taker_metrics.exposition())
    lost = parse(stuck_metrics.exposition())
    assert 1.0 == value(taken, "orch_lease_takeovers_total")
    assert 0.0 == value(taken, "orch_leases_lost_total")
    assert 0.0 == value(lost, "orch_lease_takeovers_total")
    assert 1.0 == value(lost, "orch_leases_lost_total")
    assert 1.0 == value(taken, "orch_instances_ended_total", workflow="ObsGated", status="completed")
    assert 1.0 == value(lost, "orch_instances_started_total", workflow="ObsGated")
    assert 1 == open_gate.entered


def test_serve_answers_a_real_http_scrape_and_stops(run: Runner) -> None:
    """Issue 12: ``serve(0)`` listens on a free port; a scrape over HTTP parses; the stop function closes it."""
    metrics = Metrics()

    async def scenario() -> None:
        async with engine_on(metrics) as engine:
            await (await engine.start(ObsFlaky(failures=0))).result()

    run(scenario())
    stop = metrics.serve(0)
    try:
        assert stop.port > 0
        with urllib.request.urlopen(stop.url, timeout=10) as response:  # noqa: S310 - our own local server
            assert 200 == response.status
            body = response.read().decode()
    finally:
        stop()
    s = parse(body)
    assert 1.0 == value(s, "orch_step_attempts_total", workflow="ObsFlaky", step="fetch", outcome="completed")
    with pytest.raises(OSError, match=r"."):
        urllib.request.urlopen(stop.url, timeout=2)  # noqa: S310
    stop()  # a second stop does nothing


def test_metrics_go_into_a_registry_of_the_applications_own() -> None:
    """Issue 12: ``Metrics(registry)`` registers there (to be served by the application); two in one registry clash."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    assert registry is metrics.registry
    assert registry.get_sample_value("orch_leases_lost_total") == 0.0
    with pytest.raises(ValueError, match="Duplicated"):
        Metrics(registry)
    other = Metrics(registry, namespace="billing")
    assert registry.get_sample_value("billing_leases_lost_total") == 0.0
    assert other.registry is registry


def test_a_worker_running_an_instance_a_client_started_is_no_takeover(tmp_path: Path, run: Runner) -> None:
    """Issue 12: a start from a client (`orch run`) is picked up by a worker: nothing was in flight, nothing taken over."""
    path = tmp_path / "shared.db"
    worker_metrics = Metrics()

    async def scenario() -> None:
        with SqliteStore(path) as s1, SqliteStore(path) as s2:
            gate = {"gate": Gate(opened=True)}
            worker = Engine(s1, services=gate, metrics=worker_metrics, workflows=OBSERVED, poll=0.02)
            client = Engine(s2, concurrency=0, workflows=OBSERVED)
            try:
                await worker.recover()
                handle = await client.start(ObsGated())
                await eventually(lambda: worker.info(handle.instance_id).status is InstanceStatus.COMPLETED)
            finally:
                await asyncio.gather(worker.aclose(), client.aclose())

    run(scenario())
    samples = parse(worker_metrics.exposition())
    assert 0.0 == value(samples, "orch_lease_takeovers_total")
    assert 1.0 == value(samples, "orch_instances_ended_total", workflow="ObsGated", status="completed")
