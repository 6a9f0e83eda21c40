"""
The ``orch`` command line through typer's runner, in this process, on real SQLite files (issue 12).

``run --here`` drives the instance in the command's own process, so these tests
need no worker process; the tests with workers in other processes are in
``test_live.py``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.conftest import Result

Invoke = Callable[..., Result]

EXPENSE = "tests.cli.flows:Expense"


def start_expense(invoke: Invoke, store: str, instance_id: str, amount: str = "120") -> Result:
    result = invoke(
        "run", EXPENSE, "--store", store, "--here", "--id", instance_id, "-i", "claimant=ann", "-i", f"amount={amount}"
    )
    assert 0 == result.code, result.err
    return result


def assert_one_line_error(result: Result, code: int, *needles: str) -> None:
    """The error is one line on stderr, starting ``orch: error:``, naming each needle; no traceback."""
    assert code == result.code, (result.out, result.err)
    lines = result.err.strip().splitlines()
    assert 1 == len(lines), result.err
    assert lines[0].startswith("orch: error: ")
    assert "Traceback" not in result.err + result.out
    for needle in needles:
        assert needle in lines[0]


def test_no_store_is_a_usage_error(invoke: Invoke) -> None:
    """Without --store or ORCH_STORE a read command exits 2 with one line saying how to name a store."""
    assert_one_line_error(invoke("instances"), 2, "--store", "ORCH_STORE")


def test_unknown_store_url_is_a_usage_error(invoke: Invoke) -> None:
    """A store URL of an unknown kind exits 2, naming it."""
    assert_one_line_error(invoke("instances", "--store", "mysql://db/x"), 2, "mysql://db/x")


def test_missing_sqlite_file_is_an_error_not_a_new_store(invoke: Invoke, tmp_path: Path) -> None:
    """Reading a store whose file is not there fails (exit 1) and creates nothing."""
    path = tmp_path / "nothing.db"
    assert_one_line_error(invoke("instances", "--store", f"sqlite:///{path}"), 1, str(path))
    assert not path.exists()


def test_bad_import_path_is_a_usage_error(invoke: Invoke, sqlite_url: str) -> None:
    """MODULE:Class that is malformed, or names no workflow, exits 2 naming it."""
    assert_one_line_error(invoke("run", "tests.cli.flows", "--store", sqlite_url), 2, "MODULE:Class")
    assert_one_line_error(invoke("paths", "tests.cli.flows:Nope"), 2, "Nope")
    assert_one_line_error(invoke("paths", "tests.cli.flows:Bank"), 2, "not a workflow class")
    assert_one_line_error(invoke("check", "tests.cli.no_such_module"), 2, "no_such_module")


def test_typer_usage_errors_exit_2(invoke: Invoke) -> None:
    """A missing argument or an unknown option is a usage error (exit 2)."""
    assert 2 == invoke("show").code
    assert 2 == invoke("instances", "--no-such-option").code


def test_run_here_to_the_end_and_read_it_back(invoke: Invoke, sqlite_url: str) -> None:
    """run --here --json completes an instance; instances, show, history and tree --json read it back."""
    result = invoke(
        "run", "tests.cli.flows:Parcel", "--store", sqlite_url, "--here", "--id", "P-1", "-i", "ref=R1", "--json"
    )
    assert 0 == result.code, result.err
    started = result.json()
    assert ("P-1", "waiting", "delivered") == (started["id"], started["status"], started["step"])

    listed = invoke("instances", "--store", sqlite_url, "--json").json()
    assert ["P-1"] == [i["id"] for i in listed]
    assert invoke("instances", "--store", sqlite_url, "--status", "completed", "--json").json() == []
    assert_one_line_error(invoke("instances", "--store", sqlite_url, "--status", "done"), 2, "running, waiting")

    shown = invoke("show", "P-1", "--store", sqlite_url, "--json").json()
    assert {"ref": "R1", "signed_by": ""} == shown["variables"]
    assert "waiting" == shown["instance"]["status"]

    kinds = [e["kind"] for e in invoke("history", "P-1", "--store", sqlite_url, "--json").json()]
    assert "instance_started" == kinds[0]
    assert "step_completed" in kinds

    tree = invoke("tree", "P-1", "--store", sqlite_url, "--json").json()
    assert ("P-1", []) == (tree["id"], tree["children"])
    assert "P-1 Parcel waiting" in invoke("tree", "P-1", "--store", sqlite_url).out


def test_unknown_instance_is_one_line(invoke: Invoke, sqlite_url: str) -> None:
    """show, history and tree of an id that does not exist exit 1 naming it."""
    start_expense(invoke, sqlite_url, "E-0")
    for command in ("show", "history", "tree"):
        assert_one_line_error(invoke(command, "E-404", "--store", sqlite_url), 1, "E-404")


def test_tasks_and_complete_refusals(invoke: Invoke, sqlite_url: str) -> None:
    """
    An open task is listed (for its user only); completing it as another user, with a
    form that does not fit, or twice, exits 1 with one line; nothing changes until a right completion.
    """
    start_expense(invoke, sqlite_url, "E-1")
    [task] = invoke("tasks", "--store", sqlite_url, "--json").json()
    assert ("E-1", "approve", "manager") == (task["instance_id"], task["step"], task["assignee"])
    assert [task["id"]] == [
        t["id"] for t in invoke("tasks", "--store", sqlite_url, "--user", "manager", "--json").json()
    ]
    assert [] == invoke("tasks", "--store", sqlite_url, "--user", "bob", "--json").json()
    assert [] == invoke("tasks", "--store", sqlite_url, "--overdue", "--json").json()

    refused = invoke(
        "complete", task["id"], "--store", sqlite_url, "--user", "bob", "--form-json", '{"approved": true}'
    )
    assert_one_line_error(refused, 1, task["id"], "'bob'", "may not complete")
    bad = invoke(
        "complete", task["id"], "--store", sqlite_url, "--user", "manager", "--form-json", '{"approved": "yes"}'
    )
    assert_one_line_error(bad, 1, "Decision.approved", "expected bool but got 'yes'")
    extra = invoke(
        "complete", task["id"], "--store", sqlite_url, "--user", "manager", "--form-json", '{"approved": true, "x": 1}'
    )
    assert_one_line_error(extra, 1, "Decision.x", "no such field")
    not_json = invoke("complete", task["id"], "--store", sqlite_url, "--user", "manager", "--form-json", "{approved}")
    assert_one_line_error(not_json, 2, "--form-json", "not JSON")
    assert 1 == len(invoke("tasks", "--store", sqlite_url, "--json").json())

    done = invoke(
        "complete",
        task["id"],
        "--store",
        sqlite_url,
        "--user",
        "manager",
        "--form-json",
        '{"approved": true}',
        "--json",
    )
    assert 0 == done.code, done.err
    assert ("completed", "manager", {"approved": True, "note": ""}) == (
        done.json()["status"],
        done.json()["completed_by"],
        done.json()["form"],
    )
    again = invoke(
        "complete", task["id"], "--store", sqlite_url, "--user", "manager", "--form-json", '{"approved": true}'
    )
    assert_one_line_error(again, 1, "already completed")
    assert_one_line_error(invoke("complete", "T-404", "--store", sqlite_url, "--user", "manager"), 1, "T-404")


def test_bad_input_names_the_field(invoke: Invoke, sqlite_url: str) -> None:
    """run with an input that does not fit names the field and the type (exit 1); nothing is started."""
    bad = invoke("run", EXPENSE, "--store", sqlite_url, "--here", "-i", "claimant=ann", "-i", "amount=lots")
    assert_one_line_error(bad, 1, "Expense.amount", "float", "'lots'")
    missing = invoke("run", EXPENSE, "--store", sqlite_url, "--here", "-i", "claimant=ann")
    assert_one_line_error(missing, 1, "Expense.amount", "missing")
    unknown = invoke(
        "run", EXPENSE, "--store", sqlite_url, "--here", "--input-json", '{"claimant": "a", "amount": 1, "y": 2}'
    )
    assert_one_line_error(unknown, 1, "Expense.y", "no such field")
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()  # refused before the store was opened


def test_run_that_fails_exits_1(invoke: Invoke, sqlite_url: str) -> None:
    """An instance that ends failed (its refund ran) makes run exit 1, and says why."""
    result = invoke("run", "tests.cli.flows:Refundable", "--store", sqlite_url, "--here", "-i", "amount=5", "--json")
    assert 1 == result.code, result.err
    assert "failed" == result.json()["status"]
    assert "this step always fails" in result.json()["error"]
    instance_id = result.json()["id"]
    followed = invoke("history", instance_id, "--follow", "--json", "--store", sqlite_url)
    assert 0 == followed.code
    lines = [json.loads(line) for line in followed.out.splitlines()]
    assert ("instance_started", "status_changed", "failed") == (
        lines[0]["kind"],
        lines[-1]["kind"],
        lines[-1]["detail"],
    )


def test_check_a_good_and_a_bad_module(invoke: Invoke, tmp_path: Path) -> None:
    """check lists the workflows of a good module (exit 0) and every definition error of a bad one (exit 1)."""
    good = invoke("check", "tests.cli.flows", "--json")
    assert 0 == good.code
    assert {"Expense v1", "Expense v2", "Parcel v1", "Refundable v1"} <= set(good.json()["workflows"])
    bad_file = tmp_path / "bad_flows_cli.py"
    bad_file.write_text(
        "from statemachine_orch import Ctx, Workflow, step\n"
        "class Lost(Workflow):\n"
        "    @step\n"
        "    def a(self, ctx: Ctx) -> None: ...\n"
        "    @step(final=True)\n"
        "    def b(self, ctx: Ctx) -> None: ...\n"
        "class Fine(Workflow):\n"
        "    @step(initial=True, final=True)\n"
        "    def a(self, ctx: Ctx) -> None: ...\n"
        "class AlsoLost(Workflow, colour='red'):\n"
        "    @step(initial=True, final=True)\n"
        "    def a(self, ctx: Ctx) -> None: ...\n"
    )
    bad = invoke("check", str(bad_file), "--json")
    assert 1 == bad.code
    report = bad.json()
    assert not report["ok"]
    # Every invalid class is reported, not only the first; the valid one is listed.
    assert {("Lost", "no-initial-step"), ("AlsoLost", "class-keyword")} <= {
        (p["workflow"], p["rule"]) for p in report["problems"]
    }
    assert ["Fine v1"] == report["workflows"]
    text = invoke("check", str(bad_file))
    assert 1 == text.code
    assert "Lost is invalid" in text.out
    assert "AlsoLost is invalid" in text.out


def test_paths_and_mermaid(invoke: Invoke, tmp_path: Path) -> None:
    """paths lists every path (JSON); graph writes the Mermaid diagram to a file."""
    found = invoke("paths", EXPENSE, "--json").json()
    endings = {p["ending"] for p in found}
    assert {"completed", "failed"} <= endings
    assert any(p["steps"] == ["submit", "approve", "pay", "book"] for p in found)
    out = tmp_path / "expense.mmd"
    result = invoke("graph", EXPENSE, "--format", "mermaid", "-o", str(out))
    assert 0 == result.code, result.err
    assert out.read_text().startswith("stateDiagram-v2")
    assert "approve --> pay" in out.read_text()


def test_db_upgrade_creates_a_sqlite_store(invoke: Invoke, tmp_path: Path) -> None:
    """db upgrade makes a new SQLite store (and is safe to run again)."""
    path = tmp_path / "fresh.db"
    for _ in range(2):
        result = invoke("db", "upgrade", "--store", f"sqlite:///{path}")
        assert 0 == result.code, result.err
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "instances" in tables


def test_store_from_the_environment(invoke: Invoke, sqlite_url: str, monkeypatch: object) -> None:
    """ORCH_STORE is the default store."""
    start_expense(invoke, sqlite_url, "E-env")
    import os

    os.environ["ORCH_STORE"] = sqlite_url
    try:
        assert ["E-env"] == [i["id"] for i in invoke("instances", "--json").json()]
    finally:
        del os.environ["ORCH_STORE"]


def test_debug_shows_the_traceback(invoke: Invoke, tmp_path: Path) -> None:
    """With --debug an error propagates (the runner sees the exception) instead of one line."""
    from typer.testing import CliRunner

    from statemachine_orch.cli.app import app

    result = CliRunner().invoke(app, ["--debug", "instances", "--store", f"sqlite:///{tmp_path / 'none.db'}"])
    assert result.exception is not None
    assert not isinstance(result.exception, SystemExit)
    assert "none.db" in str(result.exception)


def test_demo_runs_the_order_example(invoke: Invoke, tmp_path: Path) -> None:
    """demo runs the order example end to end (exit 0), on the file given."""
    db = tmp_path / "demo.db"
    result = invoke("demo", "--db", str(db))
    assert 0 == result.code, result.out + result.err
    assert "ORD-002, amount 5000: approved by the manager" in result.out
    listed = invoke("instances", "--store", f"sqlite:///{db}", "--json").json()
    assert ["completed", "completed", "failed"] == sorted(i["status"] for i in listed)
    assert json.dumps(listed)


def test_graph_formats_with_an_instance_overlay(invoke: Invoke, sqlite_url: str, tmp_path: Path) -> None:
    """graph writes DOT, SVG and PNG; with --instance, the instance's current step is drawn in the overlay's colour."""
    from statemachine_orch.diagrams import COLOURS

    start_expense(invoke, sqlite_url, "E-g")
    current_fill = COLOURS["current"][0]
    dot = tmp_path / "e.dot"
    result = invoke("graph", EXPENSE, "--instance", "E-g", "--store", sqlite_url, "--format", "dot", "-o", str(dot))
    assert 0 == result.code, result.err
    text = dot.read_text()
    assert "digraph" in text
    assert current_fill in text
    plain = invoke("graph", EXPENSE, "--format", "dot")
    assert 0 == plain.code
    assert current_fill not in plain.out
    svg = tmp_path / "e.svg"
    assert (
        0
        == invoke("graph", EXPENSE, "--instance", "E-g", "--store", sqlite_url, "--format", "svg", "-o", str(svg)).code
    )
    assert "<svg" in svg.read_text()
    png = tmp_path / "e.png"
    assert (
        0
        == invoke("graph", EXPENSE, "--instance", "E-g", "--store", sqlite_url, "--format", "png", "-o", str(png)).code
    )
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert_one_line_error(invoke("graph", EXPENSE, "--format", "png"), 2, "-o FILE")
    other = invoke("graph", "tests.cli.flows:Parcel", "--instance", "E-g", "--store", sqlite_url, "--format", "dot")
    assert_one_line_error(other, 1, "Expense")


def test_alerts_lists_a_failed_compensation(
    invoke: Invoke, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alerts exits 0 on a quiet store, and 1 listing a compensation_failed instance (JSON and table)."""
    assert 0 == invoke("db", "upgrade", "--store", sqlite_url).code
    quiet = invoke("alerts", "--store", sqlite_url, "--json")
    assert (0, []) == (quiet.code, quiet.json())
    monkeypatch.setenv("ORCH_TEST_REFUND_OK", str(tmp_path / "never"))
    failed = invoke(
        "run", "tests.cli.flows:Refundable", "--store", sqlite_url, "--here", "--id", "R-a", "-i", "amount=2"
    )
    assert 1 == failed.code
    found = invoke("alerts", "--store", sqlite_url, "--json")
    assert 1 == found.code
    assert [("compensation_failed", "R-a", "Refundable")] == [
        (a["kind"], a["instance_id"], a["workflow"]) for a in found.json()
    ]
    assert found.json()[0]["since"].endswith("Z")
    table = invoke("alerts", "--store", sqlite_url)
    assert 1 == table.code
    assert "compensation_failed" in table.out


