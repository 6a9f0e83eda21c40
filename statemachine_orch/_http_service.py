"""
HTTP services (issue 10, item 9): ``ctx.call(service, operation, **params)`` over httpx.

An :class:`HttpService` sends each operation as one HTTP request: by default
``POST <base_url>/<operation>`` with the parameters as a JSON object, or as an
:class:`HttpRoute` says (``"GET /orders/{order_id}"``: placeholders filled from
the parameters, the others in the query string). The step visit's idempotency
key goes in the ``Idempotency-Key`` header, so the service can tell a re-run
(a retry, a re-run after a crash) from a new call. The JSON response is the
call's result (typed, when the route names a result type). Statuses become the
two kinds of :class:`~statemachine_orch.HttpServiceError`: retried
(:class:`~statemachine_orch.HttpUnavailable`) or not
(:class:`~statemachine_orch.HttpRejected`).

httpx is an optional dependency (the ``http`` extra): this module imports it,
the package imports this module only when ``HttpService`` is first asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import math
import re
import time
import typing
from collections.abc import Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import attrs
import httpx

from ._errors import RecordLoadError
from ._http_errors import HttpRejected, HttpUnavailable
from ._serialize import show, structure, type_label, unstructure

_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
_QUERY_ONLY = ("GET", "DELETE", "HEAD")  # methods whose parameters go in the query string
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BODY_KEPT = 1000  # characters of an error response kept on the exception
_BODY_SHOWN = 200  # ... and shown in its message
_Primitive = str | int | float | bool | None  # a query string value, as httpx types it


def _positive_seconds(value: object, what: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds <= 0:
        msg = f"{what} must be a positive number of seconds or a timedelta, got {value!r}"
        raise ValueError(msg)
    return float(seconds)


def _timeout_or_none(value: object) -> float | None:
    return None if value is None else _positive_seconds(value, "HttpRoute(timeout=...)")


@attrs.frozen
class HttpRoute:
    """
    How an :class:`HttpService` sends one operation.

    Args:
        method: ``GET``, ``POST``, ``PUT``, ``PATCH``, ``DELETE`` or ``HEAD``.
            With ``GET``, ``DELETE`` and ``HEAD`` the parameters go in the query
            string; with the others, in a JSON body.
        path: The path after the service's base URL, starting with ``/``;
            ``{name}`` placeholders are filled from the parameter of that name.
            Empty: ``/<operation>``.
        timeout: This operation's timeout in seconds (or a ``timedelta``),
            instead of the service's.
        result: The type the JSON response is read as (an attrs class, a
            ``list[...]``, ``Decimal``...: whatever a variable may be); ``None``
            gives the decoded JSON itself.

    Raises:
        ValueError: An unknown method, a path not starting with ``/`` or with a
            placeholder that is not a name, a timeout that is not positive.

    .. versionadded:: 0.1.0
    """

    method: str = "POST"
    path: str = ""
    timeout: float | None = attrs.field(default=None, converter=_timeout_or_none)
    result: Any = None

    def __attrs_post_init__(self) -> None:
        if self.method not in _METHODS:
            msg = f"HttpRoute(method={self.method!r}): use one of {', '.join(_METHODS)} (in capitals)"
            raise ValueError(msg)
        if self.path and not self.path.startswith("/"):
            msg = f"HttpRoute(path={self.path!r}): the path must start with '/' (it follows the base URL)"
            raise ValueError(msg)
        for name in _PLACEHOLDER.findall(self.path):
            if _NAME.fullmatch(name) is None:
                msg = f"HttpRoute(path={self.path!r}): the placeholder {{{name}}} must be a parameter name"
                raise ValueError(msg)

    @classmethod
    def parse(cls, text: str) -> HttpRoute:
        """
        The route of ``"METHOD /path"`` (``"GET /orders/{order_id}"``).

        Raises:
            ValueError: *text* is not a method, a space and a path.
        """
        method, _, path = text.strip().partition(" ")
        if not path.strip():
            msg = f"route {text!r}: write it as 'METHOD /path', for example 'GET /orders/{{order_id}}'"
            raise ValueError(msg)
        return cls(method, path.strip())

    def placeholders(self) -> list[str]:
        """The parameter names the path takes, in order."""
        return _PLACEHOLDER.findall(self.path)


class HttpService:
    """
    A service reached over HTTP, with JSON in and out (httpx, async).

    Register it like any service, ``Engine(services={"payments":
    HttpService("https://pay.example.com/api")})``; then ``await
    ctx.call("payments", "charge", amount=Decimal("12.50"))`` sends ``POST
    https://pay.example.com/api/charge`` with the body ``{"amount": "12.50"}``
    (parameters are converted like variables: ``Decimal``, ``datetime``, attrs
    objects...), the header ``Idempotency-Key: <the step visit's key>`` and
    ``Accept: application/json``, and returns the decoded JSON response (``None``
    for an empty one).

    A 2xx response is the result. A 5xx, 408 or 429, a connection failure or no
    response within the timeout raises :class:`~statemachine_orch.HttpUnavailable`,
    which the step's ``Retry`` retries (waiting at least what ``Retry-After``
    asks, up to the policy's ``max_interval``). Any other status (a 4xx, a
    redirect, which is not followed) raises
    :class:`~statemachine_orch.HttpRejected`, a ``NonRetryableError``: the same
    request would fail again. So does a success whose body is not JSON or not of
    the route's result type.

    The service opens its connections (an ``httpx.AsyncClient``) on first use,
    in the running event loop; close it in that loop with :meth:`aclose` or
    ``async with``. A *client* given is used as it is (its transport, proxies,
    TLS settings...; the URLs are this service's) and not closed.

    Args:
        base_url: ``http://`` or ``https://`` URL the operations' paths follow.
        timeout: Seconds (or a ``timedelta``) to wait for each call: to connect,
            to send, between bytes of the response. An :class:`HttpRoute` may set
            its own.
        routes: Operation name → :class:`HttpRoute`, or its text form
            ``"GET /orders/{order_id}"``. Others are ``POST /<operation>``.
        headers: Sent with every request (``Authorization``...).
        idempotency_header: The header that carries the idempotency key.
        client: An ``httpx.AsyncClient`` to send with.

    Raises:
        ValueError: *base_url* is not an absolute http(s) URL, *timeout* is not
            positive, a route is malformed.
        TypeError: *headers* holds a name or value that is not a ``str``.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_client", "_given", "_headers", "_key_header", "_loop", "_routes", "base_url", "timeout")

    base_url: str
    """The URL the operations' paths follow (no trailing ``/``)."""
    timeout: float
    """Seconds each call may take, unless its route says otherwise."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float | timedelta = 10.0,
        routes: Mapping[str, HttpRoute | str] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_header: str = "Idempotency-Key",
        client: httpx.AsyncClient | None = None,
    ) -> None:
        try:
            url = httpx.URL(base_url)
        except (httpx.InvalidURL, TypeError) as exc:
            msg = f"HttpService({base_url!r}): not a URL ({exc})"
            raise ValueError(msg) from None
        if url.scheme not in ("http", "https") or not url.host:
            msg = f"HttpService({base_url!r}): the base URL must be absolute, http:// or https://, with a host"
            raise ValueError(msg)
        self.base_url = str(url).rstrip("/")
        self.timeout = _positive_seconds(timeout, "HttpService(timeout=...)")
        self._routes = {
            str(op): route if isinstance(route, HttpRoute) else HttpRoute.parse(route)
            for op, route in (routes or {}).items()
        }
        given = typing.cast("Mapping[object, object]", headers or {})
        for name, value in given.items():
            if not isinstance(name, str) or not isinstance(value, str):
                msg = f"HttpService(headers=...): names and values must be str, got {name!r}: {value!r}"
                raise TypeError(msg)
        if not idempotency_header:
            msg = "HttpService(idempotency_header=...): give the header's name"
            raise ValueError(msg)
        self._headers = {"Accept": "application/json", **typing.cast("Mapping[str, str]", given)}
        self._key_header = idempotency_header
        self._given = client
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def route(self, operation: str) -> HttpRoute:
        """The route *operation* is sent by (``POST /<operation>`` unless one was given)."""
        found = self._routes.get(operation)
        path = "/" + quote(operation, safe="")
        if found is None:
            return HttpRoute("POST", path)
        return found if found.path else attrs.evolve(found, path=path)

    async def call(self, operation: str, params: Mapping[str, Any], *, idempotency_key: str) -> Any:
        """
        Send *operation* with *params*; return its JSON response.

        Raises:
            HttpRejected: A 4xx other than 408/429, a redirect, a response that
                is not JSON or not of the route's result type, parameters that
                cannot be sent.
            HttpUnavailable: A 5xx, 408 or 429, a connection failure, a timeout.
        """
        route = self.route(operation)
        method = route.method
        rest = dict(params)
        url = self.base_url + self._fill(operation, route, rest)
        query, body = self._encode(operation, method, url, rest)
        headers = dict(self._headers)
        headers[self._key_header] = idempotency_key
        if body is not None:
            headers["Content-Type"] = "application/json"
        timeout = route.timeout if route.timeout is not None else self.timeout
        try:
            response = await self._client_here().request(
                method, url, params=query, content=body, headers=headers, timeout=timeout
            )
        except httpx.TimeoutException as exc:
            why = f"no response within {timeout:g}s ({type(exc).__name__})"
            raise HttpUnavailable(operation, method, url, why) from exc
        except httpx.TransportError as exc:
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise HttpUnavailable(operation, method, url, why) from exc
        return self._answer(operation, route, url, response)

    def _fill(self, operation: str, route: HttpRoute, rest: dict[str, Any]) -> str:
        """The route's path with its placeholders filled (and those parameters taken out of *rest*)."""

        def value_of(found: re.Match[str]) -> str:
            name = found.group(1)
            if name not in rest:
                url = self.base_url + route.path
                why = f"the path needs the parameter {name!r}, which the call did not give"
                raise HttpRejected(operation, route.method, url, why)
            return quote(_text(unstructure(rest.pop(name))), safe="")

        return _PLACEHOLDER.sub(value_of, route.path)

    def _encode(
        self, operation: str, method: str, url: str, rest: dict[str, Any]
    ) -> tuple[list[tuple[str, _Primitive]], bytes | None]:
        """The query string's pairs and the JSON body of the parameters left."""
        data: dict[str, Any] = {}
        for name, value in rest.items():
            try:
                data[name] = unstructure(value)
                json.dumps(data[name])
            except (TypeError, ValueError) as exc:
                why = f"the parameter {name!r} = {show(value)} cannot be sent as JSON ({exc})"
                raise HttpRejected(operation, method, url, why) from None
        if method not in _QUERY_ONLY:
            return [], json.dumps(data, separators=(",", ":")).encode()
        query: list[tuple[str, _Primitive]] = []
        for name, value in data.items():
            items = typing.cast("list[object]", value) if isinstance(value, list) else [value]
            query.extend((name, _text(item)) for item in items if item is not None)
        return query, None

    def _answer(self, operation: str, route: HttpRoute, url: str, response: httpx.Response) -> Any:
        """The result of a response, or the error it stands for."""
        method = route.method
        status = response.status_code
        if 200 <= status < 300:  # noqa: PLR2004 - the success class
            return self._result(operation, route, url, response)
        body = response.text[:_BODY_KEPT]
        shown = " ".join(body[:_BODY_SHOWN].split())
        why = f"{status} {response.reason_phrase}" + (f": {shown}" if shown else "")
        if status in (408, 429) or status >= 500:  # noqa: PLR2004 - the statuses that heal with time
            wait = _retry_after(response)
            raise HttpUnavailable(operation, method, url, why, status=status, body=body, retry_after=wait)
        if 300 <= status < 400:  # noqa: PLR2004 - redirects
            where = response.headers.get("location", "?")
            why = f"{status} {response.reason_phrase}: redirected to {where}, which is not followed; call it directly"
        raise HttpRejected(operation, method, url, why, status=status, body=body)

    def _result(self, operation: str, route: HttpRoute, url: str, response: httpx.Response) -> Any:
        if response.status_code == 204 or not response.content:  # noqa: PLR2004 - No Content
            data: Any = None
        else:
            try:
                data = response.json()
            except ValueError:
                shown = " ".join(response.text[:_BODY_SHOWN].split())
                why = f"the response ({response.status_code}) is not JSON: {shown}"
                raise HttpRejected(
                    operation, route.method, url, why, status=response.status_code, body=response.text[:_BODY_KEPT]
                ) from None
        if route.result is None:
            return data
        try:
            return structure(data, route.result)
        except RecordLoadError as exc:
            why = f"the response is not a {type_label(route.result)}: {exc.field_path}: {exc.detail}"
            raise HttpRejected(
                operation, route.method, url, why, status=response.status_code, body=response.text[:_BODY_KEPT]
            ) from None

    def _client_here(self) -> httpx.AsyncClient:
        """The client to send with: the one given, or this service's own for the running event loop."""
        if self._given is not None:
            return self._given
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # A client's connections belong to the loop that opened them.
            self._client = httpx.AsyncClient(follow_redirects=False)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the connections this service opened (not those of a client it was given)."""
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"HttpService({self.base_url!r})"


def _text(value: object) -> str:
    """A JSON-ready value as text for a path or a query string (JSON for true/false and containers)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _retry_after(response: httpx.Response) -> float | None:
    """The seconds a ``Retry-After`` header asks to wait (a number, or a date against the response's ``Date``)."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        until = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None  # not a delay this service understands: the policy's own wait
    now = time.time()
    sent = response.headers.get("date")
    if sent:
        with contextlib.suppress(TypeError, ValueError, IndexError):  # no date of its own: ours
            now = email.utils.parsedate_to_datetime(sent).timestamp()  # the server's clock against its own date
    return max(0.0, until - now)
