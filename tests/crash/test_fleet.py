"""
Several worker processes on one database (issue 9, docs/design/leases.md): commands, failover, fencing.

Each test runs ``tests.crash.fleet_worker`` processes on one SQLite file or one
PostgreSQL database, and drives them from this process through a client engine
(``Engine(store, concurrency=0)``: it only writes commands). The workers'
output (structlog lines) goes to a log file per process, read for ``ready`` and
``lease_lost``; every step body logs ``<kind> <idempotency key> <attempt>
[<pid>]`` to an effects file before its commit. Every wait is a poll with a
deadline; no worker outlives its test.

Timers (section 5, and the kill loop's TickFlow instances): due timers are
claimed by due time, each fires once across the fleet, none before it is due,
and late ones fire in due order.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from statemachine_orch import (
    Engine,
    EventKind,
    HistoryEvent,
    InstanceStatus,
    Store,
    TaskAlreadyCompleted,
    VirtualClock,
    Workflow,
)
from tests.crash.crash_flow import EFFECTS_ENV
from tests.crash.fleet_worker import (
    TICK,
    TIMER_DELAY,
    WORKFLOWS,
    BusyFlow,
    HogFlow,
    SlowFlow,
    StuckFlow,
    TickFlow,
    TimerFlow,
    open_store,
    tick_visits,
)
from tests.crash.procs import ROOT, kill
from tests.crash.task_worker import TaskFlow, Verdict

K = EventKind
LEASE = 2.0
"""The lease of the failover and fencing tests (seconds): a stopped worker loses its instances after this long."""


class Worker:
    """A fleet worker process, its log file, and the owner name it announced."""

    def __init__(self, proc: subprocess.Popen[str], log: Path) -> None:
        self.proc = proc
        self.log = log
        self.owner = ""

    @property
    def pid(self) -> int:
        """Its process id."""
        return self.proc.pid

    def output(self) -> str:
        """What it logged so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Fleet:
    """The worker processes of one test, on one store; every one is killed at the end."""

    def __init__(self, backend: str, target: str, tmp: Path) -> None:
        self.backend = backend
        self.target = target
        self.tmp = tmp
        self.effects = tmp / "effects.log"
        self.effects.touch()
        self.workers: list[Worker] = []

    def spawn(self, *, lease: float = LEASE, slow: float = 0.0, concurrency: int = 32) -> Worker:
        """Start a worker (SlowFlow's step takes *slow* seconds in it); it logs to a file of its own."""
        log = self.tmp / f"worker-{len(self.workers)}.log"
        env = {**os.environ, EFFECTS_ENV: str(self.effects), "PYTHONPATH": str(ROOT)}
        with log.open("w") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-X",
                    "faulthandler",
                    "-m",
                    "tests.crash.fleet_worker",
                    self.backend,
                    self.target,
                    str(lease),
                    str(slow),
                    str(concurrency),
                ],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        worker = Worker(proc, log)
        self.workers.append(worker)
        return worker

    def ready(self, worker: Worker, timeout: float = 60) -> Worker:
        """Wait until *worker* recovered and announced its owner name."""

        def announced() -> bool:
            assert worker.proc.poll() is None, f"worker {worker.pid} died: {worker.output()}"
            return any(line.startswith("ready ") for line in worker.output().splitlines())

        wait_until(announced, timeout, f"worker {worker.pid} to start")
        line = next(line for line in worker.output().splitlines() if line.startswith("ready "))
        worker.owner = line.split()[2]
        return worker

    def kill(self, worker: Worker) -> None:
        """SIGKILL *worker* and reap it (so that it is not a zombie)."""
        if worker.proc.returncode is None:
            os.kill(worker.pid, signal.SIGCONT)  # a stopped process dies as well, but be plain
            kill(worker.proc)

    def close(self) -> None:
        """Kill every worker still running."""
        for worker in self.workers:
            self.kill(worker)

    def marks(self) -> list[tuple[str, str, int]]:
        """The effects logged so far: (kind, idempotency key, pid or 0)."""
        out: list[tuple[str, str, int]] = []
        for line in self.effects.read_text().splitlines():
            parts = line.split()
            out.append((parts[0], parts[1], int(parts[3]) if len(parts) > 3 else 0))
        return out

    def store(self) -> Store:
        """A store of this process's own on the fleet's database."""
        return open_store(self.backend, self.target)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll *condition* until it holds; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


