"""
SIGKILL workers, and an API caller between them, while outside calls change the instances (issue 8).

The store takes one engine process at a time, so the calls come from a process
of their own between two workers: after each worker's SIGKILL, a caller opens
the file, makes a random mix of ``complete_task``, ``signal`` and ``cancel``
calls at once on a few instances (two completions of one task, a cancel beside
a completion or a payment), notes each call and its outcome, and exits or is
SIGKILLed at a random moment itself. The last worker completes and pays what
still waits. Then every stored history must show that nothing a call reported
done was lost: a completion that returned is the task's stored completion and
its form is the one that reached the step; a payment that returned was consumed
or is still pending; a cancel that returned ended the instance with the status
it returned. And that nothing was done twice or out of order: one completion per
task, one cancel request, each transition once along the flow, each step once,
each compensation once and newest first, under one idempotency key.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import attrs
import pytest

from statemachine_orch import EventKind, InstanceStatus, SqliteStore, TaskStatus, WorkflowRegistry, spec_of
from tests.crash.api_worker import ApiFlow, Approval, calls_log
from tests.crash.procs import crash_loop, run_or_kill, spawn

K = EventKind
UNDOABLE = ("reserve", "charge")
"""The steps with a compensation, in the order they run."""


@attrs.frozen
class Call:
    """One call from the calls log: what was asked, and its outcome (None: the caller was killed first)."""

    token: str
    op: str
    instance: str
    task: str
    arg: str
    outcome: str | None = None
    result: str = ""


def _read_calls(path: Path) -> dict[str, list[Call]]:
    """The calls made, by instance."""
    calls: dict[str, Call] = {}
    for line in path.read_text().splitlines():
        kind, token, rest = line.split(" ", 2)
        if kind == "call":
            op, instance, task, arg = rest.split(" ")
            calls[token] = Call(token, op, instance, task, arg)
        else:
            calls[token] = attrs.evolve(calls[token], outcome=kind, result=rest)
    by_instance: dict[str, list[Call]] = {}
    for call in calls.values():
        by_instance.setdefault(call.instance, []).append(call)
    return by_instance


def _round(token: str) -> int:
    """The round of the loop a call was made in (``r3.1``: the caller after the third kill; the last worker's last)."""
    return int(token[1:].partition(".")[0]) if token.startswith("r") else 1 << 30


def _check_store(db: Path, effects: Path, count: int) -> Counter[str]:
    """Check every instance against the calls made on it; return how many calls had each outcome."""
    spec = spec_of(ApiFlow)
    by_instance = _read_calls(Path(calls_log(str(db))))
    outcomes = Counter(f"{c.op} {c.outcome or 'interrupted'}" for cs in by_instance.values() for c in cs)
    unexpected = [c for cs in by_instance.values() for c in cs if c.result.startswith("UNEXPECTED")]
    assert not unexpected, f"calls failed with errors no racing call explains: {unexpected}"
    effect_keys = Counter(tuple(line.split()[:2]) for line in effects.read_text().splitlines())
    with SqliteStore(db) as store:
        store.attach(WorkflowRegistry([ApiFlow]))
        infos = store.infos(None, "ApiFlow")
        assert count == len(infos), "an instance was lost"
        for info in infos:
            rec = store.load(info.id)
            assert rec is not None
            wf: ApiFlow = rec.wf
            where = f"n={wf.n} ({info.id}, {info.status.value})"
            calls = by_instance.get(info.id, [])
            history = store.history(info.id)
            kinds = Counter(e.kind for e in history)
            assert (1, 1) == (kinds[K.INSTANCE_STARTED], kinds[K.TASK_CREATED]), where

            # Each transition once, along the flow; each step once.
            state = spec.initial
            for e in history:
                if e.kind is K.TRANSITION:
                    assert (state, True) == (e.step, e.detail is not None), f"{where}: {e.step}->{e.detail} at {state}"
                    state = str(e.detail)
            completed = Counter(e.step for e in history if e.kind is K.STEP_COMPLETED)
            assert all(1 == times for times in completed.values()), f"{where}: steps completed {completed}"

            # A cancel that returned ended the instance as it said; a cancel request is one of the calls.
            cancels = {c.token: c for c in calls if c.op == "cancel"}
            requested = [e.detail for e in history if e.kind is K.CANCEL_REQUESTED]
            assert len(requested) <= 1, f"{where}: cancel requested {requested}"
            for c in cancels.values():
                if c.outcome == "ok":
                    assert info.status.value == c.result, f"{where}: the cancel {c.token} returned {c.result}"
            compensate = True
            if requested:
                assert requested[0] in cancels, f"{where}: a cancel nobody asked for: {requested}"
                assert InstanceStatus.CANCELLED == info.status, f"{where}: cancelled by {requested[0]}"
                compensate = cancels[str(requested[0])].arg == "True"
            else:
                assert InstanceStatus.CANCELLED != info.status, f"{where}: cancelled without a request"

            # A completion that returned is the task's; its form is the one that reached the step.
            task_id = next(str(e.detail) for e in history if e.kind is K.TASK_CREATED)
            task = store.task(task_id)
            assert task is not None, where
            completes = {c.token: c for c in calls if c.op == "complete"}
            assert all(c.task == task_id for c in completes.values()), f"{where}: {completes}"
            won = [c for c in completes.values() if c.outcome == "ok"]
            assert len(won) <= 1, f"{where}: two completions of one task returned: {won}"
            if task.status is TaskStatus.COMPLETED:
                assert isinstance(task.form, Approval), where
                assert task.form.token in completes, f"{where}: a form nobody sent: {task.form}"
                assert [task.form.token] == [c.token for c in won] or not won, f"{where}: {won} vs {task.form}"
                assert str(task.form.approve) == completes[task.form.token].arg, where
                assert 1 == kinds[K.TASK_COMPLETED], where
                if completed["approve"]:
                    assert (task.form.token, task.form.approve) == (wf.approval, wf.approved), where
            else:
                assert not won, f"{where}: the completion {won} was lost (task {task.status.value})"
                assert TaskStatus.CANCELLED == task.status, where
                assert requested, f"{where}: task cancelled without a cancel"
                assert 0 == kinds[K.TASK_COMPLETED], where

            # A payment that returned was consumed, unless the instance ended first (its pending
            # messages are dropped then); the oldest first, so none sent after it.
            signals = {c.token: c for c in calls if c.op == "signal"}
            assert [] == store.signals(info.id), f"{where}: messages kept after the end"
            returned = [_round(t) for t, c in signals.items() if c.outcome == "ok"]
            if completed["paid"]:
                assert wf.payment in signals, f"{where}: paid by a payment nobody sent: {wf.payment}"
                assert _round(wf.payment) <= min(returned, default=_round(wf.payment)), (
                    f"{where}: paid by {wf.payment}, though a payment of round {min(returned)} returned before"
                )
            else:
                assert "" == wf.payment, where

            # The end, and the saga: each compensation once, newest first, under one key.
            undone = [e.step for e in history if e.kind is K.COMPENSATION_COMPLETED]
            done = [s for s in UNDOABLE if completed[s]]
            if info.status is InstanceStatus.COMPLETED:
                assert wf.approved, where
                assert {"reserve": 1, "approve": 1, "charge": 1, "paid": 1, "ship": 1} == dict(completed), where
                assert [] == undone, where
            elif info.status is InstanceStatus.FAILED:
                assert (False, 1) == (wf.approved, completed["paid"]), f"{where}: {info.error}"
                assert ["charge", "reserve"] == undone, f"{where}: compensations {undone}"
            else:
                assert InstanceStatus.CANCELLED == info.status, f"{where}: {info.error}"
                assert (done[::-1] if compensate else []) == undone, f"{where}: compensations {undone} of {done}"
            for step, comp in (("reserve", "release"), ("charge", "refund")):
                keys = [key for (kind, key) in effect_keys if kind == comp and key.startswith(f"{info.id}:")]
                assert undone.count(step) == len(keys), f"{where}: {comp} under keys {keys}"
                # A step's body may have run before a cancel stopped it short of completing.
                keys = [key for (kind, key) in effect_keys if kind == step and key.startswith(f"{info.id}:")]
                assert len(keys) in ((1,) if completed[step] else (0, 1)), f"{where}: {step} under keys {keys}"
    return outcomes


def _api_kill9_loop(tmp_path: Path, *, seed: int, count: int, kills: int) -> Counter[str]:
    db = tmp_path / "api.db"
    effects = tmp_path / "effects.log"

    rounds = iter(range(1, kills + 1))

    def api_caller(rng: random.Random) -> None:
        # Killed two times in three, within the ~50 ms its calls take; else it exits by itself.
        pause = rng.uniform(0.0, 0.06) if rng.random() < 2 / 3 else None
        args = ("api", str(next(rounds)), str(rng.randrange(1 << 30)))
        run_or_kill(spawn("tests.crash.api_worker", db, effects, *args), "ready", pause)

    crash_loop(
        "tests.crash.api_worker",
        db,
        effects,
        seed=seed,
        count=count,
        kills=kills,
        max_pause=0.1,
        work=("work", "run"),
        final_timeout=120,
        between=api_caller,
    )
    return _check_store(db, effects, count)


def test_api_calls_between_sigkilled_workers_lose_nothing(tmp_path: Path) -> None:
    """A small seeded run of the loop below, quick enough for every run of the suite."""
    outcomes = _api_kill9_loop(tmp_path, seed=1, count=8, kills=4)
    assert outcomes["complete ok"] > 0, outcomes
    assert outcomes["signal ok"] > 0, outcomes


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", [11, 12])
def test_api_calls_and_sigkills_at_random_moments_lose_nothing(tmp_path: Path, seed: int) -> None:
    """Completions, payments and cancels from a caller killed at random moments, between killed workers."""
    outcomes = _api_kill9_loop(tmp_path, seed=seed, count=40, kills=16)
    assert outcomes["complete ok"] > 0, outcomes
    assert outcomes["signal ok"] > 0, outcomes
    assert outcomes["cancel ok"] > 0, outcomes
