"""Process handling shared by the crash tests: no worker is ever left running."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
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


def kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL *proc*, reap it and close its pipes."""
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)


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
) -> None:
    """
    Seed *count* instances, SIGKILL *kills* workers at random moments, then let one run to the end.

    The worker *module* takes ``DB seed N`` and ``DB <work...>``; a working worker
    prints ``recovered ...`` once it has recovered and ``ALL DONE`` when every
    instance is terminal. Each killed worker runs for up to *max_pause* seconds
    after recovering (the pauses come from *seed*).
    """
    rng = random.Random(seed)
    seeder = spawn(module, db, effects, "seed", str(count))
    _, err = finish(seeder, 60)
    assert seeder.returncode == 0, err
    for _ in range(kills):
        proc = spawn(module, db, effects, *work)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("recovered"), f"worker did not start: {line!r}"
            time.sleep(rng.uniform(0.0, max_pause))
        finally:
            kill(proc)
    final = spawn(module, db, effects, work[0])
    out, err = finish(final, final_timeout)
    assert final.returncode == 0, err
    assert "ALL DONE" in out
