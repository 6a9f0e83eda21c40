"""TypeVars, ParamSpecs and callable aliases shared by the public modules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeAlias, TypeVar

W = TypeVar("W")
"""The workflow class a step, edge or guard belongs to."""

P = ParamSpec("P")
"""The parameters of a step method after ``self``."""

R_co = TypeVar("R_co", bound="Awaitable[None] | None", covariant=True)
"""What a step method returns: ``None`` (sync) or an awaitable of ``None`` (async)."""

R2 = TypeVar("R2", bound="Awaitable[None] | None")
"""Return type of a step or compensation method being decorated."""

F = TypeVar("F")
"""The form type of a human task."""

Guard: TypeAlias = "Callable[[Any], bool]"
"""A guard as stored in the spec: called with the workflow instance."""
