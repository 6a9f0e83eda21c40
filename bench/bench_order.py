"""
Benchmark of the order example in memory against plain Python, ``transitions`` and python-statemachine.

Run by hand from the repository root (not in CI, not as a timed test)::

    python bench/bench_order.py                    # defaults: --runs 7 --instances 2000
    python bench/bench_order.py --runs 9 --instances 4000 --gc off
    python bench/bench_order.py --profile          # also: cProfile of the engine, memory by line

One process measures every contender (medians of ``--runs`` runs, each run a
whole workload of ``--instances`` orders, contenders interleaved and rotated
within each run), prints a table, the ratios, each target of issue 2 as
PASS/FAIL, and exits 1 when a target is missed. ``bench/README.md`` explains
every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import linecache
import logging
import platform
import pstats
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import statemachine
import transitions
from statemachine import State, StateMachine
from transitions import Machine

from examples.order_process import (
    InventoryService,
    Item,
    OrderProcess,
    PaymentService,
    UserService,
    make_engine,
)
from statemachine_orch import Engine, EventKind, InstanceStatus, machine_of

# ---------------------------------------------------------------------------- the flow

STATE_ATTRIBUTE: Final = "_orch_state"  # the engine's model_attribute (statemachine_orch/_machine.py)
STEPS: Final = (
    "validate_order",
    "check_inventory",
    "manual_approval",
    "process_payment",
    "update_inventory",
    "send_confirmation",
)
LIFECYCLE: Final = (
    "@created",
    "@completed",
    "@compensating",
    "@cancelling",
    "@failed",
    "@cancelled",
    "@compensation_failed",
)
STEPS_RUN: Final = 5  # amount 500: validate, check, payment, update, confirm (no approval)
TRANSITIONS_FIRED: Final = 5  # `next` after each of the 5 steps; the engine creates the instance in validate_order
STOCK: Final = 10**12  # so that thousands of orders never run out of BOOKs


@attrs.define(slots=False, eq=False)
class Order:
    """The process variables of OrderProcess, as a plain attrs class (same fields, same defaults)."""

    order_id: str
    customer_id: str
    amount: float
    items: list[Item] = attrs.field(factory=list[Item])
    validated: bool = False
    approved: bool = False
    payment_id: str | None = None
    confirmation_sent: bool = False


@attrs.frozen
class Services:
    """The example's three in-process services, called directly by the contenders."""

    users: UserService
    inventory: InventoryService
    payments: PaymentService


def new_services() -> Services:
    return Services(UserService(), InventoryService(stock={"BOOK": STOCK}), PaymentService())


def new_engine() -> tuple[Engine, InventoryService]:
    """The example's ``make_engine()``, with enough stock for every order of a workload."""
    engine, inventory, _ = make_engine()
    inventory.stock["BOOK"] = STOCK
    return engine, inventory


# The guards, as OrderProcess declares them.
def is_validated(o: Order) -> bool:
    return o.validated


def needs_approval(o: Order) -> bool:
    return o.amount > 1000


def is_approved(o: Order) -> bool:
    return o.approved


def checked(guard: Callable[[Order], object]) -> Callable[..., bool]:
    """A condition like the engine's (statemachine_orch/_machine.py ``_checked``): insist on a real bool."""

    def condition(wf: Order, *_: object) -> bool:
        result = guard(wf)
        if result is True or result is False:
            return result
        msg = f"guard returned {result!r}, not a bool"
        raise TypeError(msg)

    return condition


def checked_model(guard: Callable[[Order], object]) -> Callable[..., bool]:
    """The same condition for python-statemachine, which passes arguments by name (``model``)."""
    condition = checked(guard)

    def by_name(model: Order) -> bool:
        return condition(model)

    return by_name


# The step bodies: the same service calls as OrderProcess's steps, made directly.
_step_log: Any = structlog.get_logger("bench.step")


def validate_order(o: Order, s: Services, key: str) -> None:
    del key
    o.validated = s.users.validateOrder(order_id=o.order_id, customer_id=o.customer_id)


def check_inventory(o: Order, s: Services, key: str) -> None:
    del key
    s.inventory.checkStock(items=o.items)


def process_payment(o: Order, s: Services, key: str) -> None:
    o.payment_id = s.payments.processPayment(order_id=o.order_id, amount=o.amount, idempotency_key=key)


