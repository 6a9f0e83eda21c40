"""
Issue 13: the JSON API through httpx's ASGI transport, on a client engine beside a real worker (SQLite file).

Every endpoint refuses a request without an identity; identity comes from the
trusted headers only; tasks follow the engine's rule (assignee, claimant,
candidate group); a wrong form is refused naming its field with nothing
changed; a claimed task is completed by its claimant only; operators start,
signal, cancel and retry; bodies are JSON objects of a bounded size; hostile
strings come back intact as JSON.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from statemachine_orch import EventKind, InstanceStatus, TaskStatus
from statemachine_orch.web._api import ENDPOINTS
from tests.web.flows import Arrived
from tests.web.helpers import BOSS, BUYER, CLERK, OPS, WAIT, as_user, site

if TYPE_CHECKING:
    from tests.conftest import Runner

DECISION: dict[str, Any] = {
    "approved": True,
    "note": "fine",
    "quantity": 3,
    "weight": 1.5,
    "price": "12.30",
    "priority": "high",
    "deliver_on": "2026-03-01",
    "remind_at": None,
    "budget": None,
    "tags": ["a"],
}


def concrete(path: str) -> str:
    """An endpoint's path with its ids filled in."""
    return path.replace("{task_id:path}", "P-1.1").replace("{instance_id:path}", "P-1")


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if not e.public], ids=lambda e: e.operation)
def test_every_endpoint_refuses_a_request_without_identity(endpoint: Any, run: Runner, tmp_path: Path) -> None:
    """Issue 13: no identity header, or an empty or forged-newline user, is a 401 JSON error on every endpoint."""

    async def scenario() -> list[tuple[int, str]]:
        async with site(tmp_path) as s:
            await s.started("Purchase", "P-1", item="desk", amount=5)
            seen: list[tuple[int, str]] = []
            for headers in ({}, as_user(""), as_user("boss\u2028admin"), {b"X-Forwarded-User": b"\xff\xfe"}):
                response = await s.http.request(endpoint.method, concrete(endpoint.path), json={}, headers=headers)
                seen.append((response.status_code, response.json()["error"]["type"]))
            return seen

    assert [(401, "NotAuthenticated")] * 4 == run(scenario())


def test_identity_comes_from_the_headers_never_from_the_request(run: Runner, tmp_path: Path) -> None:
    """Issue 13: /api/me is the header's user and groups; a user in the query is refused, in a body ignored."""

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int]:
        async with site(tmp_path) as s:
            smuggled = await s.http.get("/api/me?user=boss", headers=as_user("bea"))
            assert (400, "BadParameter") == (smuggled.status_code, smuggled.json()["error"]["type"])
            me = (await s.http.get("/api/me", headers=as_user("bea", "buyers", " ops ", "buyers"))).json()
            await s.started("Purchase", "P-1", item="desk", amount=5)
            forged = await s.http.post(
                "/api/tasks/P-1.1/complete", json={"form": DECISION, "user": "boss"}, headers=CLERK
            )
            clerk = (await s.http.get("/api/me", headers=CLERK)).json()
            return me, clerk, forged.status_code

    me, clerk, forged = run(scenario())
    assert {"user": "bea", "groups": ["buyers", "ops"], "operator": True} == me
    assert {"user": "clerk", "groups": ["clerks"], "operator": False} == clerk
    assert 403 == forged


