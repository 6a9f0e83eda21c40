"""
The ``orch`` command line as real processes, against live workers in other processes (issue 12).

Each test runs on a fresh SQLite file and on a fresh PostgreSQL database: one or
more ``orch worker`` processes drive the instances while ``orch run``,
``orch tasks``, ``orch complete``, ``orch history --follow``... run as separate
processes, the way an operator uses them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import LIMIT, ROOT, Result, Workers, environment, orch_process, wait_until
from tests.cli.test_runner import assert_one_line_error

FLOWS = "tests.cli.flows"


def status_of(store: str, instance_id: str) -> str:
    shown = orch_process("instances", "--store", store, "--json")
    assert 0 == shown.code, shown.err
    return next((i["status"] for i in shown.json() if i["id"] == instance_id), "absent")


def run_to_wait(store: str, workflow: str, instance_id: str, *inputs: str) -> dict[str, object]:
    args = [a for pair in inputs for a in ("-i", pair)]
    result = orch_process("run", f"{FLOWS}:{workflow}", "--store", store, "--id", instance_id, *args, "--json")
    assert 0 == result.code, result.err
    started: dict[str, object] = result.json()
    assert "waiting" == started["status"], started
    return started


def test_session_run_tasks_complete_history(store_url: str, workers: Workers) -> None:
    """
    A worker in one process; run, tasks, complete (refused for the wrong user, then
    done) and history --follow in others. The follower ends when the instance ends.
    """
    workers.start(store_url)
    started = run_to_wait(store_url, "Expense", "E-1", "claimant=ann", "amount=120")
    assert "approve" == started["step"]

    [task] = orch_process("tasks", "--store", store_url, "--json").json()
    assert (started["open_task"], "manager", "E-1") == (task["id"], task["assignee"], task["instance_id"])

    follower = subprocess.Popen(
        [sys.executable, "-m", "statemachine_orch", "history", "E-1", "--follow", "--store", store_url],
        cwd=ROOT,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wrong = orch_process(
            "complete",
            task["id"],
            "--store",
            store_url,
            "--user",
            "bob",
            "--form-json",
            '{"approved": true}',
            "-m",
            FLOWS,
        )
        assert_one_line_error(wrong, 1, "'bob'", "may not complete", "assignee 'manager'")
        assert "waiting" == status_of(store_url, "E-1")

        done = orch_process(
            "complete",
            task["id"],
            "--store",
            store_url,
            "--user",
            "manager",
            "--form-json",
            '{"approved": true}',
            "-m",
            FLOWS,
        )
        assert 0 == done.code, done.err
        assert f"completed task {task['id']}" in done.out
        out, err = follower.communicate(timeout=LIMIT)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert 0 == follower.returncode, err
    lines = out.strip().splitlines()
    assert "instance_started" in lines[0]
    assert "task_completed approve - manager" in out
    assert lines[-1].endswith("status_changed - completed")

    shown = orch_process("show", "E-1", "--store", store_url, "-m", FLOWS, "--json").json()
    assert "completed" == shown["instance"]["status"]
    assert (True, "pay-120", True) == (
        shown["variables"]["approved"],
        shown["variables"]["payment"],
        shown["variables"]["booked"],
    )
    assert [] == orch_process("tasks", "--store", store_url, "--json").json()
    assert [0] == workers.stop_all()  # SIGTERM: a clean stop


def test_signal_then_cancel(store_url: str, workers: Workers) -> None:
    """signal checks the message against the declared type (one-line errors), then delivers it; cancel ends another."""
    workers.start(store_url)
    run_to_wait(store_url, "Parcel", "P-1", "ref=R1")
    bad = orch_process("signal", "P-1", "Delivered", "--json", '{"signed_by": 5}', "--store", store_url, "-m", FLOWS)
    assert_one_line_error(bad, 1, "P-1", "Delivered.signed_by", "expected str", "got 5")
    other = orch_process("signal", "P-1", "Decision", "--json", '{"approved": true}', "--store", store_url, "-m", FLOWS)
    assert_one_line_error(other, 1, "does not wait for Decision", "Delivered")
    unimported = orch_process("signal", "P-1", "Delivered", "--json", '{"signed_by": "kim"}', "--store", store_url)
    assert_one_line_error(unimported, 1, "Parcel is not imported", "--module")

    sent = orch_process(
        "signal", "P-1", "Delivered", "--json", '{"signed_by": "kim"}', "--store", store_url, "-m", FLOWS
    )
    assert 0 == sent.code, sent.err
    wait_until(lambda: status_of(store_url, "P-1") == "completed", "P-1 to complete")
    shown = orch_process("show", "P-1", "--store", store_url, "-m", FLOWS, "--json").json()
    assert "kim" == shown["variables"]["signed_by"]

    run_to_wait(store_url, "Parcel", "P-2", "ref=R2")
    cancelled = orch_process("cancel", "P-2", "--reason", "lost in transit", "--store", store_url, "-m", FLOWS)
    assert 0 == cancelled.code, cancelled.err
    assert "P-2 is cancelled" in cancelled.out
    history = orch_process("history", "P-2", "--store", store_url, "--json").json()
    assert any("lost in transit" in (e["detail"] or "") for e in history)
    again = orch_process("cancel", "P-2", "--store", store_url, "-m", FLOWS)
    assert_one_line_error(again, 1, "P-2")


def test_retry_a_failed_compensation(store_url: str, workers: Workers, tmp_path: Path) -> None:
    """A refund that fails leaves the instance compensation_failed (run exits 1); once fixed, retry ends it failed."""
    marker = tmp_path / "refund-ok"
    workers.start(store_url, env=environment(ORCH_TEST_REFUND_OK=str(marker)))
    run = orch_process("run", f"{FLOWS}:Refundable", "--store", store_url, "--id", "R-1", "-i", "amount=7", "--json")
    assert 1 == run.code, run.err
    assert "compensation_failed" == run.json()["status"]
    marker.write_text("the bank agrees")
    env = environment(ORCH_TEST_REFUND_OK=str(marker))
    retried = orch_process("retry", "R-1", "--here", "--store", store_url, "-m", FLOWS, env=env)
    assert 0 == retried.code, retried.err
    assert "R-1 is failed" in retried.out
    refused = orch_process("retry", "R-1", "--store", store_url, "-m", FLOWS)
    assert_one_line_error(refused, 1, "R-1", "not compensation_failed")


def test_retry_by_a_worker_elsewhere(sqlite_url: str, workers: Workers, tmp_path: Path) -> None:
    """retry without --here: the worker process that runs the workflows runs the compensations again."""
    marker = tmp_path / "refund-ok"
    workers.start(sqlite_url, env=environment(ORCH_TEST_REFUND_OK=str(marker)))
    run = orch_process("run", f"{FLOWS}:Refundable", "--store", sqlite_url, "--id", "R-3", "-i", "amount=7")
    assert 1 == run.code
    marker.write_text("the bank agrees")
    retried = orch_process("retry", "R-3", "--timeout", "20", "--store", sqlite_url, "-m", FLOWS)
    assert 0 == retried.code, retried.err


def test_migrate_a_waiting_instance(store_url: str, workers: Workers) -> None:
    """migrate --to moves a waiting instance to version 2 through its declared migration."""
    workers.start(store_url)
    run_to_wait(store_url, "Expense", "E-7", "claimant=bo", "amount=9")
    moved = orch_process("migrate", "E-7", "--to", f"{FLOWS}:ExpenseV2", "--store", store_url, "--json")
    assert 0 == moved.code, moved.err
    assert ("Expense", "2") == (moved.json()["workflow"], moved.json()["version"])
    shown = orch_process("show", "E-7", "--store", store_url, "-m", FLOWS, "--json").json()
    assert shown["variables"]["migrated"] is True
    back = orch_process("migrate", "E-7", "--to", f"{FLOWS}:Expense", "--store", store_url)
    assert_one_line_error(back, 1, "E-7")


def test_unknown_version_is_named_not_a_crash(store_url: str) -> None:
    """An instance of a version no imported class has is listed and shown, its version named."""
    made = orch_process(
        "run",
        "tests.cli.flows_v9:ExpenseV9",
        "--store",
        store_url,
        "--here",
        "--id",
        "V-9",
        "-i",
        "claimant=x",
        "-i",
        "amount=1",
        "--json",
    )
    assert 0 == made.code, made.err
    listed = orch_process("instances", "--store", store_url, "-m", FLOWS, "--json")
    assert 0 == listed.code, listed.err
    [row] = listed.json()
    assert ("V-9", "9", True) == (row["id"], row["version"], row["unknown_version"])
    table = orch_process("instances", "--store", store_url, "-m", FLOWS)
    assert "unknown version 9" in table.out
    shown = orch_process("show", "V-9", "--store", store_url, "-m", FLOWS)
    assert 0 == shown.code, shown.err
    assert "unknown version: Expense version 9 has no class here (known versions: 1, 2)" in shown.out
    as_json = orch_process("show", "V-9", "--store", store_url, "-m", FLOWS, "--json").json()
    assert as_json["variables"] is None
    assert "unknown version" in as_json["variables_unavailable"]
    assert "Traceback" not in shown.err + listed.err


def test_worker_logs_json_lines(store_url: str, workers: Workers) -> None:
    """--log-format json --log-level info: the worker's log lines are JSON objects carrying the instance id."""
    workers.start(store_url, "--log-format", "json", "--log-level", "info")
    run = orch_process("run", f"{FLOWS}:Refundable", "--store", store_url, "--id", "R-2", "-i", "amount=3")
    assert 1 == run.code
    wait_until(lambda: "instance_failed" in workers.log(), "the worker to log the failure")
    events = [json.loads(line) for line in workers.log().splitlines() if line.startswith("{")]
    assert any(e.get("event") == "instance_failed" and e.get("instance_id") == "R-2" for e in events)
    assert all("timestamp" in e and "level" in e for e in events)


