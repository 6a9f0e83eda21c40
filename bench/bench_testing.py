"""
Benchmark of the testing toolkit (issue 4): WorkflowMachine's speed and time to full edge coverage, paths().

Run by hand from the repository root (not in CI, not as a timed test)::

    python bench/bench_testing.py                  # defaults: --runs 5 --examples 100
    python bench/bench_testing.py --runs 9 --examples 200

For two workflows, the order example (with its in-process services) and a generated
50-step workflow with 10 branches, a loop, a human task and compensations, each
run drives ``WorkflowMachine(...)`` for ``--examples`` hypothesis examples from
scratch (no example database) and reports the medians over ``--runs`` runs of:

- examples per second, and the instances and actions those examples ran;
- the time (and examples) until every edge of the workflow had been taken;
- ``paths()``: how many paths, and how long enumerating them takes; also for
  generated workflows with 3 and 5 forks of 4 branches (``paths()`` only).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import structlog.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.order_process import InventoryService, Item, OrderProcess, PaymentService, UserService
from statemachine_orch import paths
from statemachine_orch.testing import WorkflowMachine, WorkflowStateMachine
from statemachine_orch.testing._generate import generated_workflow


def order_services() -> Mapping[str, object]:
    return {
        "user-service": UserService(blocked={"CUST-BLOCKED"}),
        "inventory-service": InventoryService(
            stock={"BOOK": 10**6, "LAMP": 10**6, "DESK": 10**6}, offline_skus={"DESK"}
        ),
        "payment-service": PaymentService(),
    }


ORDERS = st.builds(
    OrderProcess,
    order_id=st.sampled_from(["ORD-1", "ORD-2"]),
    customer_id=st.sampled_from(["CUST-1", "CUST-2", "CUST-BLOCKED"]),
    amount=st.sampled_from([500.0, 1000.0, 1000.01, 5000.0]) | st.floats(0, 10_000),
    items=st.lists(
        st.builds(Item, sku=st.sampled_from(["BOOK", "LAMP", "DESK"]), quantity=st.integers(1, 3)), max_size=2
    ),
)


def order_machine() -> type[WorkflowStateMachine]:
    return WorkflowMachine(
        OrderProcess,
        inputs=ORDERS,
        services=order_services,
        allow_no_edge=[OrderProcess.validate_order, OrderProcess.manual_approval],
    )


FIFTY = generated_workflow("Fifty", steps=50, branches=10)


def fifty_machine() -> type[WorkflowStateMachine]:
    return WorkflowMachine(FIFTY)


def one_run(make: Callable[[], type[WorkflowStateMachine]], examples: int) -> dict[str, float]:
    machine = make()
    seen = {"examples": 0, "actions": 0}
    full: dict[str, float] = {}
    began = time.perf_counter()

    class Timed(machine):  # type: ignore[misc, valid-type]  # a class built at run time
        def apply(self, action: Any) -> None:
            seen["actions"] += 1
            super().apply(action)

        def teardown(self) -> None:
            super().teardown()
            seen["examples"] += 1
            if not full and machine.coverage.fraction == 1.0:
                full["seconds"] = time.perf_counter() - began
                full["examples"] = seen["examples"]

    Timed.__name__ = machine.__name__
    machine.coverage.reset()
    run_state_machine_as_test(Timed, settings=settings(machine.TestCase.settings, max_examples=examples, database=None))
    elapsed = time.perf_counter() - began
    return {
        "examples_per_s": seen["examples"] / elapsed,
        "instances_per_s": machine.coverage.instances / elapsed,
        "actions_per_s": seen["actions"] / elapsed,
        "coverage": machine.coverage.fraction,
        "full_s": full.get("seconds", float("nan")),
        "full_examples": full.get("examples", float("nan")),
    }


def paths_timing(workflow: type[Any], runs: int) -> tuple[int, float]:
    timings: list[float] = []
    count = 0
    for _ in range(runs):
        began = time.perf_counter()
        count = len(paths(workflow))
        timings.append(time.perf_counter() - began)
    return count, statistics.median(timings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--examples", type=int, default=100)
    args = parser.parse_args()
    print(f"python {platform.python_version()}, hypothesis {version('hypothesis')}, {platform.machine()}")
    print(f"medians of {args.runs} runs, {args.examples} hypothesis examples each, no example database\n")
    header = f"{'workflow':<14}{'examples/s':>11}{'instances/s':>13}{'actions/s':>11}{'coverage':>10}"
    header += f"{'full cover s':>14}{'(examples)':>11}{'paths':>8}{'paths() ms':>12}"
    print(header)
    for name, make, workflow in (("order", order_machine, OrderProcess), ("generated 50", fifty_machine, FIFTY)):
        with structlog.testing.capture_logs():
            results = [one_run(make, args.examples) for _ in range(args.runs)]
        med = {k: statistics.median(r[k] for r in results) for k in results[0]}
        count, paths_s = paths_timing(workflow, args.runs)
        print(
            f"{name:<14}{med['examples_per_s']:>11.1f}{med['instances_per_s']:>13.0f}{med['actions_per_s']:>11.0f}"
            f"{med['coverage']:>10.0%}{med['full_s']:>14.2f}{med['full_examples']:>11.0f}{count:>8}{paths_s * 1000:>12.1f}"
        )
    for forks in (3, 5):
        forked = generated_workflow(f"BenchForks{forks}", forked=True, forks=forks, width=4)
        count, paths_s = paths_timing(forked, args.runs)
        print(f"paths() of {forks} forks x 4 branches (one nested): {count} paths in {paths_s * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