async def await_until(condition: Callable[[], bool], limit: float, what: str) -> None:
    """As :func:`wait_until` (*limit* seconds), without blocking the event loop."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {limit:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture(params=["sqlite", "pg"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleet]:
    """Worker processes on a SQLite file, or on a fresh PostgreSQL database (skipped or failed as tests/pg.py says)."""
    backend: str = request.param
    target = str(request.getfixturevalue("pg_store_dsn")) if backend == "pg" else str(tmp_path / "fleet.db")
    if backend == "sqlite":
        open_store(backend, target).close()  # create the file (and its schema) before several processes open it
    fleet = Fleet(backend, target, tmp_path)
    try:
        yield fleet
    finally:
        fleet.close()


def client(store: Store) -> Engine:
    """An engine with no workers: it writes commands for the fleet."""
    return Engine(store, workflows=WORKFLOWS, concurrency=0, lease=LEASE)


def start_all(fleet: Fleet, ids: list[str], make: Callable[[int], Workflow]) -> None:
    """Start instance ``ids[n]`` as ``make(n)``, through a client engine of this process."""

    async def start() -> None:
        store = fleet.store()
        engine = client(store)
        try:
            for n, instance_id in enumerate(ids):
                await engine.start(make(n), instance_id=instance_id)
        finally:
            await engine.aclose()
            store.close()

    asyncio.run(start())


def terminal(store: Store, ids: list[str]) -> Callable[[], bool]:
    """A condition: every instance of *ids* is terminal."""

    def check() -> bool:
        infos = [store.info(i) for i in ids]
        return all(info is not None and info.status.is_terminal for info in infos)

    return check


# ----------------------------------------------------------------- the order workflow's expected ends


def expected_order(n: int) -> InstanceStatus:
    """Orders ``n % 4 == 0`` are withdrawn (cancelled), ``n % 3 == 0`` rejected (failed), others ship."""
    if n % 4 == 0:
        return InstanceStatus.CANCELLED
    if n % 3 == 0:
        return InstanceStatus.FAILED
    return InstanceStatus.COMPLETED


def check_order(store: Store, instance_id: str, n: int, effects: list[tuple[str, str, int]]) -> None:
    """The stored end, history and effects of one order are those of *n*."""
    info = store.info(instance_id)
    assert info is not None, f"{instance_id} was lost"
    expected = expected_order(n)
    assert expected == info.status, f"{instance_id}: {info.status} ({info.error})"
    rec = store.load(instance_id)
    assert rec is not None
    wf: TaskFlow = rec.wf
    assert n == wf.n
    history = store.history(instance_id)
    kinds = Counter(e.kind for e in history)
    completed = Counter(e.step for e in history if e.kind is K.STEP_COMPLETED)
    undone = [e.step for e in history if e.kind is K.COMPENSATION_COMPLETED]
    assert 1 == kinds[K.INSTANCE_STARTED], instance_id
    if expected is InstanceStatus.CANCELLED:
        assert (0, 1) == (kinds[K.TASK_COMPLETED], kinds[K.TASK_CANCELLED]), instance_id
        assert {"reserve": 1, "charge": 1} == dict(completed), instance_id
        assert wf.verdict is None, instance_id
    else:
        assert (1, 0) == (kinds[K.TASK_COMPLETED], kinds[K.TASK_CANCELLED]), instance_id
        assert wf.verdict == Verdict(n=n, approve=n % 3 != 0), f"{instance_id}: the form of another order"
    if expected is InstanceStatus.COMPLETED:
        assert {"reserve": 1, "charge": 1, "decide": 1, "ship": 1} == dict(completed), instance_id
        assert [] == undone, instance_id
    else:
        assert ["charge", "reserve"] == undone, f"{instance_id}: compensations {undone}"
    no_double_moves(instance_id, history)
    keys: dict[str, set[str]] = {}
    for kind, key, _ in effects:
        if key.startswith(f"{instance_id}:"):
            keys.setdefault(kind, set()).add(key)
    runs = {kind: len(found) for kind, found in keys.items()}
    want = {"reserve": 1, "charge": 1}
    if expected is InstanceStatus.COMPLETED:
        want["ship"] = 1
    else:
        want |= {"release": 1, "refund": 1}
    assert want == runs, f"{instance_id}: effects under distinct idempotency keys {keys}"


def no_double_moves(instance_id: str, history: list[HistoryEvent]) -> None:
    """No transition is in the history twice (a fenced-off worker wrote nothing)."""
    moves = [(e.step, e.detail) for e in history if e.kind is K.TRANSITION]
    assert len(moves) == len(set(moves)), f"{instance_id}: a transition applied twice: {moves}"


# ----------------------------------------------------------------- 1. commands from another process


@pytest.mark.timeout(120)
def test_commands_from_a_client_process_reach_a_live_worker(fleet: Fleet) -> None:
    """Starts (one id twice), task completions and a cancel written by a client are applied by the worker."""
    count = 8
    fleet.ready(fleet.spawn())
    ids = [f"order-{n}" for n in range(count)]

    async def main() -> None:
        store = fleet.store()
        engine = client(store)
        try:
            for n, instance_id in enumerate(ids):
                first = await engine.start(TaskFlow(n=n), instance_id=instance_id)
                again = await engine.start(TaskFlow(n=n), instance_id=instance_id)  # a retried start
                assert first.instance_id == again.instance_id == instance_id
            await await_until(lambda: len(engine.tasks(user="clerk")) == count, 60, "every order to wait on its clerk")
            tasks = {t.instance_id: t for t in engine.tasks(user="clerk")}
            assert set(ids) == set(tasks)
            cancels: list[Coroutine[Any, Any, InstanceStatus]] = []
            for n, instance_id in enumerate(ids):
                if n % 4 == 0:
                    cancels.append(engine.cancel(instance_id, reason="withdrawn", compensate=True))
                else:
                    task = tasks[instance_id]
                    await engine.complete_task(task.id, user="clerk", form=Verdict(n=n, approve=n % 3 != 0))
                    with pytest.raises(TaskAlreadyCompleted):
                        await engine.complete_task(task.id, user="clerk", form=Verdict(n=n, approve=True))
            ends = await asyncio.wait_for(asyncio.gather(*cancels), 60)
            assert all(end is InstanceStatus.CANCELLED for end in ends), ends
            await await_until(terminal(store, ids), 60, "every order to end")
            effects = fleet.marks()
            for n, instance_id in enumerate(ids):
                check_order(store, instance_id, n, effects)
            assert count == len(store.infos(None, "TaskFlow")), "a second start made a second instance"
        finally:
            await engine.aclose()
            store.close()

    asyncio.run(main())


def test_two_workers_share_cpu_bound_work_that_was_waiting(fleet: Fleet) -> None:
    """
    Work waiting for a fleet is shared: a worker with free slots claims a batch, not all it could hold.

    Both workers (256 slots each) are stopped while a client starts 96 instances
    whose one step keeps a worker's CPU busy for 30 ms, then continued together:
    the first to claim takes at most a batch (32), and while it crunches, its loop
    cannot claim more, so the other claims too. Each runs a third at least.

    Each step's effect is committed once (one ``step_completed`` per instance).
    A step runs again only where a lease was lost: a run beyond an instance's
    first is matched by a ``lease_lost`` of that instance in a worker's log. The
    leases are renewed by a thread of their own, so a busy loop keeps them (until
    the heartbeat thread moved off the loop, two loaded workers handed the same
    instances back and forth, 128 and 160 runs of 96 steps); a loss here means
    a worker got no CPU for a whole lease.
    """
    count = 96
    workers = [fleet.ready(fleet.spawn(concurrency=256, lease=10.0)) for _ in range(2)]
    for worker in workers:
        os.kill(worker.pid, signal.SIGSTOP)
    ids = [f"busy-{n}" for n in range(count)]

    async def main() -> None:
        store = fleet.store()
        engine = client(store)
        try:
            for n, instance_id in enumerate(ids):
                await engine.start(BusyFlow(n=n), instance_id=instance_id)
            for worker in workers:
                os.kill(worker.pid, signal.SIGCONT)
            await await_until(terminal(store, ids), 120, "every instance to end")
            assert all(info.status is InstanceStatus.COMPLETED for info in store.infos(None, "BusyFlow"))
            for instance_id in ids:
                history = store.history(instance_id)
                assert {"crunch": 1} == dict(Counter(e.step for e in history if e.kind is K.STEP_COMPLETED))
                no_double_moves(instance_id, history)
        finally:
            await engine.aclose()
            store.close()

    asyncio.run(main())
    crunches = [(key.split(":")[0], pid) for kind, key, pid in fleet.marks() if kind == "crunch"]
    runs = Counter(instance_id for instance_id, _ in crunches)
    losses = Counter(i for w in workers for i in _lost_ids(w))
    unexplained = {i: (n, losses[i]) for i, n in runs.items() if n > 1 + losses[i]}
    assert set(ids) == set(runs)
    assert {} == unexplained, "instance: (step runs, leases lost); a step ran again without a lease lost"
    print(f"\n[{fleet.backend}] {sum(runs.values())} step runs of {count}, {sum(losses.values())} leases lost")
    ran = Counter(pid for _, pid in crunches)
    assert all(ran[w.pid] >= count // 3 for w in workers), f"instances run per worker pid: {dict(ran)}"


def _a_claims_them_all(
    fleet: Fleet, a: Worker, b: Worker, ids: list[str], make: Callable[[int], Workflow], begin: str
) -> None:
    """
    Start *ids* while workers A and B are stopped; continue A, and B once A ran a first step (marked *begin*).

    A claims them all in one claim round (at most 32), before it runs any step.
    """
    for worker in (b, a):
        os.kill(worker.pid, signal.SIGSTOP)
    try:
        start_all(fleet, ids, make)
        os.kill(a.pid, signal.SIGCONT)
        wait_until(lambda: any(kind == begin for kind, _, _ in fleet.marks()), 60, f"A's first {begin}")
    finally:
        os.kill(a.pid, signal.SIGCONT)
        os.kill(b.pid, signal.SIGCONT)


@pytest.mark.timeout(120)
def test_a_loop_busy_past_its_lease_keeps_its_leases(fleet: Fleet) -> None:
    """
    A worker whose loop is busy for longer than its lease, making progress, keeps every lease.

    Worker A claims 16 HogFlow instances in one round (it was stopped while they
    were started); their steps, 0.25 CPU seconds each and never awaiting, run
    back to back in one turn of its loop: at least 4 s, twice the lease. Worker B
    is continued once A runs the first: it would take over any lease that ran
    out. A's heartbeat thread renews them all (each step's commit shows progress),
    so every step runs once, in A, and A loses no lease.
    """
    count = 16
    a = fleet.ready(fleet.spawn())
    b = fleet.ready(fleet.spawn())
    ids = [f"hog-{n}" for n in range(count)]
    _a_claims_them_all(fleet, a, b, ids, lambda n: HogFlow(n=n), "hog-begin")
    store = fleet.store()
    try:
        wait_until(terminal(store, ids), 90, "every instance to end")
        for instance_id in ids:
            info = store.info(instance_id)
            assert info is not None
            assert InstanceStatus.COMPLETED is info.status, f"{instance_id}: {info.status} ({info.error})"
            history = store.history(instance_id)
            assert {"hog": 1} == dict(Counter(e.step for e in history if e.kind is K.STEP_COMPLETED))
    finally:
        store.close()
    hogs = [(key.split(":")[0], pid) for kind, key, pid in fleet.marks() if kind == "hog"]
    assert sorted(ids) == sorted(i for i, _ in hogs), "each step ran once"
    assert {a.pid} == {pid for _, pid in hogs}, "B took an instance over"
    assert [] == _lost_lines(a)


@pytest.mark.timeout(120)
def test_a_hung_worker_stops_renewing_and_is_fenced_off(fleet: Fleet) -> None:
    """
    A worker whose loop makes no progress for a lease stops renewing: another takes its instances over.

    Worker A's StuckFlow step blocks its loop (a hung worker: no await, no
    commit) until the gate opens. Its heartbeat thread, still running, sees no
    progress for a lease, logs ``loop_stalled`` and renews no more, so the leases
    run out (within two leases of the last progress) and B runs the instances.
    Then the gate opens: A's loop moves again, its commits are refused (fenced),
    it logs ``lease_lost`` and writes nothing.
    """
    count = 2
    a = fleet.ready(fleet.spawn(slow=120.0))
    b = fleet.ready(fleet.spawn(slow=0.0))
    ids = [f"stuck-{n}" for n in range(count)]
    _a_claims_them_all(fleet, a, b, ids, lambda n: StuckFlow(n=n), "begin")
    began = time.monotonic()
    wait_until(_taken_over(fleet, b, ids), 2 * LEASE + 60, "worker B to take the hung worker's instances over")
    print(f"\n[{fleet.backend}] takeover from a hung loop: {time.monotonic() - began:.2f} s (lease {LEASE} s)")
    store = fleet.store()
    try:
        wait_until(terminal(store, ids), 60, "the instances to end")
        before = {i: store.history(i) for i in ids}
        assert any("loop_stalled" in line for line in a.output().splitlines()), a.output()
        (fleet.effects.parent / (fleet.effects.name + ".gate")).touch()
        wait_until(
            lambda: {k.split(":")[0] for kind, k, pid in fleet.marks() if kind == "work" and pid == a.pid} == set(ids),
            60,
            "worker A's stale steps to end",
        )
        wait_until(lambda: set(_lost_ids(a)) == set(ids), 60, "A to log lease_lost for every instance")
        assert before == {i: store.history(i) for i in ids}, "the fenced-off worker wrote"
        _check_slow(store, ids, fleet, b, first="stuck")
        assert [] == [o for o in store.owners() if o == a.owner], "A holds a lease again"
    finally:
        store.close()
    assert a.proc.poll() is None, f"A died: {a.output()}"


# ----------------------------------------------------------------- 2 and 3. failover and fencing


def _hold_all(fleet: Fleet, count: int) -> tuple[Worker, Worker, list[str]]:
    """
    Worker A (whose step blocks) takes *count* SlowFlow instances; worker B (quick) starts after.

    Returns A, B and the instance ids, once A runs every one's step and B is ready.
    """
    a = fleet.ready(fleet.spawn(slow=120.0))
    ids = [f"slow-{n}" for n in range(count)]
    start_all(fleet, ids, lambda n: SlowFlow(n=n))
    wait_until(
        lambda: {k.split(":")[0] for kind, k, pid in fleet.marks() if kind == "begin" and pid == a.pid} == set(ids),
        60,
        "worker A to run every instance's step",
    )
    b = fleet.ready(fleet.spawn(slow=0.0))
    store = fleet.store()
    try:
        assert [a.owner] == store.owners(), "A holds every lease"
    finally:
        store.close()
    return a, b, ids


def _taken_over(fleet: Fleet, b: Worker, ids: list[str]) -> Callable[[], bool]:
    """A condition: worker B runs (or ran) the step of every instance of *ids*."""

    def check() -> bool:
        begun = {k.split(":")[0] for kind, k, pid in fleet.marks() if kind == "begin" and pid == b.pid}
        return begun >= set(ids)

    return check


def _check_slow(store: Store, ids: list[str], fleet: Fleet, b: Worker, first: str = "work") -> None:
    """Every instance completed, each step (the first named *first*) completed once (by B: A was killed or fenced off)."""
    for instance_id in ids:
        info = store.info(instance_id)
        assert info is not None
        assert InstanceStatus.COMPLETED == info.status, f"{instance_id}: {info.status} ({info.error})"
        history = store.history(instance_id)
        completed = Counter(e.step for e in history if e.kind is K.STEP_COMPLETED)
        assert {first: 1, "finish": 1} == dict(completed), f"{instance_id}: {completed}"
        assert 1 == Counter(e.kind for e in history)[K.INSTANCE_STARTED]
        no_double_moves(instance_id, history)
    finishes = [(k, pid) for kind, k, pid in fleet.marks() if kind == "finish"]
    assert {k.split(":")[0] for k, _ in finishes} == set(ids)
    assert all(pid == b.pid for _, pid in finishes), f"a finish ran outside B: {finishes}"


@pytest.mark.timeout(120)
def test_sigkill_of_the_lease_holder_fails_over_at_once(fleet: Fleet) -> None:
    """The dead worker's instances are taken over (its pid is gone: no lease to wait out) and finish."""
    a, b, ids = _hold_all(fleet, 6)
    began = time.monotonic()
    fleet.kill(a)
    wait_until(_taken_over(fleet, b, ids), LEASE + 30, "worker B to take the instances over")
    took = time.monotonic() - began
    print(f"\n[{fleet.backend}] takeover after SIGKILL: {took:.2f} s (lease {LEASE} s)")
    store = fleet.store()
    try:
        wait_until(terminal(store, ids), 60, "the instances to end")
        _check_slow(store, ids, fleet, b)
    finally:
        store.close()
    assert took <= LEASE + 2, f"takeover took {took:.2f} s"


