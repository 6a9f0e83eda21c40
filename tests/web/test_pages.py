"""
Issue 13: the server-rendered pages through httpx's ASGI transport, beside a real worker (SQLite file).

The inbox lists a user's tasks (overdue first, theirs, their groups'); a task's
page posts its form with a CSRF token; a wrong value is shown beside its field
with nothing changed; claims hold; operators cancel; every string is escaped;
development login is refused unless switched on, and then signs in through a
signed cookie.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from statemachine_orch import Engine, InstanceStatus, MemoryStore, TaskStatus
from statemachine_orch.web import DevelopmentLogin, TrustedHeader, create_app
from tests.web.flows import Decision, Priority, Purchase
from tests.web.helpers import BOSS, BUYER, CLERK, OPS, WAIT, as_user, csrf_of, site

if TYPE_CHECKING:
    from tests.conftest import Runner

GOOD: dict[str, str] = {
    "approved": "true",
    "note": "ok",
    "quantity": "3",
    "weight": "1.5",
    "price": "12.30",
    "priority": "high",
    "deliver_on": "2026-03-01",
    "remind_at": "2026-02-27T09:30",
    "budget": "",
    "tags": '["x"]',
}


def field_error(page: str, name: str) -> str | None:
    """The error shown beside the input *name* of a page's form (``None``: none)."""
    found = re.search(rf'<p class="error" id="f-{name}-error">([^<]*)</p>', page)
    return found.group(1) if found else None


def test_the_inbox_lists_a_users_tasks_with_key_variables(run: Runner, tmp_path: Path) -> None:
    """Issue 13: the boss sees the task under Mine with the order's item and amount; a buyer under My groups'."""

    async def scenario() -> tuple[str, str, str]:
        async with site(tmp_path) as s:
            await s.started("Purchase", "P-1", item="desk", amount=5000)
            boss = (await s.http.get("/tasks", headers=BOSS)).text
            buyer = (await s.http.get("/tasks", headers=BUYER)).text
            clerk = (await s.http.get("/tasks", headers=CLERK)).text
            return boss, buyer, clerk

    boss, buyer, clerk = run(scenario())
    mine = boss.split("<h2>Mine")[1].split("<h2>")[0]
    assert 'href="/tasks/P-1.1"' in mine
    assert '<span class="k">item</span> desk' in mine
    assert '<span class="k">amount</span> 5000' in mine
    assert 'href="/tasks/P-1.1"' in buyer.split("<h2>My groups")[1]
    assert "/tasks/P-1.1" not in clerk


def test_a_task_is_completed_through_its_page_and_the_instance_moves_on(run: Runner, tmp_path: Path) -> None:
    """Issue 13: the form's post (with its CSRF token) completes the task with typed values; the page says so."""

    async def scenario() -> tuple[int, str, InstanceStatus, Any, str]:
        async with site(tmp_path) as s:
            await s.started("Purchase", "P-1", item="desk", amount=5)
            page = await s.http.get("/tasks/P-1.1", headers=BOSS)
            posted = await s.http.post(
                "/tasks/P-1.1/complete", data={**GOOD, "csrf_token": csrf_of(page)}, headers=BOSS
            )
            status = await asyncio.wait_for(s.ended("P-1"), WAIT)
            after = await s.http.get(posted.headers["location"], headers=BOSS)
            return posted.status_code, posted.headers["location"], status, s.client.workflow("P-1"), after.text

    code, location, status, wf, after = run(scenario())
    assert (303, "/instances/P-1?completed=P-1.1") == (code, location)
    assert InstanceStatus.COMPLETED == status
    expected = Decision(
        approved=True,
        note="ok",
        quantity=3,
        weight=1.5,
        price=decimal.Decimal("12.30"),
        priority=Priority.HIGH,
        deliver_on=dt.date(2026, 3, 1),
        remind_at=dt.datetime(2026, 2, 27, 9, 30, tzinfo=dt.UTC),
        budget=None,
        tags=["x"],
    )
    assert (expected, True) == (wf.decision, wf.ordered)
    assert "Task approve completed by boss." in after


