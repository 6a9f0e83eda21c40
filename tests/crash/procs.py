"""Process handling shared by the crash tests: no worker is ever left running."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.crash.crash_flow import EFFECTS_ENV

ROOT = Path(__file__).resolve().parents[2]


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """Wait for *proc* and return its output; a worker that hangs is killed, never left behind."""
    try:
        return proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise


def kill(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGKILL *proc* (unless it ended), reap it and close its pipes; return its output."""
    proc.send_signal(signal.SIGKILL)
    return proc.communicate(timeout=30)


def spawn(module: str, db: Path, effects: Path, *args: str) -> subprocess.Popen[str]:
    """Start ``python -m <module> DB ARGS...`` from the repository root, logging effects to *effects*."""
    env = {**os.environ, EFFECTS_ENV: str(effects), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-m", module, str(db), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_or_kill(proc: subprocess.Popen[str], ready: str, pause: float | None, timeout: float = 60) -> bool:
    """
    Wait for *proc*'s first line (it must start with *ready*), then SIGKILL it after *pause* seconds.

    With *pause* None it runs to its end instead. Ending by itself must be a
    success. Returns whether it was killed (rather than ending first).
    """
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(ready), f"{proc.args!r} did not start: {line!r}"
        if pause is None:
            _, err = finish(proc, timeout)
            assert proc.returncode == 0, err
            return False
        time.sleep(pause)
        ended = proc.poll() is not None
        _, err = kill(proc)
    except BaseException:
        if proc.returncode is None:
            kill(proc)
        raise
    assert not ended or proc.returncode == 0, f"{proc.args!r} failed before its kill: {err}"
    return not ended


def crash_loop(
    module: str,
    db: Path,
    effects: Path,
    *,
    seed: int,
    count: int,
    kills: int,
    max_pause: float,
    work: tuple[str, ...] = ("work",),
    final_timeout: float = 60,
    between: Callable[[random.Random], None] | None = None,
) -> None:
    """
    Seed *count* instances, SIGKILL *kills* workers at random moments, then let one run to the end.

    The worker *module* takes ``DB seed N`` and ``DB <work...>``; a working worker
    prints ``recovered ...`` once it has recovered and ``ALL DONE`` when every
    instance is terminal. Each killed worker runs for up to *max_pause* seconds
    after recovering (the pauses come from *seed*). After each kill, *between*
    (given the loop's random generator) may open the file in a process of its
    own: the store takes one process at a time, so it must be gone when it returns.
    """
    rng = random.Random(seed)
    seeder = spawn(module, db, effects, "seed", str(count))
    _, err = finish(seeder, 60)
    assert seeder.returncode == 0, err
    for _ in range(kills):
        proc = spawn(module, db, effects, *work)
        run_or_kill(proc, "recovered", rng.uniform(0.0, max_pause))
        if between is not None:
            between(rng)
    final = spawn(module, db, effects, work[0])
    out, err = finish(final, final_timeout)
    assert final.returncode == 0, err
    assert "ALL DONE" in out
