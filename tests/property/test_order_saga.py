"""
Issue 2: the saga invariant of the order example, under any mix of injected faults.

Hypothesis draws a plan: which steps and compensations fail, and how (the first k
attempts: transient when k is below the retry budget, for good otherwise), the amount
(above or below the approval threshold), whether the customer is blocked, the
manager's answer (approve, reject, or cancel the waiting instance with or without
compensation), and optionally a cancel requested while a given step runs. The order
then runs to its end on a real engine with the example's real in-process services,
completing the approval task as the manager, and the test checks, from the history:

- the instance only ever rests waiting on its approval task, and ends terminal;
- failed, or cancelled with compensation: the compensations that ran are exactly
  those of the completed compensable steps, newest first, each once; the payment
  is refunded and the stock restored;
- compensation_failed: the failed compensation is the last saga entry, the ones
  before it are the newest completions, and the older ones did not run;
- completed: every step on its path completed exactly once, and nothing was undone;
- without a cancel, status and completed steps are exactly what a small model of
  the workflow predicts from the plan.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Literal

import attrs
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from examples.order_process import (
    Approval,
    InventoryService,
    Item,
    OrderProcess,
    PaymentService,
    UserService,
)
from statemachine_orch import (
    Ctx,
    Engine,
    EventKind,
    HistoryEvent,
    InstanceFinished,
    InstanceStatus,
    MemoryStore,
    VirtualClock,
    spec_of,
)

if TYPE_CHECKING:
    from tests.conftest import Runner

K = EventKind
SPEC = spec_of(OrderProcess)
STEPS = tuple(s.name for s in SPEC.steps)
UNDO = {s.name: s.compensation.name for s in SPEC.steps if s.compensation is not None}
"""Compensable step -> its compensation (process_payment -> refund_payment, update_inventory -> restore_stock)."""


def _limited(attempts: int | None) -> int:
    assert attempts is not None, "the order example retries nothing without limit"
    return attempts


ATTEMPTS = {s.name: _limited(s.retry.attempts) for s in SPEC.steps} | {
    s.compensation.name: _limited(s.compensation.retry.attempts) for s in SPEC.steps if s.compensation is not None
}
"""How many attempts each step and compensation gets before it fails for good."""
FOREVER = 1_000
"""A fault count no retry budget reaches: the step or compensation fails for good."""
STOCK = {"BOOK": 50, "LAMP": 50}

Answer = Literal["approve", "reject", "cancel", "cancel without compensation"]


class InjectedFault(Exception):
    """A failure injected through Engine(before_attempt=...)."""


@attrs.frozen
class Plan:
    """One generated run of the order example."""

    faults: dict[str, int]
    """Step or compensation name -> how many of its first attempts fail."""
    amount: float
    blocked: bool
    answer: Answer
    cancel_at: str | None
    """A step whose first attempt requests a cancel of the instance (with compensation)."""


@attrs.frozen
class Outcome:
    """What a run left: the statuses it rested in, its history, and the services' state."""

    rests: list[tuple[InstanceStatus, list[str]]]
    status: InstanceStatus
    history: list[HistoryEvent]
    cancel_compensates: bool | None
    """Whether a cancel that took effect asked for compensation (None: no cancel took effect)."""
    charges: dict[str, tuple[str, float]]
    refunds: list[str]
    stock: dict[str, int]


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    """
    A plan: any subset of steps and compensations failing transiently or for good.

    Drawn so that every outcome is common: each step with retries fails its first
    0..attempts-1 attempts (transient), at most one step fails for good (any later
    one could not be reached anyway), and each compensation may fail for good.
    """
    faults: dict[str, int] = {}
    for name, attempts in ATTEMPTS.items():
        if attempts > 1 and (k := draw(st.integers(min_value=0, max_value=attempts - 1))):
            faults[name] = k
    # Late failures are the interesting ones for the saga: weight them up.
    doomed = draw(st.none() | st.sampled_from(STEPS) | st.sampled_from(["update_inventory", "send_confirmation"]))
    if doomed is not None:
        faults[doomed] = draw(st.sampled_from([ATTEMPTS[doomed], FOREVER]))
    for compensation in UNDO.values():
        if draw(st.integers(min_value=0, max_value=3)) == 0:
            faults[compensation] = draw(st.sampled_from([ATTEMPTS[compensation], FOREVER]))
    amount = draw(st.one_of(st.floats(min_value=1, max_value=1000), st.floats(min_value=1000.01, max_value=100_000)))
    answers: list[Answer] = ["approve", "approve", "approve", "reject", "cancel", "cancel without compensation"]
    cancel_at = draw(st.none() | st.none() | st.sampled_from(STEPS))
    if cancel_at is not None and ATTEMPTS[cancel_at] > 1:
        # The cancel lands when the engine next yields: make the step park on a retry first.
        faults[cancel_at] = max(faults.get(cancel_at, 0), 1)
    return Plan(
        faults=faults,
        amount=amount,
        blocked=draw(st.integers(min_value=0, max_value=9)) == 0,
        answer=draw(st.sampled_from(answers)),
        cancel_at=cancel_at,
    )