@pytest.mark.timeout(120)
def test_a_stopped_worker_is_fenced_off_after_its_lease(fleet: Fleet) -> None:
    """SIGSTOP the holder: its leases expire, B finishes the instances; SIGCONT: A writes nothing, logs lease_lost."""
    a, b, ids = _hold_all(fleet, 4)
    began = time.monotonic()
    os.kill(a.pid, signal.SIGSTOP)
    try:
        wait_until(_taken_over(fleet, b, ids), LEASE + 30, "worker B to take the instances over")
        took = time.monotonic() - began
        print(f"\n[{fleet.backend}] takeover after SIGSTOP (lease expiry): {took:.2f} s (lease {LEASE} s)")
        store = fleet.store()
        try:
            wait_until(terminal(store, ids), 60, "the instances to end")
            _check_slow(store, ids, fleet, b)
            before = {i: store.history(i) for i in ids}
        finally:
            store.close()
    finally:
        os.kill(a.pid, signal.SIGCONT)
    assert a.proc.poll() is None, a.output()
    # A wakes: its heartbeat (or its first commit) finds every lease taken over.
    wait_until(
        lambda: all(any(f"instance_id={i} " in line + " " for line in _lost_lines(a)) for i in ids),
        30,
        "worker A to log lease_lost for every instance",
    )
    # Its steps end now; their commits must be refused (fenced off).
    (fleet.effects.parent / (fleet.effects.name + ".gate")).touch()
    wait_until(
        lambda: {k.split(":")[0] for kind, k, pid in fleet.marks() if kind == "work" and pid == a.pid} == set(ids),
        30,
        "worker A's stale steps to end",
    )
    # Nothing to poll for: A must *not* write. Watch the store for a while.
    store = fleet.store()
    try:
        quiet = time.monotonic() + 1.0
        while time.monotonic() < quiet:
            assert before == {i: store.history(i) for i in ids}, "the fenced-off worker wrote"
            time.sleep(0.1)
        _check_slow(store, ids, fleet, b)
        assert [] == [o for o in store.owners() if o == a.owner], "A holds a lease again"
    finally:
        store.close()
    assert a.proc.poll() is None, f"A died: {a.output()}"
    assert took <= LEASE + 2, f"takeover took {took:.2f} s"


