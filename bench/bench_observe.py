"""
The overhead of metrics and tracing on the order benchmark's workload (issue 12).

Run by hand from the repository root (not in CI, not as a timed test)::

    python bench/bench_observe.py                       # defaults: --runs 7 --instances 2000
    python bench/bench_observe.py --before 'HEAD~3'     # also the engine as it was at that commit

Every figure is the order workload of ``bench/bench_order.py`` (figure a): start
``--instances`` orders with ``start_nowait`` on an in-memory engine, then
``wait_idle()``, timed; each order runs its five steps. One measurement is a child
process that times the workload ``--repeat`` times after a warm-up and reports
the median; a run measures every configuration once, in rotated order; the
figures are medians over ``--runs`` runs. The configurations:

- ``baseline``: the package's default ``Engine(...)`` (no metrics, no tracing, no
  step logs), prometheus-client and opentelemetry installed;
- ``none``: the same, in a child where neither can be imported (a meta path finder
  raises ImportError for them): the cost of the hooks with nothing to observe
  is what ``baseline`` pays too, so this figure checks that the package imports
  and does nothing more without them;
- ``on``: ``Engine(..., metrics=Metrics(), tracing=True)`` with both extras
  installed as the package declares them: prometheus-client, and
  opentelemetry-api with no SDK provider set, so spans are the API's no-ops (what
  a worker pays until its application installs an SDK);
- ``sdk``: ``Engine(..., metrics=Metrics(), tracing=provider)`` with the
  OpenTelemetry SDK's ``TracerProvider``, sampling ``--sample`` of the turns
  (``ParentBased(TraceIdRatioBased(...))``), and a ``BatchSpanProcessor`` whose
  exporter drops the spans (``--processor memory``: a ``SimpleSpanProcessor``
  into an ``InMemorySpanExporter``, cleared between repeats);
- ``floor`` (only with ``--sample 1``): the OpenTelemetry SDK alone, the
  reference for ``sdk``: as many spans as one ``sdk`` workload ends (counted by a
  span processor in a warm-up workload), each started with four attributes, made
  current, given one more attribute and ended, in a plain loop, with the same
  provider and processor, and no engine. ``sdk`` minus ``baseline`` minus
  ``floor`` is what the library itself adds to the work of the engine and of the SDK;
- ``before`` (with ``--before REV``): the package as it was at git revision REV
  (``git archive`` into a temporary folder), default settings: the cost of the
  hooks themselves, compared with ``baseline``.

Targets (issue 12): ``on`` at most 10% slower than ``baseline``; ``none`` at most
1% slower. On a busy machine wall clock drifts more than that: ``bench_observe_instructions.py``
counts the instructions of these children under valgrind instead. ``sdk`` has no target: a recorded SDK span costs about as much as a
whole step of this workload, and ``floor`` shows it. The script prints each figure, the ratios and PASS/FAIL, and exits 1
when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

TARGETS = {"on": 1.10, "none": 1.01}


class NotInstalled:
    """A meta path finder that makes prometheus_client and opentelemetry unimportable."""

    blocked = ("prometheus_client", "opentelemetry")

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:  # noqa: ARG002 - the protocol's
        if name.partition(".")[0] in self.blocked:
            raise ImportError(f"No module named {name!r} (blocked by bench_observe)")


# ---------------------------------------------------------------------------- the child: one configuration


def child(
    mode: str, instances: int, repeat: int, processor: str, store: str = "memory", sample: float = 1.0
) -> list[float]:
    """Time the workload *repeat* times (after a warm-up) in this configuration."""
    if mode == "none":
        sys.meta_path.insert(0, NotInstalled())
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    from examples.order_process import InventoryService, Item, OrderProcess, PaymentService, UserService
    from statemachine_orch import Engine, InstanceStatus, MemoryStore, SqliteStore

    options: dict[str, Any] = {}
    clear = None
    counted: list[int] = [0]  # spans ended (the 'sdk' and 'floor' configurations count them)
    if mode == "on":
        from statemachine_orch.metrics import Metrics

        options = {"metrics": Metrics(), "tracing": True}
    elif mode in ("sdk", "tracing", "floor"):
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SimpleSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        from statemachine_orch.metrics import Metrics

        provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(sample)))

        class Counting(SpanProcessor):
            def on_end(self, span: Any) -> None:  # noqa: ARG002 - counted only
                counted[0] += 1

        provider.add_span_processor(Counting())
        if processor == "memory":
            memory = InMemorySpanExporter()
            provider.add_span_processor(SimpleSpanProcessor(memory))
            clear = memory.clear
        else:

            class Dropped(SpanExporter):
                def export(self, spans: Sequence[Any]) -> SpanExportResult:  # noqa: ARG002 - dropped
                    return SpanExportResult.SUCCESS

            provider.add_span_processor(BatchSpanProcessor(Dropped()))
        options = {"metrics": Metrics(), "tracing": provider} if mode != "tracing" else {"tracing": provider}
    elif mode == "metrics":
        from statemachine_orch.metrics import Metrics

        options = {"metrics": Metrics()}
    elif mode == "logs":
        options = {"logs": True}
    elif mode == "none" and any(m.partition(".")[0] in NotInstalled.blocked for m in sys.modules):
        sys.exit("an extra was imported although it is blocked")

    item = Item("BOOK", 1)

    async def workload(tag: str, options: dict[str, Any] = options) -> float:
        inventory = InventoryService(stock={"BOOK": instances + 1})
        services = {"user-service": UserService(), "inventory-service": inventory, "payment-service": PaymentService()}
        with tempfile.TemporaryDirectory() as tmp:
            durable = store == "sqlite"
            engine = Engine(
                SqliteStore(Path(tmp) / "orders.db") if durable else MemoryStore(), services=services, **options
            )
            async with engine:
                t0 = time.perf_counter()
                for i in range(instances):
                    order = OrderProcess(
                        order_id=f"ORD-{tag}-{i:06d}", customer_id=f"CUST-{i % 997:04d}", amount=500.0, items=[item]
                    )
                    if durable:
                        await engine.start(order)
                    else:
                        engine.start_nowait(order)
                await engine.wait_idle()
                elapsed = time.perf_counter() - t0
                done = engine.instances(status=InstanceStatus.COMPLETED)
                if len(done) != instances:
                    sys.exit(f"{len(done)} of {instances} orders completed")
            if durable:
                engine.store.close()
        return elapsed

    timings: list[float] = []
    if mode == "paired":
        # One process, the two configurations alternating workload by workload: a
        # machine busy with other work slows both alike, and each pair gives a ratio.
        from statemachine_orch.metrics import Metrics

        on: dict[str, Any] = {"metrics": Metrics(), "tracing": True}
        asyncio.run(workload("warm-base"))
        asyncio.run(workload("warm-on", on))
        for r in range(repeat):
            first, second = ((options, on), (on, options))[r % 2]
            a = asyncio.run(workload(f"p{r}a", first))
            b = asyncio.run(workload(f"p{r}b", second))
            timings.append(b / a if first is options else a / b)
        return timings
    if mode == "floor":
        asyncio.run(workload("floor"))  # the warm-up, which counts the spans an 'on' workload ends
        return [sdk_floor(options["tracing"], counted[0]) for _ in range(repeat)]
    for r in range(repeat + 1):
        elapsed = asyncio.run(workload(f"{mode}{r}"))
        if clear is not None:
            clear()
        if r:  # the first is the warm-up
            timings.append(elapsed)
    return timings


def sdk_floor(provider: Any, spans: int) -> float:
    """The time of *spans* spans made and ended by *provider* in a plain loop, with attributes like the engine's."""
    from opentelemetry import context, trace

    tracer = provider.get_tracer("bench_observe")
    attach, detach, in_context = context.attach, context.detach, trace.set_span_in_context
    t0 = time.perf_counter()
    for i in range(spans):
        span = tracer.start_span(
            "orch step s",
            attributes={
                "orch.instance_id": f"ORD-{i}",
                "orch.workflow": "OrderProcess",
                "orch.step": "s",
                "orch.attempt": 1,
            },
        )
        token = attach(in_context(span))
        detach(token)
        span.set_attribute("orch.outcome", "completed")
        span.end()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------- the parent: runs and report


