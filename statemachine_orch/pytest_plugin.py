"""
The pytest plugin of statemachine-orch, registered as the ``pytest11`` entry point ``statemachine_orch``.

- Fixture ``orch_engine``: an engine with an in-memory store and a virtual clock
  that jumps to the next timer whenever the engine is idle (retries take no real
  time). Use it in one event loop, e.g. one ``asyncio.run(...)`` per test.
- Option ``--orch-coverage``: at the end of the run, a report of which edges and
  guard outcomes of each workflow the tests exercised (through ``orch_engine``,
  ``virtual_engine()`` and ``WorkflowMachine``), unvisited edges marked ``!!``.

Both come from ``statemachine_orch.testing``, which needs hypothesis (the
``testing`` extra): without it the plugin stays out of the way, and using the
fixture or the option says what to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from statemachine_orch._engine import Engine

if TYPE_CHECKING:
    from statemachine_orch.testing._coverage import CoverageRegistry

__all__ = ["orch_engine"]

_REGISTRY = pytest.StashKey["CoverageRegistry | None"]()
_MISSING = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--orch-coverage``."""
    group = parser.getgroup("statemachine-orch")
    group.addoption(
        "--orch-coverage",
        action="store_true",
        default=False,
        help="report which workflow edges and guard outcomes the tests exercised",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Give this session its own coverage registry (a pytester run inside a run gets another)."""
    try:
        from statemachine_orch.testing._coverage import push_registry  # noqa: PLC0415 - needs hypothesis
    except ImportError as exc:
        config.stash[_REGISTRY] = None
        config.stash[_MISSING] = str(exc)
        return
    config.stash[_REGISTRY] = push_registry()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop feeding this session's registry."""
    registry: CoverageRegistry | None = config.stash.get(_REGISTRY, None)
    if registry is not None:
        from statemachine_orch.testing._coverage import pop_registry  # noqa: PLC0415 - imported at configure

        pop_registry(registry)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Print the edge-coverage report when ``--orch-coverage`` was given."""
    if not config.getoption("orch_coverage"):
        return
    registry = config.stash.get(_REGISTRY, None)
    terminalreporter.write_sep("=", "statemachine-orch edge coverage")
    missing = config.stash.get(_MISSING, None)
    text = missing or (registry.report() if registry is not None else "no workflow instance ran")
    for line in text.splitlines():
        terminalreporter.write_line(line)


@pytest.fixture
def orch_engine() -> Engine:
    """An engine for one test: in-memory store, ``VirtualClock(autojump=True)``, coverage recorded."""
    from statemachine_orch.testing._engine import virtual_engine  # noqa: PLC0415 - needs hypothesis

    return virtual_engine()
