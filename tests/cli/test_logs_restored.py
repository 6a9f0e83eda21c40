"""
The command line run in-process leaves structlog as it found it (issue 12).

``orch`` configures structlog for its own run, to the stderr of that run; typer's
``CliRunner`` closes that stream when the command returns. An engine made
afterwards in the same process must still log where the application said, not
fail on a closed stream (it used to: an instance hung).
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import structlog

from statemachine_orch import Engine, InstanceStatus, MemoryStore, VirtualClock
from tests.cli.conftest import LIMIT, Result
from tests.observe.flows import OBSERVED, ObsFlaky

if TYPE_CHECKING:
    from tests.conftest import Runner

Invoke = Callable[..., Result]


def run_logged_engine(run: Runner) -> InstanceStatus:
    """An engine with ``logs=True`` runs a flow with retries to its end; its status."""

    async def scenario() -> InstanceStatus:
        engine = Engine(MemoryStore(), clock=VirtualClock(autojump=True), logs=True, workflows=OBSERVED)
        async with engine:
            handle = await engine.start(ObsFlaky())
            # A limit only so that a regression fails instead of hanging the run.
            return await asyncio.wait_for(handle.wait_idle(), LIMIT)

    return run(scenario())


def test_an_engine_after_a_command_logs_where_the_application_configured(invoke: Invoke, run: Runner) -> None:
    """The application's structlog configuration is back after the command; the engine's events reach it."""
    lines: list[MutableMapping[str, Any]] = []

    def keep(_logger: object, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        lines.append(event)
        raise structlog.DropEvent

    structlog.configure(processors=[structlog.processors.add_log_level, keep])
    result = invoke("--log-level", "debug", "paths", "tests.cli.flows:Expense", "--json")
    assert 0 == result.code, result.err
    assert keep in structlog.get_config()["processors"]
    assert InstanceStatus.COMPLETED == run_logged_engine(run)
    retries = [line for line in lines if line["event"] == "step_retry"]
    assert [1, 2] == [line["attempt"] for line in retries]
    assert {"warning"} == {line["level"] for line in retries}


def test_an_unconfigured_structlog_is_left_unconfigured(invoke: Invoke, run: Runner) -> None:
    """Without a configuration before the command, structlog has its defaults after it, and an engine logs."""
    structlog.reset_defaults()
    result = invoke("paths", "tests.cli.flows:Expense", "--json")
    assert 0 == result.code, result.err
    assert not structlog.is_configured()
    assert InstanceStatus.COMPLETED == run_logged_engine(run)
