"""
SIGKILL a worker while parents wait on fan-outs of children (issue 10, item 1).

A seeded loop starts a worker on a SQLite file of orders, each shipping two to
four parcels as a fan-out of children, two at a time (see ``fanout_worker.py``);
each worker recovers and runs, and is SIGKILLed after a random delay (mid-fan-out
most of the time), and the next one starts. A last worker runs everything to the
end. Then the stored data must show, for every order:

- each child started exactly once: ids ``<order>/1/<index>`` in item order, named
  once by the parent, the only children it has, never more than two running at
  once, none started after the fan-out failed;
- the outcome the plan calls for: every parcel shipped, the codes in parcel order
  (a tolerated failure in its place); or the fan-out failed (one failure too many):
  its completed children undone newest first, the others failed or cancelled, the
  reservation released; or billing failed after the fan-out: every child undone,
  newest first, then the reservation released;
- no step completed twice and no transition applied twice in any history, and
  each effect and each undo performed under a single idempotency key.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from pathlib import Path

import pytest

from statemachine_orch import EventKind, InstanceStatus, SqliteStore, WorkflowRegistry
from tests.crash.fanout_worker import WORKFLOWS, billing_fails, fails, parcels
from tests.crash.histories import compensated_steps, completed_once
from tests.crash.procs import crash_loop

ORDERS = 16
KILLS = 6

pytestmark = pytest.mark.slow

K = EventKind
S = InstanceStatus
UNDO = {"reserve": "release", "prepare": "unprepare", "produce": "unproduce"}
Effect = tuple[str, str]


def _check_effects(effects: list[Effect], instance_id: str, done: list[str], undone: list[str], who: str) -> None:
    """Each effect of the instance under one key at most; each undo performed once per step compensated."""
    mine = [(kind, key) for kind, key in effects if key.startswith(f"{instance_id}:")]
    for kind in {kind for kind, _ in mine}:
        keys = {key for knd, key in mine if knd == kind}
        assert 1 == len(keys), f"{who}: {kind} under keys {keys}"
    happened = {UNDO[s] for s in undone if s in UNDO}
    performed = {kind for kind, _ in mine if kind in UNDO.values()}
    assert happened == performed, f"{who}: undone {sorted(happened)}, performed {sorted(performed)}"
    assert {s for s in done if s in UNDO} <= {kind for kind, _ in mine}, f"{who}: a completed step left no effect"


def _check_order(store: SqliteStore, order: str, n: int, effects: list[Effect]) -> None:
    who = f"{order} (n={n})"
    info = store.info(order)
    assert info is not None, who
    history = store.history(order)
    done = completed_once(history, who)
    undone = compensated_steps(history)
    _check_effects(effects, order, done, undone, who)
    started = [str(e.detail) for e in history if e.kind is K.CHILD_STARTED]
    assert [f"{order}/1/{i}" for i in range(len(started))] == started, f"{who}: started {started}"
    assert sorted(started) == sorted(c.id for c in store.children(order)), f"{who}: its children"
    running = peak = 0
    for e in history:
        running += (e.kind is K.CHILD_STARTED) - (e.kind is K.CHILD_FINISHED)
        peak = max(peak, running)
    assert peak <= 2, f"{who}: {peak} children at once"
    finished = [str(e.detail).rpartition(" ") for e in history if e.kind is K.CHILD_FINISHED]
    completed = [c for c, _, how in finished if how == "completed"]
    children = {c.id: c.status for c in store.children(order)}
    for child_id in started:
        child_history = store.history(child_id)
        _check_effects(
            effects, child_id, completed_once(child_history, child_id), compensated_steps(child_history), child_id
        )
    undone_children = [str(e.detail) for e in history if e.kind is K.COMPENSATION_STARTED and e.step == "ship"]
    failing = [i for i in range(parcels(n)) if fails(n, i)]
    tolerate = n % 2
    if len(failing) > tolerate:
        assert (S.FAILED, ["reserve"], ["reserve"]) == (info.status, done, undone), who
        assert completed[::-1] == undone_children, f"{who}: completed {completed}, undone {undone_children}"
        at = next(i for i, e in enumerate(history) if e.kind is K.STEP_FAILED and e.step == "ship")
        assert not [e for e in history[at:] if e.kind is K.CHILD_STARTED], f"{who}: a child started after the failure"
        assert {S.CANCELLED, S.FAILED} >= set(children.values()), f"{who}: {children}"
        assert S.FAILED == children[f"{order}/1/{failing[0]}"] or len(failing) > 1, who
        return
    assert parcels(n) == len(started), f"{who}: every parcel got its child"
    if billing_fails(n):
        assert (S.FAILED, ["reserve", "ship"], ["ship", "reserve"]) == (info.status, done, undone), who
        assert completed[::-1] == undone_children, f"{who}: completed {completed}, undone {undone_children}"
        assert all(children[c] is S.CANCELLED for c in completed), f"{who}: {children}"
        return
    assert (S.COMPLETED, ["reserve", "ship", "bill", "done"], []) == (info.status, done, undone), who
    codes = ["failed" if i in failing else f"P-{n}-{i}" for i in range(parcels(n))]
    rec = store.load(order)
    assert rec is not None
    assert codes == rec.wf.codes, f"{who}: the results in parcel order"
    assert [] == undone_children, who


def _check_store(db: Path, effects_log: Path) -> None:
    effects: list[Effect] = []
    for line in effects_log.read_text().splitlines():
        kind, key, _attempt = line.split()
        effects.append((kind, key))
    with SqliteStore(db) as store:
        store.attach(WorkflowRegistry(WORKFLOWS))
        parents = [i for i in store.infos(None, None) if i.parent is None]
        assert sorted(f"order-{n}" for n in range(ORDERS)) == sorted(i.id for i in parents), "an order was lost"
        for n in range(ORDERS):
            _check_order(store, f"order-{n}", n, effects)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [41, 42])
def test_sigkill_mid_fan_out_starts_each_child_once_and_undoes_newest_first(tmp_path: Path, seed: int) -> None:
    """Orders fanning out to their parcels survive repeated SIGKILLs and end as the plan says."""
    db = tmp_path / "fanout.db"
    effects = tmp_path / "effects.log"
    crash_loop("tests.crash.fanout_worker", db, effects, seed=seed, count=ORDERS, kills=KILLS, max_pause=0.25)
    _check_store(db, effects)