def update_inventory(o: Order, s: Services, key: str) -> None:
    s.inventory.updateStock(order_id=o.order_id, items=o.items, idempotency_key=key)


def send_confirmation(o: Order, s: Services, key: str) -> None:
    del s
    # OrderProcess.send_confirmation logs through ctx.log (bound lazily); do the same work.
    log = _step_log.bind(instance_id=key, workflow="OrderProcess", step="send_confirmation", attempt=1)
    log.info("confirmation_sent", order_id=o.order_id)
    o.confirmation_sent = True


Body = Callable[[Order, Services, str], None]
BODIES: Final[dict[str, Body]] = {
    "validate_order": validate_order,
    "check_inventory": check_inventory,
    "process_payment": process_payment,
    "update_inventory": update_inventory,
    "send_confirmation": send_confirmation,
}


def transitions_spec() -> list[dict[str, Any]]:
    """The transitions statemachine_orch/_machine.py compiles for OrderProcess, written out by hand."""
    return [
        {
            "trigger": "next",
            "source": "validate_order",
            "dest": "check_inventory",
            "conditions": [checked(is_validated)],
        },
        {"trigger": "next", "source": "validate_order", "dest": "reject_order"},
        {
            "trigger": "next",
            "source": "check_inventory",
            "dest": "manual_approval",
            "conditions": [checked(needs_approval)],
        },
        {"trigger": "next", "source": "check_inventory", "dest": "process_payment"},
        {
            "trigger": "next",
            "source": "manual_approval",
            "dest": "process_payment",
            "conditions": [checked(is_approved)],
        },
        {"trigger": "next", "source": "manual_approval", "dest": "reject_order"},
        {"trigger": "next", "source": "process_payment", "dest": "update_inventory"},
        {"trigger": "next", "source": "update_inventory", "dest": "send_confirmation"},
        {"trigger": "next", "source": "send_confirmation", "dest": "@completed"},
        {"trigger": "fail", "source": list(STEPS), "dest": "@compensating"},
        {"trigger": "cancel", "source": list(STEPS), "dest": "@cancelling"},
        {"trigger": "abandon", "source": list(STEPS), "dest": "@cancelled"},
        {"trigger": "compensated", "source": "@compensating", "dest": "@failed"},
        {"trigger": "compensated", "source": "@cancelling", "dest": "@cancelled"},
        {
            "trigger": "compensation_error",
            "source": ["@compensating", "@cancelling"],
            "dest": "@compensation_failed",
        },
        {"trigger": "retry_compensation", "source": "@compensation_failed", "dest": "@compensating"},
    ]


def edges_of(machine: Machine) -> set[tuple[str, str, str | None, int]]:
    """(event, source, dest, number of conditions) for every transition of *machine*."""
    return {
        (name, source, t.dest, len(t.conditions))
        for name, event in machine.events.items()
        for source, ts in event.transitions.items()
        for t in ts
    }


def shared_machine() -> Machine:
    """Contender (c): one bare machine for all instances, configured like the engine's."""
    return Machine(
        model=None,
        states=[*LIFECYCLE, *STEPS],
        transitions=transitions_spec(),
        initial="@created",
        auto_transitions=False,
        send_event=False,
        model_attribute=STATE_ATTRIBUTE,
        name="OrderProcess",
    )


class OrderStateMachine(StateMachine):
    """Contender (e): the same states and guarded transitions in python-statemachine 3.x."""

    created = State(initial=True)
    validate_order = State()
    check_inventory = State()
    manual_approval = State()
    process_payment = State()
    update_inventory = State()
    send_confirmation = State()
    completed = State(final=True)
    compensating = State()
    cancelling = State()
    failed = State(final=True)
    cancelled = State(final=True)
    compensation_failed = State()

    start = created.to(validate_order)
    next = (
        validate_order.to(check_inventory, cond=checked_model(is_validated))
        | check_inventory.to(manual_approval, cond=checked_model(needs_approval))
        | check_inventory.to(process_payment)
        | manual_approval.to(process_payment, cond=checked_model(is_approved))
        | process_payment.to(update_inventory)
        | update_inventory.to(send_confirmation)
        | send_confirmation.to(completed)
    )
    fail = (
        validate_order.to(compensating)
        | check_inventory.to(compensating)
        | manual_approval.to(compensating)
        | process_payment.to(compensating)
        | update_inventory.to(compensating)
        | send_confirmation.to(compensating)
    )
    cancel = (
        validate_order.to(cancelling)
        | check_inventory.to(cancelling)
        | manual_approval.to(cancelling)
        | process_payment.to(cancelling)
        | update_inventory.to(cancelling)
        | send_confirmation.to(cancelling)
    )
    abandon = (
        validate_order.to(cancelled)
        | check_inventory.to(cancelled)
        | manual_approval.to(cancelled)
        | process_payment.to(cancelled)
        | update_inventory.to(cancelled)
        | send_confirmation.to(cancelled)
    )
    compensated = compensating.to(failed) | cancelling.to(cancelled)
    compensation_error = compensating.to(compensation_failed) | cancelling.to(compensation_failed)
    retry_compensation = compensation_failed.to(compensating)