def _started(worker: Worker) -> bool:
    return "ready " in worker.output() or worker.proc.poll() is not None


def _lost_lines(worker: Worker) -> list[str]:
    return [line for line in worker.output().splitlines() if "lease_lost" in line]


def _lost_ids(worker: Worker) -> list[str]:
    """The instances of the ``lease_lost`` lines *worker* logged, once per line."""
    return [
        word.split("=", 1)[1]
        for line in _lost_lines(worker)
        for word in line.split()
        if word.startswith("instance_id=")
    ]


# ----------------------------------------------------------------- 4. a kill loop


def check_ticks(store: Store, instance_id: str, n: int) -> None:
    """TickFlow ``n`` completed, its timer set and fired once per visit (``tick_visits(n)``), never early."""
    info = store.info(instance_id)
    assert info is not None, f"{instance_id} was lost"
    assert InstanceStatus.COMPLETED == info.status, f"{instance_id}: {info.status} ({info.error})"
    history = store.history(instance_id)
    visits = tick_visits(n)
    timers = [(e.kind, e.at) for e in history if e.kind in (K.TIMER_SET, K.TIMER_FIRED)]
    assert [K.TIMER_SET, K.TIMER_FIRED] * visits == [kind for kind, _ in timers], f"{instance_id}: {history}"
    for (_, set_at), (_, fired_at) in zip(timers[::2], timers[1::2], strict=True):
        # The due time is taken just before the timer_set entry is stamped: allow a millisecond.
        assert fired_at >= set_at + TICK - 0.001, f"{instance_id}: fired {fired_at - set_at:.3f} s after it was set"
    completed = Counter(e.step for e in history if e.kind is K.STEP_COMPLETED)
    assert {"begin": 1, "tick": visits, "count": visits, "end": 1} == dict(completed), f"{instance_id}: {completed}"
    assert 1 == Counter(e.kind for e in history)[K.INSTANCE_STARTED], instance_id


