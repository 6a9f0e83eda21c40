"""Retry policies for steps and compensations."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any, cast

import attrs

from ._errors import NonRetryableError


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _seconds(value: timedelta | float) -> float:
    # Anything else is kept as given: the compiler reports it, naming the step (see problems()).
    if isinstance(value, timedelta):
        return value.total_seconds()
    if _is_real(value):
        return float(value)
    return value


def _to_exc_tuple(
    value: type[BaseException] | tuple[type[BaseException], ...],
) -> tuple[type[BaseException], ...]:
    if isinstance(value, tuple):
        return value
    return (value,)


def _is_exception_class(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, BaseException)


def _default_max_interval(self: Any) -> float:
    initial: object = self.initial
    return 100.0 * initial if isinstance(initial, float) and 0 <= initial < math.inf else 0.0


@attrs.frozen
class Retry:
    """
    How often a step (or a compensation) is attempted, and how long to wait between attempts.

    The wait before attempt *n* (n ≥ 2) is ``initial * backoff ** (n - 2)``, capped at
    ``max_interval``. Exceptions that are instances of ``non_retryable`` (and
    :class:`~statemachine_orch.NonRetryableError`) are never retried.

    The arguments are checked when the workflow class that uses the policy is
    created: a bad one is a :class:`~statemachine_orch.WorkflowDefinitionError`
    (rule ``bad-retry``) naming the step and the argument.

    Args:
        attempts: Total number of attempts, the first one included (``1`` means no
            retry); ``None`` retries without limit, every ``max_interval`` at most.
        initial: Wait before the second attempt (a ``timedelta`` or seconds).
        backoff: Factor by which the wait grows after each failed attempt.
        max_interval: Upper bound of any single wait (default: 100 times ``initial``).
        non_retryable: Exception types that fail the step at once.

    .. versionadded:: 0.1.0
    """

    attempts: int | None = attrs.field(default=1)
    initial: float = attrs.field(default=1.0, converter=_seconds)
    backoff: float = attrs.field(default=2.0)
    max_interval: float = attrs.field(default=attrs.Factory(_default_max_interval, takes_self=True), converter=_seconds)
    non_retryable: tuple[type[BaseException], ...] = attrs.field(default=(), converter=_to_exc_tuple)

    def problems(self) -> list[tuple[str, str]]:
        """
        What is wrong with this policy's arguments: ``(argument, message)`` pairs, in argument order.

        The compiler reports each as a ``bad-retry`` problem of the step using the policy.
        """
        found: list[tuple[str, str]] = []
        # Read as plain objects: the point is to catch what the annotations did not.
        attempts = cast("object", self.attempts)
        if attempts is not None and (not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1):
            why = "attempts counts the first try too: a whole number >= 1, or None to retry without limit"
            found.append(("attempts", f"Retry(attempts={attempts!r}) is invalid: {why}"))
        for name, low in (("initial", 0.0), ("backoff", 1.0), ("max_interval", 0.0)):
            value = getattr(self, name)
            if not (_is_real(value) and math.isfinite(value) and value >= low):
                unit = "" if name == "backoff" else " (seconds or a timedelta)"
                why = f"{name} must be a finite number >= {low:g}{unit}"
                found.append((name, f"Retry({name}={value!r}) is invalid: {why}"))
        if attempts is None and not found and self.initial == 0:
            why = "retrying without limit needs a wait between attempts, or a failing step would spin: initial > 0"
            found.append(("initial", f"Retry(attempts=None, initial=0) is invalid: {why}"))
        given = cast("tuple[object, ...]", self.non_retryable)
        bad = [t for t in given if not _is_exception_class(t)]
        if bad:
            why = f"{bad[0]!r} is not an exception class"
            found.append(("non_retryable", f"Retry(non_retryable={self.non_retryable!r}) is invalid: {why}"))
        return found

    def delay(self, failed_attempt: int) -> float:
        """
        Seconds to wait after attempt number *failed_attempt* (1-based) failed.

        Args:
            failed_attempt: The attempt that just failed.

        Returns:
            The wait before the next attempt.
        """
        if self.initial == 0:
            return 0.0
        try:
            wait = self.initial * self.backoff ** (failed_attempt - 1)
        except OverflowError:  # an unlimited policy's thousandth attempt: long past the cap
            return self.max_interval
        return min(wait, self.max_interval)

    def retries(self, exc: BaseException, failed_attempt: int) -> bool:
        """
        Whether *exc*, raised by attempt *failed_attempt*, is retried.

        Args:
            exc: The exception the attempt raised.
            failed_attempt: The attempt that raised it (1-based).

        Returns:
            ``True`` when another attempt follows.
        """
        if self.attempts is not None and failed_attempt >= self.attempts:
            return False
        return not isinstance(exc, (NonRetryableError, *self.non_retryable))


NO_RETRY = Retry()
COMPENSATION_RETRY = Retry(attempts=3, initial=0.5)


def wait_after(retry: Retry, exc: BaseException, failed_attempt: int) -> float:
    """
    Seconds to wait before the attempt after *failed_attempt*, which raised *exc*.

    The policy's :meth:`Retry.delay`, unless *exc* asks for a longer wait with a
    ``retry_after`` attribute (seconds; an HTTP service's ``Retry-After``): then
    that wait, capped at the policy's ``max_interval``.
    """
    wait = retry.delay(failed_attempt)
    asked: object = getattr(exc, "retry_after", None)
    if isinstance(asked, int | float) and not isinstance(asked, bool) and asked > wait:
        return min(float(asked), max(retry.max_interval, wait))
    return wait
