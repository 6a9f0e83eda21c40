"""
Issue 10, item 9: HTTP services, against a real HTTP server on loopback.

``HttpService`` sends each ``ctx.call`` as one request with JSON in and out, the
step visit's idempotency key in a header, and per-call timeouts; statuses map to
retried (``HttpUnavailable``: 5xx, 408, 429, connection failures, timeouts, with
``Retry-After`` honoured up to the policy's cap) and not retried
(``HttpRejected``: other 4xx, redirects, a response that is not JSON). The server
is ``tests/integration/loopback_http.py``: the standard library's HTTP server on
``127.0.0.1``, port 0. Engines run on the virtual clock, so a retry's wait is
read from the clock and the history, never slept.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import attrs
import httpx
import pytest

from statemachine_orch import (
    Ctx,
    EventKind,
    HttpRejected,
    HttpRoute,
    HttpService,
    HttpServiceError,
    HttpUnavailable,
    InstanceStatus,
    NonRetryableError,
    Retry,
    VirtualClock,
    Workflow,
    after,
    goto,
    step,
)
from tests.integration.loopback_http import LoopbackServer, Reply, loopback_server

if TYPE_CHECKING:
    from statemachine_orch import Handle
    from tests.conftest import EngineFactory, Runner

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    """A fresh loopback HTTP server for one test."""
    with loopback_server() as made:
        yield made


@attrs.frozen
class Charge:
    """What the payments API answers."""

    id: str
    amount: Decimal
    captured_at: datetime


class Checkout(Workflow):
    """Charge an order through the payments service, retrying what may heal."""

    order_id: str
    amount: Decimal
    charge_id: str = ""
    error: str = ""

    @step(initial=True, retry=Retry(attempts=4, initial=0.5, max_interval=30))
    async def pay(self, ctx: Ctx) -> None:
        answer = await ctx.call("payments", "charge", order_id=self.order_id, amount=self.amount)
        self.charge_id = answer["id"]

    @after(pay)
    @step(final=True)
    def done(self, ctx: Ctx) -> None: ...

    @after(pay, on_error=HttpRejected)
    @step(final=True)
    def rejected(self, ctx: Ctx) -> None: ...


async def checkout(engine_services: dict[str, object], new_engine: EngineFactory) -> Handle[Checkout]:
    async with new_engine(services=engine_services) as engine:
        handle = await engine.start(Checkout(order_id="A-1", amount=Decimal("12.50")))
        await engine.wait_instance(handle.instance_id)
        return handle


def attempts(handle: Handle[Any], step: str) -> list[str]:
    """The history of *step*'s attempts and retries, described."""
    kinds = (EventKind.STEP_STARTED, EventKind.STEP_FAILED, EventKind.RETRY_SCHEDULED, EventKind.STEP_COMPLETED)
    return [e.describe() for e in handle.history() if e.kind in kinds and e.step == step]


def test_json_in_and_out_with_the_idempotency_key(
    server: LoopbackServer, new_engine: EngineFactory, run: Runner
) -> None:
    """Issue 10: a call is POST <base>/<operation> with the parameters as JSON (Decimal as text), the key in a header; the JSON answer is the result."""
    server.script("/api/charge", Reply(201, {"id": "ch_1", "amount": "12.50"}))

    async def scenario() -> Handle[Checkout]:
        async with HttpService(server.url + "/api/") as payments:
            return await checkout({"payments": payments}, new_engine)

    handle = run(scenario())
    [request] = server.to("/api/charge")
    assert "POST" == request.method
    assert {"order_id": "A-1", "amount": "12.50"} == request.body
    assert f"{handle.instance_id}:0" == request.headers["idempotency-key"]
    assert "application/json" == request.headers["content-type"]
    assert "application/json" == request.headers["accept"]
    assert (InstanceStatus.COMPLETED, "ch_1") == (handle.status, handle.workflow.charge_id)


