"""
SIGKILL a worker while reminders run beside open tasks (issue 10, item 5).

A seeded loop runs ``reminder_worker.py``'s reviews on a SQLite file (nobody
completes them: a side step every 100 ms, another once at 250 ms, the escalation at
2.5 s), SIGKILLing each worker after a random delay and starting the next; a last
worker runs them all to the end. Then, for every review, the store and the
effects log show:

- it ended at the escalation, once, its task cancelled once (escalated), never
  completed: the reminders did not interrupt the wait;
- each reminder run committed once: the runs of ``nudge`` strictly increasing,
  ``copy_lead`` at most once (a worker down past the deadline escalates first),
  none after the escalation;
- every committed side step run performed its effect under its own idempotency key
  (a run killed before its commit may have performed it too: at least once).
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import re
from pathlib import Path

import pytest

from statemachine_orch import Engine, EventKind, InstanceStatus, SqliteStore
from tests.crash.histories import completed_once
from tests.crash.procs import crash_loop
from tests.crash.reminder_worker import RemindFlow

REVIEWS = 16
KILLS = 6

pytestmark = pytest.mark.slow

K = EventKind
_RUN = re.compile(r"(\w+) \(reminder (\d+)\)")


def _check(db: Path, effects: Path) -> None:
    performed = {key for _, key, _ in (line.split() for line in effects.read_text().splitlines())}
    with SqliteStore(db) as store:
        engine = Engine(store, workflows=[RemindFlow])
        infos = engine.instances(workflow=RemindFlow)
        assert REVIEWS == len(infos), "an instance was lost"
        for info in infos:
            who = f"review {info.id}"
            history = engine.history(info.id)
            assert InstanceStatus.COMPLETED == info.status, who
            kinds = [e.kind for e in history]
            assert 1 == kinds.count(K.ESCALATED), who
            assert 1 == kinds.count(K.TASK_CANCELLED), who
            assert 0 == kinds.count(K.TASK_COMPLETED), who
            escalated = kinds.index(K.ESCALATED)
            assert K.REMINDED not in kinds[escalated:], f"{who}: reminded after the escalation"
            runs: dict[str, list[int]] = {"nudge": [], "copy_lead": []}
            for e in history[:escalated]:
                if e.kind is K.REMINDED:
                    found = _RUN.fullmatch(e.detail or "")
                    assert found is not None, e.detail
                    runs[found.group(1)].append(int(found.group(2)))
            assert runs["nudge"] == sorted(set(runs["nudge"])), f"{who}: nudge runs {runs['nudge']}"
            assert runs["copy_lead"] in ([], [1]), who
            for side, index in (("nudge", 0), ("copy_lead", 1)):
                for n in runs[side]:
                    assert f"{info.id}:0:remind{index}.{n}" in performed, f"{who}: {side} run {n} left no effect"
            done = completed_once([e for e in history if e.step not in runs], who)
            assert "escalate" == done[-1], who


@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", [5, 6])
def test_sigkill_while_reminding_loses_and_repeats_nothing(tmp_path: Path, seed: int) -> None:
    """Issue 10: reminders commit once each, run beside the open task, and the escalation still comes once."""
    db = tmp_path / "remind.db"
    effects = tmp_path / "effects.log"
    crash_loop(
        "tests.crash.reminder_worker",
        db,
        effects,
        seed=seed,
        count=REVIEWS,
        kills=KILLS,
        max_pause=0.25,
        work=("run",),
        final_timeout=120,
    )
    _check(db, effects)
