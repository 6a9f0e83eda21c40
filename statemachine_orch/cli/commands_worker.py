"""``orch worker``: run workers on a store until stopped (SIGINT or SIGTERM: a clean stop)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import TYPE_CHECKING, Annotated

import structlog
import typer

from statemachine_orch import Engine

from .client import opened
from .failures import Problem, guarded
from .loading import import_all, schedules_of, services_of, workflows_in

if TYPE_CHECKING:
    from statemachine_orch.metrics import Metrics

log = structlog.get_logger("statemachine_orch.cli")


def _new_metrics() -> Metrics:
    from statemachine_orch.metrics import Metrics  # noqa: PLC0415 - prometheus-client is optional

    try:
        return Metrics()
    except ImportError as exc:
        msg = f"--metrics-port: metrics need prometheus-client ({exc}); install statemachine-orch[metrics]"
        raise Problem(msg) from None


def _serve_metrics(
    collected: Metrics, engine: Engine, url: str | None, port: int, addr: str, stack: contextlib.ExitStack
) -> None:
    """
    Serve the engine's metrics and the store's gauges (``alerts.StoreCollector``) at ``/metrics``.

    The store's gauges are read at each scrape, in the server's thread, through a
    store of their own on the same database (the engine's connection is its own).
    """
    from statemachine_orch.alerts import StoreCollector  # noqa: PLC0415 - loaded only with metrics

    gauges_store = stack.enter_context(opened(url))
    collected.registry.register(StoreCollector(gauges_store, engine=engine))
    try:
        serving = collected.serve(port, addr)
    except OSError as exc:
        msg = f"--metrics-port {port}: cannot listen on {addr}:{port} ({exc.strerror or exc})"
        raise Problem(msg) from None
    stack.callback(serving)
    sys.stderr.write(f"orch worker metrics at {serving.url}\n")


@guarded
def worker(
    modules: Annotated[list[str], typer.Argument(metavar="MODULE...", help="Modules holding the workflow classes.")],
    store: Annotated[
        str | None, typer.Option("--store", "-s", envvar="ORCH_STORE", help="Store URL (default: $ORCH_STORE).")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="How many instances this worker runs at once.")] = 64,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Serve Prometheus metrics at /metrics on this port.")
    ] = None,
    lease: Annotated[float, typer.Option(min=0.1, help="Lease length in seconds (failover time).")] = 10.0,
    poll: Annotated[float, typer.Option(min=0.001, help="How often an idle worker looks for work (seconds).")] = 0.05,
    metrics_addr: Annotated[
        str, typer.Option("--metrics-addr", help="The address /metrics listens on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    tracing: Annotated[
        bool, typer.Option("--tracing", help="OpenTelemetry spans per turn, step attempt and compensation.")
    ] = False,
) -> None:
    """Run workers for the workflows (and the orch_schedules) of MODULE... on the store, until SIGINT or SIGTERM."""
    loaded = import_all(modules)
    classes = [cls for m in loaded for cls in workflows_in(m)]
    if not classes:
        msg = f"no workflow classes in {', '.join(modules)}"
        raise Problem(msg)
    services = services_of(loaded)
    schedules = schedules_of(loaded)
    collected = _new_metrics() if metrics_port is not None else None
    with contextlib.ExitStack() as stack:
        st = stack.enter_context(opened(store, create=True))
        engine = Engine(
            st,
            services=services,
            workflows=classes,
            concurrency=concurrency,
            lease=lease,
            poll=poll,
            metrics=collected,
            tracing=tracing,
            logs=True,
            schedules=schedules,
        )
        if collected is not None and metrics_port is not None:
            _serve_metrics(collected, engine, store, metrics_port, metrics_addr, stack)
        asyncio.run(_serve(engine, [f"{c.__orch_spec__.name} v{c.__orch_spec__.version}" for c in classes]))


async def _serve(engine: Engine, names: list[str]) -> None:
    running = asyncio.ensure_future(engine.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on some platforms
            loop.add_signal_handler(sig, running.cancel)
    await asyncio.sleep(0)
    # One line for people and scripts waiting for the worker: it runs.
    sys.stderr.write(f"orch worker {engine.owner} running {', '.join(names)} (concurrency {engine.concurrency})\n")
    sys.stderr.flush()
    log.info("worker_started", owner=engine.owner, workflows=names)
    with contextlib.suppress(asyncio.CancelledError):
        await running
    log.info("worker_stopped", owner=engine.owner)
