"""Which declared type a message is delivered as: the check every door that sends one makes (signal, ctx.signal...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import SignalTypeError
from ._validate import value_mismatch

if TYPE_CHECKING:
    from ._spec import WorkflowSpec


def accepted_type(spec: WorkflowSpec, message: object, instance_id: str) -> type:
    """
    The ``@wait_for`` message type of *spec* that *message* is delivered as.

    Raises:
        SignalTypeError: No ``@wait_for`` step of the workflow takes its type, or a
            field of it does not hold its declared type (or cannot be stored as JSON).
    """
    accepted = [s.message for s in spec.steps if s.message is not None]
    declared = next((t for t in accepted if isinstance(message, t)), None)
    if declared is None:
        names = ", ".join(sorted({t.__name__ for t in accepted})) or "none"
        msg = f"{spec.name} does not wait for {type(message).__name__} (it waits for: {names})"
        raise SignalTypeError(instance_id, msg)
    bad = value_mismatch(message, declared)
    if bad is not None:
        where = declared.__name__ + bad.path
        raise SignalTypeError(instance_id, f"{where}: {bad.describe()}", field_path=where)
    return declared


def type_name(tp: type) -> str:
    """The name a message of declared type *tp* is filed under in every store."""
    return f"{tp.__module__}.{tp.__qualname__}"
