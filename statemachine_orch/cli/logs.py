"""
Structured logs for the command line: JSON lines or a console rendering, on stderr.

The library never configures logging; the command line does, once per run,
from ``--log-format`` and ``--log-level``, and puts the configuration it found
back when its command returns: run in-process (typer's ``CliRunner``, an
application calling ``app``), it must not leave structlog writing to a stream
that was closed meanwhile.
"""

from __future__ import annotations

import enum
import logging
import sys
from collections.abc import Callable
from typing import Any

import structlog


class LogFormat(enum.StrEnum):
    """How log lines are written."""

    CONSOLE = "console"
    """Readable lines (structlog's console renderer, without colours)."""
    JSON = "json"
    """One JSON object per line, for log shippers."""


class LogLevel(enum.StrEnum):
    """The lowest level written."""

    DEBUG = "debug"
    """Everything."""
    INFO = "info"
    """Step starts and completions, status changes and above."""
    WARNING = "warning"
    """Retries, lost leases, failures (the default)."""
    ERROR = "error"
    """Failures only."""


def configure(fmt: LogFormat, level: LogLevel) -> Callable[[], None]:
    """
    Send structlog's events to stderr in *fmt*, from *level* up.

    Returns:
        What puts structlog's previous configuration back (the defaults, when it
        had none).
    """
    restore = _restorer()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if fmt is LogFormat.JSON else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.value.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    return restore


def _restorer() -> Callable[[], None]:
    if not structlog.is_configured():
        return structlog.reset_defaults
    previous: dict[str, Any] = structlog.get_config()

    def restore() -> None:
        structlog.configure(**previous)

    return restore
