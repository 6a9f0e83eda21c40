"""
An engine without workers on the store a URL names: the command line's client.

It only reads and writes commands; workers in other processes (``orch worker``)
drive the instances.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Generator, Iterable
from typing import Any, TypeVar

from statemachine_orch import Engine, Store, Workflow

from .loading import import_all
from .store_url import open_store

_T = TypeVar("_T")

POLL = 0.1
"""How often the command line looks at the store while it follows an instance (seconds)."""


@contextlib.contextmanager
def opened(url: str | None, *, create: bool = False) -> Generator[Store]:
    """The store *url* names, closed on exit."""
    store = open_store(url, create=create)
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def client(url: str | None, modules: Iterable[str] = (), workflows: Iterable[type[Workflow]] = ()) -> Generator[Engine]:
    """A client engine (``concurrency=0``) on the store *url* names, after importing *modules*."""
    import_all(modules)
    with opened(url) as store:
        yield Engine(store, concurrency=0, workflows=workflows, poll=POLL)


def run_async(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run the coroutine *make* returns in a new event loop."""
    return asyncio.run(make())
