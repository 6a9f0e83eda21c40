"""
Durable benchmark: the order example on ``SqliteStore`` against a bare ``sqlite3`` floor, memory, tasks, recovery.

Run by hand from the repository root (not in CI, not as a timed test)::

    python bench/bench_durable.py                  # about 5-8 minutes on a 2-core machine
    python bench/bench_durable.py --quick          # about 1-2 minutes, smaller sizes, scaled targets
    python bench/bench_durable.py --profile        # also: where the durable time goes (timed store, cProfile)
    python bench/bench_durable.py --dbos-python .venv-dbos/bin/python   # DBOS 3.x as a comparator

One run measures everything (issue 3's ``bench/`` bullet and its Targets):
throughput of the order example (amount 500) on ``SqliteStore`` in a temporary
directory, sequential and with 16 and 256 concurrent instances, for
``synchronous=FULL`` and ``NORMAL``, each run paired with the raw floor (a bare
``sqlite3`` loop, WAL, the same ``synchronous``, one UPDATE + one INSERT per
transaction, 8 transactions per instance as in the issue); the resident memory
of 100,000 instances waiting on human tasks; ``tasks(user=...)`` latency for one
user among them; recovery of 10,000+ instances in flight after a SIGKILL.
Figures are medians over ``--runs`` runs; ratios are medians of per-run ratios.
Each target prints PASS/FAIL and the process exits 1 when one is missed.
``bench/README.md`` explains every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import importlib
import importlib.util
import json
import logging
import os
import platform
import pstats
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Literal, Self

import attrs
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.order_process import Approval, InventoryService, Item, OrderProcess, PaymentService, UserService
from statemachine_orch import (
    Ctx,
    Engine,
    EventKind,
    HistoryEvent,
    MemoryStore,
    SqliteStore,
    Workflow,
    human_task,
)

Sync = Literal["FULL", "NORMAL"]
SYNCS: Final[tuple[Sync, ...]] = ("FULL", "NORMAL")
STEPS_RUN: Final = 5  # amount 500: validate, check, payment, update, confirm
FLOOR_COMMITS: Final = 8  # issue 3: "same flow, 8 commits per instance"
STOCK: Final = 10**12
ITEM: Final = Item("BOOK", 1)
BIG_ITEM: Final = Item("LAMP", 1)
MB: Final = 1024 * 1024
HERE: Final = Path(__file__).resolve()

# What the targets say.
SEQ_FLOOR_RATIO: Final = 0.70
CONC_FLOOR_RATIO: Final = 3.0
MEMORY_LIMIT_MB: Final = 50.0
MEMORY_INSTANCES: Final = 100_000
TASKS_LIMIT_MS: Final = 5.0
FIRST_RESUME_S: Final = 1.0
RECOVERY_RATIO: Final = 0.5
DBOS_RATIO: Final = 5.0


# ---------------------------------------------------------------------------- the bench's own workflow


class DirectorReview(Workflow, version="1"):
    """
    A bench-local human task for one user among many: assignee "director", group "finance".

    ``human_task(assignee=...)`` takes one static string per step, so every
    OrderProcess task belongs to "manager"; this workflow puts a few tasks on
    another user so that ``tasks(user="director")`` finds a hundred among
    100,000 open ones.
    """

    order_id: str
    approved: bool = False

    @human_task(assignee="director", candidate_groups=("finance",), form=Approval, initial=True, final=True)
    def director_approval(self, ctx: Ctx, form: Approval) -> None:
        del ctx
        self.approved = form.approved


# ---------------------------------------------------------------------------- small helpers


def configure_logging() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def new_services() -> dict[str, object]:
    """The example's three in-process services, with stock for any number of orders."""
    return {
        "user-service": UserService(),
        "inventory-service": InventoryService(stock={"BOOK": STOCK, "LAMP": STOCK}),
        "payment-service": PaymentService(),
    }


def order(prefix: str, i: int, amount: float = 500.0) -> OrderProcess:
    item = ITEM if amount <= 1000 else BIG_ITEM
    return OrderProcess(order_id=f"{prefix}-{i:07d}", customer_id=f"CUST-{i % 1000:04d}", amount=amount, items=[item])