# ---------------------------------------------------------------------------- inputs


@attrs.frozen
class Inputs:
    """Per-order input, built before any timing (the same for every contender)."""

    order_ids: list[str]
    customer_ids: list[str]
    item: Item

    @classmethod
    def make(cls, n: int, tag: str) -> Inputs:
        return cls(
            [f"ORD-{tag}-{i:06d}" for i in range(n)],
            [f"CUST-{i % 997:04d}" for i in range(n)],
            Item("BOOK", 1),
        )


# ---------------------------------------------------------------------------- the contenders
# Each returns the seconds its whole workload of n instances took; it checks its result afterwards.


def time_engine(inputs: Inputs, amount: float = 500.0) -> float:
    """(a) The engine: start_nowait every instance, then await engine.wait_idle(), in one asyncio.run."""

    async def workload() -> float:
        engine, _ = new_engine()
        async with engine:
            ids, cids, item = inputs.order_ids, inputs.customer_ids, inputs.item
            t0 = time.perf_counter()
            for i in range(len(ids)):
                engine.start_nowait(OrderProcess(order_id=ids[i], customer_id=cids[i], amount=amount, items=[item]))
            await engine.wait_idle()
            elapsed = time.perf_counter() - t0
            check_engine_completed(engine, len(ids))
        return elapsed

    return asyncio.run(workload())


def time_engine_results(inputs: Inputs) -> float:
    """(a2) The engine driven with ``await engine.start(...)`` and ``asyncio.gather`` of every ``result()``."""

    async def workload() -> float:
        engine, _ = new_engine()
        async with engine:
            ids, cids, item = inputs.order_ids, inputs.customer_ids, inputs.item
            t0 = time.perf_counter()
            handles = [
                await engine.start(OrderProcess(order_id=ids[i], customer_id=cids[i], amount=500.0, items=[item]))
                for i in range(len(ids))
            ]
            await asyncio.gather(*(h.result() for h in handles))
            elapsed = time.perf_counter() - t0
            check_engine_completed(engine, len(ids))
        return elapsed

    return asyncio.run(workload())


def check_engine_completed(engine: Engine, n: int) -> None:
    done = engine.instances(status=InstanceStatus.COMPLETED)
    if len(done) != n:
        msg = f"engine: {len(done)} of {n} instances completed"
        raise RuntimeError(msg)
    fired = sum(1 for e in engine.history(done[-1].id) if e.kind is EventKind.TRANSITION)
    if fired != TRANSITIONS_FIRED:
        msg = f"engine: the last instance fired {fired} transitions, expected {TRANSITIONS_FIRED}"
        raise RuntimeError(msg)


def check_order(o: Order, fired: int, n: int, name: str) -> None:
    if not (o.validated and o.payment_id and o.confirmation_sent) or fired != TRANSITIONS_FIRED * n:
        msg = f"{name}: the flow did not complete as expected ({o!r}, {fired} transitions for {n} orders)"
        raise RuntimeError(msg)


def time_plain(inputs: Inputs) -> float:
    """(b) Plain Python: the step bodies called in sequence, with the same guards, no state machine."""
    s = new_services()
    ids, cids, item = inputs.order_ids, inputs.customer_ids, inputs.item
    o = Order("", "", 0.0)
    t0 = time.perf_counter()
    for i in range(len(ids)):
        o = Order(order_id=ids[i], customer_id=cids[i], amount=500.0, items=[item])
        oid = o.order_id
        validate_order(o, s, oid + ":0")
        if not is_validated(o):
            continue
        check_inventory(o, s, oid + ":1")
        if needs_approval(o):
            continue  # the manual approval is not part of this flow
        process_payment(o, s, oid + ":2")
        update_inventory(o, s, oid + ":3")
        send_confirmation(o, s, oid + ":4")
    elapsed = time.perf_counter() - t0
    check_order(o, TRANSITIONS_FIRED * len(ids), len(ids), "plain")  # no machine: count the 5 state changes
    return elapsed


