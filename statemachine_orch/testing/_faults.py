"""
Injecting a story's fault plans into attempts: before an attempt, at its ``ctx.call`` boundary, after its body.

Before an attempt, a fault stops it from doing anything (``"transient"``,
``"permanent"``, ``"raise E"``). After it, the attempt has had its effect and
then fails: ``"lost reply"`` lets the attempt's first ``ctx.call`` run and then
raises from it, as if the reply was lost on the way back; ``"crash"`` lets the
body run to its end and then fails the attempt as a process dying before the
commit would: what the body wrote to the workflow's variables is put back, what
it did to services stays. Either way the step's retry runs it again, so a step
that is not idempotent acts twice.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from statemachine_orch._ctx import Ctx
from statemachine_orch._errors import NonRetryableError
from statemachine_orch._services import ServiceRegistry
from statemachine_orch._workflow import spec_of

from ._strategies import AFTER_EFFECT, CRASH, OK, PERMANENT, RAISE, TRANSIENT, FaultPlan


class InjectedFault(Exception):
    """
    A transient fault injected into a step or compensation attempt by ``WorkflowMachine``.

    .. versionadded:: 0.1.0
    """


class InjectedPermanentFault(NonRetryableError):
    """
    A permanent (never retried) fault injected by ``WorkflowMachine``.

    .. versionadded:: 0.1.0
    """


@attrs.define
class _Armed:
    """A fault after the effect, waiting for the attempt's first call or the end of its body."""

    fault: str
    what: str
    injected: list[str]
    kept: dict[str, object]
    fired: bool = False


class Injector:
    """
    The fault plans of a story's instances, applied to their attempts.

    Args:
        workflow: The live workflow object of an instance (its variables), by id.
        errors: How to build each ``on_error`` exception type a plan may raise, by name.
    """

    def __init__(self, workflow: Callable[[str], object], errors: Mapping[str, Callable[[str], BaseException]]) -> None:
        self._workflow = workflow
        self._errors = errors
        # By idempotency key (one per visit of a step or compensation): the fault after the effect to come.
        self._armed: dict[str, _Armed] = {}

    def before(self, ctx: Ctx, plan: FaultPlan, injected: list[str]) -> None:
        """Apply *plan*'s fault for this attempt: raise it now, or arm it for the call or the end of the body."""
        key = ctx.idempotency_key
        self._armed.pop(key, None)
        faults = plan.get(ctx.step)
        if not faults or ctx.attempt > len(faults):
            return
        fault = faults[ctx.attempt - 1]
        if fault == OK:
            return
        what = f"{fault} fault injected into {ctx.step} attempt {ctx.attempt}"
        if fault in AFTER_EFFECT:
            wf = self._workflow(ctx.instance_id)
            kept = {f.name: copy.deepcopy(getattr(wf, f.name)) for f in spec_of(wf).fields}
            self._armed[key] = _Armed(fault, f"{ctx.step} attempt {ctx.attempt}", injected, kept)
            return
        injected.append(f"{ctx.step} attempt {ctx.attempt}: {fault}")
        if fault == TRANSIENT:
            raise InjectedFault(what)
        if fault == PERMANENT:
            raise InjectedPermanentFault(what)
        raise self._errors[fault.removeprefix(RAISE)](what)

    def after_call(self, key: str, service: str, operation: str) -> None:
        """A call of the attempt *key* took effect: lose its reply when that is the plan."""
        armed = self._armed.get(key)
        if armed is None or armed.fired or armed.fault == CRASH:
            return
        armed.fired = True
        armed.injected.append(f"{armed.what}: the call {service}.{operation} took effect, its reply was lost")
        msg = f"lost reply injected: {service}.{operation} took effect in {armed.what}, its reply never came back"
        raise InjectedFault(msg)

    def after(self, ctx: Ctx) -> None:
        """The attempt's body ran to its end: crash before the commit when that is the plan."""
        armed = self._armed.pop(ctx.idempotency_key, None)
        if armed is None or armed.fired:
            return
        wf: Any = self._workflow(ctx.instance_id)
        lost = [name for name, value in armed.kept.items() if _differs(getattr(wf, name), value)]
        for name in lost:
            object.__setattr__(wf, name, armed.kept[name])
        writes = f" (its writes to {', '.join(lost)} are lost)" if lost else ""
        armed.injected.append(f"{armed.what}: crash after the body ran, before the commit{writes}")
        msg = f"crash injected after the body of {armed.what} ran, before its commit{writes}"
        raise InjectedFault(msg)

    def services(self, inner: ServiceRegistry) -> ServiceRegistry:
        """*inner*, its calls passing through :meth:`after_call`."""
        return _Boundary(inner, self.after_call)


def _differs(now: object, kept: object) -> bool:
    try:
        return bool(now != kept)
    except Exception:  # noqa: BLE001 - a value whose == raises (an array): put it back to be safe
        return True


class _Boundary(ServiceRegistry):
    """A registry whose calls go to another one, then through a check that may lose the reply."""

    __slots__ = ("_after_call", "_inner")

    def __init__(self, inner: ServiceRegistry, after_call: Callable[[str, str, str], None]) -> None:
        super().__init__()
        self._inner = inner
        self._after_call = after_call

    def register(self, name: str, target: object) -> None:
        """Register *target* in the registry behind this one."""
        self._inner.register(name, target)

    def names(self) -> list[str]:
        """The names registered behind this one."""
        return self._inner.names()

    async def call(self, service: str, operation: str, params: Mapping[str, Any], idempotency_key: str) -> Any:
        """Call through; then the reply may be lost."""
        result = await self._inner.call(service, operation, params, idempotency_key)
        self._after_call(idempotency_key, service, operation)
        return result
