"""
Fixtures of the command-line tests (issue 12).

``invoke`` runs ``orch`` in this process through typer's ``CliRunner``;
``orch`` runs it as a real process (``python -m statemachine_orch``), and
``workers`` starts ``orch worker`` processes that keep running until the test
ends. ``store_url`` is each store in turn: a fresh SQLite file, then a fresh
PostgreSQL database (``tests/pg.py``). Nothing waits a fixed time: each wait is
for a condition (a line, a status), with a generous limit, so a busy machine
only makes the tests slower.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import structlog
from typer.testing import CliRunner

from statemachine_orch.cli.app import app

ROOT = Path(__file__).absolute().parents[2]
"""The project's root (the working directory of the processes: ``tests.cli.flows`` is importable there)."""

LIMIT = 60.0
"""Seconds a wait may take before the test fails (a busy machine is slow, not broken)."""


@attrs.frozen
class Result:
    """What a run of ``orch`` gave."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """Stdout as JSON."""
        return json.loads(self.out)


@pytest.fixture(autouse=True)
def _structlog_reset() -> Iterator[None]:
    # The command line configures structlog for the process; put it back for the next test.
    yield
    structlog.reset_defaults()


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """``invoke(*args)``: run ``orch args`` in this process (typer's runner); the working directory is the root."""
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("ORCH_STORE", raising=False)
    monkeypatch.delenv("ORCH_MODULES", raising=False)
    runner = CliRunner()

    def run(*args: str) -> Result:
        result = runner.invoke(app, list(args), catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Result(result.exit_code, result.stdout, result.stderr)

    return run


def environment(**extra: str) -> dict[str, str]:
    """The environment of a child process: the project importable, no ORCH_* settings but *extra*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def orch_process(*args: str, env: dict[str, str] | None = None, timeout: float = LIMIT) -> Result:
    """Run ``python -m statemachine_orch args`` as a process and wait for it."""
    done = subprocess.run(
        [sys.executable, "-m", "statemachine_orch", *args],
        cwd=ROOT,
        env=env if env is not None else environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def orch() -> Callable[..., Result]:
    """``orch(*args, env=None)``: run the command line as a real process."""
    return orch_process


@attrs.define
class Workers:
    """``orch worker`` processes of one test, stopped (SIGTERM) at its end."""

    tmp: Path
    started: list[tuple[subprocess.Popen[bytes], Path]] = attrs.field(
        factory=list[tuple[subprocess.Popen[bytes], Path]]
    )

    def start(self, store: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a worker for ``tests.cli.flows`` on *store* and wait until it says it runs."""
        log = self.tmp / f"worker{len(self.started)}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "statemachine_orch", *args, "worker", "tests.cli.flows", "--store", store],
                cwd=ROOT,
                env=env if env is not None else environment(),
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.started.append((proc, log))
        deadline = time.monotonic() + LIMIT
        while "orch worker " not in log.read_text():
            if proc.poll() is not None:
                pytest.fail(f"the worker exited with {proc.returncode}: {log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the worker did not start within {LIMIT} s: {log.read_text()}")
            time.sleep(0.05)
        return proc

    def log(self, index: int = 0) -> str:
        """What worker *index* wrote so far."""
        return self.started[index][1].read_text()

    def stop_all(self) -> list[int]:
        """Stop every worker cleanly; return their exit codes."""
        codes: list[int] = []
        for proc, _ in self.started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                codes.append(proc.wait(timeout=LIMIT))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        return codes


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    """Worker processes, stopped when the test ends."""
    made = Workers(tmp_path)
    try:
        yield made
    finally:
        made.stop_all()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store in turn: a new SQLite file, then a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'orch.db'}"
    return postgres_url(request.getfixturevalue("pg_store_dsn"))


def postgres_url(dsn: str) -> str:
    """The store URL (``postgresql://user@host:port/db``) of a libpq connection string."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(dsn)
    user = params.get("user", "postgres")
    password = f":{params['password']}" if params.get("password") else ""
    return (
        f"postgresql://{user}{password}@{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}/{params['dbname']}"
    )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A new SQLite store's URL (the file does not exist yet)."""
    return f"sqlite:///{tmp_path / 'orch.db'}"


def wait_until(check: Callable[[], bool], what: str) -> None:
    """Wait until *check()* holds (looking every 0.1 s), failing after :data:`LIMIT` seconds."""
    deadline = time.monotonic() + LIMIT
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {LIMIT} s for {what}")
        time.sleep(0.1)