def test_worker_without_workflows_and_bad_module() -> None:
    """A worker given a module without workflows exits 1; an unknown module exits 2; both say why in one line."""
    none = orch_process("worker", "tests.cli.conftest", "--store", "sqlite:///unused.db")
    assert_one_line_error(none, 1, "no workflow classes")
    missing = orch_process("worker", "tests.cli.nope", "--store", "sqlite:///unused.db")
    assert_one_line_error(missing, 2, "tests.cli.nope")
    assert not (ROOT / "unused.db").exists()


@pytest.mark.parametrize("command", [["instances"], ["tasks"], ["show", "X"], ["alerts"]])
def test_read_commands_exit_2_without_a_store(command: list[str]) -> None:
    """Every read command, as a process, without a store: exit 2, one line."""
    assert_one_line_error(orch_process(*command), 2, "ORCH_STORE")


def test_python_dash_m_and_help() -> None:
    """python -m statemachine_orch --help lists every command."""
    result: Result = orch_process("--help")
    assert 0 == result.code
    for name in (
        "run",
        "worker",
        "instances",
        "show",
        "history",
        "tree",
        "tasks",
        "complete",
        "signal",
        "cancel",
        "retry",
        "migrate",
        "check",
        "paths",
        "graph",
        "db",
        "alerts",
        "demo",
    ):
        assert f"  {name} " in result.out, name


