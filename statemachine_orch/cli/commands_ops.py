"""Operations: ``db upgrade``, ``alerts``, ``demo``."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from statemachine_orch import SqliteStore

from . import output
from .client import opened
from .failures import FAILED, Problem, UsageProblem, guarded
from .loading import import_module
from .options import JsonOption, StoreOption
from .store_url import postgres_parts, resolve, sqlite_path

db_app = typer.Typer(help="The store's database.", no_args_is_help=True, add_completion=False)
"""The ``orch db`` command group."""


@db_app.command("upgrade")
@guarded
def upgrade(store: StoreOption = None) -> None:
    """Create the store's tables, or upgrade them to this version's schema (safe to run again)."""
    url = resolve(store)
    pg = postgres_parts(url)
    if pg is not None:
        from statemachine_orch._store_postgres import upgrade as upgrade_postgres  # noqa: PLC0415 - psycopg

        dsn, schema = pg
        version = upgrade_postgres(dsn, schema)
        output.console.print(f"PostgreSQL schema {schema!r} is at version {version}", markup=False)
        return
    path = sqlite_path(url)
    if path is None:
        with opened(url):  # names the bad URL
            return
    SqliteStore(path).close()  # opening creates or upgrades the file, in one transaction
    output.console.print(f"SQLite store {path} is up to date", markup=False)


@guarded
def alerts(store: StoreOption = None, as_json: JsonOption = False) -> None:
    """List what needs an operator: stuck instances, overdue tasks, failed compensations, quarantines, timer lag."""
    from statemachine_orch.alerts import scan  # noqa: PLC0415 - loaded only for this command

    with opened(store) as st:
        found = scan(st)
    if as_json:
        output.emit_json(
            [
                {
                    "kind": a.kind.value,
                    "instance_id": a.instance_id,
                    "workflow": a.workflow,
                    "step": a.step,
                    "detail": a.detail,
                    "since": output.when(a.since),
                }
                for a in found
            ]
        )
    else:
        rows = [
            [
                a.kind.value,
                a.instance_id,
                a.workflow,
                a.step or "",
                output.short_when(a.since),
                a.detail,
            ]
            for a in found
        ]
        output.table("Alerts", ("kind", "instance", "workflow", "step", "since (UTC)", "detail"), rows)
    if found:
        raise typer.Exit(FAILED)


@guarded
def demo(
    db: Annotated[
        Path | None, typer.Option("--db", help="The SQLite file to run on (default: a new temporary one).")
    ] = None,
) -> None:
    """Run the order-process example end to end on SQLite (from a checkout of the project)."""
    try:
        example: Any = import_module("examples.order_process")
    except (ImportError, UsageProblem) as exc:
        msg = f"the demo needs the project's examples/ directory in the working directory ({exc})"
        raise Problem(msg) from None
    with tempfile.TemporaryDirectory() as tmp:
        path = db if db is not None else Path(tmp) / "orders.db"
        code: int = asyncio.run(example.main(str(path)))
        if db is not None:
            output.console.print(
                f"\nLook around: orch instances --store sqlite:///{path}; orch history ID --store sqlite:///{path}",
                markup=False,
            )
    if code != 0:
        raise typer.Exit(code)
