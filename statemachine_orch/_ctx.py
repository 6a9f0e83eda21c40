"""The context object a step method receives."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import structlog

from ._clock import Clock, SystemClock

if TYPE_CHECKING:
    from ._services import ServiceRegistry

_base_log: Any = structlog.get_logger("statemachine_orch.step")
_SYSTEM_CLOCK = SystemClock()


class Ctx:
    """
    What a step (or compensation) knows about the run it is part of.

    Attributes:
        instance_id: The instance being run.
        workflow: The workflow class name.
        step: The step (or compensation) being run.
        attempt: 1 for the first attempt, 2 for the first retry, ...
        idempotency_key: Identical for every attempt and every re-run (after a crash)
            of one visit of this step; different for each visit. Services get it.
        compensating: ``True`` when this runs a compensation (``step`` is then the
            compensation's name and ``undoing`` the step it undoes).
        undoing: The step being compensated, or ``None``.

    .. versionadded:: 0.1.0
    """

    __slots__ = (
        "_clock",
        "_key",
        "_log",
        "_services",
        "attempt",
        "instance_id",
        "step",
        "undoing",
        "workflow",
    )

    instance_id: str
    workflow: str
    step: str
    attempt: int
    undoing: str | None

    def __init__(
        self,
        services: ServiceRegistry,
        instance_id: str,
        workflow: str,
        step: str,
        attempt: int,
        idempotency_key: str | tuple[str, int, str],
        undoing: str | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self._services = services
        self._clock = clock
        self.instance_id = instance_id
        self.workflow = workflow
        self.step = step
        self.attempt = attempt
        self._key = idempotency_key
        self.undoing = undoing
        self._log: Any = None

    @property
    def idempotency_key(self) -> str:
        """Identical for every attempt and re-run of this step visit; services get it."""
        key = self._key
        if isinstance(key, tuple):
            # Built on first use: most steps never ask for it.
            instance_id, visit, suffix = key
            key = self._key = f"{instance_id}:{visit}{suffix}"
        return key

    def now(self) -> dt.datetime:
        """
        The engine's current time, as an aware datetime in UTC.

        It comes from the engine's :class:`~statemachine_orch.Clock`: the real
        time in production, a :class:`~statemachine_orch.VirtualClock`'s in tests,
        so step code that compares dates (a deadline, a cut-off) runs on the time
        the test sets. It is read anew at each call, also in a re-run after a crash.

        .. versionadded:: 0.1.0
        """
        return dt.datetime.fromtimestamp((self._clock or _SYSTEM_CLOCK).now(), dt.UTC)

    @property
    def compensating(self) -> bool:
        """Whether this context runs a compensation."""
        return self.undoing is not None

    @property
    def log(self) -> Any:
        """A structlog logger bound to the instance, workflow, step and attempt."""
        # Bound lazily: binding costs more than a whole step of bookkeeping, and
        # most steps never log.
        if self._log is None:
            self._log = _base_log.bind(
                instance_id=self.instance_id,
                workflow=self.workflow,
                step=self.step,
                attempt=self.attempt,
            )
        return self._log

    async def call(self, service: str, operation: str, /, **params: Any) -> Any:
        """
        Call *operation* of the registered *service* with keyword *params*.

        The service receives this visit's :attr:`idempotency_key`.

        Raises:
            ServiceNotFound: No such service or operation (not retried).
        """
        return await self._services.call(service, operation, params, self.idempotency_key)

    def __repr__(self) -> str:
        return f"<Ctx {self.workflow}:{self.instance_id} step={self.step} attempt={self.attempt}>"
