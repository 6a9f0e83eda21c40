"""
Many workers, one database: 1000 orders over three worker processes, one of them killed midway.

Run it with ``python examples/scale_out.py`` (PostgreSQL: the server at ``$ORCH_PG``,
default ``postgresql://postgres@127.0.0.1:5432/postgres``, in a database
``orch_scale_out`` made afresh; needs the ``postgres`` extra) or
``python examples/scale_out.py --sqlite`` (the SQLite file ``scale_out.db``, made
afresh). ``--orders N`` (default 1000) and ``--workers K`` (default 3) size it.

1. K worker processes (this script's ``worker`` sub-command) each run an
   ``Engine`` on the shared store with the order example's services, made slow
   (every call sleeps 5-20 ms, like a network round trip), so orders are in flight
   a while.
2. A client process (``starter``: ``Engine(store, concurrency=0)``) starts the N
   orders with ids of its own, ``ORD-0001``..., every 4th above 1000 (it needs the
   manager's approval); then it starts every id again, which starts nothing.
3. Another client (``manager``) completes the manager's tasks as they appear,
   approving all but every 5th large order (``ORD-0020``, ``ORD-0040``...): those
   end ``failed``.
4. When about half the orders are done, the busiest worker is SIGKILLed. The
   takeover time is from the kill until no unfinished instance is leased to the
   dead worker's owner id any more and one of the instances it was driving moved
   on under another worker (both read from the store).
5. Once every order has ended, the summary: counts per status, that each order
   ended as its number says it should, that there are exactly N instances, the
   takeover time and the wall time. Exit code 0 only if all of that holds.

Every child process is stopped on exit, also on an error or Ctrl-C. Workers log to
stderr, warnings and above only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.order_process import Approval, InventoryService, Item, OrderProcess, PaymentService, UserService
from statemachine_orch import (
    Engine,
    InProcessService,
    InstanceInfo,
    InstanceStatus,
    SqliteStore,
    Store,
    TaskAlreadyCompleted,
)

if TYPE_CHECKING:
    import psycopg

SCRIPT: Final = Path(__file__).resolve()
DEFAULT_SERVER: Final = "postgresql://postgres@127.0.0.1:5432/postgres"
LEASE: Final = 2.0
"""The workers' lease (seconds): a worker that dies on another host is replaced after at most this long."""
LATENCY: Final = (0.005, 0.020)
"""Each service call sleeps this long (seconds, uniformly drawn): a network round trip."""
TICK: Final = 0.02
"""How often the coordinator looks at the store (seconds) while it measures the takeover."""


# ---------------------------------------------------------------------------- the orders


def order_id(n: int) -> str:
    """The id the starter gives order number *n* (from 1)."""
    return f"ORD-{n:04d}"


def order_number(instance_id: str) -> int:
    """The number in an order's id."""
    return int(instance_id.removeprefix("ORD-"))


def needs_approval(n: int) -> bool:
    """Every 4th order is large: above 1000, the manager approves it."""
    return n % 4 == 0


def rejected(n: int) -> bool:
    """The manager rejects every 5th large order."""
    return n % 20 == 0


def expected_status(n: int) -> InstanceStatus:
    """How order *n* must end: failed when the manager rejected it, else completed."""
    return InstanceStatus.FAILED if rejected(n) else InstanceStatus.COMPLETED


def new_order(n: int) -> OrderProcess:
    """Order number *n*: amount above 1000 exactly for the large ones."""
    amount = 1010.0 + 10 * (n % 50) if needs_approval(n) else 20.0 + 10 * (n % 90)
    return OrderProcess(
        order_id=order_id(n), customer_id=f"CUST-{n % 97:03d}", amount=amount, items=[Item("BOOK", 1 + n % 3)]
    )


# ---------------------------------------------------------------------------- stores


def open_store(target: str) -> Store:
    """The store a child process is given: ``sqlite:<path>``, else a PostgreSQL connection string."""
    if target.startswith("sqlite:"):
        return SqliteStore(target.removeprefix("sqlite:"))
    from statemachine_orch import PostgresStore  # noqa: PLC0415 - psycopg only when asked for

    return PostgresStore(target)


