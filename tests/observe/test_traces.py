"""
Issue 12: OpenTelemetry spans per instance turn, step attempt and compensation.

Spans are collected with the SDK's ``InMemorySpanExporter`` from a tracer
provider of the test's own (``Engine(tracing=provider)``), so no global provider
is set; the user's code in the step bodies opens its spans with the same provider
and they must nest under the step's span, in sync and async steps alike.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, StatusCode, TraceState
from opentelemetry.util.types import Attributes

from statemachine_orch import Engine, InstanceStatus, MemoryStore, VirtualClock
from tests.observe.flows import OBSERVED, PROVIDER, ObsFlaky, ObsTraced, ObsTrip

if TYPE_CHECKING:
    from tests.conftest import Runner


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """The spans ended through ``PROVIDER[0]``, a provider of this test's own."""
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    PROVIDER[:] = [provider]
    yield exported
    PROVIDER.clear()
    provider.shutdown()


def traced_engine() -> Engine:
    return Engine(MemoryStore(), clock=VirtualClock(autojump=True), tracing=PROVIDER[0], workflows=OBSERVED)


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def attempt_of(span: ReadableSpan) -> int:
    value = (span.attributes or {}).get("orch.attempt")
    assert isinstance(value, int)
    return value


def parent_of(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> ReadableSpan:
    assert span.parent is not None, f"{span.name} has no parent"
    found = [s for s in spans if s.context is not None and s.context.span_id == span.parent.span_id]
    assert 1 == len(found), f"the parent of {span.name} was not exported"
    return found[0]


def test_a_users_span_in_a_step_body_is_a_child_of_the_step_span_sync_and_async(
    exporter: InMemorySpanExporter, run: Runner
) -> None:
    """Issue 12: the step's span is current inside the body; steps nest under the instance's turn."""

    async def scenario() -> str:
        async with traced_engine() as engine:
            handle = await engine.start(ObsTraced())
            assert InstanceStatus.COMPLETED == await handle.wait_idle()
            return handle.instance_id

    instance_id = run(scenario())
    spans = exporter.get_finished_spans()
    (user_sync,) = named(spans, "user sync")
    (user_async,) = named(spans, "user async")
    sync_step = parent_of(user_sync, spans)
    async_step = parent_of(user_async, spans)
    assert "orch step sync_step" == sync_step.name
    assert "orch step async_step" == async_step.name
    for span, step in ((sync_step, "sync_step"), (async_step, "async_step")):
        assert span.attributes is not None
        assert instance_id == span.attributes["orch.instance_id"]
        assert "ObsTraced" == span.attributes["orch.workflow"]
        assert step == span.attributes["orch.step"]
        assert 1 == span.attributes["orch.attempt"]
        assert "completed" == span.attributes["orch.outcome"]
        turn = parent_of(span, spans)
        assert "orch turn ObsTraced" == turn.name
        assert turn.attributes is not None
        assert instance_id == turn.attributes["orch.instance_id"]
        assert turn.parent is None
    assert user_sync.context is not None
    assert user_async.context is not None
    assert sync_step.context is not None
    # One trace per turn: the instance ran both steps in one turn.
    assert sync_step.context.trace_id == user_async.context.trace_id


def test_each_attempt_has_its_own_span_and_failed_ones_record_the_error(
    exporter: InMemorySpanExporter, run: Runner
) -> None:
    """Issue 12: three attempts of a retried step: two failed spans (error status, exception event), one completed."""

    async def scenario() -> None:
        async with traced_engine() as engine:
            assert InstanceStatus.COMPLETED == await (await engine.start(ObsFlaky())).wait_idle()

    run(scenario())
    spans = named(exporter.get_finished_spans(), "orch step fetch")
    attempts = sorted(spans, key=attempt_of)
    assert [1, 2, 3] == [attempt_of(s) for s in attempts]
    assert [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET] == [s.status.status_code for s in attempts]
    assert ["exception"] == [e.name for e in attempts[0].events]
    assert "ConnectionError" == (attempts[0].events[0].attributes or {}).get("exception.type")
    # The retries wait out their backoff between turns: each attempt is in a turn of its own.
    turns = {s.parent.span_id for s in attempts if s.parent is not None}
    assert 3 == len(turns)


def test_a_compensation_has_a_span_naming_the_step_it_undoes(exporter: InMemorySpanExporter, run: Runner) -> None:
    """Issue 12: the saga's compensation runs in a span of its own, with the step it undoes as orch.step."""

    async def scenario() -> None:
        async with traced_engine() as engine:
            assert InstanceStatus.FAILED == await (await engine.start(ObsTrip())).wait_idle()

    run(scenario())
    spans = exporter.get_finished_spans()
    (comp,) = named(spans, "orch compensate book_flight")
    assert comp.attributes is not None
    assert "book_flight" == comp.attributes["orch.step"]
    assert "cancel_flight" == comp.attributes["orch.compensation"]
    assert "ObsTrip" == comp.attributes["orch.workflow"]
    assert "orch turn ObsTrip" == parent_of(comp, spans).name
    (hotel,) = named(spans, "orch step book_hotel")
    assert StatusCode.ERROR == hotel.status.status_code


def test_without_tracing_no_span_is_made(exporter: InMemorySpanExporter, run: Runner) -> None:
    """Issue 12: tracing is off by default: only the user's own spans are exported."""

    async def scenario() -> None:
        engine = Engine(MemoryStore(), clock=VirtualClock(autojump=True), workflows=OBSERVED)
        async with engine:
            assert InstanceStatus.COMPLETED == await (await engine.start(ObsTraced())).wait_idle()

    run(scenario())
    assert ["user sync", "user async"] == [s.name for s in exporter.get_finished_spans()]
    assert all(s.parent is None for s in exporter.get_finished_spans())


GLOBAL_PROVIDER = """
import asyncio, json

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from statemachine_orch import Ctx, Engine, MemoryStore, Workflow, step

exported = InMemorySpanExporter()


class Hello(Workflow):
    @step(initial=True, final=True)
    async def greet(self, ctx: Ctx) -> None:
        with trace.get_tracer("user").start_as_current_span("user call"):
            await asyncio.sleep(0)


async def main() -> None:
    async with Engine(MemoryStore(), tracing=True) as engine:
        # The provider is set after the engine was made: its tracer follows the global one.
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exported))
        trace.set_tracer_provider(provider)
        await (await engine.start(Hello())).wait_idle()


asyncio.run(main())
spans = {s.context.span_id: s for s in exported.get_finished_spans()}
print(json.dumps({s.name: spans[s.parent.span_id].name if s.parent else None for s in spans.values()}))
"""


def test_tracing_true_uses_the_global_provider_set_by_the_application() -> None:
    """Issue 12: ``tracing=True`` opens spans through the global provider, even one set after the engine was made."""
    done = subprocess.run(
        [sys.executable, "-c", GLOBAL_PROVIDER],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    parents = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"user call": "orch step greet", "orch step greet": "orch turn Hello", "orch turn Hello": None} == parents


class TurnsDropped(Sampler):
    """Drops every instance turn, samples the rest as its parent was; remembers the spans it was asked about."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.inner = ParentBased(ALWAYS_ON)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        self.asked.append(name)
        if name.startswith("orch turn"):
            return SamplingResult(Decision.DROP)
        return self.inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return "TurnsDropped"


def test_a_turn_the_sampler_drops_makes_no_step_spans_and_the_users_spans_follow_its_decision(run: Runner) -> None:
    """Issue 12: sampled-out turns cost one span, not one per step; the body still runs in the turn's trace."""
    sampler = TurnsDropped()
    exported = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exported))
    PROVIDER[:] = [provider]

    async def scenario() -> None:
        async with Engine(MemoryStore(), clock=VirtualClock(autojump=True), tracing=provider) as engine:
            assert InstanceStatus.COMPLETED == await (await engine.start(ObsTraced())).wait_idle()

    try:
        run(scenario())
    finally:
        PROVIDER.clear()
        provider.shutdown()
    assert ["orch turn ObsTraced", "user sync", "user async"] == sampler.asked
    # The user's spans were children of the dropped turn, so ParentBased dropped them too.
    assert [] == list(exported.get_finished_spans())
