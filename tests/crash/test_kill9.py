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

from collections import Counter
from pathlib import Path

import pytest

from statemachine_orch import EventKind, InstanceStatus, SqliteStore, WorkflowRegistry, spec_of
from tests.crash.crash_flow import CrashFlow
from tests.crash.procs import crash_loop

INSTANCES = 40
KILLS = 12

pytestmark = pytest.mark.slow


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
    crash_loop(
        "tests.crash.worker",
        db,
        effects,
        seed=seed,
        count=INSTANCES,
        kills=KILLS,
        max_pause=0.25,
        work=("run",),
        final_timeout=120,
    )
    _check_store(db, effects)
