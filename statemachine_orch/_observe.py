"""
What the engine tells its observers: step attempts, compensations, turns, commits, timers, leases.

The engine holds ``_obs``: ``None`` when nothing observes it (then each hook costs
one attribute check), else an :class:`Observer` made by :func:`make_observer` from
``Engine(metrics=..., tracing=..., logs=...)``. One observer feeds the three
outputs: Prometheus metrics (:mod:`statemachine_orch.metrics`), OpenTelemetry spans
(opentelemetry-api, imported only when tracing is on) and structlog events with
contextvars bound around each step body and compensation. The library never
configures structlog: the events go where the application's configuration sends them.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import structlog

from ._history import EventKind
from ._status import InstanceStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from contextvars import Token

    from ._ctx import Ctx
    from ._instance import InstanceRecord
    from .metrics import Metrics

_log: Any = structlog.get_logger("statemachine_orch.engine")

_perf = time.perf_counter

# opentelemetry-api's variable naming a tracer provider to load (its own constant is in the optional extra).
_PROVIDER_VARIABLE = "OTEL_PYTHON_TRACER_PROVIDER"

_STATUS_CHANGED = EventKind.STATUS_CHANGED
# A tuple, not a set: `in` compares by identity first, where a set would call the enum's __hash__.
_ENDED = tuple(s for s in InstanceStatus if s.is_terminal)
# Most commits are of live instances: two identity checks spare them the tuple's comparisons.
_RUNNING, _WAITING = InstanceStatus.RUNNING, InstanceStatus.WAITING
_END_STATUSES = frozenset(s.value for s in _ENDED)
_NO_ENDS: list[tuple[str, str | None]] = []  # shared, never written to


class Attempt:
    """One attempt of a step or a compensation in progress, traced or logged: its clock, span and log context."""

    __slots__ = ("otel", "span", "started", "vars")

    def __init__(self) -> None:
        self.started = 0.0
        self.span: Any = None
        self.otel: Any = None
        self.vars: Mapping[str, Token[Any]] | None = None


class Observer:
    """The hooks the engine calls; this one does nothing (subclasses observe)."""

    def turn_begin(self, rec: InstanceRecord) -> object:  # noqa: ARG002 - a hook that does nothing
        """A worker starts a turn of *rec*; what it returns goes to :meth:`turn_end`."""
        return None

    def turn_end(self, token: object) -> None:
        """The turn begun with *token* ended."""

    def attempt_begin(self, ctx: Ctx) -> object:  # noqa: ARG002 - a hook that does nothing
        """
        A step's (or a compensation's, ``ctx.undoing`` set) body is about to run.

        What it returns goes to :meth:`attempt_ended`.
        """
        return _perf()

    def attempt_ended(self, ctx: Ctx, token: object, outcome: str, error: BaseException | None = None) -> None:
        """The body begun with :meth:`attempt_begin` (which gave *token*) ended: completed, failed or cancelled."""

    def failed(self, ctx: Ctx, error: str, retry_in: float | None) -> None:
        """An attempt failed; *retry_in*: the retry's backoff (None: not retried)."""

    def status_changed(self, rec: InstanceRecord, old: InstanceStatus, new: InstanceStatus) -> None:
        """The instance's status changed (not yet committed)."""

    def commit_begin(self, records: tuple[InstanceRecord, ...]) -> object:  # noqa: ARG002 - a hook that does nothing
        """A commit of *records* starts; what it returns goes to :meth:`committed`."""
        return None

    def committed(self, token: object, size: int) -> None:
        """The commit begun with *token* wrote *size* instance changes."""

    def timer_fired(self, workflow: str, lag: float) -> None:
        """A timer of an instance of *workflow* fired *lag* seconds after it was due."""

    def takeover(self, instance_id: str) -> None:
        """This engine claimed an instance in flight from a dead or expired owner."""

    def lease_lost(self, instance_id: str) -> None:
        """Another worker took over an instance whose lease this engine held."""


class _Turn:
    """An instance turn's span, current in its worker's context."""

    __slots__ = ("instance_id", "otel", "span")

    def __init__(self, span: Any, otel: Any, instance_id: str) -> None:
        self.span = span
        self.otel = otel
        self.instance_id = instance_id