async def run_order(plan: Plan) -> Outcome:
    """Run one order to its end under *plan*."""
    users = UserService(blocked={"CUST-BLOCKED"})
    inventory = InventoryService(stock=dict(STOCK))
    payments = PaymentService()
    cancels: list[asyncio.Task[None]] = []
    requested: list[str] = []

    async def cancel_quietly(instance_id: str, *, compensate: bool) -> None:
        # The reason says which cancel took effect (CANCEL_REQUESTED is only noted for that one); one that
        # comes too late (the instance is compensating or finished) changes nothing.
        reason = "with compensation" if compensate else "without compensation"
        with contextlib.suppress(InstanceFinished):
            await engine.cancel(instance_id, reason=reason, compensate=compensate)

    def before_attempt(ctx: Ctx) -> None:
        if ctx.step == plan.cancel_at and not requested:
            requested.append(ctx.step)
            cancels.append(asyncio.get_running_loop().create_task(cancel_quietly(ctx.instance_id, compensate=True)))
        if ctx.attempt <= plan.faults.get(ctx.step, 0):
            msg = f"{ctx.step} attempt {ctx.attempt}"
            raise InjectedFault(msg)

    engine = Engine(
        MemoryStore(),
        services={"user-service": users, "inventory-service": inventory, "payment-service": payments},
        clock=VirtualClock(autojump=True),
        before_attempt=before_attempt,
    )
    customer = "CUST-BLOCKED" if plan.blocked else "CUST-1"
    wf = OrderProcess(
        order_id="ORD-1", customer_id=customer, amount=plan.amount, items=[Item("BOOK", 2), Item("LAMP", 1)]
    )
    rests: list[tuple[InstanceStatus, list[str]]] = []
    async with engine:
        handle = await engine.start(wf)
        while True:
            status = await handle.wait_idle()
            if cancels:
                await asyncio.gather(*cancels)
                status = await handle.wait_idle()
            rests.append((status, [t.step for t in engine.tasks(instance_id=handle.instance_id)]))
            if status.is_terminal or status is not InstanceStatus.WAITING:
                break
            [task] = engine.tasks(instance_id=handle.instance_id)
            if plan.answer in ("approve", "reject"):
                form = Approval(approved=plan.answer == "approve")
                await engine.complete_task(task.id, user="manager", form=form)
            else:
                compensate = plan.answer == "cancel"
                cancels.append(asyncio.create_task(cancel_quietly(handle.instance_id, compensate=compensate)))
        history = handle.history()
        took_effect = [e.detail for e in history if e.kind is K.CANCEL_REQUESTED]
        return Outcome(
            rests=rests,
            status=handle.status,
            history=history,
            cancel_compensates=took_effect[0] == "with compensation" if took_effect else None,
            charges=dict(payments.charges),
            refunds=list(payments.refunds),
            stock=dict(inventory.stock),
        )


def predict(plan: Plan) -> tuple[InstanceStatus, list[str]]:
    """Without a mid-run cancel: the final status and the steps that complete, in order."""

    def survives(name: str) -> bool:
        return plan.faults.get(name, 0) < ATTEMPTS[name]

    path = ["validate_order", "check_inventory"]
    path += ["manual_approval"] if plan.amount > 1000 else []
    path += ["process_payment", "update_inventory", "send_confirmation"]
    done: list[str] = []
    failed = False
    for name in path:
        if name == "manual_approval" and plan.answer.startswith("cancel"):
            return InstanceStatus.CANCELLED, done  # nothing compensable has completed before the approval
        if not survives(name):
            failed = True
            break
        done.append(name)
        if (name == "validate_order" and plan.blocked) or (name == "manual_approval" and plan.answer == "reject"):
            # The declared failure end: reject_order completes, and the instance fails rejected.
            if not survives("reject_order"):
                failed = True
                break
            done.append("reject_order")
            failed = True
            break
    if not failed:
        return InstanceStatus.COMPLETED, done
    for name in reversed([s for s in done if s in UNDO]):
        if not survives(UNDO[name]):
            return InstanceStatus.COMPENSATION_FAILED, done
    return InstanceStatus.FAILED, done