def time_plain_async(inputs: Inputs) -> float:
    """(b2) Plain Python with async step bodies awaited in sequence (the engine's steps are async)."""

    async def step(body: Body, o: Order, s: Services, key: str) -> None:
        body(o, s, key)

    async def workload() -> float:
        s = new_services()
        ids, cids, item = inputs.order_ids, inputs.customer_ids, inputs.item
        o = Order("", "", 0.0)
        t0 = time.perf_counter()
        for i in range(len(ids)):
            o = Order(order_id=ids[i], customer_id=cids[i], amount=500.0, items=[item])
            oid = o.order_id
            await step(validate_order, o, s, oid + ":0")
            if not is_validated(o):
                continue
            await step(check_inventory, o, s, oid + ":1")
            if needs_approval(o):
                continue
            await step(process_payment, o, s, oid + ":2")
            await step(update_inventory, o, s, oid + ":3")
            await step(send_confirmation, o, s, oid + ":4")
        elapsed = time.perf_counter() - t0
        check_order(o, TRANSITIONS_FIRED * len(ids), len(ids), "plain async")
        return elapsed

    return asyncio.run(workload())


def time_shared_machine(inputs: Inputs, machine: Machine) -> float:
    """(c) One bare shared machine: the instance starts in validate_order, `next` fired after each step."""
    s = new_services()
    nxt = machine.events["next"]
    bodies = BODIES
    ids, cids, item = inputs.order_ids, inputs.customer_ids, inputs.item
    o = Order("", "", 0.0)
    fired = 0
    t0 = time.perf_counter()
    for i in range(len(ids)):
        o = Order(order_id=ids[i], customer_id=cids[i], amount=500.0, items=[item])
        setattr(o, STATE_ATTRIBUTE, "validate_order")
        visit = 0
        while (body := bodies.get(getattr(o, STATE_ATTRIBUTE))) is not None:
            body(o, s, f"{o.order_id}:{visit}")
            if not nxt.trigger(o, o):
                break
            visit += 1
        fired += visit
    elapsed = time.perf_counter() - t0
    if getattr(o, STATE_ATTRIBUTE) != "@completed":
        msg = f"shared machine: the last order ended in {getattr(o, STATE_ATTRIBUTE)}"
        raise RuntimeError(msg)
    check_order(o, fired, len(ids), "shared machine")
    return elapsed


def time_machine_per_instance(inputs: Inputs) -> float:
    """(d) A new transitions Machine per instance with the defaults (model=self, auto_transitions)."""
    s = new_services()
    states = [*LIFECYCLE, *STEPS]
    spec = transitions_spec()
    bodies = BODIES
    ids, cids, item = inputs.order_ids, inputs.customer_ids, inputs.item
    o = Order("", "", 0.0)
    m = Machine(states=states, transitions=spec, initial="validate_order")
    fired = 0
    t0 = time.perf_counter()
    for i in range(len(ids)):
        o = Order(order_id=ids[i], customer_id=cids[i], amount=500.0, items=[item])
        m = Machine(states=states, transitions=spec, initial="validate_order")
        visit = 0
        while (body := bodies.get(m.state)) is not None:  # pyright: ignore[reportAttributeAccessIssue]
            body(o, s, f"{o.order_id}:{visit}")
            if not m.trigger("next", o):  # pyright: ignore[reportAttributeAccessIssue]
                break
            visit += 1
        fired += visit
    elapsed = time.perf_counter() - t0
    if m.state != "@completed":  # pyright: ignore[reportAttributeAccessIssue]
        raise RuntimeError("machine per instance: the last order did not complete")
    check_order(o, fired, len(ids), "machine per instance")
    return elapsed


