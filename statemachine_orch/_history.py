"""History entries: every step attempt, transition, task, compensation and status change."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple


class _IdentityHash:
    """Hash by identity."""

    def __hash__(self) -> int:
        """Identity hash."""
        return object.__hash__(self)


# Enum members are singletons compared by identity: hash them the same way, with
# the C slot itself, not Enum's Python-level hash of the name nor the Python def
# above (which type checkers read). The memory store hashes history entries.
_IdentityHash.__hash__ = object.__hash__  # type: ignore[method-assign]


class EventKind(_IdentityHash, enum.Enum):
    """
    What a history entry records.

    .. versionadded:: 0.1.0
    """

    INSTANCE_STARTED = "instance_started"
    STEP_STARTED = "step_started"
    STEP_COMPLETED = "step_completed"
    STEP_FAILED = "step_failed"
    STEP_CANCELLED = "step_cancelled"
    RETRY_SCHEDULED = "retry_scheduled"
    TRANSITION = "transition"
    TASK_CREATED = "task_created"
    TASK_COMPLETED = "task_completed"
    TASK_CANCELLED = "task_cancelled"
    TASK_CLAIMED = "task_claimed"
    """A user claimed a task: only they may complete it now (step: the task's step, detail: the user)."""
    TASK_UNCLAIMED = "task_unclaimed"
    """The claimant gave a task back (step: the task's step, detail: the user)."""
    REMINDED = "reminded"
    """
    A reminder of a wait fell due: its side step runs now, and the wait goes on
    (step: the waiting step, detail: ``<side step> (reminder <n>)``, n counting its runs). (0.1.0)
    """
    TASK_REASSIGNED = "task_reassigned"
    """
    An operator gave an open task to other people (step: the task's step, detail:
    ``<task id>: <before> -> <after> by <who>``). (0.1.0)
    """
    TASK_DELEGATED = "task_delegated"
    """
    One an open task was for handed it to another user (step: the task's step,
    detail: ``<task id>: <before> -> <after> by <who>``). (0.1.0)
    """
    TIMER_SET = "timer_set"
    TIMER_FIRED = "timer_fired"
    MESSAGE_AWAITED = "message_awaited"
    MESSAGE_RECEIVED = "message_received"
    ESCALATED = "escalated"
    MIGRATED = "migrated"
    INSTANCE_FAILED = "instance_failed"
    CANCEL_REQUESTED = "cancel_requested"
    COMPENSATION_STARTED = "compensation_started"
    COMPENSATION_COMPLETED = "compensation_completed"
    COMPENSATION_FAILED = "compensation_failed"
    STATUS_CHANGED = "status_changed"
    BRANCH_SKIPPED = "branch_skipped"
    """A fork's guarded branch whose guard was false (step: the fork, detail: the branch)."""
    BRANCH_DONE = "branch_done"
    """A branch arrived at its join (step: the branch's last step, detail: the join)."""
    JOINED = "joined"
    """Every started branch arrived: the join is entered (step: the fork, detail: the join)."""
    CHILD_STARTED = "child_started"
    """A subflow step started a child instance (step: the step, detail: the child's id)."""
    CHILD_FINISHED = "child_finished"
    """A child instance ended (step: the subflow step, detail: ``<child id> <status>``)."""
    INSTANCE_QUARANTINED = "instance_quarantined"
    """
    The engine stopped the instance (detail: why): its record cannot be loaded, or its
    version has no class. Kept by that engine, not in the store. (0.3.0)
    """
    COMMAND_REJECTED = "command_rejected"
    """
    A command from another process no longer applied when its driver took it (detail:
    the command and why, e.g. ``cancel: instance ... is completed``). (0.4.0)
    """
    SIGNAL_SENT = "signal_sent"
    """A step sent a message with ``ctx.signal`` (step: the step, detail: ``<instance id> <message type>``)."""
    STARTED_INSTANCE = "started_instance"
    """
    A step started an independent instance with ``ctx.start`` or ``ctx.signal_with_start``
    (step: the step, detail: ``<instance id> <workflow>``).
    """


class HistoryEvent(NamedTuple):
    """
    One entry of an instance's history.

    A tuple, so that thousands of parked instances stay small.

    Attributes:
        at: When, in seconds since the epoch, by the engine's clock.
        kind: What happened.
        step: The step it happened to (the source step for a transition).
        attempt: The attempt number, for step and compensation entries (else 0).
        detail: The destination of a transition, the error of a failure, the user
            who completed a task, the new status, the cancellation reason...

    .. versionadded:: 0.1.0
    """

    at: float
    kind: EventKind
    step: str | None = None
    attempt: int = 0
    detail: str | None = None

    @property
    def when(self) -> datetime:
        """:attr:`at` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.at, UTC)

    def describe(self) -> str:
        r"""One readable line, without the timestamp (control characters in it escaped: ``\n``)."""
        kind = self.kind
        if kind is EventKind.TRANSITION:
            return f"transition    {self.step} -> {_one_line(self.detail)}"
        parts = [f"{kind.value:<13}"]
        if self.step is not None:
            parts.append(self.step)
        if self.attempt:
            parts.append(f"(attempt {self.attempt})")
        if self.detail is not None:
            parts.append(f"- {_one_line(self.detail)}")
        return " ".join(parts)

    def __str__(self) -> str:
        """``HH:MM:SS.mmm kind step (attempt n) - detail``."""
        return f"{self.when:%H:%M:%S.%f}"[:-3] + "  " + self.describe()


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")  # noqa: PLR2004


def _one_line(text: str | None) -> str | None:
    """*text* with its control characters escaped, so that it cannot start a line of its own."""
    if text is None or _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(_escape, text)


_tuple_new: Any = getattr(tuple, "__new__")  # noqa: B009 - typed below; tuple.__new__'s stub is generic
new_event: Callable[[type[HistoryEvent], tuple[object, ...]], HistoryEvent] = _tuple_new
"""``new_event(HistoryEvent, (at, kind, step, attempt, detail))``: the tuple without the
NamedTuple's Python-level ``__new__`` (a third of the cost on the engine's hot path)."""