def test_tasks_are_listed_for_those_they_are_for(run: Runner, tmp_path: Path) -> None:
    """Issue 13: the boss (assignee) and a buyer (group) see the task; the clerk sees none; filters and limits."""

    async def scenario() -> dict[str, Any]:
        async with site(tmp_path) as s:
            await s.started("Purchase", "P-1", item="desk", amount=5)
            await s.started("Purchase", "P-2", item="lamp", amount=7)
            get = s.http.get
            return {
                "boss": [t["id"] for t in (await get("/api/tasks", headers=BOSS)).json()["tasks"]],
                "boss_mine_1": [
                    t["id"] for t in (await get("/api/tasks?scope=mine&limit=1", headers=BOSS)).json()["tasks"]
                ],
                "buyer_mine": (await get("/api/tasks?scope=mine", headers=BUYER)).json()["tasks"],
                "buyer": [t["id"] for t in (await get("/api/tasks", headers=BUYER)).json()["tasks"]],
                "clerk": (await get("/api/tasks", headers=CLERK)).json()["tasks"],
                "overdue": (await get("/api/tasks?overdue=true", headers=BOSS)).json()["tasks"],
                "of_p2": [t["id"] for t in (await get("/api/tasks?instance_id=P-2", headers=BOSS)).json()["tasks"]],
                "bad": [
                    (await get(f"/api/tasks?{q}", headers=BOSS)).status_code
                    for q in ("limit=0", "limit=x", "limit=501", "scope=everyone", "overdue=yes")
                ],
                "task": (await get("/api/tasks/P-1.1", headers=BUYER)).json(),
                "clerk_task": (await get("/api/tasks/P-1.1", headers=CLERK)).status_code,
                "missing": (await get("/api/tasks/P-9.1", headers=BOSS)).status_code,
            }

    seen = run(scenario())
    assert ["P-1.1", "P-2.1"] == seen["boss"]
    assert ["P-1.1"] == seen["boss_mine_1"]
    assert [] == seen["buyer_mine"]
    assert ["P-1.1", "P-2.1"] == seen["buyer"]
    assert ([], []) == (seen["clerk"], seen["overdue"])
    assert ["P-2.1"] == seen["of_p2"]
    assert [400] * 5 == seen["bad"]
    task = seen["task"]
    assert ("approve", "boss", ["buyers"], True, True, False) == (
        task["step"],
        task["assignee"],
        task["candidate_groups"],
        task["may_complete"],
        task["may_claim"],
        task["may_unclaim"],
    )
    fields = {f["name"]: (f["kind"], f["required"]) for f in task["form_fields"]["fields"]}
    assert {
        "approved": ("checkbox", False),
        "note": ("text", True),
        "quantity": ("integer", True),
        "weight": ("number", True),
        "price": ("decimal", True),
        "priority": ("select", True),
        "deliver_on": ("date", True),
        "remind_at": ("datetime", False),
        "budget": ("integer", False),
        "tags": ("json", False),
    } == fields
    assert (403, 404) == (seen["clerk_task"], seen["missing"])


def test_a_wrong_form_is_refused_naming_its_field_and_nothing_changes(run: Runner, tmp_path: Path) -> None:
    """Issue 13: a string for an int, a float for a Decimal, an unknown enum value: 422 naming the field; still open."""

    async def scenario() -> tuple[list[tuple[int, str | None]], str, int, list[str]]:
        async with site(tmp_path) as s:
            await s.started("Purchase", "P-1", item="desk", amount=5)
            refused: list[tuple[int, str | None]] = []
            for field, value in (("quantity", "3"), ("price", 12.3), ("priority", "urgent"), ("deliver_on", "soon")):
                response = await s.http.post(
                    "/api/tasks/P-1.1/complete", json={"form": {**DECISION, field: value}}, headers=BOSS
                )
                refused.append((response.status_code, response.json()["error"]["field"]))
            missing = await s.http.post("/api/tasks/P-1.1/complete", json={}, headers=BOSS)
            task = (await s.http.get("/api/tasks/P-1.1", headers=BOSS)).json()
            kinds = [e["kind"] for e in (await s.http.get("/api/instances/P-1/history", headers=BOSS)).json()["events"]]
            return refused, task["status"], missing.status_code, kinds

    refused, status, missing, kinds = run(scenario())
    assert [(422, "quantity"), (422, "price"), (422, "priority"), (422, "deliver_on")] == refused
    assert ("open", 422) == (status, missing)
    assert "task_completed" not in kinds


def test_a_task_is_completed_once_with_its_typed_form_and_the_instance_moves_on(run: Runner, tmp_path: Path) -> None:
    """Issue 13: the buyer completes; the worker runs on; the variables hold the typed form; a second completion is 409."""

    async def scenario() -> tuple[int, dict[str, Any], InstanceStatus, dict[str, Any], int, str]:
        async with site(tmp_path) as s:
            await s.started("Purchase", "P-1", item="desk", amount=5)
            done = await s.http.post("/api/tasks/P-1.1/complete", json={"form": DECISION}, headers=BUYER)
            status = await asyncio.wait_for(s.ended("P-1"), WAIT)
            shown = (await s.http.get("/api/instances/P-1", headers=CLERK)).json()
            again = await s.http.post("/api/tasks/P-1.1/complete", json={"form": DECISION}, headers=BOSS)
            return done.status_code, done.json(), status, shown, again.status_code, again.json()["error"]["type"]

    code, done, status, shown, again, kind = run(scenario())
    assert (200, "completed", "bea", DECISION) == (code, done["status"], done["completed_by"], done["form"])
    assert InstanceStatus.COMPLETED == status
    assert ("completed", True, DECISION) == (
        shown["instance"]["status"],
        shown["variables"]["ordered"],
        shown["variables"]["decision"],
    )
    assert (1.0, []) == (shown["progress"]["fraction"], shown["tasks"])
    assert (409, "TaskAlreadyCompleted") == (again, kind)


