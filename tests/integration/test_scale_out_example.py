"""
Many workers, one database: ``examples/scale_out.py`` run as a process, on SQLite and on PostgreSQL.

The script starts three worker processes, a client that starts 60 orders (each
id twice) and a client that approves the large ones but every 5th; it SIGKILLs
the busiest worker when half the orders have ended. It exits 0 only when every
order ended as its number says (completed, or failed exactly when rejected),
there are exactly 60 instances and the dead worker's orders were taken over; its
summary says so.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

from tests.pg import drop_database, server_dsn

ROOT = Path(__file__).resolve().parents[2]
ORDERS = 60


def run_example(*args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "examples/scale_out.py", "--orders", str(ORDERS), "--workers", "3", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env=env,
    )
    assert 0 == proc.returncode, proc.stdout + proc.stderr
    return proc.stdout


def check_summary(out: str) -> None:
    # 60 orders: 15 large ones (every 4th), of which 3 rejected (ORD-0020, -0040, -0060).
    assert "statuses: completed 57, failed 3" in out
    assert "outcomes: every order ended as it should (57 completed; 3 failed, exactly the rejected ones)" in out
    assert "instances: 60 (each id started twice: one instance per id)" in out
    assert "[manager] 15 large orders decided: 12 approved, 3 rejected" in out
    assert re.search(r"--> SIGKILL worker \d \(pid \d+, owner \S+\) at \d+ orders ended", out), out
    assert re.search(r"takeover: \d+\.\d\d s after the SIGKILL of worker \d", out), out
    assert re.search(r"wall time: \d+\.\d s", out), out
    assert out.rstrip().endswith("OK")


def test_scale_out_on_sqlite(tmp_path: Path) -> None:
    out = run_example("--sqlite", "--db", str(tmp_path / "scale_out.db"))
    assert f"== {ORDERS} orders, 3 worker processes, SQLite" in out
    check_summary(out)


def test_scale_out_on_postgres(pg_dsn: str) -> None:
    # pg_dsn proves the server is there (or skips); the script makes a database of its own beside it.
    name = f"orch_scale_out_{secrets.token_hex(4)}"
    env = {**os.environ, "ORCH_PG": pg_dsn}
    try:
        out = run_example("--pg-database", name, env=env)
    finally:
        import psycopg  # present: pg_dsn connected

        with psycopg.connect(server_dsn(), autocommit=True, connect_timeout=5) as admin:
            drop_database(admin, name)
    assert f"== {ORDERS} orders, 3 worker processes, PostgreSQL database {name}" in out
    check_summary(out)
