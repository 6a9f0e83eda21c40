"""
The workflow, worker and API caller of the API-calls crash test: ``python -m tests.crash.api_worker DB MODE ...``.

``ApiFlow``: reserve (undone by release), a clerk's approval (a human task whose
form carries the token of the call that sent it), charge (undone by refund), a
payment (a ``@wait_for`` message, also with a token), then ship, which fails
for good when the approval said no (and charge and reserve are undone).

Modes:

- ``seed N``: start N instances and exit once each waits on its task.
- ``work run``: recover, run until nothing runs and exit; killed at random moments.
- ``work``: the last worker: recover, then act as the last clerk and payer too
  (complete every open task, pay every instance waiting for its payment) until
  every instance ended, then print ``ALL DONE``.
- ``api ROUND SEED``: open an engine on the file (no recovery), then issue at once a
  random mix of ``complete_task``, ``signal`` and ``cancel`` calls on a few
  instances (several on one instance, two completions of one task), then wait
  until nothing runs or stop at once (leaving instances running for the next
  worker) and exit; killed at random moments too.

Every call is written to ``DB.calls`` before it is made (``call TOKEN OP
INSTANCE TASK ARG``) and after it returns (``ok TOKEN RESULT``) or raises
(``err TOKEN ERROR``), one ``O_APPEND`` write per line, so that a SIGKILL leaves
whole lines: a call with no outcome was interrupted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
from collections.abc import Awaitable

import attrs
import structlog

from statemachine_orch import (
    Ctx,
    Engine,
    InstanceFinished,
    InstanceStatus,
    NonRetryableError,
    SqliteStore,
    TaskAlreadyCompleted,
    Workflow,
    after,
    human_task,
    step,
    wait_for,
)
from tests.crash.crash_flow import effect

EXPECTED_ERRORS: dict[str, tuple[type[Exception], ...]] = {
    "complete": (TaskAlreadyCompleted,),
    "signal": (InstanceFinished,),
    "cancel": (InstanceFinished,),
}
"""What a call may raise when another call got there first (a completion, a cancel, the end)."""


@attrs.frozen
class Approval:
    """The clerk's form: the token of the call that sent it, and whether the order ships."""

    token: str
    approve: bool


@attrs.frozen
class Payment:
    """The payment message, with the token of the call that sent it."""

    token: str


class ApiFlow(Workflow, name="ApiFlow", version="1"):
    """Reserve, a clerk's approval, charge, wait for the payment, ship; a refusal undoes charge and reserve."""

    n: int
    approval: str = ""
    approved: bool = False
    payment: str = ""

    @step(initial=True)
    async def reserve(self, ctx: Ctx) -> None:
        """Hold the stock."""
        await asyncio.sleep(0.002)
        effect("reserve", ctx)

    @reserve.compensation
    async def release(self, ctx: Ctx) -> None:
        """Give the stock back."""
        await asyncio.sleep(0.004)
        effect("release", ctx)

    @after(reserve)
    @human_task(assignee="clerk", form=Approval)
    def approve(self, ctx: Ctx, form: Approval) -> None:
        """Record which form reached the step."""
        self.approval = form.token
        self.approved = form.approve

    @after(approve)
    @step
    async def charge(self, ctx: Ctx) -> None:
        """Take the money."""
        await asyncio.sleep(0.002)
        effect("charge", ctx)

    @charge.compensation
    async def refund(self, ctx: Ctx) -> None:
        """Give the money back."""
        await asyncio.sleep(0.004)
        effect("refund", ctx)

    @after(charge)
    @wait_for(Payment)
    def paid(self, ctx: Ctx, msg: Payment) -> None:
        """Record which message reached the step."""
        self.payment = msg.token

    @after(paid)
    @step(final=True)
    async def ship(self, ctx: Ctx) -> None:
        """Ship an approved order; a refused one fails for good (and is compensated)."""
        if not self.approved:
            msg = "refused by the clerk"
            raise NonRetryableError(msg)
        await asyncio.sleep(0.002)
        effect("ship", ctx)


def calls_log(db: str) -> str:
    """Where the calls made on the store *db* are written."""
    return f"{db}.calls"