def fresh_sqlite(path: Path) -> str:
    """Remove *path* and its companions, make an empty store there; its target string."""
    for name in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal", ".lock"))):
        name.unlink(missing_ok=True)
    SqliteStore(path, create=True).close()
    return f"sqlite:{path}"


def fresh_postgres(server: str, database: str) -> str:
    """Drop *database* on *server* if it exists, create it empty with the store's tables; its connection string."""
    import psycopg  # noqa: PLC0415 - the postgres extra is needed only here
    from psycopg import sql  # noqa: PLC0415
    from psycopg.conninfo import make_conninfo  # noqa: PLC0415

    from statemachine_orch import PostgresStore  # noqa: PLC0415

    with psycopg.connect(server, autocommit=True, connect_timeout=10) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    dsn = make_conninfo(server, dbname=database)
    PostgresStore(dsn).close()  # the tables, before the workers race to make them
    return dsn


# ---------------------------------------------------------------------------- the worker process


@attrs.define
class SlowService:
    """
    An in-process service that answers after a network-like delay, and reports every call on stdout.

    The line ``call <instance id>`` tells the coordinator which worker drives which
    order (the idempotency key starts with the instance id).
    """

    name: str
    target: object
    _inner: InProcessService = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._inner = InProcessService(self.name, self.target)

    async def call(self, operation: str, params: Mapping[str, Any], *, idempotency_key: str) -> Any:
        """Report the call, wait a while, then run the operation."""
        print(f"call {idempotency_key.split(':', 1)[0]}", flush=True)
        await asyncio.sleep(random.uniform(*LATENCY))  # noqa: S311 - a simulated latency, not a secret
        return await self._inner.call(operation, params, idempotency_key=idempotency_key)


def slow_services() -> dict[str, SlowService]:
    """The order example's three services, slow, with stock enough for any number of orders."""
    return {
        "user-service": SlowService("user-service", UserService()),
        "inventory-service": SlowService("inventory-service", InventoryService(stock={"BOOK": 10**12})),
        "payment-service": SlowService("payment-service", PaymentService()),
    }


async def worker(target: str) -> None:
    """A worker process: one Engine on the shared store until SIGTERM (or its parent is gone)."""
    store = open_store(target)
    engine = Engine(store, workflows=[OrderProcess], services=slow_services(), lease=LEASE)
    print(f"owner {engine.owner}", flush=True)
    run = asyncio.ensure_future(engine.run())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):  # a clean stop hands the instances over at once
        loop.add_signal_handler(signum, run.cancel)
    parent = os.getppid()
    try:
        while not run.done():
            await asyncio.wait([run], timeout=0.5)
            if os.getppid() != parent:  # the coordinator died without stopping us
                run.cancel()
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run  # the engine stops (and gives its leases back) before its store closes
        store.close()


# ---------------------------------------------------------------------------- the client processes


async def starter(target: str, orders: int) -> None:
    """Start the orders, each with its own id; then start every id again (which starts nothing)."""
    store = open_store(target)
    try:
        async with Engine(store, concurrency=0) as client:
            began = time.monotonic()
            for n in range(1, orders + 1):
                await client.start(new_order(n), instance_id=order_id(n))
            first = time.monotonic() - began
            for n in range(1, orders + 1):
                await client.start(new_order(n), instance_id=order_id(n))
            again = time.monotonic() - began - first
            print(f"[starter] {orders} orders started in {first:.1f} s; every id started again in {again:.1f} s")
    finally:
        store.close()


