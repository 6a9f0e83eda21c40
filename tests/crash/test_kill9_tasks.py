"""
SIGKILL a worker while it completes many human tasks and cancels orders with compensation (issue 3).

Unlike ``test_kill9.py`` (a worker killed while instances run their own steps,
timers and retries), here the kills land in what *outside callers* do: a
clerk's ``complete_task`` calls and ``cancel(..., compensate=True)`` of many
waiting instances at once, and the compensations those start. After the last
worker ran everything to the end, the stored histories must show for every
order: the expected end (completed, failed after a rejection, or cancelled),
its task completed or cancelled exactly once, the form that reached its step
being the one sent for that order, each step completed once, each compensation
completed once and newest first, and each undo performed under one stable
idempotency key.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from statemachine_orch import EventKind, InstanceStatus, SqliteStore, WorkflowRegistry
from tests.crash.procs import crash_loop
from tests.crash.task_worker import TaskFlow

ORDERS = 120
KILLS = 10
BATCH = 12
"""Each killed worker acts on this many tasks, so that every kill lands in fresh work."""

pytestmark = pytest.mark.slow

K = EventKind


def _expected(n: int) -> InstanceStatus:
    if n % 4 == 0:
        return InstanceStatus.CANCELLED
    if n % 3 == 0:
        return InstanceStatus.FAILED
    return InstanceStatus.COMPLETED


def _check_store(db: Path, effects: Path) -> None:
    effect_keys = Counter(tuple(line.split()[:2]) for line in effects.read_text().splitlines())
    with SqliteStore(db) as store:
        store.attach(WorkflowRegistry([TaskFlow]))
        infos = store.infos(None, "TaskFlow")
        assert ORDERS == len(infos), "an order was lost"
        for info in infos:
            rec = store.load(info.id)
            assert rec is not None
            wf: TaskFlow = rec.wf
            n = wf.n
            expected = _expected(n)
            assert expected == info.status, f"n={n}: {info.error}"
            history = store.history(info.id)
            kinds = Counter(e.kind for e in history)
            completed = Counter(e.step for e in history if e.kind is K.STEP_COMPLETED)
            undone = [e.step for e in history if e.kind is K.COMPENSATION_COMPLETED]
            if expected is InstanceStatus.CANCELLED:
                assert (0, 1) == (kinds[K.TASK_COMPLETED], kinds[K.TASK_CANCELLED]), n
                assert {"reserve": 1, "charge": 1} == dict(completed), n
                assert wf.verdict is None, n
            else:
                assert (1, 0) == (kinds[K.TASK_COMPLETED], kinds[K.TASK_CANCELLED]), n
                assert wf.verdict is not None, n
                assert (n, n % 3 != 0) == (wf.verdict.n, wf.verdict.approve), f"n={n}: the form of another order"
            if expected is InstanceStatus.COMPLETED:
                assert {"reserve": 1, "charge": 1, "decide": 1, "ship": 1} == dict(completed), n
                assert [] == undone, n
            else:
                assert ["charge", "reserve"] == undone, f"n={n}: compensations {undone}"
            assert 1 == kinds[K.INSTANCE_STARTED], n
            moves = [(e.step, e.detail) for e in history if e.kind is K.TRANSITION]
            assert len(moves) == len(set(moves)), f"n={n}: a transition applied twice: {moves}"
            for kind in ("release", "refund"):
                keys = [key for (knd, key) in effect_keys if knd == kind and key.startswith(f"{info.id}:")]
                assert (0 if expected is InstanceStatus.COMPLETED else 1) == len(keys), f"n={n}: {kind} keys {keys}"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", [7, 8])
def test_sigkill_while_completing_tasks_and_compensating_loses_nothing(tmp_path: Path, seed: int) -> None:
    """Completions and withdrawals interrupted by SIGKILL still end every order as if nothing happened."""
    db = tmp_path / "tasks.db"
    effects = tmp_path / "effects.log"
    crash_loop(
        "tests.crash.task_worker",
        db,
        effects,
        seed=seed,
        count=ORDERS,
        kills=KILLS,
        max_pause=0.06,
        work=("work", str(BATCH)),
        final_timeout=120,
    )
    _check_store(db, effects)
