"""
What an :class:`~statemachine_orch.HttpService` call raises (issue 10, item 9).

Kept apart from the service itself so that they import without httpx::

    OrchError
    └── HttpServiceError                    an HTTP service call failed
        ├── HttpRejected (NonRetryableError) a 4xx other than 408/429, a redirect, a response or
        │                                    request that is not JSON: the same call fails again
        └── HttpUnavailable                  a 5xx, 408 or 429, a connection failure, a timeout:
                                             retried by the step's Retry (honouring Retry-After)
"""

from __future__ import annotations

from ._errors import NonRetryableError, OrchError


class HttpServiceError(OrchError):
    """
    A call to an HTTP service failed.

    Route it with ``@after(step, on_error=HttpServiceError)`` (or one of its two
    kinds); its attributes say what was called and what came back.

    Attributes:
        operation: The operation ``ctx.call`` named.
        method: The HTTP method.
        url: The URL called (without the query string).
        status: The response's status code, or ``None`` when no response came.
        body: The start of the response's body (at most 1000 characters), or ``""``.

    .. versionadded:: 0.1.0
    """

    operation: str
    method: str
    url: str
    status: int | None
    body: str

    def __init__(
        self, operation: str, method: str, url: str, message: str, *, status: int | None = None, body: str = ""
    ) -> None:
        self.operation = operation
        self.method = method
        self.url = url
        self.status = status
        self.body = body
        super().__init__(f"{operation} ({method} {url}): {message}")


class HttpRejected(HttpServiceError, NonRetryableError):
    """
    The call cannot succeed as it is: it is not retried, whatever the step's ``Retry``.

    The service answered with a 4xx status other than 408 (Request Timeout) and
    429 (Too Many Requests), or with a redirect; or its success response is not
    JSON (or not of the declared result type); or the call's parameters cannot be
    sent (a value JSON cannot hold, a path placeholder without its parameter).

    .. versionadded:: 0.1.0
    """


class HttpUnavailable(HttpServiceError):
    """
    The service could not answer now; the step's ``Retry`` tries again.

    The service answered 5xx, 408 or 429, or the connection failed, or no
    response came within the timeout. When the response said how long to wait
    (``Retry-After``), the next attempt waits at least that long, but no longer
    than the policy's ``max_interval``.

    Attributes:
        retry_after: The wait the service asked for, in seconds, or ``None``.

    .. versionadded:: 0.1.0
    """

    retry_after: float | None

    def __init__(
        self,
        operation: str,
        method: str,
        url: str,
        message: str,
        *,
        status: int | None = None,
        body: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(operation, method, url, message, status=status, body=body)