def test_a_claimed_task_is_completed_only_by_its_claimant(run: Runner, tmp_path: Path) -> None:
    """Issue 13: the buyer claims; the boss is refused (409) and no longer lists it; the clerk cannot claim (403)."""

    async def scenario() -> dict[str, Any]:
        async with site(tmp_path) as s:
            await s.started("Purchase", "P-1", item="desk", amount=5)
            post = s.http.post
            seen: dict[str, Any] = {
                "claim": (await post("/api/tasks/P-1.1/claim", headers=BUYER)).json()["claimed_by"],
                "again": (await post("/api/tasks/P-1.1/claim", headers=BUYER)).status_code,
                "boss_claim": (await post("/api/tasks/P-1.1/claim", headers=BOSS)).status_code,
                "clerk_claim": (await post("/api/tasks/P-1.1/claim", headers=CLERK)).status_code,
                "boss_list": (await s.http.get("/api/tasks", headers=BOSS)).json()["tasks"],
            }
            refused = await post("/api/tasks/P-1.1/complete", json={"form": DECISION}, headers=BOSS)
            seen["boss_complete"] = (refused.status_code, refused.json()["error"]["type"])
            seen["boss_unclaim"] = (await post("/api/tasks/P-1.1/unclaim", headers=BOSS)).status_code
            seen["unclaim"] = (await post("/api/tasks/P-1.1/unclaim", headers=BUYER)).json()["claimed_by"]
            seen["boss_list_after"] = [t["id"] for t in (await s.http.get("/api/tasks", headers=BOSS)).json()["tasks"]]
            seen["boss_done"] = (await post("/api/tasks/P-1.1/complete", json={"form": DECISION}, headers=BOSS)).json()
            await asyncio.wait_for(s.ended("P-1"), WAIT)
            history = (await s.http.get("/api/instances/P-1/history", headers=BOSS)).json()["events"]
            seen["history"] = [(e["kind"], e["detail"]) for e in history if e["kind"].startswith("task_")]
            return seen

    seen = run(scenario())
    assert ("bea", 200, 409, 403, []) == (
        seen["claim"],
        seen["again"],
        seen["boss_claim"],
        seen["clerk_claim"],
        seen["boss_list"],
    )
    assert ((409, "TaskClaimed"), 409, None) == (seen["boss_complete"], seen["boss_unclaim"], seen["unclaim"])
    assert ["P-1.1"] == seen["boss_list_after"]
    assert ("completed", "boss") == (seen["boss_done"]["status"], seen["boss_done"]["completed_by"])
    assert [
        ("task_created", "P-1.1"),
        ("task_claimed", "bea"),
        ("task_unclaimed", "bea"),
        ("task_completed", "boss"),
    ] == seen["history"]


