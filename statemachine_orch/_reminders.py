"""
When a reminded wait's side steps are due, and when it must wake next.

A waiting step with reminder edges keeps ``(since, runs)``: when the wait began and
how many times each reminder's side step ran. Reminder *i* is next due at
``since + delay * (runs[i] + 1)`` (once, or every *delay* with ``repeat=True``);
an escalation edge's ``timeout`` counts from ``since`` too. The instance's timer
is the earliest of those. Pure functions: the driver runs the side steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._instance import Waited
    from ._spec import EdgeSpec


def started(now: float, reminders: Sequence[EdgeSpec]) -> Waited | None:
    """A wait beginning at *now*: its state when it has reminders (else ``None``)."""
    return (now, (0,) * len(reminders)) if reminders else None


def due_at(waited: Waited, index: int, edge: EdgeSpec) -> float | None:
    """When reminder *index* is next due (``None``: it ran its once)."""
    since, runs = waited
    delay = edge.reminder
    assert delay is not None  # noqa: S101 - only reminder edges
    if runs[index] and not edge.repeat:
        return None
    return since + delay * (runs[index] + 1)


def runs_after(waited: Waited, index: int, edge: EdgeSpec, now: float) -> int:
    """
    How many runs reminder *index* counts once it ran at *now*.

    One run however late it is: a wait resumed after a long stop sends one
    reminder, not every one it missed; the next is due a whole interval later.
    """
    since, runs = waited
    delay = edge.reminder
    assert delay is not None  # noqa: S101 - only reminder edges
    if not edge.repeat:
        return 1
    return max(runs[index] + 1, int((now - since) // delay))


def next_wake(waited: Waited | None, reminders: Sequence[EdgeSpec], timeout: EdgeSpec | None) -> float | None:
    """The wait's next timer: its earliest reminder due, or its escalation (``None``: nothing)."""
    dues: list[float] = []
    if waited is not None:
        dues += [d for i, e in enumerate(reminders) if (d := due_at(waited, i, e)) is not None]
        if timeout is not None and timeout.timeout is not None:
            dues.append(waited[0] + timeout.timeout)
    return min(dues, default=None)


def escalation_due(waited: Waited | None, timeout: EdgeSpec, now: float) -> bool:
    """Whether the wait has lasted its escalation's timeout (without reminders, being woken says so)."""
    if waited is None or timeout.timeout is None:
        return True
    return now >= waited[0] + timeout.timeout