def proc_status(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", ".lock", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(str(path) + suffix).unlink()


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def spread(xs: Sequence[float]) -> float:
    """(max - min) / median, in percent."""
    m = median(xs)
    return (max(xs) - min(xs)) / m * 100 if xs and m else 0.0


def fs_type(path: Path) -> str:
    """The file system holding *path*, from /proc/mounts (longest mount point that is a prefix)."""
    best, kind = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
    return kind


def scalar(db: sqlite3.Connection, sql: str, args: Sequence[object] = ()) -> int:
    value: int = db.execute(sql, args).fetchone()[0]
    return value


def code_version() -> str:
    """The commit measured, and whether statemachine_orch/ had uncommitted changes."""
    git = ["git", "-C", str(HERE.parent.parent)]
    try:
        head = subprocess.run(  # noqa: S603 - fixed arguments
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603
            [*git, "status", "--porcelain", "--", "statemachine_orch"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown commit"
    return f"commit {head}" + (" + uncommitted changes in statemachine_orch/" if dirty else "")


def child_result(stdout: str) -> dict[str, Any]:
    """The JSON a child prints on its last ``RESULT`` line."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            value: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return value
    msg = f"the child printed no RESULT line:\n{stdout[-2000:]}"
    raise RuntimeError(msg)


def emit(result: dict[str, object]) -> None:
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------- the raw floor

_FLOOR_SCHEMA = (
    (
        "CREATE TABLE instances (id TEXT PRIMARY KEY, state TEXT NOT NULL, status TEXT NOT NULL, "
        "variables TEXT NOT NULL, updated_at REAL NOT NULL)"
    ),
    (
        "CREATE TABLE history (instance_id TEXT NOT NULL, seq INTEGER NOT NULL, at REAL NOT NULL, "
        "kind TEXT NOT NULL, step TEXT, PRIMARY KEY (instance_id, seq)) WITHOUT ROWID"
    ),
)
# The order's variables as the engine stores them (about the same size); built once, outside the timing.
_FLOOR_VARIABLES = json.dumps(
    {
        "order_id": "ORD-0000000",
        "customer_id": "CUST-0000",
        "amount": 500.0,
        "items": [{"sku": "BOOK", "quantity": 1}],
        "validated": True,
        "approved": False,
        "payment_id": "pay-1",
        "confirmation_sent": False,
    }
)


@attrs.frozen
class FloorRun:
    seconds: float
    instances: int
    commits: int
    wal_frames: int = 0  # pages appended to the WAL (only when asked: checkpoints off)


def wal_off(db: sqlite3.Connection) -> None:
    """No automatic checkpoint, an empty WAL: its size then counts the pages every commit appended."""
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def wal_frames(path: Path) -> int:
    """Pages in the WAL file (32-byte header, then 24-byte frame headers + 4096-byte pages)."""
    size = Path(str(path) + "-wal").stat().st_size
    return max(0, size - 32) // (24 + 4096)


def run_floor(path: Path, sync: Sync, n: int, commits_per_instance: int, *, count_pages: bool = False) -> FloorRun:
    """
    The raw floor: per instance, one transaction that INSERTs the instance row and a history row,
    then ``commits_per_instance - 1`` transactions of one UPDATE + one INSERT each. WAL, *sync*.
    """
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={sync}")
        for statement in _FLOOR_SCHEMA:
            db.execute(statement)
        if count_pages:
            wal_off(db)
        ids = [f"I-{i:07d}" for i in range(n)]
        variables = _FLOOR_VARIABLES
        execute = db.execute
        t0 = time.perf_counter()
        for iid in ids:
            now = time.time()
            execute("BEGIN IMMEDIATE")
            execute("INSERT INTO instances VALUES (?, ?, ?, ?, ?)", (iid, "s0", "running", variables, now))
            execute("INSERT INTO history VALUES (?, ?, ?, ?, ?)", (iid, 0, now, "instance_started", None))
            execute("COMMIT")
            for seq in range(1, commits_per_instance):
                now = time.time()
                execute("BEGIN IMMEDIATE")
                execute(
                    "UPDATE instances SET state = ?, status = ?, variables = ?, updated_at = ? WHERE id = ?",
                    (f"s{seq}", "running", variables, now, iid),
                )
                execute("INSERT INTO history VALUES (?, ?, ?, ?, ?)", (iid, seq, now, "transition", f"s{seq}"))
                execute("COMMIT")
        seconds = time.perf_counter() - t0
        frames = wal_frames(path) if count_pages else 0
        rows = scalar(db, "SELECT count(*) FROM history")
    finally:
        db.close()
    if rows != n * commits_per_instance:
        msg = f"floor: {rows} history rows, expected {n * commits_per_instance}"
        raise RuntimeError(msg)
    return FloorRun(seconds, n, n * commits_per_instance, frames)


# ---------------------------------------------------------------------------- the engine


@attrs.frozen
class EngineRun:
    seconds: float
    instances: int
    commits: int  # store commits during the timed part
    records: int  # instance changes those commits carried
    wal_frames: int = 0  # pages appended to the WAL (only when asked: checkpoints off)


def run_engine(
    path: Path,
    sync: Sync,
    n: int,
    clients: int,
    concurrency: int | None,
    prefix: str,
    *,
    count_pages: bool = False,
) -> EngineRun:
    """
    *clients* coroutines, each: ``await engine.start(OrderProcess(...))``, ``await handle.result()``, next.

    One client is the sequential figure. The engine (its workers) is running before the clock starts.
    Afterwards the file is checked: n instances completed, 5 steps recorded for each.
    """

    async def workload() -> EngineRun:
        with SqliteStore(path, synchronous=sync) as store:
            engine = (
                Engine(store, services=new_services())
                if concurrency is None
                else Engine(store, services=new_services(), concurrency=concurrency)
            )
            async with engine:
                numbers = iter(range(n))

                async def client() -> None:
                    for i in numbers:
                        handle = await engine.start(order(prefix, i))
                        await handle.result()

                if count_pages:
                    attr = "_db"  # the store's connection: only to switch checkpoints off here
                    wal_off(getattr(store, attr))
                before = engine.statistics()
                t0 = time.perf_counter()
                await asyncio.gather(*(client() for _ in range(clients)))
                seconds = time.perf_counter() - t0
                after = engine.statistics()
                frames = wal_frames(path) if count_pages else 0
        check_completed(path, n)
        commits = after.commits - before.commits
        return EngineRun(seconds, n, commits, after.committed_records - before.committed_records, frames)

    return asyncio.run(workload())


def check_completed(path: Path, n: int) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        done = scalar(db, "SELECT count(*) FROM instances WHERE status = 'completed'")
        steps = scalar(db, "SELECT count(*) FROM history WHERE kind = 'step_completed'")
    if done != n or steps != n * STEPS_RUN:
        msg = f"engine: {done} of {n} instances completed, {steps} steps recorded (expected {n * STEPS_RUN})"
        raise RuntimeError(msg)


# ---------------------------------------------------------------------------- throughput phase


@attrs.define
class Series:
    """One workload's samples over the runs."""

    key: str
    label: str
    sync: Sync
    kind: Literal["floor", "engine"]
    instances: int
    run: Callable[[Path, str], FloorRun | EngineRun]
    seconds: list[float] = attrs.field(factory=list[float])
    commits: list[int] = attrs.field(factory=list[int])
    records: list[int] = attrs.field(factory=list[int])

    def inst_per_s(self) -> list[float]:
        return [self.instances / s for s in self.seconds]

    def steps_per_s(self) -> list[float]:
        """Engine: step bodies run per second (5 per instance). Floor: transactions per second (one per step)."""
        if self.kind == "floor":
            return [c / s for c, s in zip(self.commits, self.seconds, strict=True)]
        return [self.instances * STEPS_RUN / s for s in self.seconds]


@attrs.frozen
class Sizes:
    runs: int
    floor: dict[Sync, int]
    seq: dict[Sync, int]
    c16: dict[Sync, int]
    c256: dict[Sync, int]
    memory: int
    director: int
    queries: int
    recovery: int
    recovery_runs: int
    dbos: int


def default_sizes(quick: bool) -> Sizes:
    if quick:
        return Sizes(
            runs=3,
            floor={"FULL": 40, "NORMAL": 300},
            seq={"FULL": 40, "NORMAL": 300},
            c16={"FULL": 400, "NORMAL": 600},
            c256={"FULL": 1500, "NORMAL": 1500},
            memory=10_000,
            director=100,
            queries=31,
            recovery=2_000,
            recovery_runs=1,
            dbos=20,
        )
    return Sizes(
        runs=5,
        floor={"FULL": 120, "NORMAL": 1000},
        seq={"FULL": 120, "NORMAL": 1000},
        c16={"FULL": 1500, "NORMAL": 2000},
        c256={"FULL": 4000, "NORMAL": 4000},
        memory=MEMORY_INSTANCES,
        director=100,
        queries=51,
        recovery=10_000,
        recovery_runs=3,
        dbos=60,
    )


def make_series(sizes: Sizes, engine_commits: float) -> list[Series]:
    """The workloads of one run, per synchronous setting: two floors and three engine loads."""
    out: list[Series] = []
    k = max(1, round(engine_commits))
    for sync in SYNCS:
        nf, ns, n16, n256 = sizes.floor[sync], sizes.seq[sync], sizes.c16[sync], sizes.c256[sync]

        def floor8(path: Path, _: str, sync: Sync = sync, n: int = nf) -> FloorRun:
            return run_floor(path, sync, n, FLOOR_COMMITS)

        def floor_k(path: Path, _: str, sync: Sync = sync, n: int = nf) -> FloorRun:
            return run_floor(path, sync, n, k)

        def seq(path: Path, prefix: str, sync: Sync = sync, n: int = ns) -> EngineRun:
            return run_engine(path, sync, n, 1, None, prefix)

        def c16(path: Path, prefix: str, sync: Sync = sync, n: int = n16) -> EngineRun:
            return run_engine(path, sync, n, 16, 16, prefix)

        def c256(path: Path, prefix: str, sync: Sync = sync, n: int = n256) -> EngineRun:
            return run_engine(path, sync, n, 256, 256, prefix)

        out += [
            Series("floor", f"raw floor, {FLOOR_COMMITS} commits/inst (issue)", sync, "floor", nf, floor8),
            Series("floor_k", f"raw floor, {k} commits/inst (= engine's)", sync, "floor", nf, floor_k),
            Series("seq", "engine, sequential", sync, "engine", ns, seq),
            Series("c16", "engine, 16 concurrent (concurrency=16)", sync, "engine", n16, c16),
            Series("c256", "engine, 256 concurrent (concurrency=256)", sync, "engine", n256, c256),
        ]
    return out


def record(series: Series, result: FloorRun | EngineRun) -> None:
    series.seconds.append(result.seconds)
    series.commits.append(result.commits)
    series.records.append(result.records if isinstance(result, EngineRun) else result.commits)


def throughput_phase(tmp: Path, sizes: Sizes) -> tuple[list[Series], float]:
    """Warm up, count the engine's commits per instance, then run every workload --runs times."""
    warm = tmp / "warm.db"
    probe = run_engine(warm, "NORMAL", 20, 1, None, "warm")
    remove_db(warm)
    commits_per_instance = probe.commits / probe.instances
    run_engine(warm, "NORMAL", 300, 32, 32, "warm2")
    remove_db(warm)
    run_floor(warm, "NORMAL", 50, FLOOR_COMMITS)
    remove_db(warm)

    series = make_series(sizes, commits_per_instance)
    by_sync = {sync: [s for s in series if s.sync == sync] for sync in SYNCS}
    for run in range(sizes.runs):
        syncs = SYNCS if run % 2 == 0 else SYNCS[::-1]
        for sync in syncs:
            floor8, floor_k, seq, *rest = by_sync[sync]
            # The floor and the sequential engine back to back, alternating which goes first.
            pair = [floor8, seq] if run % 2 == 0 else [seq, floor8]
            k = run % len(rest)
            for s in [*pair, floor_k, *rest[k:], *rest[:k]]:
                path = tmp / f"{s.key}-{sync}-{run}.db"
                gc.collect()
                record(s, s.run(path, f"{s.key}{run}"))
                remove_db(path)
        print(f"  throughput run {run + 1}/{sizes.runs} done", flush=True)
    return series, commits_per_instance


def paired(num: list[float], den: list[float]) -> float:
    return median([x / y for x, y in zip(num, den, strict=True)])


# ---------------------------------------------------------------------------- memory and tasks (child process)


async def seed_orders(engine: Engine, n: int, prefix: str, amount: float, batch: int) -> None:
    """Start *n* orders through the engine in batches (each batch one group of concurrent starts)."""
    for start in range(0, n, batch):
        await asyncio.gather(*(engine.start(order(prefix, i, amount)) for i in range(start, min(n, start + batch))))
        await engine.wait_idle()


def timed_calls(fn: Callable[[], object], count: int) -> list[float]:
    """*count* timed calls of *fn* (after 3 untimed ones), in milliseconds."""
    for _ in range(3):
        fn()
    out: list[float] = []
    for _ in range(count):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


async def warm_up_engine(directory: Path) -> None:
    """Run every code path once on a throw-away file: imports, cattrs hooks, SQLite's code."""
    path = directory / "warm-memory.db"
    with SqliteStore(path) as store:
        async with Engine(store, services=new_services(), concurrency=64) as engine:
            await seed_orders(engine, 200, "warm-big", 5000.0, 100)
            await seed_orders(engine, 200, "warm-small", 500.0, 100)
            await asyncio.gather(*(engine.start(DirectorReview(order_id=f"W-{i}")) for i in range(10)))
            await engine.wait_idle()
            engine.tasks(user="director")
            engine.tasks(user="alice", groups=("finance",))
    remove_db(path)


def child_memory(directory: Path, n: int, directors: int, queries: int, sync: Sync) -> None:
    """
    RSS of an engine process before and after *n* orders park at the manager's approval task.

    Then *directors* DirectorReview tasks are added and tasks(user=...) is timed.
    """
    configure_logging()

    async def main() -> dict[str, object]:
        await warm_up_engine(directory)
        path = directory / "memory.db"
        with SqliteStore(path, synchronous=sync) as store:
            async with Engine(store, services=new_services(), concurrency=256) as engine:
                await engine.wait_idle()
                gc.collect()
                rss_empty = proc_status("VmRSS")
                t0 = time.perf_counter()
                await seed_orders(engine, n, "MEM", 5000.0, 2000)
                seed_seconds = time.perf_counter() - t0
                seed_commits = engine.statistics().commits
                gc.collect()
                rss_full = proc_status("VmRSS")
                hwm = proc_status("VmHWM")
                live = engine.statistics().live
                await asyncio.gather(*(engine.start(DirectorReview(order_id=f"D-{i}")) for i in range(directors)))
                await engine.wait_idle()
                with contextlib.closing(sqlite3.connect(path)) as db:
                    open_tasks = scalar(db, "SELECT count(*) FROM tasks WHERE status = 'open'")
                    waiting = scalar(db, "SELECT count(*) FROM instances WHERE status = 'waiting'")
                found = len(engine.tasks(user="director"))
                by_group = len(engine.tasks(user="alice", groups=("finance",)))
                director_ms = timed_calls(lambda: engine.tasks(user="director"), queries)
                group_ms = timed_calls(lambda: engine.tasks(user="alice", groups=("finance",)), queries)
                nobody_ms = timed_calls(lambda: engine.tasks(user="nobody"), queries)
                t1 = time.perf_counter()
                manager_count = len(engine.tasks(user="manager"))
                manager_ms = (time.perf_counter() - t1) * 1e3
                rss_after_manager = proc_status("VmRSS")
        return {
            "n": n,
            "rss_empty_kib": rss_empty,
            "rss_full_kib": rss_full,
            "hwm_kib": hwm,
            "live_records": live,
            "seed_seconds": seed_seconds,
            "seed_commits": seed_commits,
            "waiting": waiting,
            "open_tasks": open_tasks,
            "director_found": found,
            "group_found": by_group,
            "director_ms": director_ms,
            "group_ms": group_ms,
            "nobody_ms": nobody_ms,
            "manager_count": manager_count,
            "manager_ms": manager_ms,
            "rss_after_manager_kib": rss_after_manager,
            "db_bytes": path.stat().st_size,
        }

    emit(asyncio.run(main()))


def child_reopen(directory: Path, seeded: Path) -> None:
    """RSS of a fresh process: an engine on an empty file, then an engine on the seeded file."""
    configure_logging()

    async def main() -> dict[str, object]:
        await warm_up_engine(directory)
        empty = directory / "empty.db"
        with SqliteStore(empty) as store:
            async with Engine(store, services=new_services(), concurrency=256) as engine:
                engine.tasks(user="director")
                gc.collect()
                rss_empty = proc_status("VmRSS")
        remove_db(empty)
        gc.collect()
        with SqliteStore(seeded) as store:
            async with Engine(store, services=new_services(), concurrency=256) as engine:
                report = await engine.recover()
                found = len(engine.tasks(user="director"))
                gc.collect()
                rss_full = proc_status("VmRSS")
                live = engine.statistics().live
        return {
            "rss_empty_kib": rss_empty,
            "rss_full_kib": rss_full,
            "resumed": report.resumed,
            "live_records": live,
            "director_found": found,
        }

    emit(asyncio.run(main()))


@attrs.frozen
class Memory:
    n: int
    seed_seconds: float
    seed_commits: int
    delta_mb: float
    rss_empty_mb: float
    rss_full_mb: float
    hwm_mb: float
    live_records: int
    waiting: int
    open_tasks: int
    director_found: int
    group_found: int
    director_ms: list[float]
    group_ms: list[float]
    nobody_ms: list[float]
    manager_count: int
    manager_ms: float
    reopen_delta_mb: float
    reopen_live: int
    db_mb: float


def memory_phase(tmp: Path, sizes: Sizes, sync: Sync = "FULL") -> Memory:
    directory = tmp / "memory"
    directory.mkdir()
    cmd = [sys.executable, str(HERE), "--child", "memory", "--dir", str(directory)]
    cmd += ["--n", str(sizes.memory), "--directors", str(sizes.director), "--queries", str(sizes.queries)]
    cmd += ["--sync", sync]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=3600)  # noqa: S603 - our own script
    if done.returncode != 0:
        msg = f"memory child failed ({done.returncode}):\n{done.stderr[-3000:]}"
        raise RuntimeError(msg)
    m = child_result(done.stdout)
    cmd = [
        sys.executable,
        str(HERE),
        "--child",
        "reopen",
        "--dir",
        str(directory),
        "--db",
        str(directory / "memory.db"),
    ]
    again = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)  # noqa: S603
    if again.returncode != 0:
        msg = f"reopen child failed ({again.returncode}):\n{again.stderr[-3000:]}"
        raise RuntimeError(msg)
    r = child_result(again.stdout)
    shutil.rmtree(directory, ignore_errors=True)
    return Memory(
        n=int(m["n"]),
        seed_seconds=float(m["seed_seconds"]),
        seed_commits=int(m["seed_commits"]),
        delta_mb=(int(m["rss_full_kib"]) - int(m["rss_empty_kib"])) / 1024,
        rss_empty_mb=int(m["rss_empty_kib"]) / 1024,
        rss_full_mb=int(m["rss_full_kib"]) / 1024,
        hwm_mb=int(m["hwm_kib"]) / 1024,
        live_records=int(m["live_records"]),
        waiting=int(m["waiting"]),
        open_tasks=int(m["open_tasks"]),
        director_found=int(m["director_found"]),
        group_found=int(m["group_found"]),
        director_ms=[float(x) for x in m["director_ms"]],
        group_ms=[float(x) for x in m["group_ms"]],
        nobody_ms=[float(x) for x in m["nobody_ms"]],
        manager_count=int(m["manager_count"]),
        manager_ms=float(m["manager_ms"]),
        reopen_delta_mb=(int(r["rss_full_kib"]) - int(r["rss_empty_kib"])) / 1024,
        reopen_live=int(r["live_records"]),
        db_mb=int(m["db_bytes"]) / MB,
    )


# ---------------------------------------------------------------------------- recovery (child processes)


def child_kill_worker(db: Path, n: int) -> None:
    """
    Start orders in batches of 500 while the engine runs them, until >= n are in flight in the file.

    Then print READY and freeze (the event loop blocked, as at any instant of a
    crash): the parent SIGKILLs this process. What was not committed is lost.
    """
    configure_logging()

    async def main() -> None:
        store = SqliteStore(db)
        engine = Engine(store, services=new_services())
        await engine.recover()
        started = 0
        in_flight = 0
        t0 = time.perf_counter()
        while in_flight < n + 256:
            await asyncio.gather(*(engine.start(order("REC", started + i)) for i in range(500)))
            started += 500
            await asyncio.sleep(0)
            in_flight = len(store.in_flight())
        # Let the workers run on for a random moment, so the kill lands anywhere in a step or a commit.
        await asyncio.sleep(random.uniform(0.0, 0.05))
        print(f"READY {in_flight} {started} {time.perf_counter() - t0:.3f}", flush=True)
        time.sleep(600)  # frozen until SIGKILL  # noqa: ASYNC251 - blocking the loop is the point

    asyncio.run(main())


def child_recover(db: Path) -> None:
    """A new engine on a killed worker's file: time to the first resumed step, and until all are done."""
    configure_logging()
    marks: dict[str, float] = {}
    counts = {"steps": 0, "completed": 0}

    def on_event(instance_id: str, event: HistoryEvent) -> None:
        del instance_id
        kind = event.kind
        if kind is EventKind.STEP_STARTED:
            marks.setdefault("first_step", time.perf_counter())
        elif kind is EventKind.STEP_COMPLETED:
            counts["steps"] += 1
        elif kind is EventKind.TRANSITION:
            marks.setdefault("first_transition", time.perf_counter())
        elif kind is EventKind.STATUS_CHANGED and event.detail == "completed":
            counts["completed"] += 1
            marks.setdefault("first_completed", time.perf_counter())

    async def main() -> dict[str, object]:
        t0 = time.perf_counter()
        store = SqliteStore(db)
        engine = Engine(store, services=new_services())
        engine.subscribe(on_event)
        t_open = time.perf_counter()
        report = await engine.recover()
        t_recovered = time.perf_counter()
        rss_recovered = proc_status("VmRSS")
        await engine.wait_idle()
        t_done = time.perf_counter()
        await engine.aclose()
        store.close()
        return {
            "resumed": report.resumed,
            "orphaned": len(report.orphaned),
            "open_s": t_open - t0,
            "recover_s": t_recovered - t0,
            "first_step_s": marks.get("first_step", t_done) - t0,
            "first_transition_s": marks.get("first_transition", t_done) - t0,
            "first_completed_s": marks.get("first_completed", t_done) - t0,
            "total_s": t_done - t0,
            "steps": counts["steps"],
            "completed": counts["completed"],
            "rss_recovered_kib": rss_recovered,
            "hwm_kib": proc_status("VmHWM"),
        }

    emit(asyncio.run(main()))


@attrs.frozen
class Recovery:
    in_flight: int
    started: int
    completed_before: int
    states: dict[str, int]
    seed_seconds: float
    resumed: int
    first_step_s: float
    first_transition_s: float
    first_completed_s: float
    recover_s: float
    total_s: float
    steps: int
    hwm_mb: float

    @property
    def inst_per_s(self) -> float:
        # Every instance in flight is resumed: recover() claims the first batch,
        # the fleet loop the rest (issue 9), so count them all.
        return self.in_flight / self.total_s

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.total_s


def recovery_run(tmp: Path, n: int, run: int) -> Recovery:
    db = tmp / f"recover-{run}.db"
    cmd = [sys.executable, str(HERE), "--child", "kill-worker", "--db", str(db), "--n", str(n)]
    worker = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # noqa: S603
    assert worker.stdout is not None  # noqa: S101 - PIPE
    line = worker.stdout.readline()
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    if not line.startswith("READY"):
        err = worker.stderr.read() if worker.stderr else ""
        msg = f"kill-worker did not get ready: {line!r}\n{err[-3000:]}"
        raise RuntimeError(msg)
    _, _, started_s, seed_s = line.split()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        in_flight = scalar(conn, "SELECT count(*) FROM instances WHERE status = 'running' AND wake_at IS NULL")
        completed_before = scalar(conn, "SELECT count(*) FROM instances WHERE status = 'completed'")
        states = {
            str(s): int(c)
            for s, c in conn.execute(
                "SELECT state, count(*) FROM instances WHERE status = 'running' GROUP BY state ORDER BY 2 DESC"
            )
        }
    cmd = [sys.executable, str(HERE), "--child", "recover", "--db", str(db)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=1200)  # noqa: S603
    if done.returncode != 0:
        msg = f"recover child failed ({done.returncode}):\n{done.stderr[-3000:]}"
        raise RuntimeError(msg)
    r = child_result(done.stdout)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        total = scalar(conn, "SELECT count(*) FROM instances")
        completed = scalar(conn, "SELECT count(*) FROM instances WHERE status = 'completed'")
        bad = scalar(
            conn,
            "SELECT count(*) FROM (SELECT instance_id FROM history WHERE kind = 'step_completed' "
            "GROUP BY instance_id HAVING count(*) != ?)",
            (STEPS_RUN,),
        )
    remove_db(db)
    # recover() claims what its workers can run at once (concurrency); the fleet
    # loop claims the rest as they free up (issue 9): every one must complete.
    if completed != total or bad or not 0 < int(r["resumed"]) <= in_flight:
        msg = (
            f"recovery: {completed} of {total} completed, {bad} instances without exactly {STEPS_RUN} "
            f"recorded steps, {r['resumed']} resumed of {in_flight} in flight"
        )
        raise RuntimeError(msg)
    return Recovery(
        in_flight=in_flight,
        started=int(started_s),
        completed_before=completed_before,
        states=states,
        seed_seconds=float(seed_s),
        resumed=int(r["resumed"]),
        first_step_s=float(r["first_step_s"]),
        first_transition_s=float(r["first_transition_s"]),
        first_completed_s=float(r["first_completed_s"]),
        recover_s=float(r["recover_s"]),
        total_s=float(r["total_s"]),
        steps=int(r["steps"]),
        hwm_mb=int(r["hwm_kib"]) / 1024,
    )


# ---------------------------------------------------------------------------- the DBOS comparator


@attrs.frozen
class Dbos:
    version: str
    journal: str
    seconds: list[float]
    instances: int

    def inst_per_s(self) -> list[float]:
        return [self.instances / s for s in self.seconds]


def find_dbos_python(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    if importlib.util.find_spec("dbos") is not None:
        return sys.executable
    return None


def dbos_phase(tmp: Path, python: str, sizes: Sizes) -> tuple[list[Dbos], str]:
    out: list[Dbos] = []
    notes: list[str] = []
    for journal in ("delete", "wal"):
        directory = tmp / f"dbos-{journal}"
        directory.mkdir()
        cmd = [python, str(HERE.parent / "dbos_order.py"), "--dir", str(directory), "--journal", journal]
        cmd += ["--n", str(sizes.dbos), "--runs", str(sizes.runs)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=1200)  # noqa: S603
        except (OSError, subprocess.TimeoutExpired) as exc:
            notes.append(f"{journal}: {type(exc).__name__}: {exc}")
            continue
        if done.returncode != 0:
            notes.append(f"{journal}: exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
            continue
        r = child_result(done.stdout)
        out.append(Dbos(str(r["version"]), journal, [float(x) for x in r["seconds"]], int(r["n"])))
        shutil.rmtree(directory, ignore_errors=True)
    return out, "; ".join(notes)


# ---------------------------------------------------------------------------- report


def report_throughput(series: list[Series], engine_commits: float) -> None:
    print()
    print(
        f"{'sync':<7}{'workload':<45}{'inst':>6}{'inst/s':>9}{'spread':>7}{'steps/s':>9}"
        f"{'commits/inst':>13}{'inst/commit':>12}{'inst/s vs':>11}{'steps/s vs':>11}"
    )
    print(f"{'':<88}{'floor':>11}{'floor':>11}")
    for sync in SYNCS:
        rows = [s for s in series if s.sync == sync]
        floor = rows[0]
        for s in rows:
            ips = s.inst_per_s()
            commits_per_inst = median([c / s.instances for c in s.commits])
            per_commit = median([r / c for r, c in zip(s.records, s.commits, strict=True)])
            inst_ratio = paired(ips, floor.inst_per_s())
            step_ratio = paired(s.steps_per_s(), floor.steps_per_s())
            print(
                f"{sync:<7}{s.label:<45}{s.instances:>6}{median(ips):>9,.0f}{spread(ips):>6.0f}%"
                f"{median(s.steps_per_s()):>9,.0f}{commits_per_inst:>13.3f}"
                f"{per_commit if s.kind == 'engine' else 1.0:>12.1f}{inst_ratio:>10.2f}x{step_ratio:>10.2f}x"
            )
        us_commit = 1e6 / median(floor.steps_per_s())
        by_key = {s.key: s for s in rows}
        equal = paired(by_key["seq"].inst_per_s(), by_key["floor_k"].inst_per_s())
        print(
            f"{'':<7}(raw floor: {us_commit:,.0f} us per commit, one UPDATE + one INSERT, WAL, synchronous={sync}; "
            f"engine sequential / floor at the engine's commit count: {equal:.2f}x)"
        )
    print(
        f"steps/s: engine = step bodies run (5 per instance); floor = its transactions (one UPDATE + one INSERT "
        f"each, {FLOOR_COMMITS} per instance) -- the issue's own unit, the stricter comparison.\n"
        f"The engine makes {engine_commits:.1f} commits per instance run alone (statistics().commits; start, then one "
        "per step); with concurrent instances one commit carries many (inst/commit).\n"
        "ratios: medians of per-run ratios against the floor of the same run (the sequential engine and the floor run "
        "back to back)."
    )


@attrs.frozen
class Target:
    name: str
    measured: str
    ok: bool | None  # None: not measured (skipped)


def build_targets(
    series: list[Series],
    memory: Memory | None,
    recovery: list[Recovery],
    dbos: list[Dbos],
) -> list[Target]:
    full = {s.key: s for s in series if s.sync == "FULL"}
    floor, seq, c256 = full["floor"], full["seq"], full["c256"]
    rows: list[Target] = []
    r1 = paired(seq.inst_per_s(), floor.inst_per_s())
    rows.append(
        Target(
            f"sequential FULL inst/s >= {SEQ_FLOOR_RATIO:.0%} of the raw floor",
            f"{r1:.2f}x ({median(seq.inst_per_s()):,.0f} vs {median(floor.inst_per_s()):,.0f} inst/s)",
            r1 >= SEQ_FLOOR_RATIO,
        )
    )
    r2 = paired(c256.steps_per_s(), floor.steps_per_s())
    rows.append(
        Target(
            f"256 concurrent FULL steps/s >= {CONC_FLOOR_RATIO:.0f}x the floor's steps/s",
            f"{r2:.2f}x ({median(c256.steps_per_s()):,.0f} vs {median(floor.steps_per_s()):,.0f} steps/s)",
            r2 >= CONC_FLOOR_RATIO,
        )
    )
    if memory is not None:
        fewer = "" if memory.n >= MEMORY_INSTANCES else f" (only {memory.n:,}: the target is for 100,000)"
        rows.append(
            Target(
                f"{memory.n:,} waiting instances: RSS <= {MEMORY_LIMIT_MB:.0f} MB above an empty engine{fewer}",
                f"{memory.delta_mb:+.1f} MB",
                memory.delta_mb <= MEMORY_LIMIT_MB,
            )
        )
        d = median(memory.director_ms)
        rows.append(
            Target(
                f"tasks(user=...) for one user among {memory.open_tasks:,} open tasks <= {TASKS_LIMIT_MS:.0f} ms (median)",
                f"{d:.2f} ms",
                d <= TASKS_LIMIT_MS,
            )
        )
    else:
        rows.append(Target("memory and tasks(user=...)", "skipped (--skip-memory)", None))
    if recovery:
        first = median([r.first_step_s for r in recovery])
        n = median([r.in_flight for r in recovery])
        rows.append(
            Target(
                f"restart with {n:,.0f} in flight: first instance resumes <= {FIRST_RESUME_S:.0f} s",
                f"{first:.2f} s",
                first <= FIRST_RESUME_S,
            )
        )
        r3 = median([r.inst_per_s for r in recovery]) / median(seq.inst_per_s())
        rows.append(
            Target(
                f"recovery throughput >= {RECOVERY_RATIO:.0%} of sequential FULL inst/s",
                f"{r3:.2f}x ({median([r.inst_per_s for r in recovery]):,.0f} vs {median(seq.inst_per_s()):,.0f} inst/s)",
                r3 >= RECOVERY_RATIO,
            )
        )
    else:
        rows.append(Target("recovery", "skipped (--skip-recovery)", None))
    wal = [d for d in dbos if d.journal == "wal"]
    if wal:
        dbos_ips = median(wal[0].inst_per_s())
        r4 = median(seq.inst_per_s()) / dbos_ips
        bound = median(floor.inst_per_s()) / dbos_ips
        rows.append(
            Target(
                f"(info) sequential FULL vs DBOS on SQLite, WAL (issue: >= {DBOS_RATIO:.0f}x, implied by the first "
                "target on its disk)",
                f"{r4:.2f}x; the raw floor itself is {bound:.2f}x DBOS on this disk",
                None,
            )
        )
    else:
        rows.append(Target(f"(info) sequential FULL vs DBOS on SQLite (issue: >= {DBOS_RATIO:.0f}x)", "no DBOS", None))
    return rows


def report_memory(memory: Memory) -> None:
    print()
    print(
        f"memory: {memory.n:,} OrderProcess instances (amount 5000) waiting on the manager's task, seeded through "
        f"the engine (concurrency 256, batches of 2,000) in {memory.seed_seconds:.1f} s "
        f"({memory.n / memory.seed_seconds:,.0f} inst/s, {memory.seed_commits:,} commits)"
    )
    print(
        f"  RSS empty engine {memory.rss_empty_mb:.1f} MB -> with {memory.n:,} waiting {memory.rss_full_mb:.1f} MB: "
        f"{memory.delta_mb:+.1f} MB ({memory.delta_mb * MB / memory.n:,.0f} B/instance); peak (VmHWM) "
        f"{memory.hwm_mb:.1f} MB; records left in memory: {memory.live_records}; file {memory.db_mb:.0f} MB"
    )
    print(
        f"  a fresh process: engine on the seeded file vs on an empty file: {memory.reopen_delta_mb:+.1f} MB "
        f"(records in memory after recover(): {memory.reopen_live})"
    )
    print(
        f"tasks: {memory.open_tasks:,} open ({memory.waiting:,} waiting instances): {memory.manager_count:,} for "
        f"'manager' (OrderProcess's static assignee), {memory.director_found} for 'director' (bench-local "
        "DirectorReview, assignee 'director', group 'finance')"
    )
    for label, xs in (
        ('tasks(user="director")', memory.director_ms),
        ('tasks(user="alice", groups=("finance",))', memory.group_ms),
        ('tasks(user="nobody")  (no task)', memory.nobody_ms),
    ):
        print(f"  {label:<44} median {median(xs):7.2f} ms  min {min(xs):6.2f}  max {max(xs):7.2f}  ({len(xs)} calls)")
    print(
        f'  tasks(user="manager")  ({memory.manager_count:,} tasks returned, once) {memory.manager_ms:9.0f} ms '
        f"({memory.manager_ms * 1e3 / max(1, memory.manager_count):.1f} us per task)"
    )


def report_recovery(recovery: list[Recovery], seq_full: float) -> None:
    print()
    print(
        f"recovery ({len(recovery)} run(s)): a worker process (FULL, concurrency 64) starts orders in batches of 500 "
        "while running them; once enough are in flight in the file it runs on for a random 0-50 ms, freezes and "
        "is SIGKILLed."
    )
    for i, r in enumerate(recovery, start=1):
        where = ", ".join(f"{k} {v:,}" for k, v in list(r.states.items())[:6])
        print(
            f"  run {i}: {r.started:,} started in {r.seed_seconds:.1f} s, {r.completed_before:,} completed before "
            f"the kill; in flight at: {where}"
        )
    print(f"  {'run':>4}{'in flight':>10}{'open+load':>10}{'1st step':>10}{'1st trans':>10}{'1st done':>10}", end="")
    print(f"{'total':>8}{'inst/s':>9}{'steps/s':>9}{'peak RSS':>10}")
    for i, r in enumerate(recovery, start=1):
        print(
            f"  {i:>4}{r.in_flight:>10,}{r.recover_s:>9.2f}s{r.first_step_s:>9.2f}s{r.first_transition_s:>9.2f}s"
            f"{r.first_completed_s:>9.2f}s{r.total_s:>7.1f}s{r.inst_per_s:>9,.0f}{r.steps_per_s:>9,.0f}"
            f"{r.hwm_mb:>8.0f}MB"
        )
    print(
        "  times from the new process opening the file (imports excluded): 'open+load' = SqliteStore + Engine + "
        "recover() returned (it loads every in-flight record before any runs); '1st step' = first resumed step "
        "started; every instance then checked completed with exactly 5 steps recorded"
    )
    per_record = median([r.recover_s / r.in_flight * 1e6 for r in recovery])
    print(
        f"  recover() loads every in-flight record before the first step: {per_record:.0f} us per record, so the "
        f"first step would start after {FIRST_RESUME_S:.0f} s from about {FIRST_RESUME_S * 1e6 / per_record:,.0f} "
        "instances in flight"
    )
    print(
        f"  resumed inst/s / sequential FULL inst/s = {median([r.inst_per_s for r in recovery]) / seq_full:.2f}x "
        "(the resumed instances run concurrently, concurrency 64)"
    )


def report_dbos(dbos: list[Dbos], note: str, seq_full: float, floor_full: float) -> None:
    print()
    if not dbos:
        print(f"DBOS: not measured ({note or 'no interpreter with dbos: see --dbos-python'})")
        return
    for d in dbos:
        ips = median(d.inst_per_s())
        print(
            f"DBOS {d.version}, SQLite journal={d.journal}, synchronous FULL (SQLite's default), sequential, "
            f"{d.instances} x {len(d.seconds)} runs: {ips:,.1f} inst/s ({ips * STEPS_RUN:,.0f} steps/s); "
            f"{ips / floor_full:.2f}x the FULL floor; engine sequential FULL / DBOS = {seq_full / ips:.2f}x"
        )
    if note:
        print(f"  DBOS notes: {note}")


def report_targets(rows: list[Target]) -> int:
    print()
    print("targets (issue 3):")
    for t in rows:
        mark = "INFO" if t.ok is None else ("PASS" if t.ok else "FAIL")
        print(f"  {mark}  {t.name:<78} measured {t.measured}")
    missed = sum(1 for t in rows if t.ok is False)
    print(f"{missed} target(s) missed" if missed else "all measured targets met")
    return missed


# ---------------------------------------------------------------------------- --profile


class _TimedCursorSource:
    """Stands in for SqliteStore's sqlite3 connection and times each statement by kind."""

    def __init__(self, db: sqlite3.Connection, totals: dict[str, float], calls: dict[str, int]) -> None:
        self._db = db
        self._totals = totals
        self._calls = calls

    @staticmethod
    def kind(sql: str) -> str:
        s = " ".join(sql.split())[:60]
        for prefix, name in (
            ("COMMIT", "sql COMMIT (WAL append + fsync)"),
            ("BEGIN", "sql BEGIN IMMEDIATE"),
            ("INSERT INTO instances", "sql UPSERT instance row"),
            ("INSERT INTO history", "sql INSERT history rows"),
            ("INSERT OR REPLACE INTO tasks", "sql task writes"),
            ("INSERT OR IGNORE INTO task_groups", "sql task writes"),
            ("SELECT min(wake_at)", "sql SELECT next_wake (timers)"),
            ("SELECT workflow, version, state", "sql SELECT load() a record"),
            ("SELECT id FROM instances WHERE status IN", "sql SELECT in_flight"),
        ):
            if s.startswith(prefix):
                return name
        return "sql other: " + s[:30]

    def _timed(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            self._totals[name] = self._totals.get(name, 0.0) + time.perf_counter() - t0
            self._calls[name] = self._calls.get(name, 0) + 1

    def execute(self, sql: str, args: Sequence[object] = ()) -> Any:
        return self._timed(self.kind(sql), lambda: self._db.execute(sql, args))

    def executemany(self, sql: str, rows: Any) -> Any:
        return self._timed(self.kind(sql), lambda: self._db.executemany(sql, rows))

    @property
    def in_transaction(self) -> bool:
        return self._db.in_transaction

    def close(self) -> None:
        self._db.close()


class _Patched:
    """Wrap functions of the store's module with timers (only for --profile; restored on exit)."""

    def __init__(self, totals: dict[str, float], calls: dict[str, int]) -> None:
        self.module: Any = importlib.import_module("statemachine_orch._store_sqlite")
        self.totals = totals
        self.calls = calls
        self.saved: dict[str, Any] = {}

    def wrap(self, name: str, fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        totals, calls = self.totals, self.calls

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[label] = totals.get(label, 0.0) + time.perf_counter() - t0
                calls[label] = calls.get(label, 0) + 1

        del name
        return timed

    def __enter__(self) -> Self:
        mod = self.module
        real_json: Any = json
        timed_json = type(
            "TimedJson",
            (),
            {
                "dumps": staticmethod(self.wrap("dumps", real_json.dumps, "json.dumps")),
                "loads": staticmethod(self.wrap("loads", real_json.loads, "json.loads")),
            },
        )
        for name, label in (("json", ""), ("unstructure", "cattrs unstructure"), ("structure", "cattrs structure")):
            original = getattr(mod, name, None)
            if original is None:  # the store changed: time what is still there
                continue
            self.saved[name] = original
            setattr(mod, name, timed_json if name == "json" else self.wrap(name, original, label))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, value in self.saved.items():
            setattr(self.module, name, value)


def profile_breakdown(tmp: Path, sync: Sync, n: int, clients: int) -> None:
    """Where the wall time of one workload goes: SQL statements by kind, serialisation, the rest."""
    totals: dict[str, float] = {}
    calls: dict[str, int] = {}
    path = tmp / f"profile-{sync}-{clients}.db"
    concurrency = None if clients == 1 else clients

    async def workload() -> tuple[float, int]:
        with SqliteStore(path, synchronous=sync) as store, _Patched(totals, calls):
            attr = "_db"  # the store's sqlite3 connection; if it is renamed, SQL is not broken down
            db = getattr(store, attr, None)
            if isinstance(db, sqlite3.Connection):
                setattr(store, attr, _TimedCursorSource(db, totals, calls))
            engine = (
                Engine(store, services=new_services())
                if concurrency is None
                else Engine(store, services=new_services(), concurrency=concurrency)
            )
            async with engine:
                numbers = iter(range(n))

                async def client() -> None:
                    for i in numbers:
                        handle = await engine.start(order("P", i))
                        await handle.result()

                totals.clear()
                calls.clear()
                c0 = engine.statistics().commits
                t0 = time.perf_counter()
                await asyncio.gather(*(client() for _ in range(clients)))
                wall = time.perf_counter() - t0
                commits = engine.statistics().commits - c0
        return wall, commits

    wall, commits = asyncio.run(workload())
    remove_db(path)
    measured = sum(totals.values())
    print()
    print(
        f"where the time goes: {sync}, {'sequential' if clients == 1 else f'{clients} concurrent'}, {n} instances, "
        f"{commits / n:.3f} commits/inst: {wall / n * 1e6:,.0f} us per instance"
    )
    print(f"  {'us/inst':>9} {'share':>6} {'calls/inst':>10}  what")
    for name, total in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {total / n * 1e6:9.1f} {total / wall:6.1%} {calls[name] / n:10.2f}  {name}")
    rest = wall - measured
    print(
        f"  {rest / n * 1e6:9.1f} {rest / wall:6.1%} {'':>10}  the rest: engine, transitions, asyncio, step bodies, "
        "the client's start()/result()"
    )
    print(
        "  (json/cattrs rows are the store's calls only, nested inside no SQL row; the SQL rows time execute()/executemany())"
    )


def profile_cprofile(tmp: Path, sync: Sync, n: int, clients: int, top: int = 25) -> None:
    path = tmp / f"cprofile-{sync}-{clients}.db"
    prof = cProfile.Profile()
    concurrency = None if clients == 1 else clients

    async def workload() -> None:
        with SqliteStore(path, synchronous=sync) as store:
            engine = (
                Engine(store, services=new_services())
                if concurrency is None
                else Engine(store, services=new_services(), concurrency=concurrency)
            )
            async with engine:
                numbers = iter(range(n))

                async def client() -> None:
                    for i in numbers:
                        handle = await engine.start(order("C", i))
                        await handle.result()

                prof.enable()
                await asyncio.gather(*(client() for _ in range(clients)))
                prof.disable()

    asyncio.run(workload())
    remove_db(path)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = vars(pstats.Stats(prof))["stats"]
    rows: list[tuple[str, float, float, float]] = []
    for (filename, line, func), (_, ncalls, own, cumulative, _) in raw.items():
        where = f"{_short(filename)}:{line}({func})" if line else func
        rows.append((where, ncalls / n, own / n * 1e6, cumulative / n * 1e6))
    total = sum(r[2] for r in rows)
    print()
    print(
        f"cProfile, {sync}, {'sequential' if clients == 1 else f'{clients} concurrent'}, {n} instances: "
        f"{total:,.0f} us/instance under the profiler (it inflates small calls: read the shares)"
    )
    print(f"{'calls/inst':>10} {'own us':>8} {'cum us':>8}  function   -- by own time")
    for where, per_inst, own_us, cum_us in sorted(rows, key=lambda r: -r[2])[:top]:
        print(f"{per_inst:10.1f} {own_us:8.1f} {cum_us:8.1f}  {where}")
    print(f"{'calls/inst':>10} {'own us':>8} {'cum us':>8}  function   -- by cumulative time")
    for where, per_inst, own_us, cum_us in sorted(rows, key=lambda r: -r[3])[:top]:
        print(f"{per_inst:10.1f} {own_us:8.1f} {cum_us:8.1f}  {where}")


def profile_pyinstrument(tmp: Path, sync: Sync, n: int, clients: int) -> None:
    if importlib.util.find_spec("pyinstrument") is None:
        print("\npyinstrument: not installed (pip install pyinstrument) -- skipped")
        return
    pyinstrument: Any = importlib.import_module("pyinstrument")
    path = tmp / f"pyinstrument-{sync}-{clients}.db"
    profiler: Any = pyinstrument.Profiler(interval=0.001, async_mode="disabled")

    async def workload() -> None:
        with SqliteStore(path, synchronous=sync) as store:
            async with Engine(store, services=new_services(), concurrency=clients) as engine:
                numbers = iter(range(n))

                async def client() -> None:
                    for i in numbers:
                        handle = await engine.start(order("Y", i))
                        await handle.result()

                profiler.start()
                await asyncio.gather(*(client() for _ in range(clients)))
                profiler.stop()

    asyncio.run(workload())
    remove_db(path)
    print()
    print(f"pyinstrument, {sync}, {clients} concurrent, {n} instances (wall-clock samples, the loop's whole stack):")
    text: str = profiler.output_text(unicode=False, color=False, show_all=False, short_mode=True)
    lines = text.splitlines()
    print("\n".join(lines[:90]))
    if len(lines) > 90:
        print(f"  ... ({len(lines) - 90} more lines)")


def _short(filename: str) -> str:
    path = Path(filename)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def profile_pages(tmp: Path, sizes: Sizes) -> None:
    """Pages each commit appends to the WAL: the write amplification behind COMMIT's cost."""
    print()
    print("pages (4 KiB) appended to the WAL, automatic checkpoints off, synchronous=NORMAL:")
    n = sizes.seq["NORMAL"]
    floor = run_floor(tmp / "pages-floor.db", "NORMAL", n, FLOOR_COMMITS, count_pages=True)
    remove_db(tmp / "pages-floor.db")
    print(
        f"  raw floor ({FLOOR_COMMITS} commits/inst)          {floor.wal_frames / floor.commits:6.1f} pages/commit "
        f"{floor.wal_frames / floor.instances:7.1f} pages/inst"
    )
    for label, clients, conc, count in (
        ("engine sequential", 1, None, n),
        ("engine 256 concurrent", 256, 256, sizes.c256["NORMAL"]),
    ):
        path = tmp / f"pages-{clients}.db"
        r = run_engine(path, "NORMAL", count, clients, conc, "PG", count_pages=True)
        remove_db(path)
        print(
            f"  {label:<35}{r.wal_frames / r.commits:6.1f} pages/commit {r.wal_frames / r.instances:7.1f} pages/inst "
            f"({r.commits / r.instances:.3f} commits/inst)"
        )


def profile_engine_overhead(tmp: Path, sizes: Sizes, repeats: int = 3) -> None:
    """The same client on MemoryStore (no I/O) and on SqliteStore(NORMAL): the durable cost, the workers' cost."""

    def us_per_inst(store_kind: str, n: int, clients: int, concurrency: int) -> float:
        async def workload() -> float:
            path = tmp / f"overhead-{store_kind}.db"
            with contextlib.ExitStack() as stack:
                store = (
                    MemoryStore()
                    if store_kind == "memory"
                    else stack.enter_context(
                        SqliteStore(path, synchronous="FULL" if store_kind == "FULL" else "NORMAL")
                    )
                )
                async with Engine(store, services=new_services(), concurrency=concurrency) as engine:
                    numbers = iter(range(n))

                    async def client() -> None:
                        for i in numbers:
                            handle = await engine.start(order("OV", i))
                            await handle.result()

                    t0 = time.perf_counter()
                    await asyncio.gather(*(client() for _ in range(clients)))
                    elapsed = time.perf_counter() - t0
            remove_db(path)
            return elapsed / n * 1e6

        return median([asyncio.run(workload()) for _ in range(repeats)])

    n_seq = sizes.seq["NORMAL"]
    n_conc = sizes.c256["NORMAL"]
    print()
    print(f"the engine without I/O (MemoryStore) vs SqliteStore, us per instance, median of {repeats}:")
    print(f"  {'client':<34}{'concurrency':>12}{'MemoryStore':>13}{'Sqlite NORMAL':>15}{'difference':>12}")
    for clients, concurrency, n in ((1, 1, n_seq), (1, 64, n_seq), (1, 256, n_seq), (256, 256, n_conc)):
        mem = us_per_inst("memory", n, clients, concurrency)
        sql = us_per_inst("NORMAL", n, clients, concurrency)
        label = "sequential" if clients == 1 else f"{clients} concurrent"
        print(f"  {label:<34}{concurrency:>12}{mem:>13,.0f}{sql:>15,.0f}{sql - mem:>12,.0f}")
    print(
        "  (sequential with concurrency 64 = Engine's default; every enqueue sets one asyncio.Event that all idle "
        "workers wait on)"
    )


def profile(tmp: Path, sizes: Sizes) -> None:
    print()
    print("=" * 100)
    print("--profile")
    profile_engine_overhead(tmp, sizes)
    profile_pages(tmp, sizes)
    seq_n = sizes.seq["FULL"]
    profile_breakdown(tmp, "FULL", seq_n, 1)
    profile_breakdown(tmp, "NORMAL", sizes.seq["NORMAL"], 1)
    profile_breakdown(tmp, "FULL", sizes.c256["FULL"], 256)
    profile_breakdown(tmp, "NORMAL", sizes.c256["NORMAL"], 256)
    profile_cprofile(tmp, "NORMAL", sizes.c256["NORMAL"], 256)
    profile_cprofile(tmp, "FULL", seq_n, 1, top=15)
    profile_pyinstrument(tmp, "NORMAL", sizes.c256["NORMAL"], 256)


# ---------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes, 3 runs, scaled memory target (~1-2 min)")
    p.add_argument("--runs", type=int, default=None, help="throughput runs (default 5, quick 3; >= 3)")
    p.add_argument("--memory-instances", type=int, default=None, help="waiting instances for the memory figure")
    p.add_argument("--recovery-instances", type=int, default=None, help="instances in flight at the kill")
    p.add_argument("--recovery-runs", type=int, default=None, help="kill/recover cycles (default 3, quick 1)")
    p.add_argument("--skip-memory", action="store_true", help="skip the memory and tasks figures")
    p.add_argument("--skip-recovery", action="store_true", help="skip the recovery figures")
    p.add_argument("--dbos-python", default=os.environ.get("BENCH_DBOS_PYTHON"), help="an interpreter with dbos")
    p.add_argument("--no-dbos", action="store_true", help="do not run the DBOS comparator")
    p.add_argument("--tmp", default=None, help="directory for the database files (default: the system's temp dir)")
    p.add_argument("--profile", action="store_true", help="also: where the time goes (timed store, cProfile)")
    p.add_argument("--profile-only", action="store_true", help="only the --profile part, no figures, no targets")
    # Internal: the child processes.
    p.add_argument("--child", choices=("memory", "reopen", "kill-worker", "recover"), help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--directors", type=int, default=100, help=argparse.SUPPRESS)
    p.add_argument("--queries", type=int, default=51, help=argparse.SUPPRESS)
    p.add_argument("--sync", choices=SYNCS, default="FULL", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.runs is not None and args.runs < 3:
        p.error("--runs must be at least 3 (figures are medians)")
    return args


def run_child(args: argparse.Namespace) -> int:
    if args.child == "memory":
        child_memory(Path(args.dir), args.n, args.directors, args.queries, args.sync)
    elif args.child == "reopen":
        child_reopen(Path(args.dir), Path(args.db))
    elif args.child == "kill-worker":
        child_kill_worker(Path(args.db), args.n)
    else:
        child_recover(Path(args.db))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return run_child(args)
    configure_logging()
    sizes = default_sizes(args.quick)
    sizes = attrs.evolve(
        sizes,
        runs=args.runs or sizes.runs,
        memory=args.memory_instances or sizes.memory,
        recovery=args.recovery_instances or sizes.recovery,
        recovery_runs=args.recovery_runs or sizes.recovery_runs,
    )
    tmp = Path(tempfile.mkdtemp(prefix="smo-bench-durable-", dir=args.tmp))
    if args.profile_only:
        try:
            profile(tmp, sizes)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return 0
    dbos_python = None if args.no_dbos else find_dbos_python(args.dbos_python)
    started = time.perf_counter()
    kind = fs_type(tmp)
    print(
        f"statemachine-orch durable bench: the order example, amount 500, on SqliteStore | python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} cores, {code_version()}"
    )
    print(
        f"files in {tmp} ({kind}); {sizes.runs} runs{' (--quick)' if args.quick else ''}; per run: "
        + ", ".join(
            f"{sync}: floor {sizes.floor[sync]}, sequential {sizes.seq[sync]}, 16-conc {sizes.c16[sync]}, "
            f"256-conc {sizes.c256[sync]} instances"
            for sync in SYNCS
        )
    )
    if kind in {"tmpfs", "ramfs"}:
        print("WARNING: the files are on a RAM file system: fsync costs nothing there; use --tmp on a disk")
    try:
        series, engine_commits = throughput_phase(tmp, sizes)
        full = {s.key: s for s in series if s.sync == "FULL"}
        seq_full = median(full["seq"].inst_per_s())
        floor_full = median(full["floor"].inst_per_s())
        memory = None
        if not args.skip_memory:
            print(f"  memory: seeding {sizes.memory:,} waiting instances in a child process...", flush=True)
            memory = memory_phase(tmp, sizes)
        recovery: list[Recovery] = []
        if not args.skip_recovery:
            for run in range(sizes.recovery_runs):
                print(f"  recovery run {run + 1}/{sizes.recovery_runs}...", flush=True)
                recovery.append(recovery_run(tmp, sizes.recovery, run))
        dbos: list[Dbos] = []
        dbos_note = "disabled (--no-dbos)" if args.no_dbos else ""
        if dbos_python is not None:
            print(f"  DBOS with {dbos_python}...", flush=True)
            dbos, dbos_note = dbos_phase(tmp, dbos_python, sizes)

        report_throughput(series, engine_commits)
        if memory is not None:
            report_memory(memory)
        if recovery:
            report_recovery(recovery, seq_full)
        report_dbos(dbos, dbos_note, seq_full, floor_full)
        missed = report_targets(build_targets(series, memory, recovery, dbos))
        print(f"(bench wall time {time.perf_counter() - started:.0f} s)")
        if args.profile:
            profile(tmp, sizes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
