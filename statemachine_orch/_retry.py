"""Retry policies for steps and compensations."""

from __future__ import annotations

from datetime import timedelta

import attrs

from ._errors import NonRetryableError


def _seconds(value: timedelta | float) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def _to_exc_tuple(
    value: type[BaseException] | tuple[type[BaseException], ...],
) -> tuple[type[BaseException], ...]:
    if isinstance(value, tuple):
        return value
    return (value,)


@attrs.frozen
class Retry:
    """
    How often a step (or a compensation) is attempted, and how long to wait between attempts.

    The wait before attempt *n* (n ≥ 2) is ``initial * backoff ** (n - 2)``, capped at
    ``max_interval``. Exceptions that are instances of ``non_retryable`` (and
    :class:`~statemachine_orch.NonRetryableError`) are never retried.

    Args:
        attempts: Total number of attempts, the first one included (``1`` means no retry).
        initial: Wait before the second attempt (a ``timedelta`` or seconds).
        backoff: Factor by which the wait grows after each failed attempt.
        max_interval: Upper bound of any single wait (default: 100 times ``initial``).
        non_retryable: Exception types that fail the step at once.

    .. versionadded:: 0.1.0
    """

    attempts: int = attrs.field(default=1)
    initial: float = attrs.field(default=1.0, converter=_seconds)
    backoff: float = attrs.field(default=2.0)
    max_interval: float = attrs.field(
        default=attrs.Factory(lambda self: 100.0 * self.initial, takes_self=True), converter=_seconds
    )
    non_retryable: tuple[type[BaseException], ...] = attrs.field(default=(), converter=_to_exc_tuple)

    @attempts.validator  # pyright: ignore[reportAttributeAccessIssue, reportUntypedFunctionDecorator, reportUnknownMemberType]
    def _check_attempts(self, _: attrs.Attribute[int], value: int) -> None:
        if value < 1:
            msg = f"Retry(attempts={value}) is invalid: attempts counts the first try and must be >= 1"
            raise ValueError(msg)

    @backoff.validator  # pyright: ignore[reportAttributeAccessIssue, reportUntypedFunctionDecorator, reportUnknownMemberType]
    def _check_backoff(self, _: attrs.Attribute[float], value: float) -> None:
        if value < 1.0:
            msg = f"Retry(backoff={value}) is invalid: backoff must be >= 1.0"
            raise ValueError(msg)

    def delay(self, failed_attempt: int) -> float:
        """
        Seconds to wait after attempt number *failed_attempt* (1-based) failed.

        Args:
            failed_attempt: The attempt that just failed.

        Returns:
            The wait before the next attempt.
        """
        return min(self.initial * self.backoff ** (failed_attempt - 1), self.max_interval)

    def retries(self, exc: BaseException, failed_attempt: int) -> bool:
        """
        Whether *exc*, raised by attempt *failed_attempt*, is retried.

        Args:
            exc: The exception the attempt raised.
            failed_attempt: The attempt that raised it (1-based).

        Returns:
            ``True`` when another attempt follows.
        """
        if failed_attempt >= self.attempts:
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