async def manager(target: str, orders: int) -> None:
    """Complete the manager's approval tasks as they appear, rejecting every 5th large order."""
    expected = sum(needs_approval(n) for n in range(1, orders + 1))
    decided: dict[str, bool] = {}
    store = open_store(target)
    try:
        async with Engine(store, concurrency=0) as client:
            parent = os.getppid()
            while len(decided) < expected and os.getppid() == parent:
                tasks = [t for t in client.tasks(user="manager") if t.instance_id not in decided]
                for task in tasks:
                    approved = not rejected(order_number(task.instance_id))
                    comment = "fine" if approved else "too large for this customer"
                    with contextlib.suppress(TaskAlreadyCompleted):
                        await client.complete_task(
                            task.id, user="manager", form=Approval(approved=approved, comment=comment)
                        )
                    decided[task.instance_id] = approved
                if not tasks:
                    await asyncio.sleep(0.05)
    finally:
        store.close()
    yes = sum(decided.values())
    print(f"[manager] {len(decided)} large orders decided: {yes} approved, {len(decided) - yes} rejected")


# ---------------------------------------------------------------------------- the coordinator


@attrs.define
class Worker:
    """A worker process, its owner id and the orders it called a service for last (read from its stdout)."""

    index: int
    proc: subprocess.Popen[str]
    owner: str | None = None
    ready: threading.Event = attrs.field(factory=threading.Event)
    reader: threading.Thread | None = None


@attrs.define
class Takeover:
    """The kill of one worker, and what the store showed after it (times from the kill, seconds)."""

    victim: Worker
    at_terminal: int
    killed_at: float
    in_flight: dict[str, tuple[InstanceStatus, str | None]]
    """The orders the victim was driving, as the store held them just after the kill."""
    leases_gone: float | None = None
    moved_on: float | None = None
    moved_id: str | None = None
    ended_rows: int = 0
    """Orders that had ended under the victim and still name it as their owner (with an expired lease)."""

    @property
    def done(self) -> bool:
        """Whether the dead owner holds no order that is not over, and one of its orders moved on (or it drove none)."""
        return self.leases_gone is not None and (self.moved_on is not None or not self.in_flight)

    @property
    def seconds(self) -> float | None:
        """The takeover time: the later of the two."""
        if self.leases_gone is None or not self.done:
            return None
        return max(self.leases_gone, self.moved_on or 0.0)


class Leases:
    """
    Who holds which instance: the ``owner`` column of the store's ``instances`` table, read directly.

    ``InstanceInfo`` does not show the owner, and ``store.owners()`` lists an owner as
    long as any row names it, also a finished instance whose lease was expired
    (docs/design/leases.md: owner, lease_until and fence are part of every row).
    """

    def __init__(self, target: str) -> None:
        self._sqlite: sqlite3.Connection | None = None
        self._pg: psycopg.Connection[Any] | None = None
        if target.startswith("sqlite:"):
            uri = Path(target.removeprefix("sqlite:")).resolve().as_uri() + "?mode=ro"
            self._sqlite = sqlite3.connect(uri, uri=True)
        else:
            import psycopg  # noqa: PLC0415 - the postgres extra is needed only here

            self._pg = psycopg.connect(target, autocommit=True)

    def held_by(self, owner: str) -> list[tuple[str, InstanceStatus]]:
        """The instances whose row names *owner*, with their status."""
        if self._sqlite is not None:
            rows = self._sqlite.execute("SELECT id, status FROM instances WHERE owner = ?", (owner,)).fetchall()
        else:
            assert self._pg is not None  # noqa: S101 - one of the two
            rows = self._pg.execute("SELECT id, status FROM instances WHERE owner = %s", (owner,)).fetchall()
        return [(str(i), InstanceStatus(str(s))) for i, s in rows]

    def close(self) -> None:
        """Close the connection."""
        if self._sqlite is not None:
            self._sqlite.close()
        if self._pg is not None:
            self._pg.close()


