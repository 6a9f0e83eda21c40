"""
The ``orch`` command line: run workers, start and follow instances, look at them, act on them.

A client of a live store (SQLite file or PostgreSQL), usable while workers run
in other processes. Built with typer and rich (the ``cli`` extra). The
library's core never imports this package.

Modules, each named for what it does: ``app`` (the typer application and its
global options), ``store_url`` (``sqlite:///…`` / ``postgresql://…``),
``loading`` (``MODULE:Class`` import paths), ``convert`` (JSON to the declared
types), ``output`` (rich tables or ``--json``), ``failures`` (one-line errors and
exit codes), ``logs`` (structlog set up for the command line), ``client``
(an engine without workers), and ``commands_*`` (the commands).
"""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    """Run the ``orch`` command line (the console script and ``python -m statemachine_orch``)."""
    from .app import app  # noqa: PLC0415 - typer and rich load only when the command line runs

    app()
