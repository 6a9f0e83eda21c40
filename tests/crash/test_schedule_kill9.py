"""
SIGKILL workers of one schedule, two at a time on one SQLite file (issue 10, item 7).

Each round starts two workers of ``tests.crash.schedule_worker`` (every 0.1 s,
catch-up ALL), lets them run a random while, and SIGKILLs one of them or both
(the survivor goes on alone, then is killed with the next round). A last worker
catches up and stops cleanly. Then the store must show every due time from the
first to the last started exactly once — no gap (none lost across kills, none
skipped by a worker whose view was stale), each instance started once — and the
schedule's state agreeing with them (the cursor at the last due time, the count
exact).
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import itertools
import random
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest

from statemachine_orch import EventKind, SqliteStore, WorkflowRegistry
from tests.crash.procs import kill, run_or_kill, spawn
from tests.crash.schedule_worker import EVERY, SkTick, due_of

ROUNDS = 4
MODULE = "tests.crash.schedule_worker"

pytestmark = pytest.mark.slow


def _ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("recovered"), f"{proc.args!r} did not start: {line!r}"


def test_each_due_time_starts_once_across_killed_workers(tmp_path: Path) -> None:
    """Issue 10: kill -9 of workers mid-schedule: every due time of the run starts exactly once, in one id."""
    db = tmp_path / "schedule.db"
    effects = tmp_path / "effects.log"
    rng = random.Random(10)
    survivor: subprocess.Popen[str] | None = None
    for _ in range(ROUNDS):
        pair = [spawn(MODULE, db, effects, "run") for _ in range(2)]
        try:
            for proc in pair:
                _ready(proc)
            if survivor is not None:
                kill(survivor)
            time.sleep(rng.uniform(0.2, 1.0))
            kill(pair[0])
            survivor = pair[1]
            if rng.random() < 0.5:
                kill(pair[1])
                survivor = None
        except BaseException:
            for proc in pair:
                if proc.returncode is None:
                    kill(proc)
            raise
    if survivor is not None:
        kill(survivor)
    last = spawn(MODULE, db, effects, "finish")
    assert not run_or_kill(last, "recovered", None)
    with SqliteStore(db) as store:
        store.attach(WorkflowRegistry([SkTick]))
        ticks = sorted(i.id for i in store.infos(None, "SkTick"))
        state = store.schedule("tick")
        histories = {i: store.history(i) for i in ticks}
    dues = [due_of(i) for i in ticks]
    gaps = [(a, b) for a, b in itertools.pairwise(dues) if b - a != timedelta(seconds=EVERY)]
    assert [] == gaps, f"due times lost or doubled between {gaps[:3]}"
    assert len(ticks) >= ROUNDS * 2, ticks  # the run covered several seconds of due times
    assert state is not None
    assert (len(ticks), ticks[-1]) == (state.started, state.last_instance)
    assert dues[-1].timestamp() == pytest.approx(state.cursor, abs=1e-6)
    started_twice = [i for i, h in histories.items() if sum(e.kind is EventKind.INSTANCE_STARTED for e in h) != 1]
    assert [] == started_twice
