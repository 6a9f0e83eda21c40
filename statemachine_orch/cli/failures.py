"""
Errors as one clear line on stderr, and the exit codes.

Exit codes: 0 ok; 1 the command failed, or found problems (a failed instance,
definition errors, alerts); 2 usage (a bad option, store URL or import path).
A traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Final, ParamSpec, TypeVar

import typer

OK: Final = 0
"""Exit code: the command did what was asked and found nothing wrong."""
FAILED: Final = 1
"""Exit code: the command failed, or found problems (an instance that failed, definition errors, alerts)."""
USAGE: Final = 2
"""Exit code: the command was used wrongly (options, store URL, import path)."""

_P = ParamSpec("_P")
_T = TypeVar("_T")


class Settings:
    """The global options of one invocation (set by the app's callback)."""

    debug: bool = False


class UsageProblem(Exception):
    """The command line was used wrongly: exit code 2, the message on one line."""


class Problem(Exception):
    """The command failed, or found problems: exit code 1, the message on one line."""


def one_line(text: str) -> str:
    """*text* on one line: line breaks shown as ``; ``."""
    parts = [p.strip() for p in text.strip().splitlines() if p.strip()]
    return "; ".join(parts)


def describe(exc: BaseException) -> str:
    """How an exception reads on the command line: its message, else its type's name."""
    text = one_line(str(exc))
    return text or type(exc).__name__


def guarded(fn: Callable[_P, _T]) -> Callable[_P, _T]:
    """Run a command so that any error ends it with one line on stderr and its exit code."""

    @functools.wraps(fn)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            sys.stderr.write("orch: interrupted\n")
            raise typer.Exit(130) from None
        except Exception as exc:
            if Settings.debug:
                raise
            code = USAGE if isinstance(exc, UsageProblem) else FAILED
            sys.stderr.write(f"orch: error: {describe(exc)}\n")
            raise typer.Exit(code) from None

    return run