def _kill_loop(fleet: Fleet, *, seed: int, orders: int, kills: int) -> None:
    """
    Three workers; a client starts orders and acts on their tasks while random workers are SIGKILLed.

    Beside every second order it starts a TickFlow, whose short timer is visited one to
    three times: each visit's timer must fire exactly once, whoever holds it when it falls due.
    """
    rng = random.Random(seed)
    workers = [fleet.spawn(lease=LEASE) for _ in range(3)]
    for worker in workers:
        fleet.ready(worker)
    ids = [f"order-{n}" for n in range(orders)]
    ticks = [f"tick-{n}" for n in range(0, orders, 2)]
    killed = 0

    async def main() -> None:
        nonlocal killed
        store = fleet.store()
        engine = client(store)
        acted: set[str] = set()
        cancels: list[asyncio.Task[InstanceStatus]] = []
        started = 0

        async def produce() -> None:
            nonlocal started
            for n, instance_id in enumerate(ids):
                await engine.start(TaskFlow(n=n), instance_id=instance_id)
                if rng.random() < 0.2:
                    await engine.start(TaskFlow(n=n), instance_id=instance_id)
                if n % 2 == 0:
                    await engine.start(TickFlow(n=n), instance_id=f"tick-{n}")
                started += 1
                await asyncio.sleep(rng.uniform(0, 0.05))

        async def clerk() -> None:
            while len(acted) < orders:
                for task in engine.tasks(user="clerk"):
                    instance_id = task.instance_id
                    if instance_id in acted:
                        continue
                    acted.add(instance_id)
                    n = int(instance_id.split("-")[1])
                    if n % 4 == 0:
                        cancels.append(asyncio.create_task(engine.cancel(instance_id, reason="withdrawn")))
                    else:
                        await engine.complete_task(task.id, user="clerk", form=Verdict(n=n, approve=n % 3 != 0))
                await asyncio.sleep(0.02)

        async def killer() -> None:
            nonlocal killed
            while killed < kills:
                await asyncio.sleep(rng.uniform(0.05, 0.4))
                index = rng.randrange(len(workers))
                fleet.kill(workers[index])
                killed += 1
                workers[index] = fleet.spawn(lease=LEASE)
                fresh = workers[index]
                await await_until(partial(_started, fresh), 60, "a new worker")
                assert fresh.proc.poll() is None, fresh.output()

        try:
            await asyncio.wait_for(asyncio.gather(produce(), clerk(), killer()), 90 + kills * 3)
            for end in await asyncio.wait_for(asyncio.gather(*cancels), 60):
                assert end is InstanceStatus.CANCELLED
            await await_until(terminal(store, ids + ticks), 60, "every order and TickFlow to end")
        finally:
            for task in cancels:
                task.cancel()
            await asyncio.gather(*cancels, return_exceptions=True)
            await engine.aclose()
            store.close()

    began = time.monotonic()
    asyncio.run(main())
    print(
        f"\n[{fleet.backend}] {orders} orders, {len(ticks)} TickFlows, {killed} SIGKILLs: "
        f"{time.monotonic() - began:.1f} s"
    )
    store = fleet.store()
    try:
        effects = fleet.marks()
        assert orders == len(store.infos(None, "TaskFlow"))
        for n, instance_id in enumerate(ids):
            check_order(store, instance_id, n, effects)
        assert len(ticks) == len(store.infos(None, "TickFlow"))
        for instance_id in ticks:
            check_ticks(store, instance_id, int(instance_id.split("-")[1]))
    finally:
        store.close()


