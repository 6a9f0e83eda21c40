"""
Issue 13: the task list in a real browser: Debian's Chromium driven by playwright, against real processes.

``orch worker examples.order_process`` and ``orch serve examples.order_process
--dev-login`` run on one SQLite file; an order of 5,000 waits for the manager's
approval. In the browser the manager signs in (development mode), opens the
inbox, opens the approval, completes it, and sees the instance move on to its
end; a clerk signs in and is refused the same task. Screenshots of the inbox,
the task and the instance are taken (into ``$ORCH_WEB_SCREENSHOTS`` too, when
set: ``docs/`` keeps the ones the README shows).
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest

from examples.order_process import Item, OrderProcess
from statemachine_orch import Engine, InstanceStatus, SqliteStore
from tests.cli.conftest import LIMIT
from tests.web.processes import Fleet

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and os.environ.get("CI") != "true",
    reason="Debian's chromium is not installed (make sysdeps installs it)",
)


async def _orders(path: Path) -> None:
    """Start two orders of 5,000 through a client engine (the workers run them) and wait until they wait."""
    with SqliteStore(path) as store:
        client = Engine(store, concurrency=0, workflows=[OrderProcess], poll=0.02)
        for order in ("A-1", "B-2"):
            wf = OrderProcess(order_id=order, customer_id="C-7", amount=5000, items=[Item("LAMP", 1)])
            await client.start(wf, instance_id=order)
        for order in ("A-1", "B-2"):
            status = await asyncio.wait_for(client.wait_instance(order, terminal=False), LIMIT)
            assert InstanceStatus.WAITING == status


def test_the_manager_approves_in_the_browser_and_the_clerk_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    """Issue 13: sign in, inbox, approval form, the instance completes; a clerk gets 'Not your task'."""
    from playwright.sync_api import Page, expect, sync_playwright

    db = tmp_path / "orders.db"
    store = f"sqlite:///{db}"
    SqliteStore(db).close()
    fleet.worker(store, "examples.order_process")
    base = fleet.server(store, "examples.order_process", "--dev-login")
    asyncio.run(_orders(db))
    shots = tmp_path / "shots"
    shots.mkdir()

    def sign_in(page: Page, user: str, groups: str = "") -> None:
        page.goto(f"{base}/tasks")
        expect(page).to_have_url(f"{base}/login?next=%2Ftasks")
        page.fill("#user", user)
        page.fill("#groups", groups)
        page.click("button[type=submit]")
        expect(page.locator(".who .user")).to_have_text(user)

    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium's sandbox refuses to run as root
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            manager = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            sign_in(manager, "manager")
            expect(manager.locator(".devbanner")).to_be_visible()
            mine = manager.locator("section", has=manager.locator("h2", has_text="Mine"))
            expect(mine.locator("tbody tr")).to_have_count(2)
            row = mine.locator("tr", has_text="A-1")
            expect(row).to_contain_text("amount 5000")
            manager.screenshot(path=str(shots / "web-inbox.png"), full_page=True)

            row.locator("a", has_text="manual_approval").click()
            expect(manager.locator("h1")).to_contain_text("manual approval")
            manager.check("#f-approved")
            manager.fill("#f-comment", "fine by me")
            manager.screenshot(path=str(shots / "web-task.png"), full_page=True)
            manager.click("form.form button[type=submit]")

            expect(manager).to_have_url(f"{base}/instances/A-1?completed=A-1.2")
            expect(manager.locator(".notice")).to_have_text("Task manual_approval completed by manager.")
            deadline = time.monotonic() + LIMIT
            status = manager.locator(".progress .status")
            while status.inner_text() != "completed":  # the worker runs payment, stock and confirmation
                assert time.monotonic() < deadline, manager.content()
                manager.wait_for_timeout(100)
                manager.reload()
            timeline = manager.locator("ol.timeline")
            expect(timeline).to_contain_text("task completed manual_approval manager")
            expect(timeline).to_contain_text("step completed send_confirmation")
            expect(manager.locator("img.diagram")).to_have_js_property("complete", value=True)
            manager.screenshot(path=str(shots / "web-instance.png"), full_page=True)

            clerk = browser.new_context().new_page()
            sign_in(clerk, "clerk", "clerks")
            expect(clerk.locator("section", has=clerk.locator("h2", has_text="Mine"))).to_contain_text(
                "Nothing is assigned to you"
            )
            response = clerk.goto(f"{base}/tasks/B-2.2")
            assert response is not None
            assert 403 == response.status
            expect(clerk.locator("h1")).to_have_text("Not your task")
            expect(clerk.locator("main")).to_contain_text(
                "it is for assignee manager; 'clerk' may not see nor complete it"
            )
            assert 0 == clerk.locator("form.form").count()
        finally:
            browser.close()

    wanted = os.environ.get("ORCH_WEB_SCREENSHOTS")
    if wanted:
        for shot in shots.iterdir():
            shutil.copy(shot, Path(wanted) / shot.name)
    for shot in shots.iterdir():
        assert shot.read_bytes().startswith(b"\x89PNG"), shot
