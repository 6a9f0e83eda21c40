"""
WorkflowSpec → one shared ``transitions`` machine per class.

Instances are never added to the machine (``add_model`` costs ~38 µs and ~10 KB
each, and merges instances that compare equal); events are fired as
``machine.events[name].trigger(instance, instance[, exc])`` and the state lives
in the instance's ``_orch_state`` attribute. Conditions receive the trigger's
arguments, so a guard is called with the workflow instance itself.

Events:
    next                step → step (guards in declaration order, default last),
                        final step → @completed
    error               step → handler, when the exception matches on_error
    timeout             waiting step → escalation step, when the wait lasted too long
    fail                step → @compensating
    cancel              step → @cancelling
    abandon             step → @cancelled  (cancel without compensation)
    compensated         @compensating → @failed, @cancelling → @cancelled
    compensation_error  @compensating | @cancelling → @compensation_failed
    retry_compensation  @compensation_failed → @compensating
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transitions import Machine

from ._errors import GuardError
from ._spec import (
    CANCELLED,
    CANCELLING,
    COMPENSATING,
    COMPENSATION_FAILED,
    COMPLETED,
    CREATED,
    FAILED,
    LIFECYCLE_STATES,
    EdgeSpec,
    WorkflowSpec,
)

STATE_ATTRIBUTE = "_orch_state"


def build_machine(spec: WorkflowSpec) -> Machine:
    """Compile *spec* into its shared machine (no models)."""
    steps = [s.name for s in spec.steps]
    transitions: list[dict[str, Any]] = []
    for s in spec.steps:
        out = spec.outgoing(s.name)
        completion = [e for e in out if e.is_completion]
        # Guarded edges first, in declaration order; the default only when none holds.
        ordered = [e for e in completion if not e.is_default] + [e for e in completion if e.is_default]
        transitions.extend(
            {"trigger": "next", "source": s.name, "dest": e.dest, "conditions": [_checked(spec, e)]}
            if e.guard is not None
            else {"trigger": "next", "source": s.name, "dest": e.dest}
            for e in ordered
        )
        if s.final:
            transitions.append({"trigger": "next", "source": s.name, "dest": COMPLETED})
        transitions.extend(
            {"trigger": "error", "source": s.name, "dest": e.dest, "conditions": [_matches(e.on_error)]}
            for e in out
            if e.is_error
        )
        transitions.extend({"trigger": "timeout", "source": s.name, "dest": e.dest} for e in out if e.is_timeout)
    transitions += [
        {"trigger": "fail", "source": steps, "dest": COMPENSATING},
        {"trigger": "cancel", "source": steps, "dest": CANCELLING},
        {"trigger": "abandon", "source": steps, "dest": CANCELLED},
        {"trigger": "compensated", "source": COMPENSATING, "dest": FAILED},
        {"trigger": "compensated", "source": CANCELLING, "dest": CANCELLED},
        {"trigger": "compensation_error", "source": [COMPENSATING, CANCELLING], "dest": COMPENSATION_FAILED},
        {"trigger": "retry_compensation", "source": COMPENSATION_FAILED, "dest": COMPENSATING},
    ]
    return Machine(
        model=None,
        states=[*LIFECYCLE_STATES, *steps],
        transitions=transitions,
        initial=CREATED,
        auto_transitions=False,
        send_event=False,
        model_attribute=STATE_ATTRIBUTE,
        name=spec.name,
    )


def _checked(spec: WorkflowSpec, edge: EdgeSpec) -> Callable[..., bool]:
    guard: Callable[[object], object] | None = edge.guard
    assert guard is not None  # noqa: S101 - only called for guarded edges

    # transitions compares a condition's result with `== True`, so a guard returning
    # 1 or a non-empty list would silently pass; insist on a real bool instead.
    def condition(wf: object, *_: object) -> bool:
        result: object = guard(wf)
        if result is True or result is False:
            return result
        msg = (
            f"{spec.name}: guard {edge.guard_name} of the edge {edge.source} -> {edge.dest} "
            f"returned {result!r} ({type(result).__name__}), not a bool"
        )
        raise GuardError(msg)

    return condition


def _matches(types: tuple[type[BaseException], ...]) -> Callable[..., bool]:
    def condition(_wf: object, exc: BaseException) -> bool:
        return isinstance(exc, types)

    return condition
