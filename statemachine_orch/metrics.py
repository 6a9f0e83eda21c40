"""
Prometheus metrics of an engine: steps, retries, compensations, instances, timers, commits, leases.

``Engine(store, metrics=Metrics())`` counts what this process's engine does;
``metrics.serve(port)`` serves them at ``/metrics``, and ``metrics.registry`` is
the ``CollectorRegistry`` they live in, to serve from an application of one's
own. prometheus-client is the ``metrics`` extra: this module imports it only
when a :class:`Metrics` is made.
"""

from __future__ import annotations

import importlib
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
    from prometheus_client.metrics_core import Metric

_STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0)
# The bucket of each batch size up to the last bound, looked up instead of searched.
_BATCH_BUCKET_OF = tuple(bisect_left(_BATCH_BUCKETS, n) for n in range(int(_BATCH_BUCKETS[-1]) + 1))


def _prometheus() -> Any:
    try:
        # The optional extra, imported only when metrics are asked for (with the modules of its metric families).
        import prometheus_client  # noqa: PLC0415

        for module in ("prometheus_client.core", "prometheus_client.utils"):
            importlib.import_module(module)
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


class _Histogram:
    """A histogram's figures by label values: bucket counts (not cumulative), then the count and the sum."""

    __slots__ = ("bounds", "by_labels", "doc", "labelnames", "name")

    def __init__(self, name: str, doc: str, labelnames: tuple[str, ...], bounds: tuple[float, ...]) -> None:
        self.name = name
        self.doc = doc
        self.labelnames = labelnames
        self.bounds = bounds
        self.by_labels: dict[tuple[str, ...], list[float]] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        figures = self.figures(labels)
        figures[bisect_left(self.bounds, value)] += 1
        figures[-2] += 1
        figures[-1] += value

    def figures(self, labels: tuple[str, ...]) -> list[float]:
        """The live figures of *labels* (made at the first ask): the hot paths keep them and add to them in place."""
        figures = self.by_labels.get(labels)
        if figures is None:
            figures = self.by_labels[labels] = [0.0] * (len(self.bounds) + 3)
        return figures

    def family(self, prom: Any, *, figures: bool = True) -> Metric:
        family: HistogramMetricFamily = prom.core.HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        for labels, live in list(self.by_labels.items()) if figures else []:
            counts = live[:]  # the engine's thread may add to it meanwhile
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip((*self.bounds, float("inf")), counts, strict=False):
                cumulative += count
                buckets.append((prom.utils.floatToGoString(bound), cumulative))
            family.add_metric(labels, buckets, counts[-1])
        return family