def time_python_statemachine(inputs: Inputs) -> float:
    """(e) python-statemachine 3.x: one OrderStateMachine per instance (its only way), model = the order."""
    s = new_services()
    bodies = BODIES
    ids, cids, item = inputs.order_ids, inputs.customer_ids, inputs.item
    o = Order("", "", 0.0)
    fired = 0
    t0 = time.perf_counter()
    for i in range(len(ids)):
        o = Order(order_id=ids[i], customer_id=cids[i], amount=500.0, items=[item])
        sm = OrderStateMachine(model=o, state_field=STATE_ATTRIBUTE, start_value="validate_order")
        visit = 0
        while (body := bodies.get(getattr(o, STATE_ATTRIBUTE))) is not None:
            body(o, s, f"{o.order_id}:{visit}")
            sm.send("next")  # pyright: ignore[reportUnknownMemberType]
            visit += 1
        fired += visit
    elapsed = time.perf_counter() - t0
    if getattr(o, STATE_ATTRIBUTE) != "completed":
        msg = f"python-statemachine: the last order ended in {getattr(o, STATE_ATTRIBUTE)}"
        raise RuntimeError(msg)
    check_order(o, fired, len(ids), "python-statemachine")
    return elapsed


# ---------------------------------------------------------------------------- (f) creation


@attrs.frozen
class Creation:
    constructor: float  # seconds for n OrderProcess(...) alone
    total: float  # seconds for n OrderProcess(...) + engine.start_nowait(...)


def time_creation(inputs: Inputs, gc_on: bool) -> Creation:
    """
    (f) Constructor + start_nowait bookkeeping, no step run.

    Everything happens in one stretch of synchronous code inside the running loop:
    the engine's workers are tasks of that loop, so none of them can run a step
    before this coroutine yields. Afterwards, still before yielding, every instance
    is checked to be queued in its initial step with nothing but INSTANCE_STARTED
    in its history; then the engine is closed, which cancels the workers unrun.
    """

    async def workload() -> Creation:
        ids, cids, item = inputs.order_ids, inputs.customer_ids, inputs.item
        n = len(ids)
        gc.collect()
        # The constructor alone.
        t0 = time.perf_counter()
        for i in range(n):
            OrderProcess(order_id=ids[i], customer_id=cids[i], amount=500.0, items=[item])
        constructor = time.perf_counter() - t0
        engine, _ = new_engine()
        # The first start_nowait starts the engine's workers: a one-off per engine, kept out of the timing.
        first = engine.start_nowait(OrderProcess(order_id="warm", customer_id="warm", amount=500.0, items=[item]))
        gc.collect()
        t0 = time.perf_counter()
        for i in range(n):
            engine.start_nowait(OrderProcess(order_id=ids[i], customer_id=cids[i], amount=500.0, items=[item]))
        total = time.perf_counter() - t0
        check_nothing_ran(engine, n + 1, first.instance_id)
        await engine.aclose()
        return Creation(constructor, total)

    if gc_on:
        return asyncio.run(workload())
    gc.disable()
    try:
        return asyncio.run(workload())
    finally:
        gc.enable()


def check_nothing_ran(engine: Engine, expected: int, first_id: str) -> None:
    stats = engine.statistics()
    infos = engine.instances()
    initial = "validate_order"
    bad = [
        i.id
        for i in infos
        if i.step != initial
        or i.status is not InstanceStatus.RUNNING
        or [e.kind for e in engine.history(i.id)] != [EventKind.INSTANCE_STARTED]
    ]
    if stats.queued != expected or len(infos) != expected or bad or infos[0].id != first_id:
        msg = f"creation: a step ran or an instance is missing (queued {stats.queued}, {len(infos)} instances, {len(bad)} moved)"
        raise RuntimeError(msg)


# ---------------------------------------------------------------------------- (g) memory parked


@attrs.frozen
class Parked:
    bytes_per_instance: float
    by_line: list[tuple[str, int]]  # (file:line, bytes per instance), largest first (only with detail)