def test_wrong_values_are_shown_beside_their_fields_and_nothing_changes(run: Runner, tmp_path: Path) -> None:
    """Issue 13: 422, each wrong value's message beside its input with the value kept; the task stays open."""

    async def scenario() -> tuple[int, str, TaskStatus, list[str]]:
        async with site(tmp_path) as s:
            await s.started("Purchase", "P-1", item="desk", amount=5)
            page = await s.http.get("/tasks/P-1.1", headers=BOSS)
            wrong = {
                **GOOD,
                "note": "",
                "quantity": "many",
                "price": "1,5",
                "priority": "urgent",
                "deliver_on": "tomorrow",
                "tags": "[1]",
                "csrf_token": csrf_of(page),
            }
            posted = await s.http.post("/tasks/P-1.1/complete", data=wrong, headers=BOSS)
            task = s.client.store.task("P-1.1")
            assert task is not None
            kinds = [e.kind.value for e in s.client.history("P-1")]
            return posted.status_code, posted.text, task.status, kinds

    code, page, status, kinds = run(scenario())
    assert 422 == code
    assert {
        "note": "required",
        "quantity": "&#39;many&#39; is not a whole number",
        "price": "&#39;1,5&#39; is not a decimal number",
        "priority": "&#39;urgent&#39; is not one of low, high",
        "deliver_on": "&#39;tomorrow&#39; is not a date (YYYY-MM-DD)",
        "tags": "expected str but got 1 (type=int)",
    } == {name: field_error(page, name) for name in ("note", "quantity", "price", "priority", "deliver_on", "tags")}
    assert (None, None) == (field_error(page, "weight"), field_error(page, "approved"))
    assert 'name="quantity" type="text" value="many"' in page
    assert (TaskStatus.OPEN, False) == (status, "task_completed" in kinds)


def test_a_post_without_its_csrf_token_is_refused(run: Runner, tmp_path: Path) -> None:
    """Issue 13: no token, another user's token, or a token without its cookie: 403, and nothing changes."""

    async def scenario() -> tuple[list[int], TaskStatus]:
        async with site(tmp_path) as s:
            await s.started("Purchase", "P-1", item="desk", amount=5)
            buyers_token = csrf_of(await s.http.get("/tasks/P-1.1", headers=BUYER))
            codes = [
                (await s.http.post("/tasks/P-1.1/complete", data=GOOD, headers=BOSS)).status_code,
                (
                    await s.http.post("/tasks/P-1.1/complete", data={**GOOD, "csrf_token": buyers_token}, headers=BOSS)
                ).status_code,
                (await s.http.post("/tasks/P-1.1/claim", data={"csrf_token": "0" * 64}, headers=BOSS)).status_code,
            ]
            s.http.cookies.clear()
            codes.append(
                (
                    await s.http.post("/tasks/P-1.1/complete", data={**GOOD, "csrf_token": buyers_token}, headers=BUYER)
                ).status_code
            )
            task = s.client.store.task("P-1.1")
            assert task is not None
            return codes, task.status

    codes, status = run(scenario())
    assert ([403, 403, 403, 403], TaskStatus.OPEN) == (codes, status)


def test_claims_on_the_pages(run: Runner, tmp_path: Path) -> None:
    """Issue 13: the buyer claims; the boss's page says who holds it and has no form; the buyer unclaims."""

    async def scenario() -> tuple[str, int, str, str | None]:
        async with site(tmp_path) as s:
            await s.started("Purchase", "P-1", item="desk", amount=5)
            token = csrf_of(await s.http.get("/tasks/P-1.1", headers=BUYER))
            claimed = await s.http.post("/tasks/P-1.1/claim", data={"csrf_token": token}, headers=BUYER)
            boss_page = (await s.http.get("/tasks/P-1.1", headers=BOSS)).text
            boss_token = csrf_of(await s.http.get("/tasks/P-1.1", headers=BOSS))
            refused = await s.http.post("/tasks/P-1.1/complete", data={**GOOD, "csrf_token": boss_token}, headers=BOSS)
            await s.http.post("/tasks/P-1.1/unclaim", data={"csrf_token": token}, headers=BUYER)
            task = s.client.store.task("P-1.1")
            assert task is not None
            return boss_page, claimed.status_code, refused.text, task.claimed_by

    boss_page, claimed, refused, after = run(scenario())
    assert 303 == claimed
    assert "Claimed by bea: only they may complete it" in boss_page
    assert 'action="/tasks/P-1.1/complete"' not in boss_page
    assert "is claimed by &#39;bea&#39;" in refused
    assert after is None


def test_the_clerk_is_refused_the_managers_task(run: Runner, tmp_path: Path) -> None:
    """Issue 13: the task page says whom it is for (403); a forged post with the clerk's own token is refused too."""

    async def scenario() -> tuple[int, str, int, TaskStatus]:
        async with site(tmp_path) as s:
            await s.started("Purchase", "P-1", item="desk", amount=5)
            page = await s.http.get("/tasks/P-1.1", headers=CLERK)
            token = csrf_of(await s.http.get("/tasks", headers=CLERK))
            forged = await s.http.post("/tasks/P-1.1/complete", data={**GOOD, "csrf_token": token}, headers=CLERK)
            task = s.client.store.task("P-1.1")
            assert task is not None
            return page.status_code, page.text, forged.status_code, task.status

    code, page, forged, status = run(scenario())
    assert (403, 403, TaskStatus.OPEN) == (code, forged, status)
    assert "task P-1.1: it is for assignee boss; &#39;clerk&#39; may not see nor complete it" in page