class Coordinator:
    """Runs the workers and the two clients, kills a worker midway, checks and prints the outcome."""

    def __init__(self, target: str, label: str, orders: int, workers: int, deadline: float) -> None:
        self.target = target
        self.label = label
        self.orders = orders
        self.n_workers = workers
        self.deadline = deadline
        self.store = open_store(target)
        self.reader = Engine(self.store, concurrency=0)  # reads only
        self.leases = Leases(target)
        self.workers: list[Worker] = []
        self.clients: dict[str, subprocess.Popen[str]] = {}
        self.last_caller: dict[str, int] = {}  # order id -> index of the worker that called a service for it last
        self.takeover: Takeover | None = None

    # -- processes

    def _spawn(self, role: str, *, pipe: bool) -> subprocess.Popen[str]:
        cmd = [sys.executable, str(SCRIPT), role, "--store", self.target, "--orders", str(self.orders)]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE if pipe else None, text=True)  # noqa: S603 - our own script

    def _read(self, w: Worker) -> None:
        """Follow a worker's stdout: its owner id, then one line per service call."""
        assert w.proc.stdout is not None  # noqa: S101 - spawned with a pipe
        for line in w.proc.stdout:
            kind, _, rest = line.strip().partition(" ")
            if kind == "call":
                self.last_caller[rest] = w.index
            elif kind == "owner":
                w.owner = rest
                w.ready.set()
        w.ready.set()  # it ended (without an owner line if it failed at once)

    def start_workers(self) -> None:
        """Start the worker processes and wait until each has its Engine."""
        for i in range(self.n_workers):
            w = Worker(i + 1, self._spawn("worker", pipe=True))
            w.reader = threading.Thread(target=self._read, args=(w,), daemon=True)
            w.reader.start()
            self.workers.append(w)
        for w in self.workers:
            if not w.ready.wait(60) or w.owner is None:
                msg = f"worker {w.index} (pid {w.proc.pid}) did not start (exit code {w.proc.poll()})"
                raise RuntimeError(msg)

    def stop_all(self) -> None:
        """Stop every child process still running: SIGTERM, then SIGKILL after 5 s."""
        procs = [w.proc for w in self.workers] + list(self.clients.values())
        for p in procs:
            if p.poll() is None:
                p.terminate()
        end = time.monotonic() + 5
        for p in procs:
            try:
                p.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    # -- the run

    def run(self) -> int:
        """The whole run; the process exit code."""
        print(f"== {self.orders} orders, {self.n_workers} worker processes, {self.label}", flush=True)
        self.start_workers()
        owners = ", ".join(f"{w.index}: pid {w.proc.pid}" for w in self.workers)
        print(f"workers up ({owners}); lease {LEASE:g} s", flush=True)
        began = time.monotonic()
        self.clients["starter"] = self._spawn("starter", pipe=False)
        self.clients["manager"] = self._spawn("manager", pipe=False)
        infos = self._watch(began)
        wall = time.monotonic() - began
        for role, proc in self.clients.items():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                print(f"the {role} did not finish", flush=True)
        return self._summary(infos, wall)

    def _infos(self) -> dict[str, InstanceInfo]:
        return {i.id: i for i in self.reader.instances()}

    def _watch(self, began: float) -> dict[str, InstanceInfo]:
        """Print progress each second, kill a worker at half-way, follow the takeover; until all ended."""
        next_print = began + 1.0
        next_count = began
        infos: dict[str, InstanceInfo] = {}
        while True:
            now = time.monotonic()
            if self.takeover is not None and not self.takeover.done:
                self._follow(self.takeover)
            if now >= next_count:
                next_count = now + 0.1
                infos = self._infos()
                ended = sum(i.status.is_terminal for i in infos.values())
                if self.takeover is None and ended >= self.orders // 2:
                    self.takeover = self._kill(ended)
                if now >= next_print:
                    next_print += 1.0
                    self._progress(now - began, infos)
                started = self.clients["starter"].poll() is not None
                if started and ended == len(infos) and (self.takeover is None or self.takeover.done):
                    return infos
                dead = [w for w in self.workers if w.proc.poll() is not None and w is not self._victim()]
                if dead:
                    print(f"worker {dead[0].index} exited by itself (code {dead[0].proc.returncode})", flush=True)
                    return infos
                if self.clients["starter"].poll() not in (None, 0):
                    print("the starter failed", flush=True)
                    return infos
                if now - began > self.deadline:
                    print(f"deadline: not every order ended within {self.deadline:g} s", flush=True)
                    return infos
            time.sleep(TICK)

    def _victim(self) -> Worker | None:
        return self.takeover.victim if self.takeover is not None else None

    def _progress(self, elapsed: float, infos: dict[str, InstanceInfo]) -> None:
        counts = Counter(i.status.value for i in infos.values())
        ended = sum(i.status.is_terminal for i in infos.values())
        parts = "  ".join(f"{s} {c}" for s, c in sorted(counts.items()))
        alive = sum(w.proc.poll() is None for w in self.workers)
        print(
            f"{elapsed:6.1f} s  started {len(infos):5d}  ended {ended:5d}/{self.orders}  [{parts}]  "
            f"workers alive {alive}  lease owners {len(self.store.owners())}",
            flush=True,
        )

    def _kill(self, ended: int) -> Takeover:
        """SIGKILL the worker driving the most orders; note what it was driving."""
        running = {i for i, info in self._infos().items() if info.status is InstanceStatus.RUNNING}
        load = Counter(self.last_caller[i] for i in running if i in self.last_caller)
        victim = max(self.workers, key=lambda w: (load[w.index], -w.index))
        victim.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        victim.proc.wait()  # reaped: its pid is gone, as after a crash
        if victim.reader is not None:
            victim.reader.join(5)  # every line it wrote before dying is read
        infos = self._infos()
        in_flight: dict[str, tuple[InstanceStatus, str | None]] = {
            i: (info.status, info.step)
            for i, info in infos.items()
            if self.last_caller.get(i) == victim.index
            and info.status in (InstanceStatus.RUNNING, InstanceStatus.COMPENSATING)
        }
        print(
            f"--> SIGKILL worker {victim.index} (pid {victim.proc.pid}, owner {victim.owner}) at {ended} orders "
            f"ended; it was driving {len(in_flight)}",
            flush=True,
        )
        return Takeover(victim, ended, killed_at, in_flight)

    def _follow(self, t: Takeover) -> None:
        """Look at the store: does the dead owner still hold leases, has one of its orders moved on?"""
        elapsed = time.monotonic() - t.killed_at
        if t.moved_on is None:
            for instance_id, (status, step) in t.in_flight.items():
                info = self.reader.info(instance_id)
                if (info.status, info.step) != (status, step):
                    t.moved_on, t.moved_id = elapsed, instance_id
                    break
        if t.leases_gone is None and t.victim.owner is not None:
            held = self.leases.held_by(t.victim.owner)
            if all(status.is_terminal for _, status in held):
                t.leases_gone, t.ended_rows = elapsed, len(held)
        if t.done:
            print(f"--> takeover done in {t.seconds:.2f} s", flush=True)

    # -- the verdict

    def _summary(self, infos: dict[str, InstanceInfo], wall: float) -> int:
        ok = True
        counts = Counter(i.status.value for i in infos.values())
        print("\n== summary")
        print("statuses: " + ", ".join(f"{s} {c}" for s, c in sorted(counts.items())))
        wrong: list[str] = []
        for n in range(1, self.orders + 1):
            info = infos.get(order_id(n))
            want = expected_status(n)
            if info is None or info.status is not want:
                got = "missing" if info is None else f"{info.status.value} at {info.step} ({info.error})"
                wrong.append(f"{order_id(n)}: expected {want.value}, got {got}")
        n_rejected = sum(rejected(n) for n in range(1, self.orders + 1))
        if wrong:
            ok = False
            print(f"outcomes: {len(wrong)} orders did not end as they should:")
            for line in wrong[:20]:
                print(f"  {line}")
            for line in wrong[:3]:
                self._print_history(line.split(":", 1)[0])
        else:
            print(
                f"outcomes: every order ended as it should ({self.orders - n_rejected} completed; "
                f"{n_rejected} failed, exactly the rejected ones)"
            )
            example = next((order_id(n) for n in range(1, self.orders + 1) if rejected(n)), None)
            if example is not None:
                print(f"  e.g. {example}: {infos[example].error}")
        if len(infos) == self.orders:
            print(f"instances: {len(infos)} (each id started twice: one instance per id)")
        else:
            ok = False
            print(f"instances: {len(infos)}, expected {self.orders}")
        t = self.takeover
        if t is None:
            ok = False
            print("takeover: no worker was killed")
        elif t.seconds is None:
            ok = False
            print(
                f"takeover: NOT done (the dead owner's unfinished orders all taken over after: {t.leases_gone}; "
                f"one of its {len(t.in_flight)} orders moved on after: {t.moved_on})"
            )
        else:
            moved = f"; {t.moved_id} moved on after {t.moved_on:.2f} s" if t.moved_id is not None else ""
            left = (
                f"; {t.ended_rows} finished order(s) still name it as owner, with an expired lease"
                if t.ended_rows
                else ""
            )
            print(
                f"takeover: {t.seconds:.2f} s after the SIGKILL of worker {t.victim.index}, which was driving "
                f"{len(t.in_flight)} orders (no unfinished order leased to it after {t.leases_gone:.2f} s{moved}{left})"
            )
        for role, proc in self.clients.items():
            if proc.returncode != 0:
                ok = False
                print(f"the {role} exited with {proc.returncode}")
        print(f"wall time: {wall:.1f} s ({self.orders / wall:.0f} orders/s)")
        print("OK" if ok else "FAILED", flush=True)
        return 0 if ok else 1

    def _print_history(self, instance_id: str) -> None:
        with contextlib.suppress(Exception):
            history = self.reader.history(instance_id)
            print(f"  history of {instance_id}:")
            for event in history:
                print(f"    {event.describe()}")


