"""
SIGKILL a worker while parents wait on child workflows that run async steps, wait on a clerk, fail or are undone.

A seeded loop starts a worker on a SQLite file of orders, each shipping its
parcel through a child workflow (see ``subflow_worker.py``): after recovering,
each worker runs parents and children while it completes the clerk's checks of
the children as they open; it is SIGKILLed after a random delay, and the next
one starts. A last worker runs everything to the end. Then the stored data must
show, for every order: the parent and its child ended as expected (a child
failing for good is routed, or fails its parent, which releases its stock; a
parent whose billing fails after its child completed undoes the child, which
runs its own compensations and ends ``cancelled``); exactly one child for the
parent's subflow visit, the one its history names, started once (no second
child after a crash); no step completed twice and no transition applied twice in
any history; each compensation once, newest first; and each effect and each undo
performed under a single idempotency key (issue 5).
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from statemachine_orch import EventKind, HistoryEvent, InstanceInfo, InstanceStatus, SqliteStore, WorkflowRegistry
from tests.crash.histories import compensated_steps, completed_once
from tests.crash.procs import crash_loop
from tests.crash.subflow_worker import (
    WORKFLOWS,
    ScCrashOrder,
    ScCrashParcel,
    billing_fails,
    child_fails,
    needs_check,
)

ORDERS = 30
KILLS = 10

pytestmark = pytest.mark.slow

K = EventKind
S = InstanceStatus
PARENT_UNDO = {"reserve": "release"}
CHILD_UNDO = {"prepare": "unprepare", "produce": "unproduce"}
LOGGED = {"reserve", "fallback", "bill", "done", "prepare", "produce", "seal"}
"""The steps that log an effect (``ship`` starts a child, ``check`` takes a form: nothing outside)."""
Effect = tuple[str, str]
"""An effect line: ``(kind, idempotency key)``."""


def _check_effects(effects: list[Effect], instance_id: str, done: list[str], undone: list[str], who: str) -> None:
    """
    Every effect of the instance under one key at most (bodies are at-least-once, keys stable).

    A completed step's effect, and the undo of each step compensated, happened under exactly one.
    """
    mine = [(kind, key) for kind, key in effects if key.startswith(f"{instance_id}:")]
    undo = PARENT_UNDO | CHILD_UNDO
    happened = (set(done) & LOGGED) | {undo[s] for s in undone if s in undo}
    for kind in {kind for kind, _ in mine} | happened:
        keys = {key for knd, key in mine if knd == kind}
        assert (1 if kind in happened else len(keys)) == len(keys) <= 1, f"{who}: {kind} under keys {keys}"
    for kind in set(undo.values()) - happened:
        assert kind not in {knd for knd, _ in mine}, f"{who}: {kind} performed, but nothing was compensated"


def _check_child(
    info: InstanceInfo, history: list[HistoryEvent], wf: ScCrashParcel, effects: list[Effect], expected: S
) -> None:
    n = wf.n
    who = f"child of n={n} ({info.id})"
    assert expected == info.status, f"{who}: {info.error}"
    done = completed_once(history, who)
    undone = compensated_steps(history)
    kinds = Counter(e.kind for e in history)
    checked = ["check"] if needs_check(n) else []
    if child_fails(n):
        assert ["prepare", *checked] == done, who
        assert ["prepare"] == undone, f"{who}: the failed child undoes its own steps"
    else:
        assert ["prepare", *checked, "produce", "seal"] == done, who
        expected_undone = ["produce", "prepare"] if expected is S.CANCELLED else []
        assert expected_undone == undone, f"{who}: undone once each, newest first"
    tasks = (1, 1) if needs_check(n) else (0, 0)
    assert tasks == (kinds[K.TASK_CREATED], kinds[K.TASK_COMPLETED]), who
    assert 0 == kinds[K.TASK_CANCELLED], who
    if needs_check(n):
        assert n == wf.checked, f"{who}: the form of another parcel"
    _check_effects(effects, info.id, done, undone, who)


def _check_store(db: Path, effects_log: Path) -> None:
    effects: list[Effect] = []
    for line in effects_log.read_text().splitlines():
        kind, key, _attempt = line.split()
        effects.append((kind, key))
    with SqliteStore(db) as store:
        store.attach(WorkflowRegistry(WORKFLOWS))
        infos = {i.id: i for i in store.infos(None, None)}
        parents = [i for i in infos.values() if i.parent is None]
        children = [i for i in infos.values() if i.parent is not None]
        assert ORDERS == len(parents), "an order was lost"
        assert ORDERS == len(children), "a child too many, or one missing"
        assert all(i.workflow == "ScCrashParcel" for i in children)
        seen: set[int] = set()
        for info in parents:
            rec = store.load(info.id)
            assert rec is not None
            n: int = rec.wf.n
            seen.add(n)
            who = f"n={n} ({info.id})"
            routes = isinstance(rec.wf, ScCrashOrder)
            history = store.history(info.id)
            done = completed_once(history, who)
            # The one child of the subflow visit: named once by the parent, started once, the only one it has.
            started = [e.detail for e in history if e.kind is K.CHILD_STARTED]
            assert 1 == len(started), f"{who}: children started {started}"
            child_id = str(started[0])
            assert child_id.startswith(f"{info.id}/"), who
            assert [child_id] == [i.id for i in children if i.parent == info.id], f"{who}: its children"
            child = infos[child_id]
            crec = store.load(child_id)
            assert crec is not None
            assert isinstance(crec.wf, ScCrashParcel)
            assert n == crec.wf.n, who
            finished = [e.detail for e in history if e.kind is K.CHILD_FINISHED]
            undone = compensated_steps(history)
            if child_fails(n):
                assert [f"{child_id} failed"] == finished, who
                _check_child(child, store.history(child_id), crec.wf, effects, S.FAILED)
                if routes:
                    assert (S.COMPLETED, ["reserve", "fallback"], []) == (info.status, done, undone), who
                else:
                    assert (S.FAILED, ["reserve"], ["reserve"]) == (info.status, done, undone), who
                    assert f"ship: ChildWorkflowFailed: child {child_id} ended failed: " in str(info.error), who
            elif billing_fails(n):
                assert [f"{child_id} completed"] == finished, who
                assert (S.FAILED, ["reserve", "ship"], ["ship", "reserve"]) == (info.status, done, undone), who
                # The completed child was undone exactly once: by its own compensations, newest first.
                _check_child(child, store.history(child_id), crec.wf, effects, S.CANCELLED)
                assert f"compensated by its parent {info.id}" == child.error, who
            else:
                assert [f"{child_id} completed"] == finished, who
                assert (S.COMPLETED, ["reserve", "ship", "bill", "done"], []) == (info.status, done, undone), who
                assert f"P-{n}" == rec.wf.code, f"{who}: the child's result"
                _check_child(child, store.history(child_id), crec.wf, effects, S.COMPLETED)
            _check_effects(effects, info.id, done, undone, who)
        assert set(range(ORDERS)) == seen


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", [31, 32])
def test_sigkill_around_child_workflows_loses_nothing_and_repeats_nothing(tmp_path: Path, seed: int) -> None:
    """Parents and their children survive repeated SIGKILLs of their worker and finish as if nothing happened."""
    db = tmp_path / "subflows.db"
    effects = tmp_path / "effects.log"
    crash_loop("tests.crash.subflow_worker", db, effects, seed=seed, count=ORDERS, kills=KILLS, max_pause=0.2)
    _check_store(db, effects)