def test_worker_serves_metrics(store_url: str, workers: Workers) -> None:
    """--metrics-port 0: the worker serves /metrics on a free port; the scrape parses and counts the step run."""
    import re
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    proc_log = workers.tmp / "metrics-worker.log"
    with proc_log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "statemachine_orch", "worker", FLOWS, "--store", store_url, "--metrics-port", "0"],
            cwd=ROOT,
            env=environment(),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    workers.started.append((proc, proc_log))
    wait_until(lambda: "orch worker " in proc_log.read_text() and "running" in proc_log.read_text(), "the worker")
    match = re.search(r"metrics at (http://\S+)", proc_log.read_text())
    assert match is not None, proc_log.read_text()
    run_to_wait(store_url, "Parcel", "P-m", "ref=M")
    with urllib.request.urlopen(match.group(1), timeout=LIMIT) as response:  # noqa: S310 - a local http URL
        text = response.read().decode()
    samples = {
        (
            s.name,
            s.labels.get("workflow"),
            s.labels.get("step"),
            s.labels.get("outcome") or s.labels.get("status"),
        ): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert 1.0 == samples[("orch_step_attempts_total", "Parcel", "ship", "completed")]  # the engine's metrics
    assert 1.0 == samples[("orch_instances", "Parcel", None, "waiting")]  # the store's gauges
    taken = orch_process(
        "worker", FLOWS, "--store", store_url, "--metrics-port", match.group(1).rsplit(":", 1)[1].split("/")[0]
    )
    assert_one_line_error(taken, 1, "--metrics-port", "cannot listen")


def test_a_worker_runs_its_modules_schedules(store_url: str, workers: Workers) -> None:
    """Issue 10: orch worker runs the orch_schedules of its modules: the schedule's instances start and end."""
    workers.start(store_url, env={**environment(), "ORCH_MODULES": "tests.cli.scheduled"})

    def ticked() -> bool:
        shown = orch_process("instances", "--store", store_url, "--json")
        return any(i["id"].startswith("cli-tick@") and i["status"] == "completed" for i in shown.json())

    wait_until(ticked, "an instance of the schedule cli-tick")
    assert [0] == workers.stop_all()
