"""
Alerts: what an operator must look at, found in a store (and an engine's memory).

:func:`scan` reads a store — any store, while workers run in other processes —
and returns the :class:`Alert` of every instance that needs a person: stuck
instances, overdue tasks that nothing escalates, ``compensation_failed``
instances, quarantined records and timers that did not fire. It only reads, and
it reads through aggregate and "late things" queries of the store (never the
records themselves), so it works without the workflows' classes and stays fast
on large stores.

:class:`AlertWatcher` scans periodically and logs each alert once when it is
raised and once when it clears; :class:`StoreCollector` exposes the store's state
and the alerts as Prometheus gauges computed at scrape time (``prometheus-client``,
the ``metrics`` extra, is imported only when a collector is used).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs
import structlog

from ._errors import StoreError
from ._registry import WorkflowRegistry, default_registry
from ._status import InstanceStatus
from ._store import Store

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ._engine import Engine

__all__ = ["Alert", "AlertKind", "AlertWatcher", "StoreCollector", "Thresholds", "scan"]

_log: Any = structlog.get_logger("statemachine_orch.alerts")


class AlertKind(enum.Enum):
    """
    What an :class:`Alert` is about.

    .. versionadded:: 0.1.0
    """

    STUCK_INSTANCE = "stuck_instance"
    """Running or compensating, not waiting on anything, and nothing committed for ``stuck_after`` seconds."""
    OVERDUE_TASK_UNESCALATED = "overdue_task_unescalated"
    """An open human task past its due time whose step declares no timeout (escalation) edge."""
    COMPENSATION_FAILED = "compensation_failed"
    """A compensation failed after its retries: ``Engine.retry_compensation`` once the cause is fixed."""
    QUARANTINED = "quarantined"
    """The engine stopped running the instance: its stored record cannot be loaded."""
    TIMER_LAG = "timer_lag"
    """A timer (``@timer``, a retry's backoff, an escalation) due ``timer_lag_after`` seconds ago has not fired."""


def _non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:
        msg = f"Thresholds({attribute.name}={value!r}): must be a number of seconds >= 0"
        raise ValueError(msg)


@attrs.frozen
class Thresholds:
    """
    How late is too late, in seconds.

    Attributes:
        stuck_after: A running or compensating instance with no timer whose last
            committed change is older than this is stuck.
        timer_lag_after: A due timer not fired this long after its due time lags.
        overdue_grace: An open task counts as overdue this long after its due time.

    Raises:
        ValueError: A threshold is negative (or not a number).

    .. versionadded:: 0.1.0
    """

    stuck_after: float = attrs.field(default=300.0, validator=_non_negative)
    timer_lag_after: float = attrs.field(default=60.0, validator=_non_negative)
    overdue_grace: float = attrs.field(default=0.0, validator=_non_negative)


@attrs.frozen
class Alert:
    """
    One thing an operator must look at.

    Attributes:
        kind: What it is about.
        instance_id: The instance concerned.
        workflow: Its workflow name (``""`` if its row cannot be read).
        step: The step concerned (the task's step, the current step), if any.
        detail: What is wrong, in words; it does not change while the alert lasts.
        since: When the condition began (engine clock, seconds since the epoch): the
            last change of a stuck or ``compensation_failed`` instance, a task's
            due time, a timer's due time, the moment of the quarantine.

    .. versionadded:: 0.1.0
    """

    kind: AlertKind
    instance_id: str
    workflow: str
    step: str | None
    detail: str
    since: float

    @property
    def key(self) -> tuple[AlertKind, str, str | None]:
        """What identifies the alert from one scan to the next: kind, instance and step."""
        return (self.kind, self.instance_id, self.step)

    def describe(self) -> str:
        """One line for people: ``kind instance (workflow.step): detail``."""
        where = self.workflow + (f".{self.step}" if self.step is not None else "")
        return f"{self.kind.value} {self.instance_id} ({where}): {self.detail}"


def _sort_key(alert: Alert) -> tuple[str, str, str, str]:
    return (alert.kind.value, alert.instance_id, alert.step or "", alert.detail)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


_BUSY = frozenset({InstanceStatus.RUNNING, InstanceStatus.COMPENSATING})
_BROKEN = frozenset({InstanceStatus.COMPENSATION_FAILED})


def _declares_escalation(workflow: str, version: str, step: str, registry: WorkflowRegistry) -> bool | None:
    """Whether the step declares a timeout edge (an escalation) out of it; ``None`` when its class is unknown here."""
    cls = registry.resolve(workflow, version)
    if cls is None:
        return None
    spec = cls.__orch_spec__
    return any(e.is_timeout for e in spec.outgoing(step)) if spec.has_step(step) else None


def _quarantined(engine: Engine, store: Store) -> Iterator[Alert]:
    # The engine keeps its quarantine in memory only (the records cannot be written).
    for instance_id, (at, why) in engine.quarantined().items():
        try:
            info = store.info(instance_id)
        except StoreError:
            info = None  # a row damaged beyond its snapshot: the alert still names the instance
        workflow = info.workflow if info is not None else ""
        step = info.step if info is not None else None
        yield Alert(AlertKind.QUARANTINED, instance_id, workflow, step, why, at)


def scan(
    store: Store,
    *,
    now: float | None = None,
    thresholds: Thresholds = Thresholds(),
    engine: Engine | None = None,
) -> list[Alert]:
    """
    Every alert of the store (and of *engine*'s memory), sorted by kind, instance and step.

    Read-only, and deterministic for one store state and one *now*. Instances of a
    workflow version this process does not know are reported like the others
    (whether such a task's step escalates is judged by its instance's timer).

    Args:
        store: The store to read (any store; another process's workers may be running).
        now: The time to judge by; default *engine*'s clock, else the system clock.
            Stores keep times from the workers' clock.
        thresholds: How late is too late.
        engine: An engine whose quarantined instances to report (quarantine is
            kept in the engine's memory, so only it can tell).

    Returns:
        The alerts, sorted by kind, instance id, step and detail.

    Raises:
        StoreError: The store cannot be read.
    """
    if now is None:
        now = engine.clock.now() if engine is not None else time.time()
    registry = engine.registry if engine is not None else default_registry
    alerts: list[Alert] = []
    stuck_after = thresholds.stuck_after
    for info, last in store.quiet(_BUSY, now - stuck_after):
        detail = f"{info.status.value} with no timer and no change since {_iso(last)} (more than {stuck_after:g}s)"
        alerts.append(Alert(AlertKind.STUCK_INSTANCE, info.id, info.workflow, info.step, detail, last))
    declared: dict[tuple[str, str, str], bool | None] = {}  # a backlog has many tasks of few steps
    for task in store.late_tasks(now - thresholds.overdue_grace):
        where = (task.workflow, task.version, task.step)
        if where not in declared:
            declared[where] = _declares_escalation(*where, registry)
        escalates = declared[where]
        if escalates is None:
            # The class is unknown to this process (a command line without the user's
            # module): an instance waiting on a task with a timer set waits on its escalation.
            escalates = task.wake_at is not None
        if not escalates:
            detail = f"task {task.id} was due at {_iso(task.due_at)}; its step declares no escalation"
            alerts.append(
                Alert(
                    AlertKind.OVERDUE_TASK_UNESCALATED, task.instance_id, task.workflow, task.step, detail, task.due_at
                )
            )
    for info, last in store.quiet(_BROKEN, None):
        detail = f"a compensation failed: {info.error}" if info.error else "a compensation failed"
        alerts.append(Alert(AlertKind.COMPENSATION_FAILED, info.id, info.workflow, info.step, detail, last))
    lag_after = thresholds.timer_lag_after
    for info in store.late_timers(now - lag_after):
        due = info.wake_at if info.wake_at is not None else now
        detail = f"its timer was due at {_iso(due)} and has not fired (more than {lag_after:g}s late)"
        alerts.append(Alert(AlertKind.TIMER_LAG, info.id, info.workflow, info.step, detail, due))
    if engine is not None:
        alerts.extend(_quarantined(engine, store))
    alerts.sort(key=_sort_key)
    return alerts


class AlertWatcher:
    """
    Scans a store periodically and logs each alert once when raised, once when cleared.

    ``alert_raised`` is logged at warning level and ``alert_cleared`` at info
    level, through structlog (logger ``statemachine_orch.alerts``), with the keys
    ``kind``, ``instance_id``, ``workflow``, ``step``, ``detail`` and ``since``. An
    alert is the same from one scan to the next while its kind, instance and step
    are. The library never configures logging: the application (or ``orch``) does.

    :meth:`run` scans on the running event loop, so it may share a worker's own
    store; on a large store a scan takes a while (about 0.3 s for 100k instances
    and a backlog of 40k alerts on SQLite), which that loop then waits.

    Args:
        store: The store to scan.
        thresholds: How late is too late.
        interval: Seconds between scans of :meth:`run`.
        engine: An engine whose quarantined instances to report too, and whose
            clock to judge by.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        store: Store,
        *,
        thresholds: Thresholds = Thresholds(),
        interval: float = 30.0,
        engine: Engine | None = None,
    ) -> None:
        if not interval > 0:
            msg = f"AlertWatcher(interval={interval!r}): must be a positive number of seconds"
            raise ValueError(msg)
        self.store = store
        self.thresholds = thresholds
        self.interval = interval
        self.engine = engine
        self._raised: dict[tuple[AlertKind, str, str | None], Alert] = {}

    @property
    def alerts(self) -> list[Alert]:
        """The alerts raised by the last scan, sorted."""
        return sorted(self._raised.values(), key=_sort_key)

    def check(self, now: float | None = None) -> list[Alert]:
        """
        Scan once, log what was raised and what cleared since the last scan; return the alerts now.

        Raises:
            StoreError: The store cannot be read (nothing is logged as cleared).
        """
        found = scan(self.store, now=now, thresholds=self.thresholds, engine=self.engine)
        current = {a.key: a for a in found}
        for key, alert in current.items():
            if key not in self._raised:
                _log.warning("alert_raised", **_fields(alert))
        for key, alert in self._raised.items():
            if key not in current:
                _log.info("alert_cleared", **_fields(alert))
        self._raised = current
        return found

    async def run(self) -> None:
        """
        Scan every ``interval`` seconds until cancelled.

        A store that cannot be read is logged (``alert_scan_failed``, error level)
        and tried again at the next interval; the alerts raised stay raised.
        """
        while True:
            try:
                self.check()
            except StoreError as exc:
                _log.error("alert_scan_failed", error=str(exc))
            await asyncio.sleep(self.interval)


def _fields(alert: Alert) -> dict[str, object]:
    return {
        "kind": alert.kind.value,
        "instance_id": alert.instance_id,
        "workflow": alert.workflow,
        "step": alert.step,
        "detail": alert.detail,
        "since": alert.since,
    }


_STATUSES = tuple(s.value for s in InstanceStatus)


class StoreCollector:
    """
    A ``prometheus_client`` collector of the store's state, computed at each scrape.

    Register it with ``prometheus_client.REGISTRY.register(StoreCollector(store))``
    (or your own ``CollectorRegistry``). It exposes:

    - ``orch_instances{workflow,status}``: instances by workflow and status (every
      status of every workflow present, zeros included);
    - ``orch_tasks_open{workflow,step}``: open human tasks;
    - ``orch_tasks_overdue{workflow,step}``: open human tasks past their due time;
    - ``orch_alerts{kind}``: the alerts :func:`scan` finds, by kind (zeros included);
    - ``orch_timers_overdue_seconds``: how late the latest-firing due timer is (0 when none is due).

    A store that cannot be read is logged (``store_metrics_failed``) and leaves
    these out of that scrape, so the registry's other metrics still are served.
    Requires ``prometheus-client`` (the ``metrics`` extra).

    Scrapes run in the metrics server's threads, one at a time per collector:
    give it a store of its own (a second ``SqliteStore`` on the same file, a
    second ``PostgresStore`` on the same database), not a running engine's
    ``SqliteStore``, whose connection is that engine's.

    Args:
        store: The store to read.
        thresholds: The alerts' thresholds.
        engine: An engine whose quarantined instances count as alerts, and whose
            clock to judge by.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        store: Store,
        *,
        thresholds: Thresholds = Thresholds(),
        engine: Engine | None = None,
    ) -> None:
        self.store = store
        self.thresholds = thresholds
        self.engine = engine
        self._scraping = threading.Lock()

    def describe(self) -> list[Metric]:
        """The metric families, without samples: registering the collector reads no store."""
        return list(_families())

    def collect(self) -> Iterable[Metric]:
        """The metric families with their samples, read from the store now."""
        engine = self.engine
        now = engine.clock.now() if engine is not None else time.time()
        instances, tasks_open, tasks_overdue, alert_counts, timers = _families()
        with self._scraping:
            try:
                counts = self.store.instance_counts()
                task_counts = self.store.task_counts(now)
                alerts = scan(self.store, now=now, thresholds=self.thresholds, engine=engine)
                late = self.store.late_timers(now, 1)
            except StoreError as exc:
                _log.warning("store_metrics_failed", error=str(exc))
                return []

        by_workflow: dict[str, dict[str, int]] = {}
        for workflow, status, n in counts:
            by_workflow.setdefault(workflow, {})[status.value] = n
        for workflow in sorted(by_workflow):
            for value in _STATUSES:
                instances.add_metric([workflow, value], by_workflow[workflow].get(value, 0))
        for workflow, step, n, overdue in task_counts:
            tasks_open.add_metric([workflow, step], n)
            tasks_overdue.add_metric([workflow, step], overdue)
        per_kind = dict.fromkeys(AlertKind, 0)
        for alert in alerts:
            per_kind[alert.kind] += 1
        for kind, n in per_kind.items():
            alert_counts.add_metric([kind.value], n)
        wake_at = late[0].wake_at if late else None
        timers.add_metric([], max(0.0, now - wake_at) if wake_at is not None else 0.0)
        return [instances, tasks_open, tasks_overdue, alert_counts, timers]


def _families() -> tuple[Any, Any, Any, Any, Any]:
    try:
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415 - the optional `metrics` extra
    except ImportError as exc:
        msg = "StoreCollector needs prometheus-client: pip install 'statemachine-orch[metrics]'"
        raise ImportError(msg, name="prometheus_client") from exc

    return (
        GaugeMetricFamily("orch_instances", "Instances by workflow and status.", labels=["workflow", "status"]),
        GaugeMetricFamily("orch_tasks_open", "Open human tasks by workflow and step.", labels=["workflow", "step"]),
        GaugeMetricFamily(
            "orch_tasks_overdue",
            "Open human tasks past their due time, by workflow and step.",
            labels=["workflow", "step"],
        ),
        GaugeMetricFamily("orch_alerts", "Alerts found in the store, by kind.", labels=["kind"]),
        GaugeMetricFamily("orch_timers_overdue_seconds", "How late the latest-firing due timer is (0: none due)."),
    )