def measure_parked(n: int, *, detail: bool = False) -> Parked:
    """
    (g) Bytes retained per instance parked at the manager's approval task (amount 5000).

    The engine is warmed up (workers running, one instance parked, the input
    validator compiled) before tracing starts; the figure is
    (traced memory after wait_idle() and gc.collect()) - (traced memory before), over n.
    It includes everything the instance costs: its workflow object and variables
    (order id, customer id, items list), its record, history, task, store entries.
    """

    async def workload() -> Parked:
        engine, _ = new_engine()
        item = Item("LAMP", 1)
        async with engine:
            engine.start_nowait(OrderProcess(order_id="warm", customer_id="warm", amount=5000.0, items=[item]))
            await engine.wait_idle()
            gc.collect()
            tracemalloc.start(1)
            before_snapshot = tracemalloc.take_snapshot() if detail else None
            before = tracemalloc.get_traced_memory()[0]
            for i in range(n):
                engine.start_nowait(
                    OrderProcess(order_id=f"ORD-{i:06d}", customer_id=f"CUST-{i:06d}", amount=5000.0, items=[item])
                )
            await engine.wait_idle()
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
            after_snapshot = tracemalloc.take_snapshot() if detail else None
            tracemalloc.stop()
            waiting = engine.instances(status=InstanceStatus.WAITING)
            tasks = engine.tasks(user="manager")
            if len(waiting) != n + 1 or len(tasks) != n + 1:
                msg = f"parked: {len(waiting)} waiting, {len(tasks)} tasks, expected {n + 1}"
                raise RuntimeError(msg)
            by_line: list[tuple[str, int]] = []
            if before_snapshot is not None and after_snapshot is not None:
                stats = after_snapshot.compare_to(before_snapshot, "lineno")
                for st in stats:
                    if st.size_diff < n // 4:
                        continue
                    frame = st.traceback[0]
                    code = (
                        linecache.getline(frame.filename, frame.lineno).strip()
                        or "(generated code: a namedtuple's __new__, attrs' __init__)"
                    )
                    by_line.append((f"{_short(frame.filename)}:{frame.lineno}  {code[:70]}", st.size_diff))
        return Parked((after - before) / n, by_line)

    return asyncio.run(workload())


# ---------------------------------------------------------------------------- running it all


@attrs.define
class Contender:
    key: str
    label: str
    transitions: str
    instances: int
    run: Callable[[], float]
    informational: bool = False
    samples: list[float] = attrs.field(factory=list[float])  # µs per instance, one per run


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def spread(xs: Sequence[float]) -> float:
    """(max - min) / median, in percent."""
    m = median(xs)
    return (max(xs) - min(xs)) / m * 100 if m else 0.0


def configure_logging() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=7, help="runs per figure; medians are reported (>= 5)")
    p.add_argument("--instances", type=int, default=2000, help="orders per run of each contender")
    p.add_argument(
        "--slow-instances",
        type=int,
        default=500,
        help="orders per run for (d) and (e), ~1-3 ms each (capped at --instances)",
    )
    p.add_argument("--create", type=int, default=10_000, help="instances per run of the creation figure (f)")
    p.add_argument("--parked", type=int, default=10_000, help="instances parked at the task for (g)")
    p.add_argument("--gc", choices=("on", "off"), default="on", help="garbage collector during timing (all alike)")
    p.add_argument("--profile", action="store_true", help="also profile the engine (cProfile) and its memory by line")
    args = p.parse_args(argv)
    if args.runs < 5:
        p.error("--runs must be at least 5 (the targets are medians of >= 5 runs)")
    return args