class _Counter:
    """A counter's values by label values."""

    __slots__ = ("by_labels", "doc", "labelnames", "name")

    def __init__(self, name: str, doc: str, labelnames: tuple[str, ...] = ()) -> None:
        self.name = name
        self.doc = doc
        self.labelnames = labelnames
        self.by_labels: dict[tuple[str, ...], float] = {} if labelnames else {(): 0.0}

    def inc(self, labels: tuple[str, ...] = ()) -> None:
        self.by_labels[labels] = self.by_labels.get(labels, 0.0) + 1

    def family(self, prom: Any, *, figures: bool = True) -> Metric:
        family: CounterMetricFamily = prom.core.CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        for labels, value in list(self.by_labels.items()) if figures else []:
            family.add_metric(labels, value)
        return family


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

    The engine counts in plain Python objects (its hot path takes no lock) and
    one collector turns them into these metrics when the registry is scraped.
    Counts of one engine's process: each worker process serves its own.

    Raises:
        ImportError: prometheus-client is not installed (the ``metrics`` extra).

    .. versionadded:: 0.1.0
    """

    def __init__(self, registry: CollectorRegistry | None = None, namespace: str = "orch") -> None:
        prom = _prometheus()
        self._prom = prom
        self.registry: CollectorRegistry = registry if registry is not None else prom.CollectorRegistry()
        ns = namespace
        step = ("workflow", "step", "outcome")
        self._steps = _Histogram(
            f"{ns}_step_duration_seconds", "Time of step attempts, by outcome.", step, _STEP_BUCKETS
        )
        self._attempts_doc = "Attempts of steps, by outcome."
        self._retries = _Counter(f"{ns}_step_retries", "Retries of steps scheduled.", ("workflow", "step"))
        self._compensations = _Counter(
            f"{ns}_compensations", "Attempts of compensations, by the step undone and outcome.", step
        )
        self._started = _Counter(f"{ns}_instances_started", "Instances started (committed).", ("workflow",))
        self._ended = _Counter(
            f"{ns}_instances_ended", "Instances that reached an end status (committed).", ("workflow", "status")
        )
        self._timer_lag = _Histogram(
            f"{ns}_timer_lag_seconds", "How late timers fire: fire time minus due time.", ("workflow",), _LAG_BUCKETS
        )
        self._commit_duration = _Histogram(
            f"{ns}_commit_duration_seconds", "Time of store commits.", (), _COMMIT_BUCKETS
        )
        self._commit_batch = _Histogram(
            f"{ns}_commit_batch_size", "Instance changes written by one store commit.", (), _BATCH_BUCKETS
        )
        self._takeovers = _Counter(
            f"{ns}_lease_takeovers", "Instances this worker claimed in flight from a dead or expired owner."
        )
        self._lost = _Counter(f"{ns}_leases_lost", "Leases of this worker that another worker took over.")
        self._attempts_name = f"{ns}_step_attempts"
        # The hot paths' figures, kept once made (workflow -> step -> outcome; the commits'
        # two unlabelled ones): no label tuple is built and no call made per attempt or commit.
        self._step_figures: dict[str, dict[str, dict[str, list[float]]]] = {}
        self._commit_figures: tuple[list[float], list[float]] | None = None
        self.registry.register(self)  # a collector: collect() and describe()

    # ----------------------------------------------------------------- the collector

    def collect(self) -> Iterator[Metric]:
        """The metrics as they are now (called by the registry at each scrape)."""
        return self._families(figures=True)

    def describe(self) -> Iterator[Metric]:
        """The metrics' names and types, without figures (for the registry's check of duplicate names)."""
        return self._families(figures=False)

    def _families(self, *, figures: bool) -> Iterator[Metric]:
        prom = self._prom
        attempts = prom.core.CounterMetricFamily(self._attempts_name, self._attempts_doc, labels=self._steps.labelnames)
        for labels, counts in list(self._steps.by_labels.items()) if figures else []:
            attempts.add_metric(labels, counts[-2])  # the histogram's count
        yield attempts
        yield self._steps.family(prom, figures=figures)
        for counter in (self._retries, self._compensations, self._started, self._ended):
            yield counter.family(prom, figures=figures)
        for histogram in (self._timer_lag, self._commit_duration, self._commit_batch):
            yield histogram.family(prom, figures=figures)
        yield self._takeovers.family(prom, figures=figures)
        yield self._lost.family(prom, figures=figures)

    # ----------------------------------------------------------------- what the engine calls

    def count_step(self, workflow: str, step: str, outcome: str, seconds: float) -> None:
        """One attempt of *step* ended with *outcome* (completed, failed) after *seconds*."""
        try:
            figures = self._step_figures[workflow][step][outcome]
        except KeyError:
            figures = self._steps.figures((workflow, step, outcome))
            self._step_figures.setdefault(workflow, {}).setdefault(step, {})[outcome] = figures
        figures[bisect_left(_STEP_BUCKETS, seconds)] += 1
        figures[-2] += 1
        figures[-1] += seconds

    def count_retry(self, workflow: str, step: str) -> None:
        """A retry of *step* was scheduled."""
        self._retries.inc((workflow, step))

    def count_compensation(self, workflow: str, step: str, outcome: str) -> None:
        """An attempt of the compensation of *step* ended with *outcome*."""
        self._compensations.inc((workflow, step, outcome))

    def count_commit(self, seconds: float, size: int, ends: list[tuple[str, str | None]]) -> None:
        """A commit of *size* changes took *seconds*; *ends*: (workflow, end status, None for a start) it wrote."""
        kept = self._commit_figures
        if kept is None:
            kept = self._commit_figures = (self._commit_duration.figures(()), self._commit_batch.figures(()))
        duration, batch = kept
        duration[bisect_left(_COMMIT_BUCKETS, seconds)] += 1
        duration[-2] += 1
        duration[-1] += seconds
        batch[_BATCH_BUCKET_OF[size] if size < len(_BATCH_BUCKET_OF) else bisect_left(_BATCH_BUCKETS, size)] += 1
        batch[-2] += 1
        batch[-1] += size
        for workflow, status in ends:
            if status is None:
                self._started.inc((workflow,))
            else:
                self._ended.inc((workflow, status))

    def count_timer(self, workflow: str, lag: float) -> None:
        """A timer of *workflow* fired *lag* seconds after its due time."""
        self._timer_lag.observe((workflow,), max(lag, 0.0))

    def count_takeover(self) -> None:
        """This engine claimed an instance in flight from a dead or expired owner."""
        self._takeovers.inc()

    def count_lease_lost(self) -> None:
        """Another worker took over an instance whose lease this engine held."""
        self._lost.inc()

    # ----------------------------------------------------------------- serving

    def serve(self, port: int, addr: str = "127.0.0.1") -> Serving:
        """
        Serve ``/metrics`` over HTTP on *addr*:*port* (0: a free port) in a thread of its own.

        Returns:
            A :class:`Serving`: call it to stop the server; its ``port`` is the port
            it listens on.
        """
        server, thread = self._prom.start_http_server(port, addr, self.registry)
        return Serving(server, thread, addr)

    def exposition(self) -> str:
        """The metrics in Prometheus' text format (what ``/metrics`` serves)."""
        text: bytes = self._prom.generate_latest(self.registry)
        return text.decode()
