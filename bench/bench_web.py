"""
Web benchmark (issue 13): the inbox API for one user among 100,000 open tasks in PostgreSQL, 50 clients at once.

Run by hand from the repository root (not in CI, not as a test); it needs the
``postgres`` and ``web`` extras and a PostgreSQL server (default
``postgresql://postgres@127.0.0.1:5432``, trust auth; ``--pg`` to change it)::

    python bench/bench_web.py              # 100,000 tasks, 50 clients, 20 s measured (~3 minutes)
    python bench/bench_web.py --quick      # 10,000 tasks, 5 s measured: a smoke run

What it does:

1. A fresh database ``orch_bench_web_<random>``, dropped at the end.
2. 100,000 instances started by an engine with workers, each parked at a human
   task: 50 workflow classes ``BenchRequest0..49``, the tasks of class *k* for
   ``lead-k`` (assignee) or any member of ``team-k``; half of the classes' tasks
   are due one second after they open (overdue when measured). So 2,000 open tasks
   per team.
3. ``orch serve bench/bench_web.py`` as a process of its own (a client engine on
   the database, trusted-header identities), on a free loopback port.
4. 50 clients, each one keep-alive HTTP/1.1 connection, ask
   ``GET /api/tasks?limit=50`` as ``lead-7`` of ``team-7`` (2,000 tasks theirs,
   1,000 overdue) one request after another: 3 s of warm-up, then the figures over
   ``--seconds``. Latency is from writing a request to the last byte of its
   answer. ``--user`` picks another identity (``--all-teams``: one user in every
   team, who may complete all 100,000 tasks). ``--churn R`` writes a task row R
   times a second meanwhile (the trigger fires: the server's inbox cache is emptied).

The target (issue 13): p95 <= 50 ms. The output says PASS or FAIL and the exit
code is 1 on FAIL. bench/README.md quotes a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import psycopg
import structlog
from psycopg import sql

from statemachine_orch import Ctx, Engine, Workflow, after, human_task, step

DEFAULT_PG: Final = "postgresql://postgres@127.0.0.1:5432"
TEAMS: Final = 50
TARGET_P95_MS: Final = 50.0
ROOT: Final = Path(__file__).absolute().parents[1]


def request_class(k: int) -> type[Workflow]:
    """The workflow whose tasks are for ``lead-k`` or ``team-k`` (due after one second for odd *k*)."""
    due = timedelta(seconds=1) if k % 2 else None

    class BenchRequest(Workflow, name=f"BenchRequest{k}", version="1"):
        number: int
        amount: int

        @step(initial=True)
        def file(self, ctx: Ctx) -> None: ...

        @after(file)
        @human_task(assignee=f"lead-{k}", candidate_groups=(f"team-{k}",), due=due, final=True)
        def review(self, ctx: Ctx) -> None: ...

    BenchRequest.__qualname__ = BenchRequest.__name__ = f"BenchRequest{k}"
    return BenchRequest


CLASSES: Final = [request_class(k) for k in range(TEAMS)]
# Module attributes, so that `orch serve bench/bench_web.py` finds them.
globals().update({cls.__name__: cls for cls in CLASSES})


def request(i: int) -> Workflow:
    """Request number *i*, of class ``BenchRequest{i % 50}``."""
    cls: Any = CLASSES[i % TEAMS]  # made by request_class: its fields are number and amount
    made: Workflow = cls(number=i, amount=100 + i % 9000)
    return made


# ---------------------------------------------------------------------------- the database


def dsn_for(base: str, database: str) -> str:
    return f"{base.rstrip('/')}/{database}"


def admin(base: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn_for(base, "postgres"), autocommit=True)


def open_tasks(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM tasks WHERE status = 'open'").fetchone()
        return int(row[0]) if row else 0


async def populate(dsn: str, n: int) -> float:
    """Start *n* instances (round robin over the classes) with workers until each waits at its task; seconds taken."""
    from statemachine_orch._store_postgres import PostgresStore

    started = time.perf_counter()
    with PostgresStore(dsn) as store:
        async with Engine(store, workflows=CLASSES, concurrency=512) as engine:
            chunk = 2000
            for first in range(0, n, chunk):
                await asyncio.gather(
                    *(engine.start(request(i), instance_id=f"R-{i}") for i in range(first, min(n, first + chunk)))
                )
                # The store is the only one to ask (its rows are written by the engine's commits).
                while open_tasks(dsn) < min(n, first + chunk) - chunk // 2:  # noqa: ASYNC110 - keep the backlog bounded
                    await asyncio.sleep(0.2)
                print(f"  started {min(n, first + chunk):,} ...", flush=True)
            while (opened := open_tasks(dsn)) < n:  # noqa: ASYNC110 - the store is the one to ask
                await asyncio.sleep(0.2)
            print(f"  {opened:,} open tasks", flush=True)
    return time.perf_counter() - started


# ---------------------------------------------------------------------------- the server


def start_server(dsn: str, log: Path, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    url = f"postgresql://{dsn.split('://', 1)[1]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["serve", "bench/bench_web.py", "--store", url, "--port", "0", "--workers", str(workers)]
    with log.open("wb") as sink:
        proc = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
            [sys.executable, "-m", "statemachine_orch", *args],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while (found := re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text())) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            msg = f"orch serve did not start: {log.read_text()}"
            raise RuntimeError(msg)
        time.sleep(0.05)
    return proc, int(found.group(1))


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) the process and its children (server processes) used so far, children alive."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


# ---------------------------------------------------------------------------- the clients


async def one_client(
    port: int,
    request: bytes,
    stop_at: float,
    measure_from: float,
    latencies: list[float],
    bodies: list[bytes],
    interval: float,
) -> None:
    """
    One keep-alive connection asking until *stop_at*; latencies after *measure_from*.

    With *interval* 0, a request as soon as the last one was answered (a closed loop);
    else one request every *interval* seconds (those answered late are sent at once).
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    next_at = time.perf_counter() + random.uniform(0, interval)  # clients spread over the interval
    try:
        while (now := time.perf_counter()) < stop_at:
            if interval:
                if now < next_at:
                    await asyncio.sleep(next_at - now)
                    now = time.perf_counter()
                next_at += interval
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1]
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            body = await reader.readexactly(length)
            took = time.perf_counter() - now
            if status != b"200":
                msg = f"the inbox answered {status!r}: {body[:300]!r}"
                raise RuntimeError(msg)
            if now >= measure_from:
                latencies.append(took)
                if len(bodies) < 1:
                    bodies.append(body)
    finally:
        writer.close()


