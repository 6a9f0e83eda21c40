"""
The inbox's answers kept in the server process (``InboxCache``), and forgotten when a task changes anywhere.

The cross-process tests run a real ``orch worker`` and ``orch serve`` on a fresh
PostgreSQL database beside the app under test (in this process, through httpx's
ASGI transport): what the other processes change shows in the app's next read
once the trigger's ``orch_tasks`` notification reached it. Each read that must
show a change is made after the cache heard one (``wait_past``), never after a
sleep.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from statemachine_orch import Engine, SqliteStore, Store
from statemachine_orch.web import TrustedHeader, create_app
from statemachine_orch.web._context import Web
from statemachine_orch.web._inbox_cache import ForgetOnWrite, InboxCache
from tests.cli.conftest import LIMIT, postgres_url
from tests.web.flows import FLOWS
from tests.web.helpers import OPERATORS, OPS, as_user
from tests.web.processes import Fleet
from tests.web.test_api import DECISION

if TYPE_CHECKING:
    from tests.conftest import Runner

BEA = as_user("bea", "buyers")
BOB = as_user("bob", "buyers")
KEY = ("bea", ("buyers",), None, 50)


# ----------------------------------------------------------------- the cache alone


def test_an_answer_read_before_a_change_is_not_kept() -> None:
    """A change heard between taking the ticket and keeping the answer: served neither now nor later."""
    cache = InboxCache()
    cache.changed(live=True)
    ticket = cache.ticket()
    cache.changed(live=True)  # heard while the read ran
    cache.put(KEY, ticket, b"old", math.inf)
    fresh_ticket = cache.ticket()
    assert (None, 1) == (cache.get(KEY, 0.0), cache.generation - (ticket or 0))
    cache.put(KEY, fresh_ticket, b"new", math.inf)
    kept = cache.get(KEY, 0.0)
    assert kept is not None
    assert (b"new", 1) == (kept.body, cache.hits)


def test_a_change_forgets_every_answer_and_a_lost_connection_keeps_nothing() -> None:
    """changed() forgets; while not listening nothing is kept nor served; forget() keeps listening as it was."""
    cache = InboxCache()
    assert cache.ticket() is None  # not listening yet
    cache.changed(live=True)
    cache.put(KEY, cache.ticket(), b"a", math.inf)
    cache.changed(live=True)
    assert cache.get(KEY, 0.0) is None
    cache.put(KEY, cache.ticket(), b"b", math.inf)
    cache.changed(live=False)
    assert (None, None, 1) == (cache.get(KEY, 0.0), cache.ticket(), cache.losses)
    cache.put(KEY, cache.ticket(), b"c", math.inf)
    assert cache.get(KEY, 0.0) is None
    cache.changed(live=True)
    cache.forget()
    assert cache.live
    cache.put(KEY, cache.ticket(), b"d", math.inf)
    cache.forget()
    assert cache.get(KEY, 0.0) is None


def test_an_answer_expires_when_one_of_its_tasks_falls_due_and_at_its_age() -> None:
    """Served before the earliest due time still to come, not at it; never past max_age; size bounds it."""
    cache = InboxCache(size=2, max_age=3600.0)
    cache.changed(live=True)
    cache.put(KEY, cache.ticket(), b"x", 100.0)
    assert cache.get(KEY, 99.9) is not None
    assert cache.get(KEY, 100.0) is None
    aged = InboxCache(max_age=0.0)
    aged.changed(live=True)
    aged.put(KEY, aged.ticket(), b"x", math.inf)
    assert aged.get(KEY, 0.0) is None
    keys = [("u", (), None, n) for n in range(3)]
    for key in keys:
        cache.put(key, cache.ticket(), b"y", math.inf)
    assert [None, b"y", b"y"] == [k.body if (k := cache.get(key, 0.0)) else None for key in keys]


def test_askers_of_one_question_share_one_read_of_its_generation(run: Runner) -> None:
    """answer(): three askers while one read runs make one read; after a change, a new read; a failed read is not shared."""
    cache = InboxCache()
    cache.changed(live=True)
    reads: list[int] = []
    release = asyncio.Event()
    fail = [False]

    async def read() -> tuple[bytes, float]:
        reads.append(cache.generation)
        await release.wait()
        if fail[0]:
            fail[0] = False
            raise OSError("the store is away")
        return b"page %d" % len(reads), math.inf

    async def scenario() -> list[object]:
        first = [asyncio.create_task(cache.answer(KEY, 0.0, read)) for _ in range(3)]
        await asyncio.sleep(0)  # (each task runs up to its wait: the first in read(), the others on its flight)
        release.set()
        bodies: list[object] = [(await t).body for t in first]
        cache.changed(live=True)
        release.clear()
        fail[0] = True
        failing = asyncio.create_task(cache.answer(KEY, 0.0, read))
        waiting = asyncio.create_task(cache.answer(KEY, 0.0, read))
        await asyncio.sleep(0)
        release.set()
        failed = await asyncio.gather(failing, return_exceptions=True)
        bodies += [type(failed[0]).__name__, (await waiting).body]
        return bodies

    assert [b"page 1", b"page 1", b"page 1", "OSError", b"page 3"] == run(scenario())
    assert [1, 2, 2] == reads  # the waiter of the failed read read again itself


def test_a_writing_request_forgets_the_answers_before_it_answers(run: Runner) -> None:
    """ForgetOnWrite: a POST forgets what was kept by the time its answer starts; a GET does not."""
    cache = InboxCache()
    cache.changed(live=True)
    seen: list[int] = []

    async def handler(_: Request) -> PlainTextResponse:
        seen.append(cache.generation)
        return PlainTextResponse("ok")

    app = ForgetOnWrite(Starlette(routes=[Route("/", handler, methods=["GET", "POST"])]), cache)

    async def scenario() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            cache.put(KEY, cache.ticket(), b"a", math.inf)
            await http.get("/")
            kept_after_get = cache.get(KEY, 0.0) is not None
            await http.post("/")
            return [int(kept_after_get), int(cache.get(KEY, 0.0) is not None), cache.generation]

    assert [1, 0, 2] == run(scenario())
    assert [1, 1] == seen  # the POST's handler ran before the answers were forgotten


def test_a_sqlite_app_keeps_no_answers(tmp_path: Path) -> None:
    """The cache is PostgreSQL's: a SQLite store has none (its reads are answered from the file each time)."""
    store = SqliteStore(tmp_path / "x.db")
    try:
        app = create_app(Engine(store, concurrency=0), authenticator=TrustedHeader(), workflows=FLOWS)
        web = app.state.web
        assert isinstance(web, Web)
        assert web.inbox_cache is None
    finally:
        store.close()


