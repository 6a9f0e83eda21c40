"""
Issue 10: ``examples/stock_ledger.py`` end to end, on the memory store and on a SQLite file.

Three orders reserve stock through signal-with-start (one ledger per SKU and
day, started by its first order); queries read what is left; at 22:00 the
schedule ``close-ledgers`` starts the day's CloseDay, whose step closes both
ledgers with ``ctx.signal``.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from pathlib import Path

import pytest
import structlog.testing

from examples.stock_ledger import main
from tests.conftest import run_scenario

EXPECTED = """\
ledger-LAMP-2026-01-05: 5 left, waiting
ledger-DESK-2026-01-05: 0 left, waiting
close-ledgers@2026-01-05T22:00:00Z: closed LAMP, DESK
  instance_started - CloseDay version 1
  step_started  close_ledgers (attempt 1)
  step_completed close_ledgers (attempt 1)
  signal_sent   close_ledgers - ledger-LAMP-2026-01-05 LedgerEntry
  signal_sent   close_ledgers - ledger-DESK-2026-01-05 LedgerEntry
  transition    close_ledgers -> @completed
  status_changed - completed
ledger-LAMP-2026-01-05: completed, 5 left (O-1: 2, O-2: 3)
ledger-DESK-2026-01-05: completed, 0 left (O-2: 1, O-3: 2)
close-ledgers: next due 2026-01-06 22:00 UTC
"""


@pytest.mark.parametrize("durable", [False, True])
def test_the_example_runs_as_its_docstring_says(
    durable: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 10: the orders, the queries and the scheduled close print the example's story."""
    with structlog.testing.capture_logs():
        assert 0 == run_scenario(main(str(tmp_path / "ledgers.db") if durable else None))
    assert EXPECTED == capsys.readouterr().out