def test_instances_are_listed_shown_with_history_and_drawn(run: Runner, tmp_path: Path) -> None:
    """Issue 13: list with filters and pages, one instance's detail, its history, its SVG with the overlay."""

    async def scenario() -> dict[str, Any]:
        async with site(tmp_path) as s:
            await s.started("Purchase", "P-1", item="desk", amount=5)
            await s.started("Delivery", "D-1")
            get = s.http.get
            svg = await get("/api/instances/P-1/diagram", headers=CLERK)
            return {
                "all": (await get("/api/instances", headers=CLERK)).json(),
                "purchases": [
                    i["id"] for i in (await get("/api/instances?workflow=Purchase", headers=CLERK)).json()["instances"]
                ],
                "page": (await get("/api/instances?limit=1&offset=1", headers=CLERK)).json(),
                "completed": (await get("/api/instances?status=completed", headers=CLERK)).json()["total"],
                "bad": [
                    (await get(f"/api/instances?{q}", headers=CLERK)).status_code for q in ("status=done", "offset=-1")
                ],
                "detail": (await get("/api/instances/P-1", headers=CLERK)).json(),
                "history": (await get("/api/instances/P-1/history", headers=CLERK)).json()["events"],
                "svg": (svg.status_code, svg.headers["content-type"], svg.content),
                "missing": [
                    (await get(path, headers=CLERK)).status_code
                    for path in ("/api/instances/nope", "/api/instances/nope/history", "/api/instances/nope/diagram")
                ],
            }

    seen = run(scenario())
    assert (2, ["D-1", "P-1"]) == (seen["all"]["total"], sorted(i["id"] for i in seen["all"]["instances"]))
    assert ["P-1"] == seen["purchases"]
    assert (2, 1) == (seen["page"]["total"], len(seen["page"]["instances"]))
    assert (0, [400, 400]) == (seen["completed"], seen["bad"])
    detail = seen["detail"]
    assert ("waiting", ["approve"], "P-1.1") == (
        detail["instance"]["status"],
        detail["instance"]["steps"],
        detail["instance"]["open_task"],
    )
    assert ({"item": "desk", "amount": 5, "decision": None, "ordered": False}, ["P-1.1"]) == (
        detail["variables"],
        [t["id"] for t in detail["tasks"]],
    )
    assert [EventKind.INSTANCE_STARTED.value, EventKind.STEP_STARTED.value] == [e["kind"] for e in seen["history"][:2]]
    status, media, body = seen["svg"]
    root = ET.fromstring(body)  # noqa: S314 - our own Graphviz output
    assert (200, "image/svg+xml") == (status, media)
    assert root.tag.endswith("svg")
    assert b"#ffb300" in body  # the current step's colour (diagrams.COLOURS["current"])
    assert [404, 404, 404] == seen["missing"]


def test_operators_start_signal_cancel_and_retry(run: Runner, tmp_path: Path) -> None:
    """Issue 13: only operators change instances; a signal moves one on, a cancel ends one, a retry re-runs a refund."""

    async def scenario() -> dict[str, Any]:
        async with site(tmp_path) as s:
            post = s.http.post
            seen: dict[str, Any] = {
                "start_by_boss": (
                    await post("/api/instances", json={"workflow": "Purchase"}, headers=BOSS)
                ).status_code,
            }
            await s.started("Delivery", "D-1")
            await s.started("Purchase", "P-1", item="desk", amount=5)
            await s.started("ClientRefund", "R-1")
            seen["refund"] = await asyncio.wait_for(s.ended("R-1"), WAIT)
            signal = {"type": "Arrived", "message": {"parcel": "box"}}
            seen["signal_by_boss"] = (await post("/api/instances/D-1/signal", json=signal, headers=BOSS)).status_code
            wrong = await post(
                "/api/instances/D-1/signal", json={"type": "Arrived", "message": {"parcel": 3}}, headers=OPS
            )
            unknown = await post("/api/instances/D-1/signal", json={"type": "Left", "message": {}}, headers=OPS)
            seen["signal_refused"] = [(r.status_code, r.json()["error"]["type"]) for r in (wrong, unknown)]
            seen["signal"] = (await post("/api/instances/D-1/signal", json=signal, headers=OPS)).status_code
            seen["delivered"] = await asyncio.wait_for(s.ended("D-1"), WAIT)
            seen["parcel"] = (await s.http.get("/api/instances/D-1", headers=OPS)).json()["variables"]["parcel"]
            cancel = {"reason": "not needed", "compensate": True}
            seen["cancel_by_boss"] = (await post("/api/instances/P-1/cancel", json=cancel, headers=BOSS)).status_code
            cancelled = await post("/api/instances/P-1/cancel", json=cancel, headers=OPS)
            seen["cancel"] = (cancelled.status_code, cancelled.json()["instance"]["status"], cancelled.json()["done"])
            seen["cancel_again"] = (await post("/api/instances/P-1/cancel", json=cancel, headers=OPS)).status_code
            seen["retry_wrong"] = (await post("/api/instances/P-1/retry", json={}, headers=OPS)).status_code
            s.bank.agrees = True
            retried = await post("/api/instances/R-1/retry", json={}, headers=OPS)
            seen["retry"] = (retried.status_code, retried.json()["instance"]["status"])
            return seen

    seen = run(scenario())
    assert (403, InstanceStatus.COMPENSATION_FAILED) == (seen["start_by_boss"], seen["refund"])
    assert 403 == seen["signal_by_boss"]
    assert [(422, "SignalTypeError"), (422, "SignalTypeError")] == seen["signal_refused"]
    assert (202, InstanceStatus.COMPLETED, "box") == (seen["signal"], seen["delivered"], seen["parcel"])
    assert (403, (200, "cancelled", True), 409, 409) == (
        seen["cancel_by_boss"],
        seen["cancel"],
        seen["cancel_again"],
        seen["retry_wrong"],
    )
    assert (200, "failed") == seen["retry"]
    assert Arrived("box") == Arrived(seen["parcel"])


