"""The options several commands share (typer ``Annotated`` types)."""

from __future__ import annotations

from typing import Annotated

import typer

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        "-s",
        envvar="ORCH_STORE",
        help="Store URL: sqlite:///orders.db or postgresql://user@host/db (default: $ORCH_STORE).",
        show_envvar=False,
    ),
]
"""``--store URL`` (default ``$ORCH_STORE``)."""

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
"""``--json``: machine-readable output."""

ModulesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--module",
        "-m",
        help="Import this module first (its workflow classes are needed to read variables or act); "
        "repeatable; also $ORCH_MODULES (comma-separated).",
    ),
]
"""``--module MODULE`` (repeatable): workflow modules to import."""
