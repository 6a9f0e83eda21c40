"""
SIGKILL a worker while forked instances run one branch's async steps and wait on a task in the other.

A seeded loop starts a worker on a SQLite file of ``FeCrashFork`` orders (see
``fork_worker.py``): after recovering, each worker runs branches (pack with a
(pack, label; record) while it completes the clerk's tasks of
the other branch as they open; it is SIGKILLed after a random delay, and the
next one starts. A last worker runs everything to the end. Then the stored
histories must show, for every order: it finished as expected (completed, or
failed when labelling fails for good); no step completed twice, no transition
applied twice, the join at most once; the clerk's task completed or cancelled
exactly once; a failed order's compensations are exactly those of its
completed steps (before the fork and in both branches), each once, newest
first; and each undo was performed under a single idempotency key.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from statemachine_orch import EventKind, InstanceStatus, SqliteStore, WorkflowRegistry
from tests.crash.fork_worker import FeCrashFork
from tests.crash.procs import crash_loop

ORDERS = 40
KILLS = 10

pytestmark = pytest.mark.slow

K = EventKind
UNDO = {"reserve": "release", "pack": "unpack", "label": "unlabel", "record": "unrecord"}


def _check_store(db: Path, effects: Path) -> None:
    effect_lines = [line.split() for line in effects.read_text().splitlines()]
    with SqliteStore(db) as store:
        store.attach(WorkflowRegistry([FeCrashFork]))
        infos = store.infos(None, "FeCrashFork")
        assert ORDERS == len(infos), "an order was lost"
        for info in infos:
            rec = store.load(info.id)
            assert rec is not None
            wf: FeCrashFork = rec.wf
            n = wf.n
            expected = InstanceStatus.FAILED if n % 4 == 0 else InstanceStatus.COMPLETED
            assert expected == info.status, f"n={n}: {info.error}"
            assert not info.in_fork, n
            history = store.history(info.id)
            kinds = Counter(e.kind for e in history)
            done = [str(e.step) for e in history if e.kind is K.STEP_COMPLETED]
            assert len(done) == len(set(done)), f"n={n}: a step completed twice: {done}"
            moves = [(e.step, e.detail) for e in history if e.kind is K.TRANSITION]
            assert len(moves) == len(set(moves)), f"n={n}: a transition applied twice: {moves}"
            assert 1 == kinds[K.INSTANCE_STARTED], n
            assert 1 == kinds[K.TASK_CREATED], n
            assert 1 == kinds[K.TASK_COMPLETED] + kinds[K.TASK_CANCELLED], n
            undone = [e.step for e in history if e.kind is K.COMPENSATION_COMPLETED]
            if expected is InstanceStatus.COMPLETED:
                assert ["decide", "label", "pack", "record", "reserve", "ship", "split"] == sorted(done), n
                assert (1, 1) == (kinds[K.JOINED], kinds[K.TASK_COMPLETED]), n
                assert n == wf.verdict, f"n={n}: the form of another order"
                assert [] == undone, n
            else:
                assert "label" not in done, n
                assert {"reserve", "split", "pack"} <= set(done), n
                assert 0 == kinds[K.JOINED], n
                newest_first = [s for s in reversed(done) if s in UNDO]
                assert newest_first == undone, f"n={n}: compensations {undone}, completions {done}"
            for kind in UNDO.values():
                keys = {key for knd, key, _ in effect_lines if knd == kind and key.startswith(f"{info.id}:")}
                assert len(keys) <= 1, f"n={n}: {kind} under keys {keys}"
            for kind in ("reserve", "pack", "label", "record", "ship"):
                keys = {key for knd, key, _ in effect_lines if knd == kind and key.startswith(f"{info.id}:")}
                # A completed step's effect happened under its one key; one cut short may have happened too.
                assert len(keys) == 1 if kind in done else len(keys) <= 1, f"n={n}: {kind} under keys {keys}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_sigkill_mid_fork_loses_nothing_and_repeats_nothing(tmp_path: Path, seed: int) -> None:
    """Forked orders survive repeated SIGKILLs of their worker and finish as if nothing happened."""
    db = tmp_path / "forks.db"
    effects = tmp_path / "effects.log"
    crash_loop("tests.crash.fork_worker", db, effects, seed=seed, count=ORDERS, kills=KILLS, max_pause=0.25)
    _check_store(db, effects)
