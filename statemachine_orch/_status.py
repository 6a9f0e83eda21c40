"""The lifecycle of an instance."""

from __future__ import annotations

import enum


class InstanceStatus(enum.Enum):
    """
    Where an instance is in its lifecycle.

    ``RUNNING`` and ``WAITING`` are live; ``COMPENSATING`` is live and undoing; the
    other four are terminal.

    .. versionadded:: 0.1.0
    """

    RUNNING = "running"
    """A step is executing, or waiting for its next retry."""
    WAITING = "waiting"
    """Parked on something outside: a human task, a timer or a message."""
    COMPENSATING = "compensating"
    """Running the compensations of completed steps, newest first."""
    COMPLETED = "completed"
    """Reached the end of a final step."""
    FAILED = "failed"
    """A step failed for good; every compensation ran."""
    CANCELLED = "cancelled"
    """Cancelled by ``Engine.cancel`` (compensated if asked to)."""
    COMPENSATION_FAILED = "compensation_failed"
    """A compensation failed after its retries: an operator must look at it."""

    @property
    def is_terminal(self) -> bool:
        """Whether the instance can no longer change."""
        return self in _TERMINAL


# A tuple, not a set: membership then compares identities in C, where a set
# would hash the members with Enum's Python-level __hash__.
_TERMINAL = (
    InstanceStatus.COMPLETED,
    InstanceStatus.FAILED,
    InstanceStatus.CANCELLED,
    InstanceStatus.COMPENSATION_FAILED,
)
