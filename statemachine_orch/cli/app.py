"""
The ``orch`` typer application: global options and the commands.

Global options (before the command): ``--log-format json|console``,
``--log-level``, ``--debug`` (tracebacks instead of one-line errors).
"""

from __future__ import annotations

from typing import Annotated

import typer

from . import (
    commands_ask,
    commands_change,
    commands_definition,
    commands_ops,
    commands_read,
    commands_run,
    commands_serve,
    commands_worker,
)
from .failures import Settings
from .logs import LogFormat, LogLevel, configure

app = typer.Typer(
    name="orch",
    help="Run and operate statemachine-orch workflows. Exit codes: 0 ok, 1 failed or problems found, 2 usage.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
"""The command line (``orch``)."""


@app.callback()
def settings(
    ctx: typer.Context,
    log_format: Annotated[
        LogFormat, typer.Option("--log-format", help="Log lines on stderr: console or json.")
    ] = LogFormat.CONSOLE,
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="The lowest level logged.")] = LogLevel.WARNING,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
) -> None:
    """Options for every command."""
    Settings.debug = debug
    # Put back when the command returns: in-process (CliRunner), stderr is closed afterwards.
    ctx.call_on_close(configure(log_format, log_level))


app.command("run")(commands_run.run)
app.command("worker")(commands_worker.worker)
app.command("serve")(commands_serve.serve)
app.command("instances")(commands_read.instances)
app.command("show")(commands_read.show)
app.command("history")(commands_read.history)
app.command("tree")(commands_read.tree)
app.command("tasks")(commands_read.tasks)
app.command("query")(commands_ask.query)
app.command("schedules")(commands_ask.schedules)
app.command("complete")(commands_change.complete)
app.command("signal")(commands_change.signal)
app.command("cancel")(commands_change.cancel)
app.command("retry")(commands_change.retry)
app.command("migrate")(commands_change.migrate)
app.command("check")(commands_definition.check)
app.command("paths")(commands_definition.paths_command)
app.command("graph")(commands_definition.graph)
app.add_typer(commands_ops.db_app, name="db")
app.command("alerts")(commands_ops.alerts)
app.command("demo")(commands_ops.demo)