@pytest.mark.timeout(180)
def test_kill_loop_of_three_workers_loses_nothing(fleet: Fleet) -> None:
    """A few SIGKILLs of random workers while a client starts orders (and TickFlows) and acts on them."""
    _kill_loop(fleet, seed=11, orders=24, kills=5)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("seed", [1, 2])
def test_long_kill_loop_of_three_workers_loses_nothing(fleet: Fleet, seed: int) -> None:
    """At least 100 SIGKILLs of random workers among three (200 orders, 100 TickFlows)."""
    _kill_loop(fleet, seed=seed, orders=200, kills=100)


# ----------------------------------------------------------------- 5. timers across the fleet

GROUPS = 12
"""TimerFlow instances are parked in this many groups, 0.1 s apart."""
PER_GROUP = 5
"""The instances of one group, whose timers are due at exactly the same time."""


def _parked(store: Store, ids: list[str]) -> Callable[[], bool]:
    """A condition: every instance of *ids* waits on its timer."""

    def check() -> bool:
        infos = [store.info(i) for i in ids]
        return all(info is not None and info.wake_at is not None for info in infos)

    return check


def _seed_timers(fleet: Fleet) -> dict[str, float]:
    """
    A client starts GROUPS x PER_GROUP TimerFlow instances, group by group; an engine of this process parks them.

    That engine is a worker whose clock the test sets (a VirtualClock that never jumps by
    itself): it takes group ``g`` at ``base + 0.1 g``, so the timers of a group are due at
    exactly the same time, ``base + 0.1 g + TIMER_DELAY``, and the groups 0.1 s apart. Its
    clock never reaches a due time, so it fires nothing; closed, it leaves every instance
    waiting, unleased. Returns each instance's due time (its ``wake_at``). No fleet worker
    runs meanwhile.
    """

    async def main() -> dict[str, float]:
        store = fleet.store()
        engine = client(store)
        base = time.time()
        clock = VirtualClock(base, autojump=False)
        seeder_store = fleet.store()
        seeder = Engine(seeder_store, workflows=WORKFLOWS, concurrency=PER_GROUP, lease=LEASE, poll=0.02, clock=clock)
        try:
            await seeder.recover()
            for g in range(GROUPS):
                clock.jump_to(base + 0.1 * g)
                group = [f"timer-{g}-{k}" for k in range(PER_GROUP)]
                for k, instance_id in enumerate(group):
                    await engine.start(TimerFlow(n=g * PER_GROUP + k), instance_id=instance_id)
                await seeder.recover()  # a claim round now (on PostgreSQL a start is not announced)
                await await_until(_parked(store, group), 60, f"group {g} to wait on its timer")
            # Parked instances are given back once their turn ends (closing earlier would expire their leases).
            await await_until(lambda: [] == store.owners(), 60, "the seeding engine to give every lease back")
        finally:
            await seeder.aclose()
            seeder_store.close()
            await engine.aclose()
        try:
            infos = {i.id: i for i in store.infos(None, "TimerFlow")}
            assert [] == store.owners(), "the seeding engine took a lease back"
        finally:
            store.close()
        assert GROUPS * PER_GROUP == len(infos)
        due: dict[str, float] = {}
        for instance_id, info in infos.items():
            assert InstanceStatus.WAITING == info.status, f"{instance_id}: {info.status}"
            assert info.wake_at is not None
            due[instance_id] = info.wake_at
        for g in range(GROUPS):
            assert {base + 0.1 * g + TIMER_DELAY} == {due[f"timer-{g}-{k}"] for k in range(PER_GROUP)}
        return due

    return asyncio.run(main())