# ---------------------------------------------------------------------------- entry point


def _configure_logging() -> None:
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


@contextlib.contextmanager
def _coordinating(target: str, label: str, args: argparse.Namespace) -> Generator[Coordinator]:
    coordinator = Coordinator(target, label, args.orders, args.workers, args.deadline)
    try:
        yield coordinator
    finally:
        coordinator.stop_all()
        coordinator.leases.close()
        coordinator.store.close()


def _interrupt(signum: int, frame: object) -> None:
    del signum, frame
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the role the command line names; the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("role", nargs="?", default="run", choices=("run", "worker", "starter", "manager"))
    parser.add_argument("--sqlite", action="store_true", help="use a SQLite file instead of PostgreSQL")
    parser.add_argument("--db", default="scale_out.db", help="the SQLite file (default: %(default)s)")
    parser.add_argument("--pg-database", default="orch_scale_out", help="the database made (default: %(default)s)")
    parser.add_argument("--orders", type=int, default=1000, help="how many orders (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=3, help="how many worker processes (default: %(default)s)")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds to wait for every order to end")
    parser.add_argument("--store", help=argparse.SUPPRESS)  # the children's store
    args = parser.parse_args(argv)
    _configure_logging()
    try:
        if args.role == "worker":
            asyncio.run(worker(args.store))
        elif args.role == "starter":
            asyncio.run(starter(args.store, args.orders))
        elif args.role == "manager":
            asyncio.run(manager(args.store, args.orders))
        else:
            if args.workers < 2 or args.orders < 2:  # noqa: PLR2004 - one worker to kill, one to take over
                parser.error("--workers and --orders must be at least 2")
            if args.sqlite:
                target, label = fresh_sqlite(Path(args.db)), f"SQLite {args.db}"
            else:
                server = os.environ.get("ORCH_PG") or DEFAULT_SERVER
                target = fresh_postgres(server, args.pg_database)
                label = f"PostgreSQL database {args.pg_database}"
            signal.signal(signal.SIGTERM, _interrupt)  # stopped from outside: stop the children too
            with _coordinating(target, label, args) as coordinator:
                return coordinator.run()
    except KeyboardInterrupt:
        if args.role == "run":
            print("interrupted: every child process stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
