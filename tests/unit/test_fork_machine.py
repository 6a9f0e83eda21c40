"""
The fork machine's shortcuts reach the same states as ``transitions``' full walk.

``ForkMachine.trigger_event`` takes a step's own events (one leaf to a sibling
leaf), entering a fork and its join from the machine's transition table instead
of walking the whole state tree; every other event goes the full way. Hypothesis fires random event
sequences at two copies of one instance, one through the shortcut and one
through ``HierarchicalMachine.trigger_event``, and compares every result.
"""

from __future__ import annotations

from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from transitions import MachineError

from statemachine_orch import Ctx, Workflow, after, human_task, step
from statemachine_orch._instance import leaves
from statemachine_orch._machine import STATE_ATTRIBUTE, ForkMachine


class FmNested(Workflow):
    """An inclusive fork whose first branch holds a nested fork, a loop, an error route and a wait."""

    n: int = 0

    @step(initial=True, fork=True)
    def split(self, ctx: Ctx) -> None: ...

    @after(split)
    @step(fork=True)
    def inner(self, ctx: Ctx) -> None: ...

    @after(inner)
    @step
    def x1(self, ctx: Ctx) -> None: ...

    @after(inner, when=lambda wf: wf.n > 1)
    @step
    def y1(self, ctx: Ctx) -> None: ...

    @after(x1, y1)
    @step
    def inner_join(self, ctx: Ctx) -> None: ...

    @after(split, when=lambda wf: wf.n > 0)
    @step
    def b1(self, ctx: Ctx) -> None: ...

    @after(b1, when=lambda wf: wf.n > 2)
    @step
    def b2(self, ctx: Ctx) -> None: ...

    @after(b1, on_error=ValueError)
    @human_task(assignee="ann")
    def b_fix(self, ctx: Ctx) -> None: ...

    @after(inner_join, b1, b2, b_fix)
    @step(final=True)
    def done(self, ctx: Ctx) -> None: ...


MACHINE = cast("ForkMachine", FmNested.__orch_machine__)
EVENTS = sorted(MACHINE.events)


def fire(wf: FmNested, event: str, *, fast: bool, error: bool) -> object:
    # As the engine fires them: error events with the exception (a ValueError is
    # routed, a KeyError is not), the others with the workflow only.
    exc = ValueError("boom") if error else KeyError("boom")
    args: tuple[Any, ...] = (wf, exc) if event.startswith("error@") else (wf,)
    MACHINE.fast = fast
    try:
        return MACHINE.trigger_event(wf, event, *args)
    except MachineError:
        return "invalid"
    except ValueError as exc:
        # transitions 0.9.3 cannot resolve some events that do not apply to a
        # nested-fork state list; both ways must fail the same way there.
        return f"ValueError: {exc}"
    finally:
        MACHINE.fast = True


def test_the_forks_own_moves_are_indexed_and_the_rest_goes_the_full_way() -> None:
    moves = MACHINE.sibling_moves
    assert "next@x1" in moves, "a step inside a nested branch moves to its region's @done"
    assert "enter@b1" in moves
    assert "skip@b1" in moves
    assert "error@b1" in moves
    assert MACHINE.fork_entries["next@split"] == (
        "split",
        ["split@fork.inner@branch.@start", "split@fork.b1@branch.@start"],
    )
    assert "next@inner" in MACHINE.fork_entries, "a fork nested in a branch"
    assert MACHINE.joins["join@inner"] == ("split@fork.inner@branch.inner@fork", "split@fork.inner@branch.inner_join")
    assert MACHINE.joins["join@split"] == ("split@fork", "done")
    indexed = set(moves) | set(MACHINE.fork_entries) | set(MACHINE.joins)
    assert not {"fail", "cancel", "abandon", "compensated"} & indexed, "several sources: the full way"


def enabled(state: object) -> list[str]:
    """The events with a transition from the state or one of its ancestors (most of them are taken)."""
    active: set[str] = set()
    for leaf in leaves(state):
        parts = leaf.split(".")
        active.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    ending = {"fail", "cancel", "abandon"}  # they end the story: drawn through "anything" only
    return [e for e in EVENTS if e not in ending and any(src in active for src in MACHINE.events[e].transitions)]


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_the_shortcut_and_the_full_walk_agree(data: st.DataObject) -> None:
    fast, full = FmNested(), FmNested()
    setattr(fast, STATE_ATTRIBUTE, "split")
    setattr(full, STATE_ATTRIBUTE, "split")
    for _ in range(data.draw(st.integers(1, 25))):
        # Mostly events that apply here, sometimes any event (which may be invalid).
        candidates = enabled(getattr(full, STATE_ATTRIBUTE)) or EVENTS
        anything = data.draw(st.integers(0, 7)) == 0
        event = data.draw(st.sampled_from(EVENTS if anything else candidates))
        fast.n = full.n = data.draw(st.integers(0, 3))
        error = data.draw(st.booleans())
        got = fire(fast, event, fast=True, error=error)
        want = fire(full, event, fast=False, error=error)
        assert (got, getattr(fast, STATE_ATTRIBUTE)) == (want, getattr(full, STATE_ATTRIBUTE)), event
