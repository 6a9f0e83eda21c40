"""
One endpoint of the JSON API: its route and what the OpenAPI description says of it.

The route gives the handler the app and the request's identity (401 without one,
403 for a caller who is no operator where one must be), refuses query parameters
the endpoint does not take, and answers a refusal as JSON with its status.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from statemachine_orch._errors import OrchError

from ._auth import Identity
from ._context import ApiError, Web, error_response, field_of, orch_status, web_of

Handler = Callable[[Web, Request, Identity], Awaitable[Response]]
"""An endpoint's function: the app, the request and who makes it."""


@attrs.frozen
class Endpoint:
    """
    One API endpoint: its route and what the OpenAPI description says of it.

    Attributes:
        method: The HTTP method.
        path: The Starlette path (``{task_id:path}`` takes ids holding ``/``).
        handler: What answers it.
        operation: The OpenAPI ``operationId``.
        summary: One line saying what it does.
        query: Query parameters: ``(name, JSON schema, description)``.
        body: The request body's schema name (a JSON object), if it takes one.
        ok: The success statuses and their schema names (``"svg"``: an SVG image; ``"unchanged"``: no body).
        errors: The refusal statuses it may answer with.
        operator: Whether only operators may call it.
        public: Whether it needs no identity.
    """

    method: str
    path: str
    handler: Handler
    operation: str
    summary: str
    query: tuple[tuple[str, Mapping[str, Any], str], ...] = ()
    body: str | None = None
    ok: tuple[tuple[int, str], ...] = ()
    errors: tuple[int, ...] = ()
    operator: bool = False
    public: bool = False

    @property
    def openapi_path(self) -> str:
        """The path as OpenAPI writes it (``{task_id}``)."""
        return self.path.replace(":path}", "}")

    def check_query(self, request: Request) -> None:
        """Refuse query parameters the endpoint does not take, or takes once and were given twice (400)."""
        known = {name for name, _, _ in self.query}
        names = [name for name, _ in request.query_params.multi_items()]
        for name in names:
            if name not in known:
                shown = ", ".join(sorted(known)) or "none"
                raise ApiError(400, "BadParameter", f"unknown query parameter {name!r} (this one takes: {shown})")
            if names.count(name) > 1:
                raise ApiError(400, "BadParameter", f"query parameter {name!r} given more than once", field=name)

    def route(self) -> Route:
        """The Starlette route."""
        endpoint = self

        async def call(request: Request) -> Response:
            web = web_of(request)
            identity = web.identify(request)
            if identity is None and not endpoint.public:
                return error_response(401, "NotAuthenticated", "no identity: sign in (or come through the proxy)")
            if endpoint.operator and (identity is None or not web.is_operator(identity)):
                groups = ", ".join(sorted(web.operators)) or "none"
                return error_response(403, "NotAnOperator", f"only members of the operator groups ({groups}) may")
            try:
                endpoint.check_query(request)
                return await endpoint.handler(web, request, identity or Identity("?"))
            except ApiError as exc:
                return error_response(exc.status, exc.kind, exc.message, field=exc.field)
            except OrchError as exc:
                return error_response(orch_status(exc), type(exc).__name__, str(exc), field=field_of(exc))

        return Route(self.path, call, methods=[self.method], name=self.operation)
