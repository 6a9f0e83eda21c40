"""
Scale benchmark: many workers on one database (PostgreSQL, and SQLite across processes), and failover.

Run by hand from the repository root (not in CI, not as a test); it needs the
``postgres`` extra and a PostgreSQL server (default ``postgresql://postgres@127.0.0.1:5432``,
trust auth; ``--pg`` to change it)::

    python bench/bench_scale.py --quick     # 1 run, small sizes: a smoke run (~2 minutes)
    python bench/bench_scale.py             # medians of 3 runs (~8 minutes)
    python bench/bench_scale.py --profile   # also: cProfile of one worker process, 256 concurrent

One run measures, on the order example (amount 500: five steps, no human task):

- a raw floor per store: per instance one transaction inserting the instance and a
  history row, then per step one UPDATE + one INSERT (history), one transaction each,
  sequential (PostgreSQL: psycopg, ``synchronous_commit=on``; SQLite: ``sqlite3``,
  WAL, ``synchronous=FULL`` like ``SqliteStore``'s default);
- DBOS on the same PostgreSQL, sequential, when an interpreter with ``dbos`` is found
  (``--dbos-python``; else the output says it was not measured);
- the engine: one worker sequential (start, wait, next, in the worker's process);
  one worker process with 256 concurrent instances; 2 and 4 worker processes with
  256 each. The instances are started by a client (``Engine(store, concurrency=0)``)
  in this process; the clock runs from the first start to the moment the store
  shows every instance completed (polled every 10 ms);
- failover: two workers each start instances whose steps sleep; one is SIGKILLed
  (a dead pid of this host: the survivor expires its leases at its next sweep) or
  SIGSTOPped (alive but silent: its leases must expire), for the default lease and
  a short one; the figures are the times from the signal until the survivor holds
  the first and the last of the victim's instances, and until it committed the first
  step of one of them (observed in the store).

Every database is fresh: a new PostgreSQL database ``orch_bench_<random>`` per run
of the bench (a new schema per workload), dropped at the end; SQLite files in a
temporary directory. ``bench/README.md`` explains every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import importlib.util
import json
import logging
import os
import platform
import pstats
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any, Final, Literal, LiteralString

import attrs
import psycopg
import structlog
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.order_process import InventoryService, Item, OrderProcess, PaymentService, UserService
from statemachine_orch import Ctx, Engine, SqliteStore, Store, Workflow, after, step

Backend = Literal["pg", "sqlite"]
HERE: Final = Path(__file__).resolve()
STEPS: Final = 5  # amount 500: validate, check, payment, update, confirm
STOCK: Final = 10**12
ITEM: Final = Item("BOOK", 1)
TERMINAL: Final = ("completed", "failed", "cancelled", "compensation_failed")
DEFAULT_PG: Final = "postgresql://postgres@127.0.0.1:5432"
DEFAULT_LEASE: Final = 10.0  # Engine's default
SHORT_LEASE: Final = 2.0
FAILOVER_STEP_S: Final = 1.0  # each step of SlowOrder sleeps this long
FAILOVER_OWN: Final = 16  # instances each failover worker starts itself (born leased to it)
POLL_S: Final = 0.01
CPU_STEP_MS: Final = 2.0  # each step of CpuOrder burns this much CPU

# The targets.
SEQ_FLOOR_RATIO: Final = 0.70
CONC_FLOOR_RATIO: Final = 3.0
TWO_WORKERS_RATIO: Final = 1.6
DBOS_RATIO: Final = 5.0
TAKEOVER_SLACK_S: Final = 2.0


# ---------------------------------------------------------------------------- the bench's workflow for failover


class SlowOrder(Workflow, name="BenchSlowOrder", version="1"):
    """Five steps that each sleep ``ORCH_BENCH_STEP_S`` seconds (default 1): instances stay in flight a while."""

    n: int
    done: int = 0

    @step(initial=True)
    async def s1(self, ctx: Ctx) -> None:
        del ctx
        await _nap(self)

    @after(s1)
    @step
    async def s2(self, ctx: Ctx) -> None:
        del ctx
        await _nap(self)

    @after(s2)
    @step
    async def s3(self, ctx: Ctx) -> None:
        del ctx
        await _nap(self)

    @after(s3)
    @step
    async def s4(self, ctx: Ctx) -> None:
        del ctx
        await _nap(self)

    @after(s4)
    @step(final=True)
    async def s5(self, ctx: Ctx) -> None:
        del ctx
        await _nap(self)


async def _nap(wf: SlowOrder) -> None:
    await asyncio.sleep(float(os.environ.get("ORCH_BENCH_STEP_S", str(FAILOVER_STEP_S))))
    wf.done += 1


class CpuOrder(Workflow, name="BenchCpuOrder", version="1"):
    """Five steps that each burn ``CPU_STEP_MS`` of CPU in Python: the work is the workers', not the database's."""

    n: int
    done: int = 0

    @step(initial=True)
    def c1(self, ctx: Ctx) -> None:
        del ctx
        _burn(self)

    @after(c1)
    @step
    def c2(self, ctx: Ctx) -> None:
        del ctx
        _burn(self)

    @after(c2)
    @step
    def c3(self, ctx: Ctx) -> None:
        del ctx
        _burn(self)

    @after(c3)
    @step
    def c4(self, ctx: Ctx) -> None:
        del ctx
        _burn(self)

    @after(c4)
    @step(final=True)
    def c5(self, ctx: Ctx) -> None:
        del ctx
        _burn(self)


def _burn(wf: CpuOrder) -> None:
    end = time.process_time() + CPU_STEP_MS / 1000
    while time.process_time() < end:
        pass
    wf.done += 1


# ---------------------------------------------------------------------------- helpers


def configure_logging() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def new_services() -> dict[str, object]:
    return {
        "user-service": UserService(),
        "inventory-service": InventoryService(stock={"BOOK": STOCK}),
        "payment-service": PaymentService(),
    }


def order(prefix: str, i: int) -> OrderProcess:
    return OrderProcess(order_id=f"{prefix}-{i:07d}", customer_id=f"CUST-{i % 1000:04d}", amount=500.0, items=[ITEM])


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def spread(xs: Sequence[float]) -> float:
    m = median(xs)
    return (max(xs) - min(xs)) / m * 100 if len(xs) > 1 and m else 0.0


def cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process, from /proc/<pid>/stat."""
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def code_version() -> str:
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