def with_gc(enabled: bool, fn: Callable[[], float]) -> float:
    """Run *fn* from a collected heap with the collector on or off (the same for every contender)."""
    gc.collect()
    if enabled:
        return fn()
    gc.disable()
    try:
        return fn()
    finally:
        gc.enable()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    n: int = args.instances
    n_slow: int = min(args.slow_instances, n)
    gc_on = args.gc == "on"
    engine_edges = edges_of(machine_of(OrderProcess))
    machine = shared_machine()
    ours = edges_of(machine)
    next_differs = {e for e in engine_edges ^ ours if e[0] == "next"}
    if next_differs:
        print("the bench's `next` transitions differ from the engine's machine:", sorted(next_differs))
        return 2

    inputs = Inputs.make(n, "t")
    slow = Inputs.make(n_slow, "s")
    fired = f"{TRANSITIONS_FIRED} (next x{TRANSITIONS_FIRED})"
    contenders = [
        Contender("a", "engine: start_nowait + wait_idle", fired, n, lambda: time_engine(inputs)),
        Contender("c", "transitions, bare shared Machine", fired, n, lambda: time_shared_machine(inputs, machine)),
        Contender("b", "plain Python, sync step functions", "0 (5 steps)", n, lambda: time_plain(inputs)),
        Contender("e", "python-statemachine, SM per instance", fired, n_slow, lambda: time_python_statemachine(slow)),
        Contender("d", "transitions, Machine per instance", fired, n_slow, lambda: time_machine_per_instance(slow)),
        Contender(
            "a2",
            "engine: await start + gather(result())",
            fired,
            n,
            lambda: time_engine_results(inputs),
            informational=True,
        ),
        Contender(
            "b2",
            "plain Python, async step functions",
            "0 (5 steps)",
            n,
            lambda: time_plain_async(inputs),
            informational=True,
        ),
    ]

    print(
        f"statemachine-orch bench: the order example, amount 500, in memory | python {platform.python_version()}, "
        f"transitions {transitions.__version__}, python-statemachine {statemachine.__version__}"
    )
    print(
        f"{args.runs} runs; each run times every contender once on a whole workload: {n} instances "
        f"({n_slow} for d and e); gc {args.gc} for all; time.perf_counter"
    )
    print(
        f"creation: {args.create} instances x {args.runs} runs; parked: {args.parked} instances, tracemalloc; "
        "structlog filtered at WARNING"
    )
    others = sorted(engine_edges ^ ours)
    print(
        "machine check: the `next` transitions of (c)/(d) equal those of the engine's compiled machine"
        + (f"; other edges differ: {others}" if others else f"; so do all {len(ours)} edges")
    )

    # Warm-up: every contender once on a small workload (imports, caches, specialisation).
    warm = Inputs.make(min(n, 200), "w")
    warmups: list[Callable[[], object]] = [
        lambda: time_engine(warm),
        lambda: time_engine_results(warm),
        lambda: time_plain(warm),
        lambda: time_plain_async(warm),
        lambda: time_shared_machine(warm, machine),
        lambda: time_machine_per_instance(warm),
        lambda: time_python_statemachine(warm),
    ]
    for fn in warmups:
        fn()

    creation_inputs = Inputs.make(args.create, "c")
    creations: list[Creation] = []
    paired, rest = contenders[:2], contenders[2:]
    for run in range(args.runs):
        # (a) and (c) back to back, alternating which goes first; the others rotated.
        k = run % len(rest)
        order = (paired if run % 2 == 0 else paired[::-1]) + rest[k:] + rest[:k]
        for c in order:
            c.samples.append(with_gc(gc_on, c.run) / c.instances * 1e6)
        creations.append(time_creation(creation_inputs, gc_on))

    parked = measure_parked(args.parked)

    report(sorted(contenders, key=lambda c: c.key), creations, args.create, parked, args.parked)
    failed = targets(contenders, creations, args.create, parked)
    if args.profile:
        profile(n, args.parked)
    return 1 if failed else 0


def report(
    contenders: list[Contender], creations: list[Creation], n_create: int, parked: Parked, n_parked: int
) -> None:
    print()
    print(
        f"{'':3}{'contender':<40}{'transitions/inst':>18}{'us/inst':>10}{'min':>9}{'spread':>8}{'inst/s':>10}{'us/step':>9}"
    )
    for c in contenders:
        med = median(c.samples)
        mark = "*" if c.informational else ""
        print(
            f"{c.key + mark:<3}{c.label:<40}{c.transitions:>18}{med:>10.1f}{min(c.samples):>9.1f}"
            f"{spread(c.samples):>7.0f}%{1e6 / med:>10,.0f}{med / STEPS_RUN:>9.2f}"
        )
    print("   * informational, no target; us/step = us/inst / 5 steps; spread = (max-min)/median over the runs")
    by = {c.key: c for c in contenders}
    a, b, c_ = (median(by[k].samples) for k in ("a", "b", "c"))
    print()
    print(f"transitions' own cost per transition, (c - b) / 5:        {(c_ - b) / TRANSITIONS_FIRED:7.2f} us")
    print(f"engine bookkeeping beyond the bare machine, (a - c):      {a - c_:7.1f} us/inst")
    print(f"engine bookkeeping beyond plain Python, (a - b):          {a - b:7.1f} us/inst")
    ctor = median([x.constructor for x in creations]) / n_create * 1e6
    total = median([x.total for x in creations]) / n_create * 1e6
    print()
    print(
        f"(f) create an instance, OrderProcess(...) + start_nowait(), no step run: {total:6.2f} us (median of {len(creations)})"
    )
    print(f"      of which OrderProcess(...) alone: {ctor:6.2f} us; start_nowait bookkeeping: {total - ctor:6.2f} us")
    print(
        f"(g) retained per instance parked at the approval task ({n_parked:,} instances): {parked.bytes_per_instance:,.0f} B"
    )