# ----------------------------------------------------------------- across processes


def _cached_app(store: Store) -> tuple[Starlette, InboxCache]:
    """The app on a client engine of *store* (PostgreSQL), and its inbox cache."""
    app = create_app(Engine(store, concurrency=0), authenticator=TrustedHeader(), workflows=FLOWS, operators=OPERATORS)
    web = app.state.web
    assert isinstance(web, Web)
    assert web.inbox_cache is not None
    return app, web.inbox_cache


def test_changes_made_by_other_processes_show_once_their_notification_arrives(
    fleet: Fleet, pg_store_dsn: str, run: Runner
) -> None:
    """Opened by a worker, claimed and completed through another server: the next read after the notification."""
    from statemachine_orch import PostgresStore

    url = postgres_url(pg_store_dsn)
    fleet.worker(url, "tests.web.flows")
    other = fleet.server(url, "tests.web.flows", "--operators", "ops")
    store = PostgresStore(pg_store_dsn)
    try:
        app, cache = _cached_app(store)
        assert cache.live
        found = run(_across(app, other, cache))
    finally:
        store.close()
    # (The worker stops cleanly; a one-process orch serve ends by the SIGTERM uvicorn raises again on leaving.)
    assert 0 == fleet.stop_all()[0]
    assert {
        "opened": ["P-1.1"],
        "claimed, for bea": [],
        "claimed, for bob": [("P-1.1", "bob")],
        "completed, for bob": [],
        "hits": True,
        "not modified": 304,
        "modified": 200,
    } == found


