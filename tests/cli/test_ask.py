"""
``orch query ID NAME [ARG...]`` and ``orch schedules MODULE...`` through typer's runner, on real SQLite files (issue 10).

A query is answered from the instance's current variables (its arguments read as
JSON, else text, and checked against their annotations); a schedule's line says
where the store has it and when it is next due.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from statemachine_orch import Engine, SqliteStore, VirtualClock
from tests.cli import scheduled
from tests.cli.conftest import Result
from tests.cli.test_runner import assert_one_line_error, start_expense

Invoke = Callable[..., Result]

T0 = datetime(2026, 1, 5, 8, tzinfo=UTC).timestamp()


def test_query_answers_from_the_current_variables(invoke: Invoke, sqlite_url: str) -> None:
    """Issue 10, item 8: the answer as JSON (with --json: with the instance and the query), arguments typed."""
    start_expense(invoke, sqlite_url, "E-1", amount="120")
    assert "0.0\n" == invoke("query", "E-1", "owed", "--store", sqlite_url, "-m", "tests.cli.flows").out
    shared = invoke("query", "E-1", "share", "7", "--store", sqlite_url, "-m", "tests.cli.flows", "--json")
    assert 0 == shared.code, shared.err
    assert {"instance": "E-1", "query": "share", "answer": 17.14} == shared.json()


def test_query_refusals_are_one_line(invoke: Invoke, sqlite_url: str) -> None:
    """An unknown query names the ones there are; a wrong argument or too many is a usage error; a raise is named."""
    start_expense(invoke, sqlite_url, "E-2")
    flows = ("--store", sqlite_url, "-m", "tests.cli.flows")
    assert_one_line_error(invoke("query", "E-2", "total", *flows), 1, "E-2", "declares no @query total", "owed, share")
    assert_one_line_error(invoke("query", "E-2", "share", "many", *flows), 2, "argument parts", "expected int")
    assert_one_line_error(invoke("query", "E-2", "owed", "1", *flows), 2, "query owed takes 0 argument(s)")
    assert_one_line_error(invoke("query", "E-2", "share", "0", *flows), 1, "query share", "ZeroDivisionError")
    assert_one_line_error(invoke("query", "E-404", "owed", *flows), 1, "E-404")


def _run_schedule(path: Path) -> None:
    """Half a second past T0 on a virtual clock: the schedule's first round, then one start (at T0 + 0.5)."""

    async def scenario() -> None:
        clock = VirtualClock(T0, autojump=False)
        with SqliteStore(path) as store:
            async with Engine(store, clock=clock, schedules=scheduled.orch_schedules()) as engine:
                await engine.wait_idle()
                clock.advance(0.5)
                await engine.wait_idle()

    asyncio.run(scenario())


def test_schedules_lists_each_with_its_next_due_time(invoke: Invoke, tmp_path: Path) -> None:
    """Issue 10, item 7: how far the store has the schedule, its last instance and its next due time."""
    path = tmp_path / "orch.db"
    _run_schedule(path)
    url = f"sqlite:///{path}"
    listed = invoke("schedules", "tests.cli.scheduled", "--store", url, "--json")
    assert 0 == listed.code, listed.err
    assert [
        {
            "id": "cli-tick",
            "next_due": "2026-01-05T08:00:01Z",
            "last_due": "2026-01-05T08:00:00.500Z",
            "last_instance": "cli-tick@2026-01-05T08:00:00.500Z",
            "started": 1,
        }
    ] == listed.json()
    table = invoke("schedules", "tests.cli.scheduled", "--store", url).out
    assert "cli-tick" in table
    assert "2026-01-05T08:00:01Z" in table


def test_schedules_without_any_is_one_line(invoke: Invoke, sqlite_url: str) -> None:
    """Modules without orch_schedules: exit 1, saying where schedules come from."""
    start_expense(invoke, sqlite_url, "E-3")
    assert_one_line_error(invoke("schedules", "tests.cli.flows", "--store", sqlite_url), 1, "no orch_schedules")