class TwoVisits(Workflow):
    """Calls the service on two visits of one step; the first visit's first attempt fails."""

    keys: list[str] = attrs.field(factory=list[str])
    visits: int = 0

    @step(initial=True, retry=Retry(attempts=3, initial=1))
    async def call(self, ctx: Ctx) -> None:
        answer = await ctx.call("echo", "ping")
        self.keys.append(answer["headers"]["idempotency-key"])
        self.visits += 1

    @after(call)
    @goto(call, when=lambda wf: wf.visits < 2)
    @step
    def again(self, ctx: Ctx) -> None: ...

    @after(again)
    @step(final=True)
    def end(self, ctx: Ctx) -> None: ...


def test_a_retry_sends_the_same_key_and_the_next_visit_a_new_one(
    server: LoopbackServer, new_engine: EngineFactory, run: Runner
) -> None:
    """Issue 10: the service can deduplicate: every attempt of one visit carries one key, each visit its own."""
    server.script("/ping", Reply(503, {"error": "warming up"}))

    async def scenario() -> TwoVisits:
        async with HttpService(server.url) as echo, new_engine(services={"echo": echo}) as engine:
            return await (await engine.start(TwoVisits())).result()

    done = run(scenario())
    sent = [r.headers["idempotency-key"] for r in server.to("/ping")]
    assert 3 == len(sent)
    assert sent[0] == sent[1] != sent[2]
    assert sent[1:] == done.keys


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422])
def test_a_4xx_is_not_retried(status: int, server: LoopbackServer, new_engine: EngineFactory, run: Runner) -> None:
    """Issue 10: a 4xx other than 408/429 fails the step at once (HttpRejected, a NonRetryableError), with its status and body."""
    server.script("/charge", Reply(status, {"error": "card declined"}))

    async def scenario() -> Handle[Checkout]:
        async with HttpService(server.url) as payments:
            return await checkout({"payments": payments}, new_engine)

    handle = run(scenario())
    assert 1 == len(server.to("/charge"))
    routed = [e.describe() for e in handle.history() if e.kind is EventKind.TRANSITION]
    assert (InstanceStatus.COMPLETED, "transition    pay -> rejected") == (handle.status, routed[0])
    failed = [e for e in handle.history() if e.kind is EventKind.STEP_FAILED]
    reason = httpx.codes.get_reason_phrase(status)
    url = f"{server.url}/charge"
    expected = f'HttpRejected: charge (POST {url}): {status} {reason}: {{"error": "card declined"}}'
    assert [expected] == [e.detail for e in failed]
    assert issubclass(HttpRejected, NonRetryableError)
    assert issubclass(HttpRejected, HttpServiceError)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_5xx_408_and_429_are_retried(
    status: int, server: LoopbackServer, new_engine: EngineFactory, run: Runner
) -> None:
    """Issue 10: statuses that heal with time raise HttpUnavailable, which the step's Retry retries with its backoff."""
    server.script("/charge", Reply(status, {"error": "busy"}), Reply(status), Reply(200, {"id": "ch_3"}))

    async def scenario() -> Handle[Checkout]:
        async with HttpService(server.url) as payments:
            return await checkout({"payments": payments}, new_engine)

    handle = run(scenario())
    assert issubclass(HttpUnavailable, HttpServiceError)
    assert not issubclass(HttpUnavailable, NonRetryableError)
    assert (InstanceStatus.COMPLETED, "ch_3") == (handle.status, handle.workflow.charge_id)
    reason = httpx.codes.get_reason_phrase(status)
    url = f"{server.url}/charge"
    assert [
        "step_started  pay (attempt 1)",
        f'step_failed   pay (attempt 1) - HttpUnavailable: charge (POST {url}): {status} {reason}: {{"error": "busy"}}',
        "retry_scheduled pay (attempt 2) - in 0.5s",
        "step_started  pay (attempt 2)",
        f"step_failed   pay (attempt 2) - HttpUnavailable: charge (POST {url}): {status} {reason}",
        "retry_scheduled pay (attempt 3) - in 1s",
        "step_started  pay (attempt 3)",
        "step_completed pay (attempt 3)",
    ] == attempts(handle, "pay")


