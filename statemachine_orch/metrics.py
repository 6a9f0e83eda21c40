"""
Prometheus metrics of an engine: steps, retries, compensations, instances, timers, commits, leases.

``Engine(store, metrics=Metrics())`` counts what this process's engine does;
``metrics.serve(port)`` serves them at ``/metrics``, and ``metrics.registry`` is
the ``CollectorRegistry`` they live in, to serve from an application of one's
own. prometheus-client is the ``metrics`` extra: this module imports it only
when a :class:`Metrics` is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram

_STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0)


def _prometheus() -> Any:
    try:
        import prometheus_client  # noqa: PLC0415 - the optional extra, imported only when metrics are asked for
    except ImportError as exc:
        msg = (
            "statemachine_orch.Metrics needs prometheus-client: "
            "install the 'metrics' extra (pip install 'statemachine-orch[metrics]')"
        )
        raise ImportError(msg, name="prometheus_client") from exc
    return prometheus_client


class Serving:
    """
    A running ``/metrics`` HTTP server (from :meth:`Metrics.serve`); call it to stop it.

    Attributes:
        port: The port it listens on (the one picked when 0 was asked for).
        url: Its ``/metrics`` address.

    .. versionadded:: 0.1.0
    """

    def __init__(self, server: Any, thread: Any, addr: str) -> None:
        self._server = server
        self._thread = thread
        self.port: int = int(server.server_address[1])
        host = f"[{addr}]" if ":" in addr else addr
        self.url = f"http://{host}:{self.port}/metrics"

    def __call__(self) -> None:
        """Stop serving (and wait for the server's thread); a second call does nothing."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.shutdown()
        server.server_close()
        self._thread.join(5.0)


class Metrics:
    """
    The engine's Prometheus metrics, in one registry.

    Args:
        registry: Where to register them (default: a new ``CollectorRegistry`` of
            their own; pass ``prometheus_client.REGISTRY`` to add them to the
            process's default one).
        namespace: The prefix of every name (``orch``: ``orch_step_attempts_total``...).

    The metrics (labels in braces):

    - ``orch_step_attempts_total{workflow,step,outcome}``: attempts of steps that
      ended ``completed`` or ``failed``;
    - ``orch_step_duration_seconds{workflow,step,outcome}``: their time (histogram);
    - ``orch_step_retries_total{workflow,step}``: retries scheduled;
    - ``orch_compensations_total{workflow,step,outcome}``: attempts of compensations
      (``step`` is the step undone), ``completed`` or ``failed``;
    - ``orch_instances_started_total{workflow}``, ``orch_instances_ended_total{workflow,status}``:
      counted when committed;
    - ``orch_timer_lag_seconds{workflow}``: how late timers (and retry backoffs) fire;
    - ``orch_commit_duration_seconds``, ``orch_commit_batch_size``: store commits
      and the instance changes each wrote;
    - ``orch_lease_takeovers_total``: instances this engine claimed in flight from a
      dead or expired owner; ``orch_leases_lost_total``: leases others took from it.

    Raises:
        ImportError: prometheus-client is not installed (the ``metrics`` extra).

    .. versionadded:: 0.1.0
    """

    def __init__(self, registry: CollectorRegistry | None = None, namespace: str = "orch") -> None:
        prom = _prometheus()
        self.registry: CollectorRegistry = registry if registry is not None else prom.CollectorRegistry()
        reg = self.registry
        ns = namespace
        step_labels = ("workflow", "step", "outcome")
        self.step_attempts: Counter = prom.Counter(
            "step_attempts", "Attempts of steps, by outcome.", step_labels, namespace=ns, registry=reg
        )
        self.step_duration: Histogram = prom.Histogram(
            "step_duration_seconds",
            "Time of step attempts, by outcome.",
            step_labels,
            namespace=ns,
            registry=reg,
            buckets=_STEP_BUCKETS,
        )
        self.step_retries: Counter = prom.Counter(
            "step_retries", "Retries of steps scheduled.", ("workflow", "step"), namespace=ns, registry=reg
        )
        self.compensations: Counter = prom.Counter(
            "compensations",
            "Attempts of compensations, by the step undone and outcome.",
            step_labels,
            namespace=ns,
            registry=reg,
        )
        self.instances_started: Counter = prom.Counter(
            "instances_started", "Instances started (committed).", ("workflow",), namespace=ns, registry=reg
        )
        self.instances_ended: Counter = prom.Counter(
            "instances_ended",
            "Instances that reached an end status (committed).",
            ("workflow", "status"),
            namespace=ns,
            registry=reg,
        )
        self.timer_lag: Histogram = prom.Histogram(
            "timer_lag_seconds",
            "How late timers fire: fire time minus due time.",
            ("workflow",),
            namespace=ns,
            registry=reg,
            buckets=_LAG_BUCKETS,
        )
        self.commit_duration: Histogram = prom.Histogram(
            "commit_duration_seconds", "Time of store commits.", namespace=ns, registry=reg, buckets=_COMMIT_BUCKETS
        )
        self.commit_batch_size: Histogram = prom.Histogram(
            "commit_batch_size",
            "Instance changes written by one store commit.",
            namespace=ns,
            registry=reg,
            buckets=_BATCH_BUCKETS,
        )
        self.lease_takeovers: Counter = prom.Counter(
            "lease_takeovers",
            "Instances this worker claimed in flight from a dead or expired owner.",
            namespace=ns,
            registry=reg,
        )
        self.leases_lost: Counter = prom.Counter(
            "leases_lost", "Leases of this worker that another worker took over.", namespace=ns, registry=reg
        )
        # Label children by their values: .labels() costs more than the count itself.
        self._steps: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._children: dict[tuple[object, ...], Any] = {}

    # ----------------------------------------------------------------- called by the engine's observer

    def count_step(self, workflow: str, step: str, outcome: str, seconds: float) -> None:
        """Count one step attempt that ended with *outcome* after *seconds* (what the engine calls)."""
        key = (workflow, step, outcome)
        pair = self._steps.get(key)
        if pair is None:
            pair = self._steps[key] = (self.step_attempts.labels(*key), self.step_duration.labels(*key))
        pair[0].inc()
        pair[1].observe(seconds)

    def labelled(self, metric: Counter | Histogram, *labels: str) -> Any:
        """*metric*'s child for these label values (kept: ``labels()`` costs more than a count)."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # ----------------------------------------------------------------- serving

    def serve(self, port: int, addr: str = "127.0.0.1") -> Serving:
        """
        Serve ``/metrics`` over HTTP on *addr*:*port* (0: a free port) in a thread of its own.

        Returns:
            A :class:`Serving`: call it to stop the server; its ``port`` is the port
            it listens on.
        """
        server, thread = _prometheus().start_http_server(port, addr, self.registry)
        return Serving(server, thread, addr)

    def exposition(self) -> str:
        """The metrics in Prometheus' text format (what ``/metrics`` serves)."""
        text: bytes = _prometheus().generate_latest(self.registry)
        return text.decode()