def checkout(rev: str, into: Path) -> Path:
    """The package at git revision *rev*, unpacked under *into* (for the ``before`` figure)."""
    archive = subprocess.run(  # noqa: S603 - git, with the revision the user named
        ["git", "archive", "--format=tar", rev, "statemachine_orch"],  # noqa: S607 - git from PATH
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    path = into / "tar"
    path.write_bytes(archive)
    with tarfile.open(path) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(mode: str, args: argparse.Namespace, before: Path | None) -> float:
    env = dict(os.environ)
    # The package from the revision (before), else this tree; examples/ always from this tree.
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (before if mode == "before" else ROOT, ROOT))
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "baseline" if mode == "before" else mode,
        "--instances",
        str(args.instances),
        "--repeat",
        str(args.repeat),
        "--processor",
        args.processor,
        "--store",
        args.store,
        "--sample",
        str(args.sample),
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)  # noqa: S603 - this script
    if done.returncode:
        sys.exit(f"{mode}: the child failed:\n{done.stderr}")
    timings: list[float] = json.loads(done.stdout.strip().splitlines()[-1])
    return statistics.median(timings)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=7, help="runs (each measures every configuration once); medians")
    p.add_argument("--instances", type=int, default=2000, help="orders per workload")
    p.add_argument("--repeat", type=int, default=3, help="timed workloads per child (after one warm-up); its median")
    p.add_argument("--processor", choices=("batch", "memory"), default="batch", help="the span processor of 'on'")
    p.add_argument("--store", choices=("memory", "sqlite"), default="memory", help="the engine's store")
    p.add_argument("--sample", type=float, default=1.0, help="the ratio of traces sampled by 'on' (ParentBased)")
    p.add_argument("--before", metavar="REV", help="also measure the package as at this git revision")
    p.add_argument(
        "--breakdown", action="store_true", help="also metrics alone, tracing alone and logs=True (filtered at WARNING)"
    )
    p.add_argument(
        "--paired",
        type=int,
        metavar="PAIRS",
        help="instead: 'on' against 'baseline' in one process, alternating, PAIRS pairs; the median ratio",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.instances, args.repeat, args.processor, args.store, args.sample)))
        return 0
    if args.paired:
        args.repeat = args.paired
        done = subprocess.run(  # noqa: S603 - this script
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                "paired",
                "--instances",
                str(args.instances),
                "--repeat",
                str(args.paired),
                "--store",
                args.store,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        ratios: list[float] = json.loads(done.stdout.strip().splitlines()[-1])
        q = statistics.quantiles(ratios, n=4)
        med = statistics.median(ratios)
        verdict = "PASS" if med <= TARGETS["on"] else "FAIL"
        print(
            f"{args.instances} orders on a {args.store} store, {args.paired} pairs in one process: on/baseline "
            f"median {med:.3f} (quartiles {q[0]:.3f}-{q[2]:.3f})  target <= {TARGETS['on']:.2f}: {verdict}"
        )
        return 0 if verdict == "PASS" else 1
    modes = ["baseline", "none", "on", "sdk"] + (["floor"] if args.sample == 1 else [])
    modes += ["before"] if args.before else []
    if args.breakdown:
        modes += ["metrics", "tracing", "logs"]
    figures: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        before = checkout(args.before, Path(tmp)) if args.before else None
        for run in range(args.runs):
            order = modes[run % len(modes) :] + modes[: run % len(modes)]
            for mode in order:
                figures[mode].append(measure(mode, args, before))
            print(f"run {run + 1}/{args.runs}: " + "  ".join(f"{m} {figures[m][-1] * 1000:.1f} ms" for m in modes))
    base = statistics.median(figures["baseline"])
    print(
        f"\n{args.instances} orders (5 steps each) on a {args.store} store, traces sampled {args.sample:g} "
        f"({args.processor} processor), medians of {args.runs} runs of {args.repeat} workloads each:"
    )
    ok = True
    for mode in modes:
        med = statistics.median(figures[mode])
        paired = statistics.median(f / b for f, b in zip(figures[mode], figures["baseline"], strict=True))
        per_step = (med - base) / (args.instances * 5) * 1e6
        line = (
            f"  {mode:9} {med * 1000:8.1f} ms  {args.instances / med:8.0f} orders/s  "
            f"ratio {med / base:.3f} (paired {paired:.3f})  {per_step:+.2f} us/step"
        )
        if mode in TARGETS:
            passed = med / base <= TARGETS[mode]
            ok = ok and passed
            line += f"  target <= {TARGETS[mode]:.2f}: {'PASS' if passed else 'FAIL'}"
        print(line)
    if "floor" in figures:
        own = (statistics.median(figures["sdk"]) - base - statistics.median(figures["floor"])) / base
        print(
            f"  sdk - baseline - floor: the library's own part of the cost with an SDK recording every span: {own:+.1%}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
