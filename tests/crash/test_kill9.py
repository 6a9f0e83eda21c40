"""
SIGKILL a real worker process at random moments; the store must lose nothing (issue 3).

A seeded loop starts a worker on a SQLite file, waits until it has recovered
and runs, kills it with SIGKILL after a random delay (in a step, a retry's
backoff, a timer, a compensation or between commits), and starts the next one.
A last worker runs everything to the end. Then the stored histories must show:
no instance lost, each transition applied once along a valid path, each step
completed once, each compensation completed once, and each completed step's
effect performed (at least once) under its stable idempotency key.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from statemachine_orch import EventKind, InstanceStatus, SqliteStore, WorkflowRegistry, spec_of
from tests.crash.crash_flow import EFFECTS_ENV, CrashFlow
from tests.crash.procs import finish, kill

ROOT = Path(__file__).resolve().parents[2]
INSTANCES = 40
KILLS = 12

pytestmark = pytest.mark.slow


def _spawn(db: Path, effects: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, EFFECTS_ENV: str(effects), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.crash.worker", str(db), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("recovered"), f"worker did not start: {line!r} {proc.stderr and proc.stderr.read()}"


def _crash_loop(db: Path, effects: Path, seed: int) -> None:
    rng = random.Random(seed)
    seeder = _spawn(db, effects, "seed", str(INSTANCES))
    _, err = finish(seeder, 60)
    assert seeder.returncode == 0, err
    for _ in range(KILLS):
        proc = _spawn(db, effects, "run")
        try:
            _wait_ready(proc)
            time.sleep(rng.uniform(0.0, 0.25))
        finally:
            kill(proc)
    final = _spawn(db, effects, "run")
    out, err = finish(final, 120)
    assert final.returncode == 0, err
    assert "ALL DONE" in out


def _check_store(db: Path, effects: Path) -> None:
    spec = spec_of(CrashFlow)
    with SqliteStore(db) as store:
        store.attach(WorkflowRegistry([CrashFlow]))
        infos = store.infos(None, "CrashFlow")
        assert len(infos) == INSTANCES, "an instance was lost"
        effect_lines = [line.split() for line in effects.read_text().splitlines()]
        effect_keys = Counter((kind, key) for kind, key, _ in effect_lines)
        for info in infos:
            rec = store.load(info.id)
            assert rec is not None
            n = rec.wf.n
            expected = InstanceStatus.FAILED if n % 5 == 0 else InstanceStatus.COMPLETED
            assert expected == info.status, f"n={n}: {info.error}"
            history = store.history(info.id)
            # Each transition once, along a path of the spec, from the initial step.
            moves = [(e.step, e.detail) for e in history if e.kind is EventKind.TRANSITION]
            state = spec.initial
            for source, dest in moves:
                assert source == state, f"n={n}: transition {source}->{dest} while at {state}"
                assert dest is not None
                state = dest
            completed = Counter(e.step for e in history if e.kind is EventKind.STEP_COMPLETED)
            undone = Counter(e.step for e in history if e.kind is EventKind.COMPENSATION_COMPLETED)
            if expected is InstanceStatus.COMPLETED:
                assert dict(completed) == {"reserve": 1, "cool_down": 1, "charge": 1, "ship": 1}, n
                assert not undone, n
                assert state == "@completed"
            else:
                assert dict(completed) == {"reserve": 1, "cool_down": 1}, n
                assert dict(undone) == {"reserve": 1}, f"n={n}: release ran {undone} times"
            assert [e.kind for e in history].count(EventKind.INSTANCE_STARTED) == 1
            # The effect of each completed step happened, under its stable key.
            for kind in ("reserve", "charge", "ship"):
                if completed.get(kind):
                    keys = [k for (knd, k) in effect_keys if knd == kind and k.startswith(f"{info.id}:")]
                    assert len(keys) == 1, f"n={n}: {kind} ran under keys {keys}"
            releases = [k for (knd, k) in effect_keys if knd == "release" and k.startswith(f"{info.id}:")]
            assert len(releases) == (1 if expected is InstanceStatus.FAILED else 0)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_at_random_points_loses_nothing(tmp_path: Path, seed: int) -> None:
    """Instances survive repeated SIGKILLs of their worker and finish as if nothing happened."""
    db = tmp_path / "crash.db"
    effects = tmp_path / "effects.log"
    _crash_loop(db, effects, seed)
    _check_store(db, effects)