@pytest.mark.parametrize(
    ("retry_after", "wait"),
    [
        ("7", "in 7s"),  # longer than the policy's 0.5 s: the service's wait
        ("0", "in 0.5s"),  # shorter: the policy's
        ("3600", "in 30s"),  # longer than max_interval: capped there
        ("soon", "in 0.5s"),  # not a delay: ignored
    ],
)
def test_retry_after_is_honoured_up_to_the_policys_cap(
    retry_after: str, wait: str, server: LoopbackServer, new_engine: EngineFactory, run: Runner
) -> None:
    """Issue 10: a 429 or 503 with Retry-After waits at least that long before the next attempt, at most max_interval."""
    server.script("/charge", Reply(429, headers={"Retry-After": retry_after}), Reply(200, {"id": "ch_4"}))

    async def scenario() -> Handle[Checkout]:
        async with HttpService(server.url) as payments:
            return await checkout({"payments": payments}, new_engine)

    handle = run(scenario())
    assert InstanceStatus.COMPLETED == handle.status
    assert f"retry_scheduled pay (attempt 2) - {wait}" == attempts(handle, "pay")[2]


def test_retry_after_as_a_date_counts_from_the_servers_date(
    server: LoopbackServer, new_engine: EngineFactory, clock: VirtualClock, run: Runner
) -> None:
    """Issue 10: an HTTP-date Retry-After is read against the response's own Date header (no clock skew)."""
    sent = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
    headers = {
        "Date": format_datetime(sent, usegmt=True),
        "Retry-After": format_datetime(sent + timedelta(seconds=20), usegmt=True),
    }
    server.script("/charge", Reply(503, headers=headers), Reply(200, {"id": "ch_5"}))
    started = clock.now()

    async def scenario() -> Handle[Checkout]:
        async with HttpService(server.url) as payments:
            return await checkout({"payments": payments}, new_engine)

    handle = run(scenario())
    assert "retry_scheduled pay (attempt 2) - in 20s" == attempts(handle, "pay")[2]
    assert 20 <= clock.now() - started


def test_a_timeout_is_retried_and_each_route_may_set_its_own(
    server: LoopbackServer, new_engine: EngineFactory, run: Runner
) -> None:
    """Issue 10: no answer within the route's timeout raises HttpUnavailable (retried); the next attempt succeeds."""
    never = threading.Event()  # the first answer is held until the server closes
    server.script("/charge", Reply(200, {"id": "late"}, hold=never), Reply(200, {"id": "ch_6"}))
    routes: dict[str, HttpRoute | str] = {"charge": HttpRoute("POST", "/charge", timeout=timedelta(milliseconds=200))}

    async def scenario() -> Handle[Checkout]:
        async with HttpService(server.url, timeout=60, routes=routes) as payments:
            return await checkout({"payments": payments}, new_engine)

    handle = run(scenario())
    assert (InstanceStatus.COMPLETED, "ch_6") == (handle.status, handle.workflow.charge_id)
    failed = attempts(handle, "pay")[1]
    assert failed.startswith(
        f"step_failed   pay (attempt 1) - HttpUnavailable: charge (POST {server.url}/charge): no response within 0.2s ("
    ), failed


