"""
``@invariant``: a workflow method that must hold after every transition.

The decorator only marks the function (a small frozen record under
``__orch_invariant__``); the compiler collects the marks into
``WorkflowSpec.invariants`` (records of :class:`InvariantSpec`, which lives with
the other spec records in ``_spec.py``) with :func:`collect_invariants`, and
consumers (the testing toolkit's ``WorkflowMachine``) read them from the spec.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable
from typing import Any, overload

import attrs

from ._decorators import Compensation, Step
from ._errors import DefinitionProblem, WorkflowDefinitionError
from ._spec import InvariantSpec
from ._status import InstanceStatus
from ._types import W

# InvariantSpec is re-exported: this module was its home before it joined the other spec records.
__all__ = ["MARK", "InvariantMark", "InvariantSpec", "collect_invariants", "invariant"]

MARK = "__orch_invariant__"
_order = itertools.count()


@attrs.frozen
class InvariantMark:
    """What ``@invariant`` attached to a method."""

    takes_status: bool
    order: int
    takes_compensated: bool = False


def _reject(fn: object, message: str) -> WorkflowDefinitionError:
    qualname = str(getattr(fn, "__qualname__", repr(fn))).replace("<locals>.", "")
    owner, _, name = qualname.rpartition(".")
    owner = owner or "<module>"
    return WorkflowDefinitionError(owner, [DefinitionProblem(owner, name, "bad-invariant", message)])


@overload
def invariant(fn: Callable[[W], bool], /) -> Callable[[W], bool]: ...
@overload
def invariant(fn: Callable[[W, InstanceStatus], bool], /) -> Callable[[W, InstanceStatus], bool]: ...
@overload
def invariant(fn: Callable[[W, InstanceStatus, bool], bool], /) -> Callable[[W, InstanceStatus, bool], bool]: ...
def invariant(fn: Callable[..., bool], /) -> Callable[..., bool]:
    """
    Mark a workflow method as an invariant: it must return ``True`` after every transition.

    The method is ``(self) -> bool``, or ``(self, status: InstanceStatus) -> bool``
    when what must hold depends on where the instance is in its lifecycle
    (running, waiting, compensating, completed, failed, cancelled...), or
    ``(self, status: InstanceStatus, compensated: bool) -> bool`` when it also
    depends on whether the instance's compensations ran (``True`` from the moment
    a failed instance, or one cancelled with ``compensate=True``, starts
    compensating; ``False`` when it was cancelled with ``compensate=False``). Like a
    guard, it reads variables and has no side effects. The engine does not run
    invariants; ``statemachine_orch.testing.WorkflowMachine`` checks them after
    every transition, status change, task and compensation of every instance it
    drives, and reports the shortest story that breaks one.

    Args:
        fn: The method.

    Returns:
        The same method, marked.

    Raises:
        WorkflowDefinitionError: *fn* is a step or a compensation, not a function, or
            does not take ``(self)``, ``(self, status)`` or ``(self, status, compensated)``.

    .. versionadded:: 0.1.0
    """
    marked: object = fn
    if isinstance(marked, (Step, Compensation)):
        msg = "@invariant is applied to a step or compensation; an invariant is a plain method (self) -> bool"
        raise _reject(fn, msg)
    if not inspect.isfunction(fn):
        msg = f"@invariant must decorate a function defined in a Workflow class body, got {fn!r}"
        raise _reject(fn, msg)
    params = list(inspect.signature(fn).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if len(positional) not in (1, 2, 3) or len(required) > len(positional):
        got = "(" + ", ".join(p.name for p in params) + ")"
        msg = f"an invariant must have the signature (self), (self, status) or (self, status, compensated), not {got}"
        raise _reject(fn, msg)
    mark = InvariantMark(takes_status=len(positional) >= 2, order=next(_order), takes_compensated=len(positional) == 3)  # noqa: PLR2004
    setattr(fn, MARK, mark)
    return fn


def collect_invariants(cls: type) -> tuple[InvariantSpec, ...]:
    """
    The methods of *cls* (and its bases) marked ``@invariant``, in declaration order.

    A subclass attribute of the same name that is not marked hides the base's invariant.
    """
    found: dict[str, tuple[InvariantMark, Callable[..., bool]]] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            mark: Any = getattr(value, MARK, None) if inspect.isfunction(value) else None
            if isinstance(mark, InvariantMark):
                found[name] = (mark, value)
            else:
                found.pop(name, None)
    ordered = sorted(found.items(), key=lambda kv: kv[1][0].order)
    return tuple(InvariantSpec(name, fn, mark.takes_status, mark.takes_compensated) for name, (mark, fn) in ordered)
