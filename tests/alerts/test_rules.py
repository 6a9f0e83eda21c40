"""
Issue 12: the example Prometheus alert rules (``examples/prometheus-alerts.yml``).

Always: the file is parsed and every rule's structure checked (a unique CamelCase
name, an expression, a duration, a severity, a summary), and every metric its
expression names is one the library exposes — the store's gauges
(:class:`StoreCollector`) or the workers' event metrics — with label matchers on
that metric's labels only. With ``promtool`` installed (Debian: ``apt-get install
prometheus``): ``promtool check rules``, and ``promtool test rules`` on series
that must fire some alerts and not others.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

RULES = Path(__file__).resolve().parents[2] / "examples" / "prometheus-alerts.yml"

METRICS: dict[str, frozenset[str]] = {
    # The store's gauges (statemachine_orch.alerts.StoreCollector).
    "orch_instances": frozenset({"workflow", "status"}),
    "orch_tasks_open": frozenset({"workflow", "step"}),
    "orch_tasks_overdue": frozenset({"workflow", "step"}),
    "orch_alerts": frozenset({"kind"}),
    "orch_timers_overdue_seconds": frozenset(),
    # The workers' event metrics (statemachine_orch.metrics).
    "orch_step_attempts_total": frozenset({"workflow", "step", "outcome"}),
    "orch_step_duration_seconds": frozenset({"workflow", "step", "outcome"}),
    "orch_step_retries_total": frozenset({"workflow", "step"}),
    "orch_compensations_total": frozenset({"workflow", "step", "outcome"}),
    "orch_instances_ended_total": frozenset({"workflow", "status"}),
    "orch_timer_lag_seconds": frozenset({"workflow"}),
    "orch_commit_duration_seconds": frozenset(),
    "orch_lease_takeovers_total": frozenset(),
    "orch_leases_lost_total": frozenset(),
}
"""Every metric the rules may use, with its labels (besides a scrape's own: job, instance)."""

HISTOGRAMS = frozenset({"orch_step_duration_seconds", "orch_timer_lag_seconds", "orch_commit_duration_seconds"})
ALERT_KINDS = frozenset(
    {"stuck_instance", "overdue_task_unescalated", "compensation_failed", "quarantined", "timer_lag"}
)
SCRAPE_LABELS = frozenset({"job", "instance"})

_METRIC = re.compile(r"\b(orch_[a-z0-9_]+)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_DURATION = re.compile(r"^[0-9]+[smhd]$")


def _rules() -> list[dict[str, Any]]:
    doc: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _base(name: str) -> str:
    """A histogram's series name as the metric's (``_bucket``, ``_sum``, ``_count`` dropped)."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
            return name.removesuffix(suffix)
    return name


def test_the_rules_file_has_groups_of_well_formed_rules() -> None:
    """Issue 12: every group is named once, every rule has a unique name, an expression, a severity and a summary."""
    doc: dict[str, Any] = yaml.safe_load(RULES.read_text())
    assert ["groups"] == list(doc)
    groups: list[dict[str, Any]] = doc["groups"]
    names = [g["name"] for g in groups]
    assert len(names) == len(set(names))
    alerts: list[str] = []
    for group in groups:
        assert {"name", "rules"} == set(group), group["name"]
        assert group["rules"], group["name"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"Orch[A-Z][A-Za-z]+", rule["alert"]), rule["alert"]
            assert isinstance(rule["expr"], str), rule["alert"]
            assert rule["expr"].strip(), rule["alert"]
            if "for" in rule:
                assert _DURATION.match(rule["for"]), rule["alert"]
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
            assert rule["annotations"]["summary"].strip(), rule["alert"]
            alerts.append(rule["alert"])
    assert len(alerts) == len(set(alerts)), "alert names are unique"


def test_every_rule_uses_only_the_metrics_and_labels_the_library_exposes() -> None:
    """Issue 12: each expression names known metrics (histograms by their series) and matches on their labels only."""
    used: set[str] = set()
    for rule in _rules():
        found = _METRIC.findall(rule["expr"])
        assert found, f"{rule['alert']} uses no orch_ metric"
        for series, matchers in found:
            name = _base(series)
            assert name in METRICS, f"{rule['alert']}: unknown metric {series}"
            if series != name:
                assert series.endswith(("_bucket", "_sum", "_count")), series
            allowed = METRICS[name] | SCRAPE_LABELS | (frozenset({"le"}) if name in HISTOGRAMS else frozenset[str]())
            for label, _, value in _MATCHER.findall(matchers):
                assert label in allowed, f"{rule['alert']}: {name} has no label {label}"
                if name == "orch_alerts":
                    assert value in ALERT_KINDS, f"{rule['alert']}: no alert kind {value}"
            used.add(name)
    kinds = {k for rule in _rules() for k in re.findall(r'orch_alerts\{kind="([a-z_]+)"\}', rule["expr"])}
    assert ALERT_KINDS - {"timer_lag"} == kinds, "a rule for every kind (timer lag: by how late, below)"
    assert {"orch_timers_overdue_seconds", "orch_step_attempts_total", "orch_leases_lost_total"} <= used


def test_a_typo_in_a_metric_name_would_be_caught() -> None:
    """Issue 12: the name check is real: a misspelt metric is not one the library exposes."""
    assert [("orch_step_attempt_total", "")] == _METRIC.findall("rate(orch_step_attempt_total[5m])")
    assert "orch_step_attempt_total" not in METRICS
    assert "orch_step_duration_seconds" == _base("orch_step_duration_seconds_bucket")
    assert "orch_alerts_bucket" == _base("orch_alerts_bucket"), "only histograms have buckets"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus); the YAML checks above still ran")
    return found


def test_promtool_checks_the_rules() -> None:
    """Issue 12: promtool finds every rule valid."""
    done = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert 0 == done.returncode, done.stdout + done.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in done.stdout


UNIT_TESTS: dict[str, Any] = {
    "evaluation_interval": "1m",
    "tests": [
        {
            "interval": "1m",
            "input_series": [
                {"series": 'orch_alerts{kind="stuck_instance", job="orch", instance="w1"}', "values": "0 0 1x10"},
                {"series": 'orch_alerts{kind="stuck_instance", job="orch", instance="w2"}', "values": "0 0 1x10"},
                {"series": 'orch_alerts{kind="compensation_failed", job="orch", instance="w1"}', "values": "0x12"},
                {"series": 'orch_timers_overdue_seconds{job="orch", instance="w1"}', "values": "0 400x11"},
                {"series": 'orch_instances{workflow="Order", status="running", job="orch"}', "values": "3x12"},
                {
                    "series": 'orch_step_attempts_total{workflow="Order", step="pay", outcome="completed"}',
                    "values": "0+10x30",
                },
                {
                    "series": 'orch_step_attempts_total{workflow="Order", step="pay", outcome="failed"}',
                    "values": "0+5x30",
                },
                {"series": 'orch_leases_lost_total{job="orch", instance="w1"}', "values": "0 0 0 1 1 1"},
            ],
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "OrchInstanceStuck", "exp_alerts": []},
                {
                    "eval_time": "8m",
                    "alertname": "OrchInstanceStuck",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "critical"},
                            "exp_annotations": {
                                "summary": "1 instance(s) running with no progress",
                                "description": (
                                    "Instances are running or compensating, wait on nothing, and have committed "
                                    "no change for longer than the stuck threshold (default 300 s): a step that "
                                    "hangs, or a worker gone with nobody to take its leases. `orch alerts` "
                                    "names them."
                                ),
                            },
                        }
                    ],
                },
                {"eval_time": "10m", "alertname": "OrchCompensationFailed", "exp_alerts": []},
                {"eval_time": "10m", "alertname": "OrchStoreGaugesAbsent", "exp_alerts": []},
                {
                    "eval_time": "7m",
                    "alertname": "OrchTimersLagging",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "warning"},
                            "exp_annotations": {
                                "summary": "A due timer has waited 6m 40s to fire",
                                "description": (
                                    "Timers (a @timer step, a retry's backoff, an escalation) are due and no "
                                    "worker fires them: too few workers, or none running."
                                ),
                            },
                        }
                    ],
                },
                {
                    "eval_time": "25m",
                    "alertname": "OrchStepFailureRateHigh",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "warning", "workflow": "Order", "step": "pay"},
                            "exp_annotations": {
                                "summary": "Order.pay: 33.33% of attempts fail",
                                "description": (
                                    "More than a fifth of the step's attempts fail; retries may still save "
                                    "them, but the service it calls is probably in trouble."
                                ),
                            },
                        }
                    ],
                },
                {
                    "eval_time": "5m",
                    "alertname": "OrchLeasesLost",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "warning"},
                            "exp_annotations": {
                                "summary": "Workers lost 1 lease(s) while running",
                                "description": (
                                    "A worker's event loop was blocked longer than its lease (CPU-bound steps, "
                                    "a stalled database) and another took its instances over; its writes were "
                                    "fenced off. Look for lease_lost in the workers' log."
                                ),
                            },
                        }
                    ],
                },
            ],
        }
    ],
}
"""Series in, alerts out: what ``promtool test rules`` checks (the store's gauges as two workers report them)."""


def test_promtool_fires_the_rules_on_series_that_should_and_not_on_others(tmp_path: Path) -> None:
    """Issue 12: stuck instances, lagging timers, failing steps and lost leases fire their alerts; healthy gauges do not."""
    promtool = _promtool()
    tests = dict(UNIT_TESTS, rule_files=[str(RULES)])
    path = tmp_path / "rules_test.yml"
    path.write_text(json.dumps(tests, indent=1))  # JSON is YAML
    done = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False)
    assert 0 == done.returncode, done.stdout + done.stderr


def test_every_metric_of_the_rules_is_served_by_a_worker_and_the_store_collector(tmp_path: Path) -> None:
    """Issue 12: a worker's Metrics and the StoreCollector serve every metric the rules name, typed and labelled as used."""
    import asyncio

    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from statemachine_orch import Engine, SqliteStore, VirtualClock
    from statemachine_orch.alerts import StoreCollector
    from statemachine_orch.metrics import Metrics
    from tests.alerts.flows import PINNED, START, AlertRefund, Bank
    from tests.conftest import run_scenario

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    path = tmp_path / "served.db"

    async def scenario() -> None:
        with SqliteStore(path) as store:
            clock = VirtualClock(START)
            async with Engine(store, clock=clock, workflows=PINNED, services={"bank": Bank()}, metrics=metrics) as e:
                handle = await e.start(AlertRefund())
                await asyncio.wait_for(e.wait_instance(handle.instance_id), 15)

    run_scenario(scenario())
    with SqliteStore(path) as reader:
        registry.register(StoreCollector(reader))
        families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    used = {_base(series) for rule in _rules() for series, _ in _METRIC.findall(rule["expr"])}
    for name in sorted(used):
        kind = "histogram" if name in HISTOGRAMS else "counter" if name.endswith("_total") else "gauge"
        family = families.get(name.removesuffix("_total") if kind == "counter" else name)
        assert family is not None, f"nothing serves {name}"
        assert kind == family.type, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == METRICS[name], sample
    attempts = families["orch_step_attempts"].samples
    assert {("AlertRefund", "pay", "completed"), ("AlertRefund", "ship", "failed")} == {
        (s.labels["workflow"], s.labels["step"], s.labels["outcome"]) for s in attempts
    }, "the outcomes the rules match on"
    failed = [s for s in families["orch_compensations"].samples if s.labels["outcome"] == "failed"]
    assert failed, "a failed compensation is counted as outcome=failed"