def _check_timers(fleet: Fleet, due: dict[str, float]) -> dict[str, tuple[float, int]]:
    """
    Every TimerFlow completed; its history has one ``timer_set`` and one ``timer_fired``, not before its due time.

    Its timer's step body ran once (one ``fire`` effect). Returns, per instance, when its
    timer fired (the ``timer_fired`` entry's ``at``) and the pid of the worker that fired it.
    """
    store = fleet.store()
    fires: dict[str, list[int]] = {}
    for kind, key, pid in fleet.marks():
        if kind == "fire":
            fires.setdefault(key.split(":")[0], []).append(pid)
    fired: dict[str, tuple[float, int]] = {}
    try:
        for instance_id, when in due.items():
            info = store.info(instance_id)
            assert info is not None
            assert InstanceStatus.COMPLETED == info.status, f"{instance_id}: {info.status} ({info.error})"
            history = store.history(instance_id)
            kinds = Counter(e.kind for e in history)
            assert (1, 1) == (kinds[K.TIMER_SET], kinds[K.TIMER_FIRED]), f"{instance_id}: {history}"
            completed = Counter(e.step for e in history if e.kind is K.STEP_COMPLETED)
            assert {"due": 1, "done": 1} == dict(completed), f"{instance_id}: {completed}"
            at = next(e.at for e in history if e.kind is K.TIMER_FIRED)
            assert at >= when, f"{instance_id} fired {when - at:.3f} s before it was due"
            assert 1 == len(fires.get(instance_id, [])), f"{instance_id}: its timer's body ran {fires.get(instance_id)}"
            fired[instance_id] = (at, fires[instance_id][0])
    finally:
        store.close()
    return fired