def test_instance_pages_list_filter_show_and_cancel(run: Runner, tmp_path: Path) -> None:
    """Issue 13: the list filters by status; an instance shows its variables, diagram and history; operators cancel."""

    async def scenario() -> dict[str, Any]:
        async with site(tmp_path) as s:
            await s.started("Purchase", "P-1", item="desk", amount=5)
            await s.started("Delivery", "D-1")
            get = s.http.get
            seen: dict[str, Any] = {
                "waiting": (await get("/instances?status=waiting", headers=CLERK)).text,
                "completed": (await get("/instances?status=completed", headers=CLERK)).text,
                "purchases": (await get("/instances?workflow=Purchase", headers=CLERK)).text,
                "page": (await get("/instances/P-1", headers=CLERK)).text,
                "ops_page": (await get("/instances/P-1", headers=OPS)).text,
                "missing": (await get("/instances/nope", headers=CLERK)).status_code,
            }
            clerk_token = csrf_of(await get("/tasks", headers=CLERK))
            seen["clerk_cancel"] = (
                await s.http.post("/instances/P-1/cancel", data={"csrf_token": clerk_token}, headers=CLERK)
            ).status_code
            token = csrf_of(await get("/instances/P-1", headers=OPS))
            cancel = {"csrf_token": token, "reason": "changed my mind", "compensate": "true"}
            cancelled = await s.http.post("/instances/P-1/cancel", data=cancel, headers=OPS)
            seen["cancel"] = (cancelled.status_code, cancelled.headers["location"])
            seen["status"] = await asyncio.wait_for(s.ended("P-1"), WAIT)
            seen["after"] = (await get(cancelled.headers["location"], headers=OPS)).text
            return seen

    seen = run(scenario())
    assert 'href="/instances/P-1"' in seen["waiting"]
    assert 'href="/instances/D-1"' in seen["waiting"]
    assert "0 instances" in seen["completed"]
    assert 'href="/instances/D-1"' not in seen["purchases"]
    page = seen["page"]
    assert "<th>item</th><td><code>&#34;desk&#34;</code></td>" in page
    assert 'src="/api/instances/P-1/diagram"' in page
    assert "instance started" in page
    assert 'href="/tasks/P-1.1"' in page
    assert "Cancel instance" not in page
    assert "Cancel instance" in seen["ops_page"]
    assert (404, 403) == (seen["missing"], seen["clerk_cancel"])
    assert (303, "/instances/P-1?done=cancelled") == seen["cancel"]
    assert InstanceStatus.CANCELLED == seen["status"]
    assert "The instance was cancelled." in seen["after"]
    assert "changed my mind" in seen["after"]


HOSTILE = "<img src=x onerror=alert('x')>\"&amp;é"


def test_every_string_is_escaped_on_the_pages(run: Runner, tmp_path: Path) -> None:
    """Issue 13: a hostile id, variable, user and group never reach a page as markup."""

    async def scenario() -> list[str]:
        async with site(tmp_path) as s:
            await s.started("Purchase", HOSTILE, item=HOSTILE + "</script><script>alert(1)</script>", amount=1)
            who = as_user(HOSTILE, HOSTILE.replace(",", ""), "ops")
            task_id = f"{HOSTILE}.1"
            from urllib.parse import quote

            return [
                (await s.http.get(path, headers=who)).text
                for path in (
                    "/tasks",
                    "/instances",
                    "/instances/" + quote(HOSTILE, safe=""),
                    "/tasks/" + quote(task_id, safe=""),
                    "/instances?workflow=" + quote(HOSTILE, safe=""),
                    "/nope/" + quote(HOSTILE, safe=""),
                )
            ] + [(await s.http.get("/tasks/" + quote(task_id, safe=""), headers=BOSS)).text]

    pages = run(scenario())
    for page in pages:
        assert "<img src=x" not in page
        assert "<script>alert" not in page
    assert "&lt;img src=x onerror=alert(&#39;x&#39;)&gt;&#34;&amp;amp;é" in pages[0]
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in pages[2]