class _Observed(Observer):
    """Metrics, spans and logs, each when asked for."""

    def __init__(self, metrics: Metrics | None, tracer: Any, logs: bool, *, global_provider: bool = False) -> None:
        self.metrics = metrics
        self.tracer = tracer
        self.logs = logs
        # Bound once: a lazy proxy would resolve structlog's configuration at every call.
        self.log: Any = _log.bind() if logs else None
        # Without logs, an attempt outside a recorded turn is only timed (no span, no log context).
        self._timed_only = not logs
        # The instances whose turn has a recorded span (one turn at a time per instance).
        self._recording: set[str] = set()
        if tracer is not None:
            from opentelemetry import context, trace  # noqa: PLC0415 - the optional extra
            from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415

            # tracing=True: until the application sets an SDK provider, the global one is
            # the API's proxy, whose spans are no-ops; a turn then skips making one.
            self._no_sdk: Any = _no_global_provider(trace) if global_provider else (lambda: False)
            self._attach: Any = context.attach
            self._detach: Any = context.detach
            self._in_context: Any = trace.set_span_in_context
            self._status: Any = Status
            self._error_code: Any = StatusCode.ERROR

    # ----------------------------------------------------------------- turns and attempts

    def turn_begin(self, rec: InstanceRecord) -> object:
        if self.tracer is None or self._no_sdk():
            return None
        span = self.tracer.start_span(
            f"orch turn {rec.spec.name}",
            attributes={"orch.instance_id": rec.id, "orch.workflow": rec.spec.name},
        )
        if span.is_recording():
            self._recording.add(rec.id)
        elif not span.get_span_context().is_valid:
            return None  # the API's no-op span (no SDK installed): nothing to end or propagate
        # A turn the sampler dropped is still current, so the spans of the user's code
        # in the steps follow its decision.
        return _Turn(span, self._attach(self._in_context(span)), rec.id)

    def turn_end(self, token: object) -> None:
        if isinstance(token, _Turn):
            self._recording.discard(token.instance_id)
            self._detach(token.otel)
            token.span.end()

    def attempt_begin(self, ctx: Ctx) -> object:
        if self._timed_only and ctx.instance_id not in self._recording:
            return _perf()  # no span, no log context: the start time is all there is to keep
        attempt = Attempt()
        undoing = ctx.undoing
        # Only a recorded turn gets step spans: in a turn the sampler dropped they would
        # be dropped too (the SDK's samplers follow the parent), at the cost of a span each.
        if ctx.instance_id in self._recording:
            attributes = {
                "orch.instance_id": ctx.instance_id,
                "orch.workflow": ctx.workflow,
                "orch.step": undoing if undoing is not None else ctx.step,
                "orch.attempt": ctx.attempt,
            }
            if undoing is not None:
                attributes["orch.compensation"] = ctx.step
            name = f"orch compensate {undoing}" if undoing is not None else f"orch step {ctx.step}"
            attempt.span = span = self.tracer.start_span(name, attributes=attributes)
            attempt.otel = self._attach(self._in_context(span))
        if self.logs:
            attempt.vars = structlog.contextvars.bind_contextvars(
                instance_id=ctx.instance_id, workflow=ctx.workflow, step=ctx.step, attempt=ctx.attempt
            )
            self.log.debug(
                "compensation_started" if undoing is not None else "step_started",
                instance_id=ctx.instance_id,
                workflow=ctx.workflow,
                step=ctx.step,
                attempt=ctx.attempt,
                **({"undoing": undoing} if undoing is not None else {}),
            )
        # Started last: the figure is the body's time, not the observers'.
        attempt.started = _perf()
        return attempt

    def attempt_ended(self, ctx: Ctx, token: object, outcome: str, error: BaseException | None = None) -> None:
        metrics = self.metrics
        if type(token) is float and metrics is not None and ctx.undoing is None and outcome != "cancelled":
            # The common case, timed only (no span, no log context): a step's attempt counted.
            metrics.count_step(ctx.workflow, ctx.step, outcome, _perf() - token)
            return
        attempt = token if type(token) is Attempt else None
        started: float = attempt.started if attempt is not None else token  # type: ignore[assignment] # a float
        seconds = _perf() - started
        undoing = ctx.undoing
        if metrics is not None and outcome != "cancelled":
            if undoing is None:
                metrics.count_step(ctx.workflow, ctx.step, outcome, seconds)
            else:
                metrics.count_compensation(ctx.workflow, undoing, outcome)
        if attempt is None:
            return
        span = attempt.span
        if span is not None:
            self._detach(attempt.otel)
            span.set_attribute("orch.outcome", outcome)
            if error is not None:
                span.record_exception(error)
                span.set_status(self._status(self._error_code, f"{type(error).__name__}: {error}"))
            span.end()
        if attempt.vars is not None:
            structlog.contextvars.reset_contextvars(**attempt.vars)
            if outcome == "completed":
                self.log.info(
                    "compensation_completed" if undoing is not None else "step_completed",
                    instance_id=ctx.instance_id,
                    workflow=ctx.workflow,
                    step=ctx.step,
                    attempt=ctx.attempt,
                    duration=round(seconds, 6),
                )
            elif outcome == "cancelled":
                self.log.info(
                    "step_cancelled",
                    instance_id=ctx.instance_id,
                    workflow=ctx.workflow,
                    step=ctx.step,
                    attempt=ctx.attempt,
                )

    def failed(self, ctx: Ctx, error: str, retry_in: float | None) -> None:
        undoing = ctx.undoing
        if retry_in is not None and undoing is None and self.metrics is not None:
            self.metrics.count_retry(ctx.workflow, ctx.step)
        if not self.logs:
            return
        fields: dict[str, object] = {
            "instance_id": ctx.instance_id,
            "workflow": ctx.workflow,
            "step": ctx.step,
            "attempt": ctx.attempt,
            "error": error,
        }
        if undoing is not None:
            fields["undoing"] = undoing
        if retry_in is not None:
            self.log.warning("compensation_retry" if undoing is not None else "step_retry", retry_in=retry_in, **fields)
        elif undoing is not None:
            self.log.error("compensation_failed", **fields)
        else:
            self.log.warning("step_failed", **fields)

    # ----------------------------------------------------------------- instances, commits, timers, leases

    def status_changed(self, rec: InstanceRecord, old: InstanceStatus, new: InstanceStatus) -> None:
        if self.logs:
            self.log.info(
                "status_changed", instance_id=rec.id, workflow=rec.spec.name, status=new.value, previous=old.value
            )

    def commit_begin(self, records: tuple[InstanceRecord, ...]) -> object:
        if self.metrics is None:
            return None
        # Counted once committed: a failed commit is run again from what the store holds.
        # Only a new row can hold the start, and only an ended instance an end: the
        # other records (most of them) are not scanned. The token is the start time,
        # or (start time, ends) when there are starts or ends.
        if len(records) == 1:
            rec = records[0]
            status = rec.status
            if rec.stored and (status is _RUNNING or status is _WAITING):
                return _perf()  # the common case: one live instance's change
        ends: list[tuple[str, str | None]] | None = None
        for rec in records:
            if not rec.stored:
                ends = [] if ends is None else ends
                ends.append((rec.spec.name, None))
            status = rec.status
            if status is not _RUNNING and status is not _WAITING and status in _ENDED:
                for event in rec.history:
                    if event.kind is _STATUS_CHANGED and event.detail in _END_STATUSES:
                        ends = [] if ends is None else ends
                        ends.append((rec.spec.name, event.detail))
        return _perf() if ends is None else (_perf(), ends)

    def committed(self, token: object, size: int) -> None:
        metrics = self.metrics
        if metrics is None:
            return
        if type(token) is float:
            metrics.count_commit(_perf() - token, size, _NO_ENDS)
        elif isinstance(token, tuple):
            pair: tuple[float, list[tuple[str, str | None]]] = token  # pyright: ignore[reportUnknownVariableType] # commit_begin's (float, ends)
            metrics.count_commit(_perf() - pair[0], size, pair[1])

    def timer_fired(self, workflow: str, lag: float) -> None:
        if self.metrics is not None:
            self.metrics.count_timer(workflow, lag)

    def takeover(self, instance_id: str) -> None:
        if self.metrics is not None:
            self.metrics.count_takeover()
        if self.logs:
            self.log.info("lease_takeover", instance_id=instance_id)

    def lease_lost(self, instance_id: str) -> None:  # noqa: ARG002 - the engine logs it
        if self.metrics is not None:
            self.metrics.count_lease_lost()


