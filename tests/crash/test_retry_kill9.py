"""
SIGKILL a worker while its instances wait out unlimited retries (issue 10, items 6 and 11).

Every ``Outage`` instance retries a call without limit (``Retry(attempts=None,
max_interval=0.1)``) until its partner is back at attempt 20, 21 or 22. A worker
is killed once every instance has made at least a few more attempts, so the
kill lands in the backoff of most of them. Then the store must show each
instance parked on its retry timer, and a new worker carries every instance on
from the attempt it had reached: no attempt number is committed twice, none is
skipped, the waits never exceed ``max_interval``, and no attempt ever began
with an earlier failed attempt's note in its variables (after a restart, or in
the same process).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from statemachine_orch import EventKind, InstanceStatus, SqliteStore, WorkflowRegistry
from tests.crash.procs import finish, kill, spawn
from tests.crash.retry_worker import Outage, succeeds_on

INSTANCES = 12
KILLS = 2
ATTEMPTS_PER_LIFE = 3
"""Each killed worker runs until every instance has made this many more attempts."""

pytestmark = pytest.mark.slow

K = EventKind


def attempts_made(effects: Path) -> Counter[str]:
    """How many attempts each instance has begun, by instance id (from the effects log)."""
    if not effects.exists():
        return Counter()
    return Counter(line.split()[1].partition(":")[0] for line in effects.read_text().splitlines() if line)


def wait_for(condition: object, what: str, limit: float = 60.0) -> None:
    """Poll *condition* until it holds; fail after *limit* seconds (a generous bound, not a timing assert)."""
    assert callable(condition)
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.02)


def parked_on_retries(db: Path) -> list[tuple[str, InstanceStatus, bool, int]]:
    """Each instance's status, whether it has a retry timer, and the attempts committed so far."""
    with SqliteStore(db) as store:
        store.attach(WorkflowRegistry([Outage]))
        out: list[tuple[str, InstanceStatus, bool, int]] = []
        for info in store.infos(None, "RetryCrashFlow"):
            failed = [e for e in store.history(info.id) if e.kind is K.STEP_FAILED]
            out.append((info.id, info.status, info.wake_at is not None, len(failed)))
        return out


@pytest.mark.timeout(300)
def test_sigkill_in_an_unlimited_backoff_resumes_from_the_attempt_reached(tmp_path: Path) -> None:
    """Issue 10: an instance retrying without limit survives kill -9 of its worker mid-backoff and carries on."""
    db = tmp_path / "retries.db"
    effects = tmp_path / "effects.log"
    seeder = spawn("tests.crash.retry_worker", db, effects, "seed", str(INSTANCES))
    _, err = finish(seeder, 60)
    assert 0 == seeder.returncode, err
    for life in range(1, KILLS + 1):
        proc = spawn("tests.crash.retry_worker", db, effects, "run")
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith("recovered")
            target = life * ATTEMPTS_PER_LIFE
            ids = [f"O-{n}" for n in range(INSTANCES)]
            wait_for(lambda: all(attempts_made(effects)[i] >= target for i in ids), f"{target} attempts each")  # noqa: B023
        finally:
            kill(proc)
        states = parked_on_retries(db)
        assert INSTANCES == len(states)
        for instance_id, status, timer, failed in states:
            assert InstanceStatus.RUNNING == status, f"{instance_id} ended early"
            assert timer, f"{instance_id} is not parked on its retry timer"
            assert failed >= target - 1, f"{instance_id}: only {failed} failed attempts committed"
    final = spawn("tests.crash.retry_worker", db, effects, "run")
    out, err = finish(final, 120)
    assert 0 == final.returncode, err
    assert "ALL DONE" in out
    assert "dirty" not in effects.read_text(), "an attempt began with an earlier attempt's note"
    with SqliteStore(db) as store:
        store.attach(WorkflowRegistry([Outage]))
        for info in store.infos(None, "RetryCrashFlow"):
            rec = store.load(info.id)
            assert rec is not None
            wf = rec.wf
            assert isinstance(wf, Outage)
            last = succeeds_on(wf.n)
            assert InstanceStatus.COMPLETED == info.status, info.error
            assert [f"attempt {last}"] == wf.notes
            history = store.history(info.id)
            started = [e.attempt for e in history if e.kind is K.STEP_STARTED and e.step == "call"]
            assert list(range(1, last + 1)) == started, f"{info.id}: attempts committed {started}"
            waits = [
                float((e.detail or "").removeprefix("in ").removesuffix("s"))
                for e in history
                if e.kind is K.RETRY_SCHEDULED
            ]
            assert last - 1 == len(waits)
            assert max(waits) <= 0.1