def test_every_response_carries_the_security_headers(run: Runner, tmp_path: Path) -> None:
    """Issue 13: a strict CSP (no scripts at all), no framing, no sniffing; pages are not cached; big bodies 413."""

    async def scenario() -> tuple[list[dict[str, str]], int]:
        async with site(tmp_path, max_body=1024) as s:
            responses = [
                await s.http.get("/tasks", headers=BOSS),
                await s.http.get("/api/tasks", headers=BOSS),
                await s.http.get("/static/orch.css"),
                await s.http.get("/nope"),
            ]
            token = csrf_of(responses[0])
            big = await s.http.post(
                "/tasks/P-1.1/complete", data={"csrf_token": token, "note": "x" * 5000}, headers=BOSS
            )
            return [dict(r.headers) for r in responses], big.status_code

    headers, big = run(scenario())
    for seen in headers:
        assert "script-src" not in seen["content-security-policy"]
        assert seen["content-security-policy"].startswith("default-src 'none'")
        assert ("DENY", "nosniff") == (seen["x-frame-options"], seen["x-content-type-options"])
    assert "no-store" == headers[0]["cache-control"]
    assert 413 == big


def test_without_an_identity_pages_say_so(run: Runner, tmp_path: Path) -> None:
    """Issue 13: behind the proxy, no identity is a 401 page; the login page does not exist outside development."""

    async def scenario() -> tuple[int, str, int]:
        async with site(tmp_path) as s:
            page = await s.http.get("/tasks")
            login = await s.http.get("/login")
            return page.status_code, page.text, login.status_code

    code, page, login = run(scenario())
    assert (401, 404) == (code, login)
    assert "Not signed in" in page


def test_development_login_is_refused_unless_switched_on() -> None:
    """Issue 13: create_app refuses a DevelopmentLogin without development=True; a short secret is refused too."""
    engine = Engine(MemoryStore(), concurrency=0)
    with pytest.raises(ValueError, match="refused unless development mode is switched on"):
        create_app(engine, authenticator=DevelopmentLogin(secrets.token_bytes(32)))
    with pytest.raises(ValueError, match="at least 16 bytes"):
        DevelopmentLogin(b"short")
    assert not TrustedHeader().development


def test_development_login_signs_in_through_a_signed_cookie(run: Runner, tmp_path: Path) -> None:
    """Issue 13: the inbox sends to /login; a posted login sets a signed cookie; an edited cookie is no identity."""

    async def scenario() -> dict[str, Any]:
        login = DevelopmentLogin(secrets.token_bytes(32))
        async with site(tmp_path, authenticator=login, development=True) as s:
            await s.client.start(Purchase(item="desk", amount=5), instance_id="P-1")  # the API would need a login
            await s.client.wait_instance("P-1", terminal=False)
            seen: dict[str, Any] = {}
            first = await s.http.get("/tasks")
            seen["redirect"] = (first.status_code, first.headers["location"])
            form = await s.http.get(first.headers["location"])
            seen["banner"] = "Development login" in form.text
            seen["no_token"] = (await s.http.post("/login", data={"user": "boss"})).status_code
            signed = await s.http.post(
                "/login", data={"user": "boss", "groups": "buyers, ops", "next": "/tasks", "csrf_token": csrf_of(form)}
            )
            seen["signed"] = (signed.status_code, signed.headers["location"])
            inbox = await s.http.get("/tasks")
            seen["inbox"] = ('href="/tasks/P-1.1"' in inbox.text, "Development login" in inbox.text)
            seen["me"] = (await s.http.get("/api/me")).json()
            cookie = s.http.cookies["orch_dev_login"]
            payload, _, signature = cookie.rpartition(".")
            s.http.cookies.set("orch_dev_login", payload + "x." + signature, domain="orch.test")
            seen["forged"] = (await s.http.get("/api/me")).status_code
            bad = await s.http.post(
                "/login", data={"user": "bad\nname", "csrf_token": csrf_of(form), "next": "https://evil.example/"}
            )
            seen["bad"] = bad.status_code
            open_redirect = await s.http.post(
                "/login", data={"user": "boss", "csrf_token": csrf_of(form), "next": "//evil.example/"}
            )
            seen["open_redirect"] = open_redirect.headers["location"]
            return seen

    seen = run(scenario())
    assert (303, "/login?next=%2Ftasks") == seen["redirect"]
    assert seen["banner"]
    assert (403, (303, "/tasks")) == (seen["no_token"], seen["signed"])
    assert (True, True) == seen["inbox"]
    assert {"user": "boss", "groups": ["buyers", "ops"], "operator": True} == seen["me"]
    assert (401, 422, "/tasks") == (seen["forged"], seen["bad"], seen["open_redirect"])
