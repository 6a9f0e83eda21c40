"""
A worker whose steps send messages and start instances: ``python -m tests.crash.message_worker DB MODE [N]``.

MODE ``seed`` records N ``MkSender`` instances through a client engine; MODE
``run`` recovers, runs until every instance is terminal, prints ``ALL DONE`` and
exits 0. Each sender's first step starts its inbox with a first message
(``ctx.signal_with_start``) and an independent ``MkEcho`` (``ctx.start``), then
dawdles before its commit (a SIGKILL there re-runs the body); every third
sender's first attempt fails after sending (its effects must be dropped). Its
second step signals the inbox again. Step bodies log ``<step> <idempotency key>
<attempt>`` to the effects file before their commit.
"""

from __future__ import annotations

import asyncio
import random

import attrs

from statemachine_orch import Ctx, Engine, Retry, SqliteStore, Workflow, after, step, wait_for
from tests.crash.crash_flow import effect
from tests.crash.worker_cli import run_to_the_end, worker_main


@attrs.frozen
class MkPing:
    """A message for an inbox."""

    n: int


class MkInbox(Workflow, name="MkInbox", version="1"):
    """Takes two messages, keeps their numbers."""

    got: list[int] = attrs.field(factory=list[int])

    @step(initial=True)
    def begin(self, ctx: Ctx) -> None: ...

    @after(begin)
    @wait_for(MkPing)
    def first(self, ctx: Ctx, msg: MkPing) -> None:
        self.got.append(msg.n)

    @after(first)
    @wait_for(MkPing)
    def second(self, ctx: Ctx, msg: MkPing) -> None:
        self.got.append(msg.n)

    @after(second)
    @step(final=True)
    def end(self, ctx: Ctx) -> None: ...


class MkEcho(Workflow, name="MkEcho", version="1"):
    """Started by a sender, on its own."""

    n: int

    @step(initial=True, final=True)
    def echo(self, ctx: Ctx) -> None: ...


class MkSender(Workflow, name="MkSender", version="1"):
    """Starts its inbox with a first message and an echo, then sends the inbox a second message."""

    n: int

    @step(initial=True, retry=Retry(attempts=3, initial=0.01))
    async def send(self, ctx: Ctx) -> None:
        effect("send", ctx)
        ctx.signal_with_start(MkInbox(), MkPing(self.n), instance_id=f"inbox-{self.n}")
        ctx.start(MkEcho(n=self.n))
        await asyncio.sleep(random.uniform(0.05, 0.3))
        if ctx.attempt == 1 and self.n % 3 == 0:
            msg = "lost after sending"
            raise ConnectionError(msg)

    @after(send)
    @step(final=True)
    async def again(self, ctx: Ctx) -> None:
        effect("again", ctx)
        ctx.signal(f"inbox-{self.n}", MkPing(self.n + 1000))
        await asyncio.sleep(random.uniform(0.05, 0.3))


WORKFLOWS: list[type[Workflow]] = [MkSender, MkInbox, MkEcho]


async def seed(db: str, count: int) -> None:
    """Record *count* senders (a client engine: it only writes them)."""
    with SqliteStore(db) as store:
        client = Engine(store, workflows=WORKFLOWS, concurrency=0)
        for n in range(count):
            await client.start(MkSender(n=n), instance_id=f"sender-{n}")
        await client.aclose()


async def run(db: str) -> None:
    """Recover and run until every instance is terminal."""
    await run_to_the_end(db, WORKFLOWS, concurrency=16, lease=2.0, poll=0.02)


if __name__ == "__main__":
    worker_main(seed, run)