class Calls:
    """Makes API calls and writes each one, and its outcome, to the calls log."""

    def __init__(self, db: str, prefix: str) -> None:
        self.path = calls_log(db)
        self.prefix = prefix
        self.made = 0

    def _write(self, line: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{line}\n".encode())
        finally:
            os.close(fd)

    def token(self) -> str:
        """A new token, unique in the test."""
        self.made += 1
        return f"{self.prefix}.{self.made}"

    async def call(self, token: str, op: str, instance_id: str, task: str, arg: str, run: Awaitable[object]) -> None:
        """Note the call, make it, note its outcome; an error a racing call explains is an outcome too."""
        self._write(f"call {token} {op} {instance_id} {task} {arg}")
        try:
            result = await run
        except EXPECTED_ERRORS[op] as exc:
            self._write(f"err {token} {type(exc).__name__}")
            return
        except BaseException as exc:
            self._write(f"err {token} UNEXPECTED:{type(exc).__name__}:{str(exc).replace(chr(10), ' ')}")
            raise
        self._write(f"ok {token} {result.value if isinstance(result, InstanceStatus) else '-'}")

    def complete(self, engine: Engine, task_id: str, instance_id: str, *, approve: bool) -> Awaitable[None]:
        """``complete_task`` as the clerk, with a form carrying a new token."""
        token = self.token()
        form = Approval(token, approve)
        run = engine.complete_task(task_id, user="clerk", form=form)
        return self.call(token, "complete", instance_id, task_id, str(approve), run)

    def signal(self, engine: Engine, instance_id: str) -> Awaitable[None]:
        """``signal`` a payment carrying a new token."""
        token = self.token()
        return self.call(token, "signal", instance_id, "-", "-", engine.signal(instance_id, Payment(token)))

    def cancel(self, engine: Engine, instance_id: str, *, compensate: bool) -> Awaitable[None]:
        """``cancel`` with the new token as the reason."""
        token = self.token()
        run = engine.cancel(instance_id, reason=token, compensate=compensate)
        return self.call(token, "cancel", instance_id, "-", str(compensate), run)


async def seed(db: str, count: int) -> None:
    """Start *count* orders and wait until each waits on its task."""
    store = SqliteStore(db)
    engine = Engine(store, workflows=[ApiFlow])
    handles = [await engine.start(ApiFlow(n=n)) for n in range(count)]
    for handle in handles:
        await handle.wait_idle()
    await engine.aclose()
    store.close()


async def work(db: str, *, final: bool) -> None:
    """Recover and run until nothing runs; *final*: also complete and pay whatever waits, until everything ended."""
    store = SqliteStore(db)
    engine = Engine(store, workflows=[ApiFlow], concurrency=32)
    report = await engine.recover()
    print(f"recovered {report.resumed}", flush=True)
    await engine.wait_idle()
    if final:
        # Recovery delivered what was sent to instances waiting for it: none waits for a payment it was sent.
        at_task = {t.instance_id for t in engine.tasks()}
        waiting = [i.id for i in engine.instances(InstanceStatus.WAITING) if i.id not in at_task]
        undelivered = [i for i in waiting if engine.store.signals(i)]
        assert not undelivered, f"waiting beside their messages: {undelivered}"
    calls = Calls(db, "final")
    for _ in range(20 if final else 0):
        open_tasks = {t.instance_id: t for t in engine.tasks()}
        waiting = [i.id for i in engine.instances(InstanceStatus.WAITING)]
        if not waiting:
            break
        moves: list[Awaitable[None]] = []
        for instance_id in waiting:
            task = open_tasks.get(instance_id)
            if task is None:
                moves.append(calls.signal(engine, instance_id))
            else:
                n: int = engine.workflow(instance_id).n
                moves.append(calls.complete(engine, task.id, instance_id, approve=n % 3 != 0))
        await asyncio.gather(*moves)
        await engine.wait_idle()
    if final:
        left = [f"{i.id} {i.status.value}" for i in engine.instances() if not i.status.is_terminal]
        assert not left, f"not ended: {left}"
    await engine.aclose()
    store.close()
    if final:
        print("ALL DONE", flush=True)


async def api(db: str, round_: int, seed_: int) -> None:
    """Issue a random mix of calls at once on a few instances that have not ended; wait until nothing runs, or not."""
    rng = random.Random(seed_)
    store = SqliteStore(db)
    engine = Engine(store, workflows=[ApiFlow], concurrency=8)
    print("ready", flush=True)
    calls = Calls(db, f"r{round_}")
    alive = sorted(i.id for i in engine.instances() if not i.status.is_terminal)
    chosen = set(rng.sample(alive, min(len(alive), 4)))
    tasks = [t for t in engine.tasks() if t.instance_id in chosen]
    moves: list[Awaitable[None]] = []
    for task in tasks:
        # Sometimes two clerks at once: one completion wins, the other finds it done.
        clerks = rng.choice((1, 1, 2))
        moves += [calls.complete(engine, task.id, task.instance_id, approve=rng.random() < 0.7) for _ in range(clerks)]
    for instance_id in sorted(chosen):
        if rng.random() < 0.6:
            moves.append(calls.signal(engine, instance_id))
        if rng.random() < 0.3:
            moves.append(calls.cancel(engine, instance_id, compensate=rng.random() < 0.8))
    rng.shuffle(moves)
    await asyncio.gather(*moves)
    if rng.random() < 0.5:
        # Else stop at once: the instances the calls moved on are left running, for the next worker.
        await engine.wait_idle()
    await engine.aclose()
    store.close()


def main() -> None:
    """Entry point."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    db, mode = sys.argv[1], sys.argv[2]
    if mode == "seed":
        asyncio.run(seed(db, int(sys.argv[3])))
    elif mode == "api":
        asyncio.run(api(db, int(sys.argv[3]), int(sys.argv[4])))
    else:
        asyncio.run(work(db, final=len(sys.argv) == 3))


if __name__ == "__main__":
    main()
