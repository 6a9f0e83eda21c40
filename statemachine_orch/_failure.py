"""
Why an instance did not complete, and a failed step's exception as the store keeps it.

A failed step's exception reaches two places after the step: the step its
``on_error`` edge leads to (as the method's third argument) and the instance's
failure reason (:class:`Failure`). Both survive a restart, so the exception is
stored as JSON (:func:`error_json`) and built again from it (:func:`rebuild_error`):
the same class, its ``args`` and its attributes. The class is looked up among the
subclasses of a type the caller expects (the handler's declared error type), never
imported by name, so a stored record cannot make the process load code.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator
from typing import Any, cast

import attrs


@attrs.frozen
class Failure:
    """
    How and why an instance did not complete (``Engine.failure(id)``).

    Attributes:
        outcome: How it ended in the workflow's own words: ``"failed"`` (a step
            failed for good, or no edge could be taken), the outcome a
            ``@failure_end`` step declares (``"rejected"``...), or ``"cancelled"``.
        step: The step that failed, or the failure end that ended the instance
            (``None`` for a cancellation).
        reason: The reason, as ``InstanceInfo.error`` and ``WorkflowFailed.reason``
            give it.
        error: The exception of the step that failed, built again from the store:
            an instance of the same class with the same ``args`` and attributes
            (those that are JSON values or enum members); ``None`` when no step
            raised (a failure end, a cancellation).

    .. versionadded:: 0.1.0
    """

    outcome: str
    step: str | None
    reason: str | None
    error: BaseException | None = attrs.field(default=None, eq=False)


def failure_record(outcome: str, step: str | None, error: BaseException | None = None) -> dict[str, Any]:
    """What an instance keeps about its failure: its outcome, its step and the exception as JSON."""
    return {"outcome": outcome, "step": step, "error": error_json(error) if error is not None else None}


def failure_of(record: dict[str, Any] | None, reason: str | None) -> Failure | None:
    """The :class:`Failure` an instance's kept record describes (``None``: it has none)."""
    if record is None:
        return None
    data = _object(record.get("error"))
    error = rebuild_error(data, BaseException) if data is not None else None
    step = record.get("step")
    return Failure(str(record.get("outcome", "failed")), step if isinstance(step, str) else None, reason, error)


def qualified(cls: type) -> str:
    """``module.QualName`` of a class (``<locals>.`` kept: it tells two local classes apart)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def error_json(exc: BaseException) -> dict[str, Any]:
    """
    *exc* as JSON: its class (and bases), ``args``, attributes and text.

    Values that are neither JSON values nor enum members are left out (an
    attribute holding a socket is not kept); ``text`` keeps what ``str(exc)`` said.
    """
    mro = [qualified(c) for c in type(exc).__mro__ if issubclass(c, BaseException)]
    args = [_value(a) for a in exc.args]
    kept: dict[str, Any] = {}
    for name, value in vars(exc).items():
        if name.startswith("__"):
            continue
        encoded = _value(value)
        if encoded is not _DROP:
            kept[name] = encoded
    text = _text(exc)
    return {
        "type": mro[0],
        "mro": mro,
        "args": None if any(a is _DROP for a in args) else args,
        "attrs": kept,
        "text": text,
    }


def rebuild_error(data: dict[str, Any], expected: type[BaseException]) -> BaseException:
    """
    The exception *data* describes (from :func:`error_json`), as an instance of *expected* or a subclass.

    The class is the stored one when it is *expected* or one of its subclasses
    loaded in this process, else its nearest stored base that is, else *expected*
    itself. Its ``__init__`` is not called: ``args`` and the attributes are set as
    stored (so an ``__init__`` with another signature cannot break the rebuild).
    """
    classes = {qualified(c): c for c in _subclasses(expected)}
    wanted = [n for n in _items(data.get("mro")) or () if isinstance(n, str)]
    cls = next((classes[n] for n in wanted if n in classes), expected)
    stored = _items(data.get("args"))
    text = data.get("text")
    args = tuple(_decode(a) for a in stored) if stored is not None else ((text,) if text is not None else ())
    exc = _blank(cls, args, expected)
    for name, value in (_object(data.get("attrs")) or {}).items():
        try:
            object.__setattr__(exc, name, _decode(value))
        except (AttributeError, TypeError):  # a slot or a read-only property: keep what args gave
            continue
    return exc


def _items(value: object) -> list[object] | None:
    """*value* when it is a JSON array."""
    return cast("list[object]", value) if isinstance(value, list) else None


def _object(value: object) -> dict[str, object] | None:
    """*value* when it is a JSON object."""
    return cast("dict[str, object]", value) if isinstance(value, dict) else None


def _blank(cls: type[BaseException], args: tuple[object, ...], expected: type[BaseException]) -> BaseException:
    # Some built-in exceptions need their own __new__ (OSError picks a subclass by
    # errno); fall back along the bases to the first one whose __new__ accepts the args.
    for klass in (*(c for c in cls.__mro__ if issubclass(c, expected)), expected):
        try:
            exc = klass.__new__(klass, *args)
        except Exception:  # noqa: BLE001, S112 - a custom __new__: try the next base
            continue
        exc.args = args
        return exc
    return BaseException(*args)  # pragma: no cover - BaseException.__new__ accepts anything


def _subclasses(root: type[BaseException]) -> Iterator[type[BaseException]]:
    seen: set[type[BaseException]] = set()
    todo: list[type[BaseException]] = [root]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        yield cls
        try:
            todo.extend(cls.__subclasses__())
        except TypeError:  # pragma: no cover - type.__subclasses__ needs an argument
            continue


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the failure
        return f"<{type(exc).__name__} whose str() failed>"


_DROP: Any = object()
_ENUM = "__enum__"


def _value(value: object, depth: int = 0) -> Any:
    """*value* as JSON, an enum member as ``{"__enum__": class, "value": ...}``, or ``_DROP``."""
    if depth > 20:  # noqa: PLR2004 - deep enough for any sensible attribute
        return _DROP
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _DROP
    if isinstance(value, enum.Enum):
        inner = _value(value.value, depth + 1)
        return _DROP if inner is _DROP else {_ENUM: qualified(type(value)), "value": inner}
    if isinstance(value, (list, tuple)):
        items = [_value(v, depth + 1) for v in cast("list[object] | tuple[object, ...]", value)]
        return _DROP if any(i is _DROP for i in items) else items
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in cast("dict[object, object]", value).items():
            encoded = _value(v, depth + 1)
            if not isinstance(k, str) or k == _ENUM or encoded is _DROP:
                return _DROP
            out[k] = encoded
        return out
    return _DROP


def _decode(value: object) -> Any:
    items = _items(value)
    if items is not None:
        return [_decode(v) for v in items]
    data = _object(value)
    if data is not None:
        if _ENUM in data:
            enum_type = next((c for c in _enum_types() if qualified(c) == data[_ENUM]), None)
            try:
                return enum_type(_decode(data.get("value"))) if enum_type is not None else _decode(data.get("value"))
            except ValueError:
                return _decode(data.get("value"))
        return {k: _decode(v) for k, v in data.items()}
    return value


def _enum_types() -> Iterator[type[enum.Enum]]:
    todo: list[type[enum.Enum]] = [enum.Enum]
    while todo:
        cls = todo.pop()
        yield cls
        todo.extend(cls.__subclasses__())
