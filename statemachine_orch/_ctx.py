"""The context object a step method receives."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from ._clock import Clock, SystemClock

if TYPE_CHECKING:
    from ._services import ServiceRegistry

_base_log: Any = structlog.get_logger("statemachine_orch.step")
_SYSTEM_CLOCK = SystemClock()

_NONE: tuple[object, ...] = ()


class Outbox(Protocol):
    """What ``ctx.signal`` and ``ctx.start`` ask of the engine: check a message or a start, return its effect."""

    def signal(self, target: object, message: object, pending: Sequence[object]) -> object:
        """The effect of sending *message* to the instance *target* (raising the caller's typed error)."""
        ...

    def start(
        self, workflow: object, instance_id: str | None, default_id: str, message: object, pending: Sequence[object]
    ) -> tuple[object | None, str]:
        """The effect of starting *workflow* (with a first *message*, unless it is ``NO_MESSAGE``), and its id."""
        ...


NO_MESSAGE: Any = object()
"""``Outbox.start`` without a first message (a plain ``ctx.start``)."""


def effects_of(ctx: Ctx) -> Sequence[object]:
    """What the attempt *ctx* belongs to sent (``ctx.signal``, ``ctx.start``...), oldest first."""
    # A function of this module, not a method: users see no such thing on a Ctx.
    return ctx._effects  # pyright: ignore[reportPrivateUsage]


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
        "_effects",
        "_key",
        "_log",
        "_outbox",
        "_services",
        "_starts",
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
        outbox: Outbox | None = None,
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
        self._outbox = outbox
        self._effects: list[object] | tuple[object, ...] = _NONE
        self._starts = 0  # starts of this attempt without an instance_id: their ids are numbered

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

    def signal(self, instance_id: str, message: object) -> None:
        """
        Send *message* to the instance *instance_id*, with this step's commit.

        The message is kept for the instance (as :meth:`Engine.signal` keeps it)
        by the same transaction that records this step's completion: never if
        the attempt fails, once however often the step runs. It is checked now.

        Raises:
            InstanceNotFound: No instance has this id (nor one this step starts).
            InstanceFinished: The instance is terminal.
            SignalTypeError: No ``@wait_for`` step of its workflow takes this type, or a
                field of the message does not hold its declared type.
            RuntimeError: This context does not belong to a step run by an engine.

        .. versionadded:: 0.1.0
        """
        self._add(self._box().signal(instance_id, message, self._effects))

    def start(self, workflow: object, *, instance_id: str | None = None) -> str:
        """
        Start *workflow* as an independent instance, with this step's commit.

        The new instance is inserted by the same transaction that records this
        step's completion, and runs on its own (no parent waits for it). Without
        *instance_id* its id is ``<idempotency key>.<n>`` (the *n*-th start of the
        attempt), the same at every re-run of the step, so it is started once. An
        instance with that id that exists already is left as it is.

        Returns:
            The instance's id.

        Raises:
            WorkflowInputError: A variable does not match its declared type, the object
                was started before, or *instance_id* is not a usable id.
            InstanceExists: *instance_id* belongs to an instance of another workflow.
            TypeError: *workflow* is not an instance of a concrete Workflow class.
            RuntimeError: This context does not belong to a step run by an engine.

        .. versionadded:: 0.1.0
        """
        return self._start(workflow, instance_id, NO_MESSAGE)

    def signal_with_start(self, workflow: object, message: object, *, instance_id: str) -> str:
        """
        Send *message* to the instance *instance_id*, starting it from *workflow* if it does not exist.

        Both happen with this step's commit: a new instance is inserted with the
        message already kept for it, so its ``@wait_for`` step finds it; a live one
        gets the message as with :meth:`signal`.

        Returns:
            *instance_id*.

        Raises:
            InstanceFinished: The instance exists and is terminal.
            InstanceExists: It is an instance of another workflow.
            SignalTypeError: No ``@wait_for`` step of the workflow takes this type, or a
                field of the message does not hold its declared type.
            WorkflowInputError: As for :meth:`start`.
            RuntimeError: This context does not belong to a step run by an engine.

        .. versionadded:: 0.1.0
        """
        return self._start(workflow, instance_id, message)

    def _start(self, workflow: object, instance_id: str | None, message: object) -> str:
        if instance_id is None:
            self._starts += 1
        default_id = f"{self.idempotency_key}.{self._starts}"
        effect, started = self._box().start(workflow, instance_id, default_id, message, self._effects)
        if effect is not None:
            self._add(effect)
        return started

    def _box(self) -> Outbox:
        if self._outbox is None:
            msg = f"{self!r} cannot send messages or start instances: only a step run by an engine can"
            raise RuntimeError(msg)
        return self._outbox

    def _add(self, effect: object) -> None:
        if isinstance(self._effects, tuple):
            self._effects = [effect]
        else:
            self._effects.append(effect)

    def __repr__(self) -> str:
        return f"<Ctx {self.workflow}:{self.instance_id} step={self.step} attempt={self.attempt}>"