def paired_ratio(num: Contender, den: Contender) -> float:
    """The median of per-run ratios num/den (each run's two workloads ran back to back)."""
    return median([x / y for x, y in zip(num.samples, den.samples, strict=True)])


def targets(contenders: list[Contender], creations: list[Creation], n_create: int, parked: Parked) -> bool:
    by = {c.key: c for c in contenders}
    a = by["a"]
    rows: list[tuple[str, str, bool]] = []

    r_ac = paired_ratio(a, by["c"])
    rows.append(("engine / bare shared transitions (c) <= 2.0x", f"{r_ac:.2f}x", r_ac <= 2.0))
    r_ea = paired_ratio(by["e"], a)
    rows.append(("python-statemachine (e) / engine >= 5.0x", f"{r_ea:.2f}x", r_ea >= 5.0))
    create = median([x.total for x in creations]) / n_create * 1e6
    rows.append(("create an instance <= 5 us", f"{create:.2f} us", create <= 5.0))
    rows.append(
        (
            "retained per parked instance <= 2 KiB (2048 B)",
            f"{parked.bytes_per_instance:,.0f} B",
            parked.bytes_per_instance <= 2048,
        )
    )
    print()
    print("ratios (median of per-run ratios; each run measures every contender back to back):")
    for key in ("b", "c", "d", "e"):
        print(f"  engine / ({key}) {by[key].label:<40} {paired_ratio(a, by[key]):6.2f}x")
    print()
    print("targets (issue 2):")
    for name, value, ok in rows:
        print(f"  {'PASS' if ok else 'FAIL'}  {name:<50} measured {value}")
    missed = sum(1 for *_, ok in rows if not ok)
    print(f"{missed} target(s) missed" if missed else "all targets met")
    return missed > 0


# ---------------------------------------------------------------------------- --profile


def profile(n: int, n_parked: int) -> None:
    """cProfile of the engine's workload (per instance), and the parked memory by allocating line."""
    inputs = Inputs.make(n, "p")
    prof = cProfile.Profile()

    async def workload() -> None:
        engine, _ = new_engine()
        async with engine:
            ids, cids, item = inputs.order_ids, inputs.customer_ids, inputs.item
            prof.enable()
            for i in range(n):
                engine.start_nowait(OrderProcess(order_id=ids[i], customer_id=cids[i], amount=500.0, items=[item]))
            await engine.wait_idle()
            prof.disable()

    asyncio.run(workload())
    # pstats keeps {(file, line, function): (primitive calls, calls, own s, cumulative s, callers)}.
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = vars(pstats.Stats(prof))["stats"]
    rows: list[tuple[str, float, float, float]] = []  # where, calls, own us, cumulative us (per instance)
    for (filename, line, func), (_, ncalls, own, cumulative, _) in raw.items():
        where = f"{_short(filename)}:{line}({func})" if line else func
        rows.append((where, ncalls / n, own / n * 1e6, cumulative / n * 1e6))
    total = sum(r[2] for r in rows)
    print()
    print(f"cProfile of the engine, {n} instances: {total:.0f} us/instance under the profiler (it inflates calls)")
    print(f"{'calls/inst':>10} {'own us':>8} {'cum us':>8}  function   -- by own time")
    for where, calls, own, cumulative in sorted(rows, key=lambda r: -r[2])[:25]:
        print(f"{calls:10.1f} {own:8.2f} {cumulative:8.2f}  {where}")
    print(f"{'calls/inst':>10} {'own us':>8} {'cum us':>8}  function   -- by cumulative time")
    for where, calls, own, cumulative in sorted(rows, key=lambda r: -r[3])[:25]:
        print(f"{calls:10.1f} {own:8.2f} {cumulative:8.2f}  {where}")

    parked = measure_parked(n_parked, detail=True)
    print()
    print(f"parked memory by allocating line ({n_parked:,} instances at the approval task; bytes per instance):")
    for where, size in parked.by_line[:25]:
        print(f"  {size / n_parked:8.1f}  {where}")


def _short(filename: str) -> str:
    path = Path(filename)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


if __name__ == "__main__":
    sys.exit(main())