def _no_global_provider(trace: Any) -> Callable[[], bool]:
    """What tells whether the API's global tracer provider is still its no-op proxy (no SDK set yet)."""
    api: dict[str, object] = trace.__dict__  # the live module namespace, not a copy
    if "_TRACER_PROVIDER" in api and _PROVIDER_VARIABLE not in os.environ:
        # The API's own global, None until set_tracer_provider(): get_tracer_provider()
        # would look the environment up at each turn (thousands of instructions), for a
        # variable that is read when the global is first asked for, and is not set here.
        return lambda: api["_TRACER_PROVIDER"] is None
    return lambda: type(trace.get_tracer_provider()) is trace.ProxyTracerProvider


def make_observer(metrics: Metrics | None, tracing: object, logs: bool) -> Observer | None:
    """
    The engine's observer for these settings (None: nothing observes it).

    *tracing*: False, True (the global tracer provider's tracer) or a tracer provider.

    Raises:
        ImportError: *tracing* is on and opentelemetry-api is not installed.
    """
    tracer: Any = None
    get_tracer: Any = getattr(tracing, "get_tracer", None)  # a TracerProvider's
    if get_tracer is not None:
        tracer = get_tracer("statemachine_orch")
    elif tracing:
        try:
            from opentelemetry import trace  # noqa: PLC0415 - the optional extra
        except ImportError as exc:
            msg = (
                "Engine(tracing=True) needs opentelemetry-api: "
                "install the 'otel' extra (pip install 'statemachine-orch[otel]')"
            )
            raise ImportError(msg, name="opentelemetry") from exc
        tracer = trace.get_tracer("statemachine_orch")
    if metrics is None and tracer is None and not logs:
        return None
    return _Observed(metrics, tracer, logs, global_provider=get_tracer is None and bool(tracing))
