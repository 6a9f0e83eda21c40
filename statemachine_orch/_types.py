"""TypeVars, ParamSpecs and callable aliases shared by the public modules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeAlias, TypeVar

W = TypeVar("W")
"""The workflow class a step, edge or guard belongs to."""

P = ParamSpec("P")
"""The parameters of a step method after ``self``."""

R_co = TypeVar("R_co", covariant=True)
"""What a step method returns: ``None`` (sync), an awaitable of ``None`` (async), or a subflow's child."""

R2 = TypeVar("R2", bound="Awaitable[None] | None")
"""Return type of a step or compensation method being decorated."""

RR = TypeVar("RR", bound="Awaitable[str] | str")
"""Return type of a ``@failure_end`` method: the reason, a ``str`` (or an awaitable of one)."""

E = TypeVar("E", bound=BaseException)
"""The error an ``on_error`` handler step receives."""

F = TypeVar("F")
"""The form type of a human task."""

RS = TypeVar("RS")
"""What an existing step's method returns, as ``@after``/``@goto`` pass it through."""

WD = TypeVar("WD")
"""The workflow class of the step an ``@after``/``@goto`` decorates (a subclass of the other end's, or it)."""

W_contra = TypeVar("W_contra", contravariant=True)
"""The workflow class a :class:`StepOf` works on: a step of a base class works on its subclasses too."""

C = TypeVar("C")
"""The child workflow class of a subflow step."""

Guard: TypeAlias = "Callable[[Any], bool]"
"""A guard as stored in the spec: called with the workflow instance."""