def pct(sorted_ms: Sequence[float], q: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, round(q * (len(sorted_ms) - 1)))]


async def churn(dsn: str, rate: float, stop_at: float) -> int:
    """
    Write a task row *rate* times a second until *stop_at* (``UPDATE ... SET claimed_by = claimed_by``).

    The row stays as it was, but the write fires the trigger: every server forgets its kept
    inbox answers, as on any real change (a task opened, claimed, completed elsewhere).
    """
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        ids = [
            r[0] for r in await (await conn.execute("SELECT id FROM tasks WHERE status = 'open' LIMIT 1000")).fetchall()
        ]
        written = 0
        next_at = time.perf_counter()
        while (now := time.perf_counter()) < stop_at:
            if now < next_at:
                await asyncio.sleep(next_at - now)
            next_at += 1.0 / rate
            await conn.execute("UPDATE tasks SET claimed_by = claimed_by WHERE id = %s", (random.choice(ids),))
            written += 1
        return written


async def load(
    port: int,
    clients: int,
    user: str,
    groups: str,
    warmup: float,
    seconds: float,
    interval: float = 0.0,
    churn_dsn: str | None = None,
    churn_rate: float = 0.0,
) -> dict[str, Any]:
    request = (
        f"GET /api/tasks?limit=50 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"X-Forwarded-User: {user}\r\nX-Forwarded-Groups: {groups}\r\n\r\n"
    ).encode()
    latencies: list[float] = []
    bodies: list[bytes] = []
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds
    writes = churn(churn_dsn, churn_rate, stop_at) if churn_dsn and churn_rate else asyncio.sleep(0, 0)
    *_, written = await asyncio.gather(
        *(one_client(port, request, stop_at, measure_from, latencies, bodies, interval) for _ in range(clients)),
        writes,
    )
    ms = sorted(x * 1000 for x in latencies)
    tasks: list[dict[str, Any]] = json.loads(bodies[0])["tasks"] if bodies else []
    return {
        "requests": len(ms),
        "per_second": len(ms) / seconds,
        "p50": pct(ms, 0.50),
        "p95": pct(ms, 0.95),
        "p99": pct(ms, 0.99),
        "max": ms[-1] if ms else float("nan"),
        "tasks_per_answer": len(tasks),
        "overdue_in_answer": sum(1 for t in tasks if t["overdue"]),
        "task_writes": written,
    }


