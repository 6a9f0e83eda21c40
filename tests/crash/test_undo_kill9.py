"""
SIGKILL a worker while holds fail, errors are handed on and attempted undos run (issue 10, item 2).

A seeded loop runs ``undo_worker.py``'s orders on a SQLite file, SIGKILLing each
worker after a random delay and starting the next; a last worker runs them all to
the end. Then, for every order, the store and the effects log show:

- the ending the plan calls for: shipped; failed at ``pay``; or ended at the
  failure end ``give_up`` with the outcome ``unavailable``;
- the hold's undo (``attempted=True``) completed exactly once in every failed
  order, the one whose hold failed included (it may have taken effect), and
  never in a shipped one; each release performed under one idempotency key;
- the handler ``apologise`` received the hold's error typed, with its code, after
  any restart (every line it logged says ``HoldTimedOut=<n>``), and the failure of
  the instance names the step and reason;
- no step completed twice, no transition applied twice.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from pathlib import Path

import pytest

from statemachine_orch import Engine, InstanceStatus, SqliteStore
from tests.crash.histories import compensated_steps, completed_once
from tests.crash.procs import crash_loop
from tests.crash.undo_worker import UndoFlow

ORDERS = 24
KILLS = 6

pytestmark = pytest.mark.slow


def _check(db: Path, effects: Path) -> None:
    lines = [line.split() for line in effects.read_text().splitlines()]
    with SqliteStore(db) as store:
        engine = Engine(store, workflows=[UndoFlow])
        infos = engine.instances(workflow=UndoFlow)
        assert ORDERS == len(infos), "an instance was lost"
        for info in infos:
            wf: UndoFlow = engine.workflow(info.id)
            who = f"order {wf.n} ({info.id})"
            history = engine.history(info.id)
            done = completed_once(history, who)
            undone = compensated_steps(history)
            releases = {key for kind, key, _ in lines if kind == "release" and key.startswith(f"{info.id}:")}
            apologies = [
                kind for kind, key, _ in lines if kind.startswith("apologise:") and key.startswith(f"{info.id}:")
            ]
            if wf.n % 4 == 0:
                assert (InstanceStatus.FAILED, "unavailable") == (info.status, info.outcome), who
                assert ["apologise", "give_up"] == done, who
                assert apologies, who
                assert {f"apologise:HoldTimedOut={wf.n}"} == set(apologies), who
                assert f"no seat for order {wf.n}" == info.error, who
            elif wf.n % 4 == 1:
                assert (InstanceStatus.FAILED, "failed") == (info.status, info.outcome), who
                assert ["hold"] == done, who
                failure = engine.failure(info.id)
                assert failure is not None, who
                assert ("pay", "card declined") == (failure.step, str(failure.error)), who
            else:
                assert InstanceStatus.COMPLETED == info.status, who
                assert ["hold", "pay", "ship"] == done, who
            failed = info.status is InstanceStatus.FAILED
            assert (["hold"] if failed else []) == undone, f"{who}: undone {undone}"
            assert (1 if failed else 0) == len(releases), f"{who}: released under {releases}"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", [3, 4])
def test_sigkill_while_undoing_failed_holds_loses_nothing(tmp_path: Path, seed: int) -> None:
    """Issue 10: attempted undos run once per failed order, and the handler's typed error survives restarts."""
    db = tmp_path / "undo.db"
    effects = tmp_path / "effects.log"
    crash_loop(
        "tests.crash.undo_worker",
        db,
        effects,
        seed=seed,
        count=ORDERS,
        kills=KILLS,
        max_pause=0.2,
        work=("run",),
        final_timeout=120,
    )
    _check(db, effects)
