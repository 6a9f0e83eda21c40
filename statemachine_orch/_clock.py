"""Time, injected: the system clock, and a virtual clock for tests."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Protocol, overload, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """
    **Protocol:** where the engine gets the time from.

    Retries' backoff and task due dates are computed with it. The engine waits
    for the next due timer in real time with a :class:`SystemClock`; with a
    :class:`VirtualClock` it waits until the clock is advanced (or, with
    ``autojump``, jumps to the next timer as soon as it has nothing else to do).

    .. versionadded:: 0.1.0
    """

    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    """
    The real time (``time.time``).

    .. versionadded:: 0.1.0
    """

    __slots__ = ()

    def now(self) -> float:
        """Seconds since the epoch."""
        return time.time()


class VirtualClock:
    """
    A clock that moves only when told to.

    Args:
        start: The initial time (seconds since the epoch).
        autojump: When the engine has nothing to run, jump straight to its next
            timer, so a two-day backoff takes no real time.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_listeners", "_now", "autojump")

    autojump: bool
    """Whether engines jump to their next timer whenever they have nothing to run."""

    def __init__(self, start: float = 1_767_225_600.0, *, autojump: bool = True) -> None:
        self._now = start
        self.autojump = autojump
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        """The virtual time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """
        Move the time forward by *seconds*; engines fire the timers now due.

        Raises:
            ValueError: *seconds* is negative.
        """
        if seconds < 0:
            msg = f"a clock cannot go back: advance({seconds})"
            raise ValueError(msg)
        self.jump_to(self._now + seconds)

    def jump_to(self, when: float) -> None:
        """Set the time to *when* if it is later than now, and wake the engines."""
        self._now = max(self._now, when)
        for listener in self._listeners:
            listener()

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call *listener* whenever the time moves (engines use it to wake up)."""
        self._listeners.append(listener)


@overload
def utc_datetime(seconds: float) -> dt.datetime: ...
@overload
def utc_datetime(seconds: float | None) -> dt.datetime | None: ...
def utc_datetime(seconds: float | None) -> dt.datetime | None:
    """A clock reading (seconds since the epoch) as an aware datetime in UTC; ``None`` stays ``None``."""
    return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.UTC)
