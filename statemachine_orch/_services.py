"""The service registry behind ``ctx.call(service, operation, **params)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from ._errors import ServiceNotFound


@runtime_checkable
class Service(Protocol):
    """
    **Protocol:** a service that steps reach through ``ctx.call``.

    Implement it to plug in a transport of your own; in-process objects are wrapped
    by :class:`InProcessService` automatically.

    .. versionadded:: 0.1.0
    """

    async def call(self, operation: str, params: Mapping[str, Any], *, idempotency_key: str) -> Any:
        """
        Run *operation* with *params*.

        Args:
            operation: The operation's name.
            params: Its keyword arguments.
            idempotency_key: Identical across re-runs of one step visit; use it to deduplicate.

        Returns:
            The operation's result.
        """
        ...


class InProcessService:
    """
    A service whose operations are Python callables in this process.

    *target* is an object (its public methods are the operations) or a mapping from
    operation names to callables. Operations may be sync or async; an operation
    that declares a keyword parameter ``idempotency_key`` receives the step visit's key.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_ops", "name")

    name: str
    """The name it is registered under."""

    def __init__(self, name: str, target: object) -> None:
        self.name = name
        ops: dict[str, tuple[Callable[..., Any], bool]] = {}
        if isinstance(target, Mapping):
            items: list[tuple[str, Any]] = [(str(k), v) for k, v in target.items()]  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
        else:
            items = [(n, getattr(target, n)) for n in dir(target) if not n.startswith("_")]
        for op_name, fn in items:
            if callable(fn):
                ops[op_name] = (fn, _accepts_key(fn))
        self._ops = ops

    def operations(self) -> dict[str, tuple[Callable[..., Any], bool]]:
        """Each operation's function, and whether it takes ``idempotency_key``."""
        return dict(self._ops)

    async def call(self, operation: str, params: Mapping[str, Any], *, idempotency_key: str) -> Any:
        """Run the operation; await it when it is async."""
        try:
            fn, wants_key = self._ops[operation]
        except KeyError:
            known = ", ".join(sorted(self._ops)) or "none"
            msg = f"service {self.name!r} has no operation {operation!r} (it has: {known})"
            raise ServiceNotFound(msg) from None
        result = fn(**params, idempotency_key=idempotency_key) if wants_key else fn(**params)
        if inspect.isawaitable(result):
            return await result
        return result


def _accepts_key(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "idempotency_key" in params


class ServiceRegistry:
    """
    The services an engine's steps may call, by name.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_ops", "_services")

    def __init__(self, services: Mapping[str, object] | None = None) -> None:
        self._services: dict[str, Service] = {}
        # (service, operation) -> (function, wants the key) for in-process services:
        # ctx.call then costs one lookup and one call, not three coroutine layers.
        self._ops: dict[tuple[str, str], tuple[Callable[..., Any], bool]] = {}
        for name, target in (services or {}).items():
            self.register(name, target)

    def register(self, name: str, target: object) -> None:
        """
        Register *target* under *name*.

        Args:
            name: The name steps use in ``ctx.call(name, ...)``.
            target: A :class:`Service`, or any object / mapping of callables
                (wrapped in :class:`InProcessService`).
        """
        service = target if isinstance(target, Service) else InProcessService(name, target)
        self._services[name] = service
        for key in [k for k in self._ops if k[0] == name]:
            del self._ops[key]
        if isinstance(service, InProcessService):
            for op_name, entry in service.operations().items():
                self._ops[name, op_name] = entry

    def names(self) -> list[str]:
        """The registered service names, sorted."""
        return sorted(self._services)

    async def call(self, service: str, operation: str, params: Mapping[str, Any], idempotency_key: str) -> Any:
        """
        Call *operation* on *service*.

        Raises:
            ServiceNotFound: No such service or operation.
        """
        entry = self._ops.get((service, operation))
        if entry is not None:
            fn, wants_key = entry
            result = fn(**params, idempotency_key=idempotency_key) if wants_key else fn(**params)
            if inspect.isawaitable(result):
                return await result
            return result
        try:
            svc = self._services[service]
        except KeyError:
            known = ", ".join(sorted(self._services)) or "none"
            msg = f"no service {service!r} is registered (registered: {known})"
            raise ServiceNotFound(msg) from None
        return await svc.call(operation, params, idempotency_key=idempotency_key)