# ---------------------------------------------------------------------------- main


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pg", default=os.environ.get("BENCH_PG", DEFAULT_PG), help="server URL without a database")
    p.add_argument("--quick", action="store_true", help="10,000 tasks, 5 s measured: a smoke run")
    p.add_argument("--tasks", type=int, default=None, help="open tasks (default 100,000)")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--server-workers", type=int, default=1, help="orch serve --workers (server processes)")
    p.add_argument(
        "--interval", type=float, default=0.0, help="each client asks once every this many seconds (0: back to back)"
    )
    p.add_argument("--seconds", type=float, default=None, help="measured seconds (default 20)")
    p.add_argument("--all-teams", action="store_true", help="ask as a user of every team (all tasks are theirs)")
    p.add_argument(
        "--churn", type=float, default=0.0, help="write a task row this many times a second meanwhile (0: none)"
    )
    p.add_argument("--keep", action="store_true", help="keep the database (its name is printed)")
    p.add_argument("--database", default=None, help="measure on a database kept by --keep (nothing populated)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    n = args.tasks or (10_000 if args.quick else 100_000)
    seconds = args.seconds or (5.0 if args.quick else 20.0)
    database = args.database or f"orch_bench_web_{secrets.token_hex(4)}"
    dsn = dsn_for(args.pg, database)
    if args.database is None:
        with admin(args.pg) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    server: subprocess.Popen[bytes] | None = None
    log = Path(f"/tmp/{database}.serve.log")  # noqa: S108 - the server's log, for when it fails
    try:
        if args.database is None:
            print(f"bench_web: {n:,} open tasks in PostgreSQL database {database}", flush=True)
            took = asyncio.run(populate(dsn, n))
            print(f"  populated in {took:.1f} s", flush=True)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
        else:
            print(f"bench_web: {open_tasks(dsn):,} open tasks in PostgreSQL database {database} (kept)", flush=True)
        server, port = start_server(dsn, log, args.server_workers)
        user, groups = ("lead-7", "team-7")
        if args.all_teams:
            user, groups = ("chief", ",".join(f"team-{k}" for k in range(TEAMS)))
        cpu_before = proc_cpu(server.pid)
        figures = asyncio.run(load(port, args.clients, user, groups, 3.0, seconds, args.interval, dsn, args.churn))
        cpu = (proc_cpu(server.pid) - cpu_before) / (seconds + 3.0)
        ok = figures["p95"] <= TARGET_P95_MS
        print(
            f"\nGET /api/tasks?limit=50 as {user} ({'every team' if args.all_teams else groups}), "
            f"{args.clients} clients ({f'each every {args.interval:g} s' if args.interval else 'back to back'}), "
            f"{args.server_workers} server process(es), "
            f"{seconds:.0f} s measured after 3 s of warm-up (load average {os.getloadavg()[0]:.1f}):"
        )
        print(
            f"  {figures['requests']:,} answers, {figures['per_second']:.0f}/s; latency ms "
            f"p50 {figures['p50']:.1f}  p95 {figures['p95']:.1f}  p99 {figures['p99']:.1f}  max {figures['max']:.1f}"
        )
        print(
            f"  each answer: {figures['tasks_per_answer']} tasks ({figures['overdue_in_answer']} overdue); "
            f"the server used {cpu:.2f} CPU cores on average"
        )
        if args.churn:
            print(
                f"  meanwhile {figures['task_writes']:,} task rows written ({args.churn:g}/s: each one empties the cache)"
            )
        print(f"  target p95 <= {TARGET_P95_MS:.0f} ms: {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
        if not (args.keep or args.database):
            with admin(args.pg) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        else:
            print(f"kept database {database}")


if __name__ == "__main__":
    sys.exit(main())