def test_bodies_are_json_objects_of_a_bounded_size(run: Runner, tmp_path: Path) -> None:
    """Issue 13: another media type is 415, malformed JSON or an array 400, NaN 400, a huge body 413 (nothing started)."""

    async def scenario() -> tuple[list[int], int, int]:
        async with site(tmp_path, max_body=2048) as s:
            post = s.http.post
            codes = [
                (await post("/api/instances", content=b'{"workflow": "Purchase"}', headers=OPS)).status_code,
                (
                    await post("/api/instances", content=b"{", headers={**OPS, b"content-type": b"application/json"})
                ).status_code,
                (await post("/api/instances", json=["Purchase"], headers=OPS)).status_code,
                (
                    await post(
                        "/api/instances",
                        content=b'{"workflow": NaN}',
                        headers={**OPS, b"content-type": b"application/json"},
                    )
                ).status_code,
                (
                    await post(
                        "/api/instances", json={"workflow": "Purchase", "input": {"item": "x" * 5000}}, headers=OPS
                    )
                ).status_code,
                (
                    await post(
                        "/api/instances",
                        json={"workflow": "Purchase", "input": {"item": "x", "amount": "5"}},
                        headers=OPS,
                    )
                ).status_code,
                (await post("/api/instances", json={"workflow": "Nope"}, headers=OPS)).status_code,
            ]

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(10):
                    yield b" " * 1000

            chunked = await post(
                "/api/instances", content=chunks(), headers={**OPS, b"content-type": b"application/json"}
            )
            listed = (await s.http.get("/api/instances", headers=OPS)).json()["total"]
            return codes, chunked.status_code, listed

    codes, chunked, listed = run(scenario())
    assert [415, 400, 400, 400, 413, 422, 404] == codes
    assert (413, 0) == (chunked, listed)


HOSTILE = "<img src=x onerror=alert('x')>\"&amp;é 日本"
"""An id, user name or variable a page must escape (an id holds no '/')."""
SCRIPT = "</script><script>alert(1)</script>"


def test_hostile_strings_come_back_intact_as_json(run: Runner, tmp_path: Path) -> None:
    """Issue 13: an id, a variable and a user name full of markup are stored and returned as they were."""

    async def scenario() -> tuple[dict[str, Any], list[str], int, int]:
        async with site(tmp_path) as s:
            await s.started("Purchase", HOSTILE, item=HOSTILE + SCRIPT, amount=1)
            quoted = "/api/instances/" + quote(HOSTILE, safe="")
            shown = (await s.http.get(quoted, headers=as_user(HOSTILE))).json()
            tasks = (await s.http.get("/api/tasks", headers=as_user("boss"))).json()["tasks"]
            long_id = await s.http.get("/api/tasks/" + "x" * 600, headers=BOSS)
            bad_group = await s.http.get("/api/me", headers=as_user("boss", "a\x7fb"))
            return shown, [t["instance_id"] for t in tasks], long_id.status_code, bad_group.status_code

    shown, task_instances, long_id, bad_group = run(scenario())
    assert (HOSTILE, HOSTILE + SCRIPT) == (shown["instance"]["id"], shown["variables"]["item"])
    assert [HOSTILE] == task_instances
    assert (404, 401) == (long_id, bad_group)


def test_the_openapi_description_lists_every_endpoint(run: Runner, tmp_path: Path) -> None:
    """Issue 13: /api/openapi.json needs no identity and describes each endpoint of the table, with its errors."""

    async def scenario() -> dict[str, Any]:
        async with site(tmp_path) as s:
            response = await s.http.get("/api/openapi.json")
            assert 200 == response.status_code
            doc: dict[str, Any] = response.json()
            return doc

    doc = run(scenario())
    described = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert {(e.method, e.openapi_path) for e in ENDPOINTS} == described
    assert "401" in doc["paths"]["/api/tasks"]["get"]["responses"]
    assert "X-Forwarded-User" == doc["components"]["securitySchemes"]["proxyUser"]["name"]
    assert "open" in doc["components"]["schemas"]["Task"]["properties"]["status"]["enum"]
    assert TaskStatus.OPEN.value == "open"