def test_a_refused_connection_is_retried_then_fails_the_step(new_engine: EngineFactory, run: Runner) -> None:
    """Issue 10: nothing listening on the port: HttpUnavailable on every attempt, then the instance fails, saying so."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there

    async def scenario() -> Handle[Checkout]:
        async with HttpService(f"http://127.0.0.1:{port}") as payments:
            return await checkout({"payments": payments}, new_engine)

    handle = run(scenario())
    assert InstanceStatus.FAILED == handle.status
    failures = [e.detail or "" for e in handle.history() if e.kind is EventKind.STEP_FAILED]
    assert 4 == len(failures)
    assert all(
        f.startswith(f"HttpUnavailable: charge (POST http://127.0.0.1:{port}/charge): ConnectError") for f in failures
    )


class Lookup(Workflow):
    """GETs an order by id with query parameters, typed; posts a typed capture."""

    order_id: str
    status: str = ""
    charge: Charge | None = None

    @step(initial=True)
    async def fetch(self, ctx: Ctx) -> None:
        answer = await ctx.call("orders", "get_order", order_id=self.order_id, expand=["lines", "customer"], paid=True)
        self.status = answer["query"]["paid"][0] + " " + answer["path"]

    @after(fetch)
    @step(final=True)
    async def capture(self, ctx: Ctx) -> None:
        self.charge = await ctx.call("orders", "capture", order_id=self.order_id, on=date(2026, 5, 1))


def test_routes_fill_the_path_put_get_parameters_in_the_query_and_type_the_result(
    server: LoopbackServer, new_engine: EngineFactory, run: Runner
) -> None:
    """Issue 10: 'GET /orders/{order_id}' quotes the id into the path, the rest in the query; result= types the answer."""
    server.script(
        "/orders/A%2F7/capture",
        Reply(200, {"id": "ch_7", "amount": "99.90", "captured_at": "2026-05-01T10:00:00+00:00"}),
    )
    routes: dict[str, HttpRoute | str] = {
        "get_order": "GET /orders/{order_id}",
        "capture": HttpRoute("PUT", "/orders/{order_id}/capture", result=Charge),
    }

    async def scenario() -> Lookup:
        auth = {"Authorization": "Bearer t0k"}
        async with (
            HttpService(server.url, routes=routes, headers=auth) as orders,
            new_engine(services={"orders": orders}) as engine,
        ):
            return await (await engine.start(Lookup(order_id="A/7"))).result()

    done = run(scenario())
    get, put = server.requests
    assert ("GET", "/orders/A%2F7", {"expand": ["lines", "customer"], "paid": ["true"]}, None) == (
        get.method,
        get.path,
        get.query,
        get.body,
    )
    assert "Bearer t0k" == get.headers["authorization"]
    assert ("PUT", {"on": "2026-05-01"}) == (put.method, put.body)
    assert "true /orders/A%2F7" == done.status
    assert Charge("ch_7", Decimal("99.90"), datetime(2026, 5, 1, 10, tzinfo=UTC)) == done.charge


@pytest.mark.parametrize(
    ("reply", "routes", "message"),
    [
        (Reply(200, raw=b"<html>oops</html>"), {}, "the response (200) is not JSON: <html>oops</html>"),
        (
            Reply(302, headers={"Location": "/v2/charge"}),
            {},
            "302 Found: redirected to /v2/charge, which is not followed; call it directly",
        ),
        (
            Reply(200, {"id": "ch_8", "amount": "lots", "captured_at": "2026-05-01T10:00:00+00:00"}),
            {"charge": HttpRoute(result=Charge)},
            "the response is not a Charge: Charge.amount: expected Decimal but got 'lots' (type=str)",
        ),
    ],
)
def test_answers_that_cannot_be_used_are_not_retried(
    reply: Reply,
    routes: dict[str, HttpRoute | str],
    message: str,
    server: LoopbackServer,
    new_engine: EngineFactory,
    run: Runner,
) -> None:
    """Issue 10: a body that is not JSON (or not the declared type) or a redirect is HttpRejected: retrying would not help."""
    server.script("/charge", reply)

    async def scenario() -> Handle[Checkout]:
        async with HttpService(server.url, routes=routes) as payments:
            return await checkout({"payments": payments}, new_engine)

    handle = run(scenario())
    [failed] = [e.detail for e in handle.history() if e.kind is EventKind.STEP_FAILED]
    assert f"HttpRejected: charge (POST {server.url}/charge): {message}" == failed
    assert 1 == len(server.to("/charge"))


def test_parameters_that_cannot_be_sent_fail_before_any_request(server: LoopbackServer, run: Runner) -> None:
    """Issue 10: a missing path parameter or a value JSON cannot hold is HttpRejected naming it; nothing is sent."""
    service = HttpService(server.url, routes={"get_order": "GET /orders/{order_id}"})

    async def scenario() -> list[str]:
        found: list[str] = []
        async with service:
            for operation, params in (("get_order", {}), ("charge", {"card": object()})):
                with pytest.raises(HttpRejected) as err:
                    await service.call(operation, params, idempotency_key="k")
                found.append(str(err.value))
        return found

    missing, opaque = run(scenario())
    assert (
        f"get_order (GET {server.url}/orders/{{order_id}}): the path needs the parameter 'order_id', which the call did not give"
        == missing
    )
    assert opaque.startswith(f"charge (POST {server.url}/charge): the parameter 'card' = <object object at "), opaque
    assert [] == server.requests


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (
            lambda: HttpService("payments.local"),
            ValueError,
            "HttpService('payments.local'): the base URL must be absolute, http:// or https://, with a host",
        ),
        (
            lambda: HttpService("ftp://example.com"),
            ValueError,
            "HttpService('ftp://example.com'): the base URL must be absolute, http:// or https://, with a host",
        ),
        (
            lambda: HttpService("http://x", timeout=0),
            ValueError,
            "HttpService(timeout=...) must be a positive number of seconds or a timedelta, got 0",
        ),
        (
            lambda: HttpService("http://x", routes={"a": "/a"}),
            ValueError,
            "route '/a': write it as 'METHOD /path', for example 'GET /orders/{order_id}'",
        ),
        (
            lambda: HttpRoute("FETCH", "/a"),
            ValueError,
            "HttpRoute(method='FETCH'): use one of GET, POST, PUT, PATCH, DELETE, HEAD (in capitals)",
        ),
        (
            lambda: HttpRoute("GET", "a/{id}"),
            ValueError,
            "HttpRoute(path='a/{id}'): the path must start with '/' (it follows the base URL)",
        ),
        (
            lambda: HttpRoute("GET", "/a/{order id}"),
            ValueError,
            "HttpRoute(path='/a/{order id}'): the placeholder {order id} must be a parameter name",
        ),
        (
            lambda: HttpRoute(timeout=-1),
            ValueError,
            "HttpRoute(timeout=...) must be a positive number of seconds or a timedelta, got -1",
        ),
        (
            lambda: HttpService("http://x", headers=cast("Any", {"X-Retry": 3})),
            TypeError,
            "HttpService(headers=...): names and values must be str, got 'X-Retry': 3",
        ),
    ],
)
def test_bad_configuration_is_refused_when_made(make: Any, error: type[Exception], message: str) -> None:
    """Issue 10: a base URL, timeout, route or header that cannot work is a clear error at construction."""
    with pytest.raises(error) as err:
        make()
    assert message == str(err.value)


def test_the_package_imports_without_httpx_and_says_which_extra_to_install() -> None:
    """Issue 10: httpx is the `http` extra: importing the package does not import it; HttpService without it names the extra."""
    code = textwrap.dedent(
        """
        import sys, json

        class NotInstalled:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] == "httpx":
                    raise ImportError(f"No module named {name!r} (blocked by the test)")
                return None

        sys.meta_path.insert(0, NotInstalled())
        import statemachine_orch
        out = {"imported": "httpx" in sys.modules, "errors": statemachine_orch.HttpUnavailable.__name__}
        try:
            statemachine_orch.HttpService
        except ImportError as exc:
            out["service"] = str(exc)
        print(json.dumps(out))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert 0 == done.returncode, done.stderr
    out = done.stdout.strip().splitlines()[-1]
    assert '"imported": false' in out
    assert '"errors": "HttpUnavailable"' in out
    assert "HttpService needs httpx: pip install 'statemachine-orch[http]'" in out


def test_a_client_given_is_used_and_left_open(server: LoopbackServer, run: Runner) -> None:
    """Issue 10: client= sends with the caller's httpx client (its settings) and aclose() leaves it to its owner."""

    async def scenario() -> tuple[Any, bool]:
        async with httpx.AsyncClient(headers={"X-Tenant": "acme"}) as client:
            service = HttpService(server.url, client=client)
            answer = await service.call("ping", {"n": 1}, idempotency_key="k-1")
            await service.aclose()
            return answer, client.is_closed

    answer, closed = run(scenario())
    assert ("acme", "k-1", {"n": 1}) == (
        answer["headers"]["x-tenant"],
        answer["headers"]["idempotency-key"],
        answer["body"],
    )
    assert not closed