def _due_order(due: dict[str, float], fired: dict[str, tuple[float, int]], ids: list[str]) -> list[float]:
    """The due times of *ids* in the order their timers fired (instances that fired at the same instant by due time)."""
    return [due[i] for i in sorted(ids, key=lambda i: (fired[i][0], due[i]))]


@pytest.mark.timeout(120)
def test_due_timers_fire_once_across_three_workers(fleet: Fleet) -> None:
    """
    Issue 9: 60 timers (12 due times, 5 timers each) parked with no worker running; three workers start at once.

    Every timer fires once across the fleet (one ``timer_fired``, its body run once),
    none before its due time; the workers usually start before the first is due, so
    whichever worker looks first claims each (a slow start makes some late: the same
    assertions hold). A worker claims the
    earliest due timers first, so the timers each worker fired, in the order it fired
    them, are in due order (the claims of three workers interleave; across workers the
    order holds per claim only).
    """
    began = time.monotonic()
    due = _seed_timers(fleet)
    workers = [fleet.spawn() for _ in range(3)]
    for worker in workers:
        fleet.ready(worker)
    store = fleet.store()
    try:
        wait_until(terminal(store, list(due)), 60, "every TimerFlow to end")
    finally:
        store.close()
    fired = _check_timers(fleet, due)
    late = sum(1 for i in due if fired[i][0] - due[i] > 0.1)
    by_worker: dict[int, list[str]] = {}
    for instance_id, (_, pid) in fired.items():
        by_worker.setdefault(pid, []).append(instance_id)
    for pid, mine in by_worker.items():
        order = _due_order(due, fired, mine)
        assert sorted(order) == order, (
            f"worker {pid} fired out of due order: {[round(d - min(due.values()), 1) for d in order]}"
        )
    print(
        f"\n[{fleet.backend}] {len(due)} timers, fired per worker {sorted(len(m) for m in by_worker.values())}, "
        f"{late} more than 0.1 s late: {time.monotonic() - began:.1f} s"
    )


@pytest.mark.timeout(120)
def test_late_timers_fire_in_due_order(fleet: Fleet) -> None:
    """
    Issue 9: 60 timers (12 due times, 5 timers each) all fall due with no worker running; then one worker starts.

    It fires every timer once, late, in due order: sorted by the ``at`` of their
    ``timer_fired`` entries, the instances' due times never decrease (the five of one
    due time in any order among themselves). Then two more workers join and nothing
    fires again.
    """
    began = time.monotonic()
    due = _seed_timers(fleet)
    last = max(due.values())
    wait_until(lambda: time.time() > last + 0.2, 60, "every timer to be past due")
    first = fleet.ready(fleet.spawn())
    store = fleet.store()
    try:
        wait_until(terminal(store, list(due)), 60, "every TimerFlow to end")
        fired = _check_timers(fleet, due)
        assert {first.pid} == {pid for _, pid in fired.values()}
        order = _due_order(due, fired, list(due))
        assert sorted(order) == order, f"fired out of due order: {[round(d - min(due.values()), 1) for d in order]}"
        assert all(at > due[i] for i, (at, _) in fired.items()), "a timer fired on time: it was meant to be late"
        before = {i: store.history(i) for i in due}
        for worker in [fleet.spawn(), fleet.spawn()]:
            fleet.ready(worker)
        # Nothing to poll for: the newcomers must find nothing to fire. Watch the store for a while.
        quiet = time.monotonic() + 0.5
        while time.monotonic() < quiet:
            assert before == {i: store.history(i) for i in due}, "a timer fired again"
            time.sleep(0.1)
    finally:
        store.close()
    assert fired == _check_timers(fleet, due)
    print(
        f"\n[{fleet.backend}] {len(due)} late timers fired in due order by one worker: {time.monotonic() - began:.1f} s"
    )