async def _across(app: Starlette, other: str, cache: InboxCache) -> dict[str, Any]:
    found: dict[str, Any] = {}
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://orch.test", timeout=LIMIT) as here,
        httpx.AsyncClient(base_url=other, timeout=LIMIT) as there,
    ):

        async def inbox(who: dict[bytes, bytes], tag: str | None = None) -> httpx.Response:
            response = await here.get("/api/tasks", headers={**who, b"if-none-match": tag.encode()} if tag else who)
            assert response.status_code in (200, 304), response.text
            return response

        async def ids(who: dict[bytes, bytes]) -> list[str]:
            return [t["id"] for t in (await inbox(who)).json()["tasks"]]

        async def after_notification(check: Callable[[], Any], want: object) -> object:
            """Read after each change heard, until *want* shows (a stale answer kept forever: fails at LIMIT)."""
            deadline = time.monotonic() + LIMIT
            while True:
                generation = cache.generation
                got = await check()
                if got == want:
                    return got
                left = deadline - time.monotonic()
                heard = left > 0 and await asyncio.to_thread(cache.wait_past, generation, left)
                assert heard, f"no change heard that shows {want!r}; still {got!r}"

        assert [] == await ids(BEA)
        empty = await inbox(BEA)
        assert 304 == (await inbox(BEA, empty.headers["etag"])).status_code
        order = {"workflow": "Purchase", "id": "P-1", "input": {"item": "desk", "amount": 3}}
        started = await there.post("/api/instances", json=order, headers=OPS)
        assert 201 == started.status_code, started.text
        found["opened"] = await after_notification(lambda: ids(BEA), ["P-1.1"])
        found["hits"] = await _served_again(cache, lambda: ids(BEA))
        seen_by_bea = await inbox(BEA)
        found["not modified"] = (await inbox(BEA, seen_by_bea.headers["etag"])).status_code

        bob = BOB
        claimed = await there.post("/api/tasks/P-1.1/claim", headers=bob)
        assert 200 == claimed.status_code, claimed.text
        found["claimed, for bea"] = await after_notification(lambda: ids(BEA), [])
        found["modified"] = (await inbox(BEA, seen_by_bea.headers["etag"])).status_code

        async def bobs() -> list[tuple[str, str]]:
            return [(t["id"], t["claimed_by"]) for t in (await inbox(BOB)).json()["tasks"]]

        found["claimed, for bob"] = await after_notification(bobs, [("P-1.1", "bob")])
        done = await there.post("/api/tasks/P-1.1/complete", json={"form": DECISION}, headers=bob)
        assert 200 == done.status_code, done.text
        found["completed, for bob"] = await after_notification(bobs, [])
    return found


def test_own_claim_shows_at_once_and_a_lost_listener_is_heard(pg_store_dsn: str, run: Runner) -> None:
    """A claim through the app shows in the next read; a killed listening connection stops the cache until back."""
    import psycopg

    from statemachine_orch import PostgresStore

    store = PostgresStore(pg_store_dsn)
    worker_store = PostgresStore(pg_store_dsn)
    try:
        app, cache = _cached_app(store)
        found = run(_own(app, worker_store, cache))
        cache.put(KEY, cache.ticket(), b"kept", math.inf)
        generation = cache.generation
        with psycopg.connect(pg_store_dsn, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN \"orch_stop_%'"
            ).fetchall()
        assert ended
        assert all(row == (True,) for row in ended)  # the app's listener, and the worker's if still there
        _wait_until(cache, lambda: cache.losses == 1 and cache.live, since=generation)
        assert cache.get(KEY, 0.0) is None  # what was kept before is forgotten
    finally:
        store.close()
        worker_store.close()
    assert {"before": ["P-2.1"], "after bob's claim, for bea": [], "hits": True} == found


async def _served_again(cache: InboxCache, read: Callable[[], Awaitable[object]]) -> bool:
    """Whether the second of two reads with no change heard around them was served from the cache."""
    while True:
        generation = cache.generation
        await read()
        hits = cache.hits
        await read()
        if cache.generation == generation:  # else a change came between them (the worker's): again
            return cache.hits == hits + 1


def _wait_until(cache: InboxCache, check: Callable[[], bool], *, since: int) -> None:
    """Wait, change after change heard, until *check()* holds."""
    generation = since
    while not check():
        assert cache.wait_past(generation, LIMIT), f"no change heard; live {cache.live}, {cache.losses} losses"
        generation = cache.generation


async def _own(app: Starlette, worker_store: Any, cache: InboxCache) -> dict[str, Any]:
    found: dict[str, Any] = {}
    async with Engine(worker_store, workflows=FLOWS, poll=0.02) as worker:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://orch.test", timeout=LIMIT) as here:
            order = {"workflow": "Purchase", "id": "P-2", "input": {"item": "desk", "amount": 3}}
            assert 201 == (await here.post("/api/instances", json=order, headers=OPS)).status_code
            await worker.wait_instance("P-2", terminal=False)

            async def ids() -> list[str]:
                return [t["id"] for t in (await here.get("/api/tasks", headers=BEA)).json()["tasks"]]

            found["before"] = await ids()
            found["hits"] = await _served_again(cache, ids)
            claimed = await here.post("/api/tasks/P-2.1/claim", headers=BOB)
            assert 200 == claimed.status_code, claimed.text
            found["after bob's claim, for bea"] = await ids()  # no waiting: the claim forgot what was kept
    return found
