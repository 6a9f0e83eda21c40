"""
Issue 13: schemathesis against the API's own OpenAPI description (its pytest integration, on the ASGI app).

The app runs on a client engine over a SQLite file holding parked instances (a
real engine ran them to their tasks); schemathesis generates requests for every
operation, valid and not, as an operator and a manager, and checks every
answer against the description: documented statuses, media types, bodies that
match their schemas, no server error, no request taken without its identity.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import schemathesis.checks
import structlog.testing
from hypothesis import HealthCheck, settings

from statemachine_orch import Engine, SqliteStore
from statemachine_orch.web import TrustedHeader, create_app
from tests.web.flows import FLOWS, Bank, ClientRefund, Delivery, Purchase

TYPED_BODIES = {
    ("POST", "/api/instances"),
    ("POST", "/api/tasks/{task_id}/complete"),
    ("POST", "/api/instances/{instance_id}/signal"),
}
"""The operations whose bodies hold values typed by a workflow, a task's form or a message type."""

IDENTITIES = [{"X-Forwarded-User": "olga", "X-Forwarded-Groups": "ops"}, {"X-Forwarded-User": "boss"}]


async def _park(path: Path) -> None:
    """Run a few instances to where they wait (or end), then stop the engine."""
    store = SqliteStore(path)
    try:
        async with Engine(store, workflows=FLOWS, services={"bank": Bank()}) as engine:
            for instance_id, wf in (
                ("P-1", Purchase(item="desk", amount=5)),
                ("D-1", Delivery()),
                ("R-1", ClientRefund()),
            ):
                await engine.start(wf, instance_id=instance_id)
            await engine.wait_idle()
    finally:
        store.close()


_DIR = tempfile.TemporaryDirectory(prefix="orch-schema-")
_PATH = Path(_DIR.name) / "schema.db"
_STORE = SqliteStore(_PATH)
_APP = create_app(
    Engine(_STORE, concurrency=0, workflows=FLOWS, poll=0.02),
    authenticator=TrustedHeader(),
    workflows=FLOWS,
    operators=["ops"],
    wait=0.05,
)
# Loaded when the module is collected: reading the description touches no instance.
schema = schemathesis.openapi.from_asgi("/api/openapi.json", _APP)


@pytest.fixture(scope="module", autouse=True)
def _parked() -> Iterator[None]:
    """The instances the generated requests meet; the store and its directory go at the end."""
    asyncio.run(_park(_PATH))
    try:
        with structlog.testing.capture_logs():
            yield
    finally:
        _STORE.close()
        _DIR.cleanup()


@schema.parametrize()  # pyright: ignore[reportUnknownMemberType, reportUntypedFunctionDecorator]
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_the_api_answers_as_its_description_says(case: Any) -> None:
    """Issue 13: every operation's answers conform to /api/openapi.json, for each identity."""
    # ignored_auth sends a made-up value of the user header and expects a refusal; but behind the
    # authenticating proxy every user name is valid (the proxy vouches for it): a request without
    # the header is refused, which the other checks (and test_api.py) see.
    excluded: list[Any] = [schemathesis.checks.ignored_auth]
    if (case.operation.method.upper(), case.operation.path) in TYPED_BODIES:
        # A form, a workflow's input and a message are typed by the task, workflow or message type, which a
        # static description cannot state: a body of the described shape may still hold a wrong value (422).
        excluded.append(schemathesis.checks.positive_data_acceptance)
    for headers in IDENTITIES:
        case.call_and_validate(headers=headers, excluded_checks=excluded)