def dsn_for(base: str, database: str) -> str:
    return f"{base.rstrip('/')}/{database}"


@attrs.define
class Pg:
    """A fresh database for this run of the bench, and a new schema per workload in it."""

    base: str
    database: str
    schemas: int = 0

    @property
    def dsn(self) -> str:
        return dsn_for(self.base, self.database)

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(dsn_for(self.base, "postgres"), autocommit=True)

    def create(self, name: str | None = None) -> None:
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name or self.database)))

    def drop(self, name: str | None = None) -> None:
        with self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name or self.database))
            )

    def new_schema(self) -> str:
        self.schemas += 1
        return f"w{self.schemas}"

    def drop_schema(self, schema: str) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# ---------------------------------------------------------------------------- what the store shows


class Observer:
    """Reads one workload's tables directly (a connection of its own): counts, owners, history."""

    def __init__(self, backend: Backend, target: str, schema: str) -> None:
        self.backend = backend
        self.pg: psycopg.Connection[Any] | None = None
        self.lite: sqlite3.Connection | None = None
        if backend == "pg":
            self.pg = psycopg.connect(target, autocommit=True)
            self.pg.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        else:
            self.lite = sqlite3.connect(target, timeout=30, isolation_level=None)

    def rows(self, query: LiteralString, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        if self.pg is not None:
            return list(self.pg.execute(query.replace("?", "%s"), args).fetchall())
        assert self.lite is not None  # noqa: S101
        return list(self.lite.execute(query, args).fetchall())

    def count(self, query: LiteralString, args: Sequence[object] = ()) -> int:
        return int(self.rows(query, args)[0][0])

    def terminal(self) -> int:
        return self.count("SELECT count(*) FROM instances WHERE status IN ('completed', 'failed', 'cancelled')")

    def close(self) -> None:
        if self.pg is not None:
            self.pg.close()
        if self.lite is not None:
            self.lite.close()


def check_completed(obs: Observer, n: int) -> None:
    done = obs.count("SELECT count(*) FROM instances WHERE status = 'completed'")
    steps = obs.count("SELECT count(*) FROM history WHERE kind = 'step_completed'")
    if done != n or steps != n * STEPS:
        msg = f"{done} of {n} instances completed, {steps} steps recorded (expected {n * STEPS})"
        raise RuntimeError(msg)


# ---------------------------------------------------------------------------- raw floors


def floor_pg(dsn: str, schema: str, n: int) -> float:
    """The PostgreSQL floor: seconds for n instances (1 start + 5 step transactions each), sequential."""
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        conn.execute("SET synchronous_commit = on")
        conn.execute(
            "CREATE TABLE instances (id TEXT PRIMARY KEY, state TEXT NOT NULL, status TEXT NOT NULL, "
            "variables JSONB NOT NULL, updated_at DOUBLE PRECISION NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE history (instance_id TEXT NOT NULL, seq BIGINT NOT NULL, at DOUBLE PRECISION NOT NULL, "
            "kind TEXT NOT NULL, step TEXT, PRIMARY KEY (instance_id, seq))"
        )
        conn.commit()
        ids = [f"I-{i:07d}" for i in range(n)]
        variables = _FLOOR_VARIABLES
        execute = conn.execute
        commit = conn.commit
        t0 = time.perf_counter()
        for iid in ids:
            now = time.time()
            execute("INSERT INTO instances VALUES (%s, %s, %s, %s, %s)", (iid, "s0", "running", variables, now))
            execute("INSERT INTO history VALUES (%s, %s, %s, %s, %s)", (iid, 0, now, "instance_started", None))
            commit()
            for seq in range(1, STEPS + 1):
                now = time.time()
                execute(
                    "UPDATE instances SET state = %s, status = %s, variables = %s, updated_at = %s WHERE id = %s",
                    (f"s{seq}", "completed" if seq == STEPS else "running", variables, now, iid),
                )
                execute("INSERT INTO history VALUES (%s, %s, %s, %s, %s)", (iid, seq, now, "step_completed", f"s{seq}"))
                commit()
        seconds = time.perf_counter() - t0
        rows = conn.execute("SELECT count(*) FROM history").fetchone()
    if rows is None or rows[0] != n * (STEPS + 1):
        msg = f"floor: {rows} history rows, expected {n * (STEPS + 1)}"
        raise RuntimeError(msg)
    return seconds


def floor_sqlite(path: Path, n: int) -> float:
    """The SQLite floor: the same loop on sqlite3, WAL, synchronous=FULL, BEGIN IMMEDIATE per transaction."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(
            "CREATE TABLE instances (id TEXT PRIMARY KEY, state TEXT NOT NULL, status TEXT NOT NULL, "
            "variables TEXT NOT NULL, updated_at REAL NOT NULL)"
        )
        db.execute(
            "CREATE TABLE history (instance_id TEXT NOT NULL, seq INTEGER NOT NULL, at REAL NOT NULL, "
            "kind TEXT NOT NULL, step TEXT, PRIMARY KEY (instance_id, seq)) WITHOUT ROWID"
        )
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
            for seq in range(1, STEPS + 1):
                now = time.time()
                execute("BEGIN IMMEDIATE")
                execute(
                    "UPDATE instances SET state = ?, status = ?, variables = ?, updated_at = ? WHERE id = ?",
                    (f"s{seq}", "completed" if seq == STEPS else "running", variables, now, iid),
                )
                execute("INSERT INTO history VALUES (?, ?, ?, ?, ?)", (iid, seq, now, "step_completed", f"s{seq}"))
                execute("COMMIT")
        seconds = time.perf_counter() - t0
    finally:
        db.close()
    return seconds


_FLOOR_VARIABLES: Final = json.dumps(
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


# ---------------------------------------------------------------------------- stores, workers


def open_store(backend: Backend, target: str, schema: str) -> Store:
    if backend == "pg":
        from statemachine_orch._store_postgres import PostgresStore

        return PostgresStore(target, schema=schema)
    return SqliteStore(target)


@attrs.define
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path
    owner: str = ""

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log.read_text(errors="replace").splitlines():
                if line.startswith("READY "):
                    self.owner = line.split()[1]
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        msg = f"worker {self.proc.pid} not ready:\n{self.log.read_text(errors='replace')[-3000:]}"
        raise RuntimeError(msg)

    def stop(self) -> None:
        """SIGTERM (a clean stop: the worker cancels its engine), SIGKILL after 10 s; SIGCONT in case it was stopped."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
                self.proc.send_signal(signal.SIGCONT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def spawn_worker(
    tmp: Path,
    backend: Backend,
    target: str,
    schema: str,
    *,
    concurrency: int,
    lease: float = DEFAULT_LEASE,
    own: int = 0,
    profile: Path | None = None,
) -> Worker:
    log = tmp / f"worker-{secrets.token_hex(4)}.log"
    cmd = [sys.executable, str(HERE), "--worker", backend, target, schema, "--concurrency", str(concurrency)]
    cmd += ["--lease", str(lease), "--own", str(own)]
    if profile is not None:
        cmd += ["--profile-out", str(profile)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603 - our own script
    return Worker(proc, log)


def worker_main(args: argparse.Namespace) -> int:
    """A worker process: ``Engine(store, ...).run()`` until SIGTERM; with --own, first start K SlowOrders itself."""
    backend, target, schema = args.worker
    configure_logging()
    profiler = cProfile.Profile() if args.profile_out else None

    async def serve() -> None:
        store = open_store(backend, target, schema)
        engine = Engine(
            store,
            workflows=[OrderProcess, SlowOrder, CpuOrder],
            services=new_services(),
            concurrency=args.concurrency,
            lease=args.lease,
        )
        runner = asyncio.create_task(engine.run())
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, runner.cancel)
        await asyncio.sleep(0.05)  # run() has recovered
        if args.own:
            tag = secrets.token_hex(3)
            await asyncio.gather(*(engine.start(SlowOrder(n=i), instance_id=f"{tag}-{i}") for i in range(args.own)))
        print(f"READY {engine.owner}", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        store.close()

    if profiler is not None:
        profiler.enable()
    asyncio.run(serve())
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile_out)
    return 0


# ---------------------------------------------------------------------------- engine workloads


@attrs.frozen
class Sample:
    seconds: float
    instances: int
    worker_cpu: float = 0.0  # CPU seconds of the worker processes during the timed part
    machine_busy: float = 0.0  # share of the machine's CPU time busy during the timed part (0..1)
    first_done: float = float("nan")  # seconds from the first start until the first instance completed

    @property
    def inst_s(self) -> float:
        return self.instances / self.seconds

    @property
    def steps_s(self) -> float:
        return self.instances * STEPS / self.seconds


def run_sequential(backend: Backend, target: str, schema: str, n: int, prefix: str, clients: int = 1) -> Sample:
    """
    One worker in this process; *clients* coroutines each ``await engine.start(...)``, ``await handle.result()``, next.

    With one client it is the sequential figure (default concurrency); with 256 the worker has
    ``concurrency=256`` and its instances never go through a claim (born leased to it).
    """

    async def workload() -> Sample:
        store = open_store(backend, target, schema)
        try:
            engine = (
                Engine(store, workflows=[OrderProcess], services=new_services())
                if clients == 1
                else Engine(store, workflows=[OrderProcess], services=new_services(), concurrency=clients)
            )
            async with engine:
                for i in range(3):  # warm-up
                    await (await engine.start(order(prefix + "w", i))).result()
                numbers = iter(range(n))

                async def client() -> None:
                    for i in numbers:
                        handle = await engine.start(order(prefix, i))
                        await handle.result()

                b0 = cpu_busy()
                t0 = time.perf_counter()
                await asyncio.gather(*(client() for _ in range(clients)))
                seconds = time.perf_counter() - t0
                b1 = cpu_busy()
        finally:
            store.close()
        return Sample(seconds, n, machine_busy=(b1[0] - b0[0]) / max(1.0, b1[1] - b0[1]))

    return asyncio.run(workload())


def run_fleet(
    tmp: Path,
    backend: Backend,
    target: str,
    schema: str,
    workers: int,
    n: int,
    prefix: str,
    *,
    profile: Path | None = None,
    cpu: bool = False,
) -> Sample:
    """
    *workers* worker processes (concurrency 256 each); this process's client starts n orders; wait all completed.

    With *cpu*, the instances are ``CpuOrder``s (their steps burn CPU) instead of the order example.
    """

    def make(tag: str, i: int) -> Workflow:
        return CpuOrder(n=i) if cpu else order(tag, i)

    store = open_store(backend, target, schema)  # creates the tables before the workers open them
    fleet = [
        spawn_worker(tmp, backend, target, schema, concurrency=256, profile=profile if i == 0 else None)
        for i in range(workers)
    ]
    obs = Observer(backend, target, schema)
    try:
        for w in fleet:
            w.wait_ready()

        async def start_all() -> tuple[float, float, float, float]:
            client = Engine(store, workflows=[OrderProcess, CpuOrder], concurrency=0)
            async with client:
                # warm-up: a few instances through the fleet, waited for
                for i in range(4):
                    await client.start(make(prefix + "w", i), instance_id=f"{prefix}w-{i}")
                await wait_terminal(obs, 4, 60)
                cpu0 = sum(proc_cpu(w.proc.pid) for w in fleet)
                b0 = cpu_busy()
                t0 = time.perf_counter()
                for lo in range(0, n, 256):
                    await asyncio.gather(
                        *(
                            client.start(make(prefix, i), instance_id=f"{prefix}-{i}")
                            for i in range(lo, min(n, lo + 256))
                        )
                    )
                first = await wait_terminal(obs, n + 4, 300, 4) - t0
                seconds = time.perf_counter() - t0
                b1 = cpu_busy()
                cpu1 = sum(proc_cpu(w.proc.pid) for w in fleet)
            return seconds, cpu1 - cpu0, (b1[0] - b0[0]) / max(1.0, b1[1] - b0[1]), first

        seconds, cpu_s, busy, first = asyncio.run(start_all())
        check_completed(obs, n + 4)
    finally:
        obs.close()
        for w in fleet:
            w.stop()
        store.close()
    return Sample(seconds, n, cpu_s, busy, first)


async def wait_terminal(obs: Observer, n: int, within: float, before: int = 0) -> float:
    """Poll until n instances ended; the perf_counter time at which more than *before* had ended."""
    deadline = time.monotonic() + within
    first = float("nan")
    while (ended := obs.terminal()) < n:
        if ended > before and first != first:  # noqa: PLR0124 - NaN: not seen yet
            first = time.perf_counter()
        if time.monotonic() > deadline:
            msg = f"only {ended} of {n} instances ended within {within} s"
            raise RuntimeError(msg)
        await asyncio.sleep(POLL_S)
    return time.perf_counter() if first != first else first  # noqa: PLR0124


# ---------------------------------------------------------------------------- failover


@attrs.frozen
class Takeover:
    backend: Backend
    how: Literal["SIGKILL", "SIGSTOP"]
    lease: float
    victims: int
    first: float  # seconds from the signal until the survivor held the first of the victim's instances
    last: float  # ... the last
    step: float  # ... until a step of one of them was committed again (includes the step's own 1 s)


def run_failover(
    tmp: Path, backend: Backend, target: str, schema: str, how: Literal["SIGKILL", "SIGSTOP"], lease: float
) -> Takeover:
    store = open_store(backend, target, schema)
    fleet = [spawn_worker(tmp, backend, target, schema, concurrency=64, lease=lease, own=FAILOVER_OWN) for _ in "ab"]
    obs = Observer(backend, target, schema)
    try:
        for w in fleet:
            w.wait_ready()
        time.sleep(0.3)  # every instance is inside its first step
        victim, survivor = fleet
        mine = [
            r[0]
            for r in obs.rows(
                "SELECT id FROM instances WHERE owner = ? AND status NOT IN ('completed', 'failed', 'cancelled')",
                (victim.owner,),
            )
        ]
        if not mine:
            msg = f"the victim {victim.owner} holds no instance"
            raise RuntimeError(msg)
        wanted = set(mine)
        t0 = time.perf_counter()
        at0 = time.time()
        victim.proc.send_signal(signal.SIGKILL if how == "SIGKILL" else signal.SIGSTOP)
        first: float | None = None
        last: float | None = None
        step_again: float | None = None
        deadline = t0 + lease + 30
        while time.perf_counter() < deadline and (last is None or step_again is None):
            owners = obs.rows("SELECT id, owner FROM instances WHERE owner IS NOT NULL")
            taken = sum(1 for iid, owner in owners if iid in wanted and owner == survivor.owner)
            now = time.perf_counter() - t0
            if taken and first is None:
                first = now
            if taken == len(mine) and last is None:
                last = now
            if step_again is None:
                done = obs.rows("SELECT instance_id FROM history WHERE kind = 'step_completed' AND at > ?", (at0,))
                if any(iid in wanted for (iid,) in done):
                    step_again = now
            time.sleep(POLL_S)
        if how == "SIGSTOP":
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.send_signal(signal.SIGCONT)
    finally:
        obs.close()
        for w in fleet:
            w.stop()
        store.close()
    nan = float("nan")
    return Takeover(
        backend,
        how,
        lease,
        len(mine),
        nan if first is None else first,
        nan if last is None else last,
        nan if step_again is None else step_again,
    )


# ---------------------------------------------------------------------------- DBOS


def find_dbos_python(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    if importlib.util.find_spec("dbos") is not None:
        return sys.executable
    return None


def dbos_main(args: argparse.Namespace) -> int:
    """The DBOS child: the order flow as a DBOS workflow on PostgreSQL, sequential; prints RESULT {json}."""
    url, n, runs = args.dbos_child[0], int(args.dbos_child[1]), int(args.dbos_child[2])
    logging.getLogger("dbos").setLevel(logging.WARNING)
    dbos: Any = importlib.import_module("dbos")
    version = importlib.import_module("importlib.metadata").version("dbos")
    DBOS: Any = dbos.DBOS  # noqa: N806 - DBOS's own name
    users = UserService()
    inventory = InventoryService(stock={"BOOK": STOCK})
    payments = PaymentService()
    log = logging.getLogger("bench.dbos.confirm")

    def validate_order(order_id: str, customer_id: str) -> bool:
        return users.validateOrder(order_id=order_id, customer_id=customer_id)

    def check_inventory(items: list[Item]) -> bool:
        return inventory.checkStock(items=items)

    def process_payment(order_id: str, amount: float, key: str) -> str:
        return payments.processPayment(order_id=order_id, amount=amount, idempotency_key=key)

    def update_inventory(order_id: str, items: list[Item], key: str) -> None:
        inventory.updateStock(order_id=order_id, items=items, idempotency_key=key)

    def send_confirmation(order_id: str) -> bool:
        log.info("confirmation_sent %s", order_id)
        return True

    DBOS(config={"name": "smo-bench-scale", "system_database_url": url, "log_level": "WARNING"})
    validate: Any = DBOS.step()(validate_order)
    check: Any = DBOS.step()(check_inventory)
    pay: Any = DBOS.step()(process_payment)
    update: Any = DBOS.step()(update_inventory)
    confirm: Any = DBOS.step()(send_confirmation)

    def order_workflow(order_id: str, customer_id: str, amount: float, items: list[Item]) -> str:
        if not validate(order_id, customer_id):
            return "invalid"
        check(items)
        workflow_id = str(DBOS.workflow_id)
        payment_id: str = pay(order_id, amount, workflow_id + ":2")
        update(order_id, items, workflow_id + ":3")
        confirm(order_id)
        return payment_id

    workflow: Any = DBOS.workflow()(order_workflow)
    DBOS.launch()
    try:
        for i in range(5):
            workflow(f"W-{i}", "CUST-W", 500.0, [ITEM])
        seconds: list[float] = []
        for run in range(runs):
            t0 = time.perf_counter()
            for i in range(n):
                result = workflow(f"R{run}-{i:05d}", f"CUST-{i % 1000:04d}", 500.0, [ITEM])
                if not str(result).startswith("pay-"):
                    msg = f"DBOS order workflow returned {result!r}"
                    raise RuntimeError(msg)
            seconds.append(time.perf_counter() - t0)
    finally:
        DBOS.destroy()
    print("RESULT " + json.dumps({"version": version, "n": n, "seconds": seconds}), flush=True)
    return 0


def run_dbos(python: str, pg: Pg, n: int, runs: int) -> tuple[list[float], str]:
    """Seconds per run of n sequential DBOS workflows, and DBOS's version (or why not measured)."""
    name = pg.database + "_dbos"
    pg.create(name)
    try:
        cmd = [python, str(HERE), "--dbos-child", dsn_for(pg.base, name), str(n), str(runs)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)  # noqa: S603
        for line in reversed(done.stdout.splitlines()):
            if line.startswith("RESULT "):
                result = json.loads(line[len("RESULT ") :])
                return [float(s) for s in result["seconds"]], f"DBOS {result['version']}"
        return [], f"DBOS failed (exit {done.returncode}): {(done.stderr or done.stdout)[-500:]}"
    finally:
        pg.drop(name)


# ---------------------------------------------------------------------------- the report


@attrs.define
class Row:
    key: str
    label: str
    kind: Literal["floor", "seq", "conc", "dbos"]
    samples: list[Sample] = attrs.field(factory=list[Sample])

    def inst(self) -> list[float]:
        return [s.inst_s for s in self.samples]

    def steps(self) -> list[float]:
        return [s.steps_s for s in self.samples]


def paired(a: Row, b: Row, attr: Callable[[Sample], float]) -> float:
    """The median of per-run ratios a/b (runs paired by position)."""
    return median([attr(x) / attr(y) for x, y in zip(a.samples, b.samples, strict=False)])


def fmt(x: float, digits: int = 0) -> str:
    return "—" if x != x else f"{x:,.{digits}f}"  # noqa: PLR0124 - NaN


def print_table(rows: list[Row], floor: Row) -> None:
    head = (
        "workload",
        "inst/s",
        "spread",
        "steps/s",
        "/ floor inst/s",
        "/ floor steps/s",
        "1st done",
        "worker CPU/inst",
    )
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    for r in rows:
        if not r.samples:
            continue
        cpus = [s.worker_cpu / s.instances * 1e3 for s in r.samples if s.worker_cpu]
        firsts = [s.first_done for s in r.samples if s.first_done == s.first_done]
        cells = (
            r.label,
            fmt(median(r.inst())),
            f"{spread(r.inst()):.0f}%",
            fmt(median(r.steps())),
            f"{paired(r, floor, lambda s: s.inst_s):.2f}x",
            f"{paired(r, floor, lambda s: s.steps_s):.2f}x",
            f"{median(firsts):.2f} s" if firsts else "—",
            f"{median(cpus):.2f} ms" if cpus else "—",
        )
        print("| " + " | ".join(cells) + " |")
    busy = [s.machine_busy * 100 for r in rows if r.kind in ("seq", "conc") for s in r.samples]
    if busy:
        print(f"(the machine's CPUs were {min(busy):.0f}-{max(busy):.0f}% busy during these workloads, all processes)")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# ---------------------------------------------------------------------------- main


@attrs.frozen
class Sizes:
    runs: int
    floor: int
    seq: int
    conc: int
    cpu: int
    dbos: int
    failover_runs: int


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 run, small sizes: a smoke run")
    p.add_argument("--runs", type=int, help="runs per figure (default 3, quick 1)")
    p.add_argument("--pg", default=os.environ.get("BENCH_PG", DEFAULT_PG), help="server URL without a database")
    p.add_argument("--dbos-python", default=os.environ.get("BENCH_DBOS_PYTHON"), help="an interpreter with dbos")
    p.add_argument("--no-dbos", action="store_true")
    p.add_argument("--no-sqlite", action="store_true")
    p.add_argument("--no-failover", action="store_true")
    p.add_argument("--profile", action="store_true", help="also: cProfile of one worker process, 256 concurrent (PG)")
    p.add_argument("--tmp", default=None, help="where the SQLite files go (never tmpfs)")
    # child modes
    p.add_argument("--worker", nargs=3, metavar=("BACKEND", "TARGET", "SCHEMA"), help=argparse.SUPPRESS)
    p.add_argument("--concurrency", type=int, default=256, help=argparse.SUPPRESS)
    p.add_argument("--lease", type=float, default=DEFAULT_LEASE, help=argparse.SUPPRESS)
    p.add_argument("--own", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--profile-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--dbos-child", nargs=3, metavar=("URL", "N", "RUNS"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


@contextlib.contextmanager
def fresh_pg(base: str) -> Generator[Pg]:
    pg = Pg(base, f"orch_bench_{secrets.token_hex(4)}")
    pg.create()
    try:
        yield pg
    finally:
        pg.drop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    if args.worker:
        return worker_main(args)
    if args.dbos_child:
        return dbos_main(args)
    configure_logging()
    quick = args.quick
    sizes = Sizes(
        runs=args.runs or (1 if quick else 3),
        floor=100 if quick else 300,
        seq=60 if quick else 200,
        conc=500 if quick else 2000,
        cpu=150 if quick else 400,
        dbos=60 if quick else 200,
        failover_runs=1 if quick else 3,
    )
    dbos_python = None if args.no_dbos else find_dbos_python(args.dbos_python)
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=args.tmp))
    print(f"bench_scale: Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {code_version()}")
    print(
        f"  {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; sizes {attrs.asdict(sizes)}; files in {tmp}",
        flush=True,
    )
    try:
        with fresh_pg(args.pg) as pg:
            with psycopg.connect(pg.dsn) as conn:
                version = conn.execute("SHOW server_version").fetchone()
            print(f"  PostgreSQL {version[0] if version else '?'} at {args.pg}, database {pg.database}", flush=True)
            pg_floor = Row("pg-floor", "PG: raw psycopg floor, sequential", "floor")
            dbos = Row("dbos", "PG: DBOS, sequential", "dbos")
            pg_rows = [
                pg_floor,
                dbos,
                Row("pg-seq", "PG: engine, 1 worker, sequential", "seq"),
                Row("pg-w1", "PG: engine, 1 worker process x 256", "conc"),
                Row("pg-w2", "PG: engine, 2 worker processes x 256", "conc"),
                Row("pg-w4", "PG: engine, 4 worker processes x 256", "conc"),
                Row("pg-in", "PG: engine, 1 worker x 256, started in the worker", "conc"),
                Row("pg-cpu1", f"PG: CPU-bound steps ({CPU_STEP_MS:g} ms each), 1 worker process x 256", "conc"),
                Row("pg-cpu2", f"PG: CPU-bound steps ({CPU_STEP_MS:g} ms each), 2 worker processes x 256", "conc"),
            ]
            lite_floor = Row("lite-floor", "SQLite: raw sqlite3 floor (WAL, FULL), sequential", "floor")
            lite_rows = [
                lite_floor,
                Row("lite-seq", "SQLite: engine, 1 worker, sequential", "seq"),
                Row("lite-w1", "SQLite: engine, 1 worker process x 256", "conc"),
                Row("lite-w2", "SQLite: engine, 2 worker processes x 256", "conc"),
                Row("lite-w4", "SQLite: engine, 4 worker processes x 256", "conc"),
                Row("lite-in", "SQLite: engine, 1 worker x 256, started in the worker", "conc"),
            ]
            dbos_note = "not measured: --no-dbos" if args.no_dbos else ""
            if dbos_python is not None:
                print(f"  DBOS with {dbos_python} ({sizes.runs} x {sizes.dbos})...", flush=True)
                secs, dbos_note = run_dbos(dbos_python, pg, sizes.dbos, sizes.runs)
                dbos.samples = [Sample(s, sizes.dbos) for s in secs]
                dbos.label = f"PG: {dbos_note}, sequential" if secs else dbos.label
            elif not dbos_note:
                dbos_note = "not measured: no interpreter with dbos (see --dbos-python)"
            for run in range(sizes.runs):
                print(f"  run {run + 1}/{sizes.runs}: PostgreSQL...", flush=True)
                pair: list[Callable[[], None]] = []

                def floor_once(pg: Pg = pg) -> None:
                    schema = pg.new_schema()
                    secs = floor_pg(pg.dsn, schema, sizes.floor)
                    pg_floor.samples.append(Sample(secs, sizes.floor))
                    pg.drop_schema(schema)

                def seq_once(pg: Pg = pg, run: int = run) -> None:
                    schema = pg.new_schema()
                    pg_rows[2].samples.append(run_sequential("pg", pg.dsn, schema, sizes.seq, f"S{run}"))
                    pg.drop_schema(schema)

                pair = [floor_once, seq_once]
                for f in pair if run % 2 == 0 else pair[::-1]:
                    f()
                for fleet_row, workers in zip(pg_rows[3:6], (1, 2, 4), strict=True):
                    schema = pg.new_schema()
                    fleet_row.samples.append(run_fleet(tmp, "pg", pg.dsn, schema, workers, sizes.conc, f"C{run}"))
                    pg.drop_schema(schema)
                schema = pg.new_schema()
                pg_rows[6].samples.append(run_sequential("pg", pg.dsn, schema, sizes.conc, f"I{run}", 256))
                pg.drop_schema(schema)
                for cpu_row, workers in zip(pg_rows[7:9], (1, 2), strict=True):
                    schema = pg.new_schema()
                    cpu_row.samples.append(
                        run_fleet(tmp, "pg", pg.dsn, schema, workers, sizes.cpu, f"U{run}", cpu=True)
                    )
                    pg.drop_schema(schema)
                if not args.no_sqlite:
                    print(f"  run {run + 1}/{sizes.runs}: SQLite...", flush=True)
                    path = tmp / f"floor-{run}.db"
                    lite_floor.samples.append(Sample(floor_sqlite(path, sizes.floor), sizes.floor))
                    path = tmp / f"seq-{run}.db"
                    lite_rows[1].samples.append(run_sequential("sqlite", str(path), "", sizes.seq, f"S{run}"))
                    for fleet_row, workers in zip(lite_rows[2:5], (1, 2, 4), strict=True):
                        path = tmp / f"fleet-{run}-{workers}.db"
                        fleet_row.samples.append(
                            run_fleet(tmp, "sqlite", str(path), "", workers, sizes.conc, f"C{run}")
                        )
                    path = tmp / f"inproc-{run}.db"
                    lite_rows[5].samples.append(run_sequential("sqlite", str(path), "", sizes.conc, f"I{run}", 256))
            takeovers: list[Takeover] = []
            if not args.no_failover:
                backends: list[tuple[Backend, str]] = [("pg", pg.dsn)]
                if not args.no_sqlite:
                    backends.append(("sqlite", ""))
                for backend, where0 in backends:
                    for how in ("SIGKILL", "SIGSTOP"):
                        for lease in (DEFAULT_LEASE, SHORT_LEASE):
                            for i in range(sizes.failover_runs):
                                print(f"  failover {backend} {how} lease {lease:g} s ({i + 1})...", flush=True)
                                schema = pg.new_schema() if backend == "pg" else ""
                                where = where0 or str(tmp / f"failover-{how}-{lease:g}-{i}.db")
                                takeovers.append(run_failover(tmp, backend, where, schema, how, lease))
                                if backend == "pg":
                                    pg.drop_schema(schema)
            profile_path: Path | None = None
            if args.profile:
                print("  profile: one PG worker process, 256 concurrent, under cProfile...", flush=True)
                profile_path = tmp / "worker.prof"
                schema = pg.new_schema()
                run_fleet(tmp, "pg", pg.dsn, schema, 1, sizes.conc, "P", profile=profile_path)
                pg.drop_schema(schema)

        # ------------------------------------------------------------ report
        print()
        print(f"Throughput: order example (amount 500, 5 steps), medians of {sizes.runs} run(s)")
        print()
        print_table(pg_rows, pg_floor)
        if not dbos.samples:
            print(f"(DBOS {dbos_note})")
        if lite_floor.samples:
            print()
            print_table(lite_rows, lite_floor)
        missed = 0
        print()
        print("Targets (PostgreSQL):")
        seq_ratio = paired(pg_rows[2], pg_floor, lambda s: s.inst_s)
        w1_ratio = paired(pg_rows[3], pg_floor, lambda s: s.steps_s)
        w2_ratio = paired(pg_rows[8], pg_rows[7], lambda s: s.inst_s)
        w2_order = paired(pg_rows[4], pg_rows[3], lambda s: s.inst_s)
        w4_ratio = paired(pg_rows[5], pg_rows[3], lambda s: s.inst_s)
        checks = [
            (f"1 worker sequential >= {SEQ_FLOOR_RATIO:.0%} of the floor's inst/s", seq_ratio, SEQ_FLOOR_RATIO),
            (f"1 worker x 256 >= {CONC_FLOOR_RATIO:g}x the floor's steps/s", w1_ratio, CONC_FLOOR_RATIO),
            (f"2 workers >= {TWO_WORKERS_RATIO:g}x 1 worker, CPU-bound steps", w2_ratio, TWO_WORKERS_RATIO),
        ]
        for label, value, goal in checks:
            ok = value >= goal
            missed += not ok
            print(f"  {verdict(ok)}  {label}: {value:.2f}")
        print(
            f"  INFO  order example (the database's work as much as the workers'): 2 workers / 1 worker: {w2_order:.2f}"
        )
        print(f"  INFO  order example: 4 workers / 1 worker: {w4_ratio:.2f}")
        if dbos.samples:
            dbos_ratio = paired(pg_rows[2], dbos, lambda s: s.inst_s)
            missed += dbos_ratio < DBOS_RATIO
            print(
                f"  {verdict(dbos_ratio >= DBOS_RATIO)}  1 worker sequential >= {DBOS_RATIO:g}x DBOS sequential: "
                f"{dbos_ratio:.2f}"
            )
        if lite_floor.samples:
            print("SQLite (no targets):")
            print(f"  INFO  sequential / floor inst/s: {paired(lite_rows[1], lite_floor, lambda s: s.inst_s):.2f}")
            print(
                f"  INFO  1 worker x 256 / floor steps/s: {paired(lite_rows[2], lite_floor, lambda s: s.steps_s):.2f}"
            )
            print(f"  INFO  2 workers / 1 worker: {paired(lite_rows[3], lite_rows[2], lambda s: s.inst_s):.2f}")
        if takeovers:
            print()
            print(
                f"Failover: 2 workers, {FAILOVER_OWN} instances each (5 steps of {FAILOVER_STEP_S:g} s); "
                "seconds from the signal to the victim's instances"
            )
            print()
            print(
                "| store | signal | lease | victim's instances | survivor holds the first | ... all | "
                "a step of one committed again | target: all ≤ lease + 2 s |"
            )
            print("|---|---|---:|---:|---:|---:|---:|---|")
            groups: dict[tuple[Backend, str, float], list[Takeover]] = {}
            for t in takeovers:
                groups.setdefault((t.backend, t.how, t.lease), []).append(t)
            for (backend, how, lease), ts in groups.items():
                last = median([t.last for t in ts])
                ok = last <= lease + TAKEOVER_SLACK_S
                missed += not ok
                print(
                    f"| {'PostgreSQL' if backend == 'pg' else 'SQLite'} | {how} | {lease:g} s | "
                    f"{median([t.victims for t in ts]):.0f} | {median([t.first for t in ts]):.2f} | {last:.2f} | "
                    f"{median([t.step for t in ts]):.2f} | {verdict(ok)} |"
                )
        if profile_path is not None and profile_path.exists():
            print()
            print(f"cProfile of one PG worker process (256 concurrent, {sizes.conc + 4} instances):")
            stats = pstats.Stats(str(profile_path))
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(30)
        print()
        print(f"{missed} target(s) missed")
        return 1 if missed else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