def test_run_without_a_worker_gives_up_after_its_timeout(invoke: Invoke, sqlite_url: str) -> None:
    """With no worker anywhere, run --timeout stops following (exit 1) and says a worker is needed; the instance stays."""
    result = invoke(
        "run", "tests.cli.flows:Parcel", "--store", sqlite_url, "--id", "P-t", "-i", "ref=T", "--timeout", "0.5"
    )
    assert_one_line_error(result, 1, "P-t is still running", "is a worker running?")
    assert ["P-t"] == [i["id"] for i in invoke("instances", "--store", sqlite_url, "--json").json()]


def test_tree_of_a_parent_and_its_child(invoke: Invoke, sqlite_url: str) -> None:
    """tree shows the child a subflow step started, under its parent (text and JSON)."""
    result = invoke("run", "tests.cli.flows:Shipment", "--store", sqlite_url, "--here", "--id", "S-1", "-i", "ref=R")
    assert 0 == result.code, result.err
    tree = invoke("tree", "S-1", "--store", sqlite_url, "--json").json()
    assert ("S-1", "Shipment", "waiting") == (tree["id"], tree["workflow"], tree["status"])
    [child] = tree["children"]
    # The child's own status depends on how far the --here worker drove it before the parent waited.
    assert ("S-1/0", "Parcel", "S-1", []) == (child["id"], child["workflow"], child["parent"], child["children"])
    text = invoke("tree", "S-1", "--store", sqlite_url).out.splitlines()
    assert ["S-1 Shipment waiting", f"  send -> S-1/0 Parcel {child['status']}"] == text
    shown = invoke("show", "S-1", "--store", sqlite_url, "--json").json()
    assert ["S-1/0"] == [c["id"] for c in shown["children"]]