def story(plan: Plan, outcome: Outcome) -> str:
    """The run, readably, for a failing example."""
    lines = [f"plan = {plan!r}", f"status = {outcome.status.value}", *(e.describe() for e in outcome.history)]
    return "\n".join(lines)


def check_saga(plan: Plan, outcome: Outcome) -> None:
    """Every invariant of the module docstring."""
    history = outcome.history
    completed = [e.step for e in history if e.kind is K.STEP_COMPLETED]
    compensable = [name for name in completed if name in UNDO]
    newest_first = list(reversed(compensable))
    saga = [e for e in history if e.kind in {K.COMPENSATION_STARTED, K.COMPENSATION_COMPLETED, K.COMPENSATION_FAILED}]
    undone = [e.step for e in saga if e.kind is K.COMPENSATION_COMPLETED]
    status = outcome.status

    # It rests only on its approval task, and ends terminal.
    for rest_status, open_tasks in outcome.rests[:-1]:
        assert (InstanceStatus.WAITING, ["manual_approval"]) == (rest_status, open_tasks)
    assert status.is_terminal
    assert (status, []) == outcome.rests[-1]

    # Compensations are attempted one at a time, each started run ends before the next starts.
    assert 0 == len(saga) % 2
    for started, ended in zip(saga[::2], saga[1::2], strict=True):
        assert K.COMPENSATION_STARTED == started.kind
        assert (started.step, started.attempt) == (ended.step, ended.attempt)

    if status is InstanceStatus.COMPLETED:
        transitions = [(e.step, e.detail) for e in history if e.kind is K.TRANSITION]
        path = [SPEC.initial] + [dest for _, dest in transitions if dest != "@completed"]
        assert path == completed, "every step on the path completed exactly once, in order"
        assert ("send_confirmation", "@completed") == transitions[-1]
        assert [] == saga
        assert 1 == len(outcome.charges)
        assert [] == outcome.refunds
    elif status is InstanceStatus.COMPENSATION_FAILED:
        assert K.COMPENSATION_FAILED == saga[-1].kind, "the failed compensation is the last saga entry"
        stuck = saga[-1].step
        assert undone == newest_first[: len(undone)], "the newest completions were undone first"
        assert stuck == newest_first[len(undone)], "the next one in line is the one that failed"
        failed_attempts = [e.attempt for e in saga if e.step == stuck and e.kind is K.COMPENSATION_FAILED]
        assert stuck is not None
        assert ATTEMPTS[UNDO[stuck]] == failed_attempts[-1], "it failed after its own retries"
    elif status is InstanceStatus.CANCELLED and outcome.cancel_compensates is False:
        assert [] == saga, "cancel without compensation undoes nothing"
    else:
        assert status in {InstanceStatus.FAILED, InstanceStatus.CANCELLED}
        assert newest_first == undone, "exactly the completed compensable steps, newest first, once each"
        assert {} == outcome.charges, "every charge was refunded"
        assert STOCK == outcome.stock, "every stock update was restored"
        if status is InstanceStatus.FAILED:
            assert outcome.cancel_compensates is None

    if plan.cancel_at is None:
        expected_status, expected_completed = predict(plan)
        if expected_status is InstanceStatus.CANCELLED and plan.answer == "cancel without compensation":
            assert outcome.cancel_compensates is False
        assert (expected_status, expected_completed) == (status, completed)


@settings(max_examples=200, deadline=None)
@given(plan=plans())
def test_saga_invariant_of_the_order_example(run: Runner, plan: Plan) -> None:
    """Issue 2: whatever fails, an order ends terminal with exactly the right compensations, newest first, once each."""
    outcome = run(run_order(plan))
    event(f"ended {outcome.status.value}")
    event(f"cancel took effect: {outcome.cancel_compensates is not None}")
    event(f"compensations completed: {sum(1 for e in outcome.history if e.kind is K.COMPENSATION_COMPLETED)}")
    note(story(plan, outcome))
    check_saga(plan, outcome)
