"""JSON for variables, forms and messages, through cattrs from the declared types."""

from __future__ import annotations

import enum
import json
import reprlib
import types
import typing
from collections.abc import Callable
from typing import Any

import attrs
from cattrs.errors import AttributeValidationNote, IterableValidationNote, StructureHandlerNotFoundError
from cattrs.preconf.json import make_converter

from . import _json_types
from ._errors import RecordLoadError

converter = make_converter()
"""The one converter used for everything the stores persist."""
_json_types.install(converter)

T = typing.TypeVar("T")

_OWN: tuple[type, ...] = (str, int, float, bool, bytes, type(None), *_json_types.BUILT_IN)


def register_type(tp: type[T], *, to_json: Callable[[T], Any], from_json: Callable[[Any], T]) -> None:
    """
    Teach the stores a type of your own, for variables, forms and messages.

    Values of *tp* are written as ``to_json(value)`` (anything :func:`json.dumps`
    takes: a string, a number, a list, a dict...) and read back with
    ``from_json(data)``. Register the type before the first workflow class that
    uses it is defined: the class checks then that its fields can be stored.
    Registering a type again replaces its functions.

    Money and time need nothing: ``Decimal``, ``datetime``, ``date``, ``time``,
    ``timedelta``, ``UUID``, enums and attrs classes are stored out of the box.

    Args:
        tp: The class (its subclasses are written the same way).
        to_json: Its JSON form.
        from_json: The value of a JSON form; what it raises makes the load fail
            with a :class:`~statemachine_orch.RecordLoadError` (or the call that
            was given the value with its typed error).

    Raises:
        TypeError: *tp* is not a class, or *to_json* / *from_json* is not callable.
        ValueError: *tp* is one the library stores itself (``str``, ``Decimal``...).

    .. versionadded:: 0.1.0
    """
    given = typing.cast("object", tp)  # the caller's value may be of any type, whatever the annotation says
    if not isinstance(given, type):
        msg = f"register_type() takes a class, got {given!r} ({type(given).__name__})"
        raise TypeError(msg)
    if tp in _OWN:
        msg = f"register_type({tp.__name__}): {tp.__name__} is stored out of the box and cannot be replaced"
        raise ValueError(msg)
    hooks: tuple[tuple[str, object], ...] = (("to_json", to_json), ("from_json", from_json))
    for name, fn in hooks:
        if not callable(fn):
            msg = f"register_type({tp.__name__}, {name}=...) must be a function, got {fn!r}"
            raise TypeError(msg)

    def structure_hook(value: Any, _: object) -> T:
        return from_json(value)

    converter.register_unstructure_hook(tp, to_json)
    converter.register_structure_hook(tp, structure_hook)


def serialisation_problem(tp: object) -> str | None:
    """Why values of type *tp* cannot round-trip through JSON, or ``None`` when they can."""
    if isinstance(tp, str):
        return f"its annotation {tp!r} could not be resolved; define that type before the workflow class"
    ambiguous = _ambiguous_union(tp)
    if ambiguous is not None:
        return ambiguous
    # cattrs builds the hooks of unions and containers lazily, so a bad member
    # would only fail when a value is stored: check every member now.
    if typing.get_origin(tp) is not typing.Literal:
        for arg in typing.get_args(tp):
            if arg is not type(None) and arg is not Ellipsis:
                why = serialisation_problem(arg)
                if why is not None:
                    return why
    try:
        converter.get_structure_hook(tp)
        converter.get_unstructure_hook(tp)
    except StructureHandlerNotFoundError:
        name = getattr(tp, "__name__", tp)
        return (
            f"its type {name!r} cannot be stored as JSON; make it an attrs class, or register its JSON form "
            f"with statemachine_orch.register_type({name}, to_json=..., from_json=...) before this class"
        )
    except Exception as exc:  # noqa: BLE001 - cattrs raises many kinds for odd types
        return f"its type {tp!r} cannot be stored as JSON ({type(exc).__name__}: {exc})"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_problem(tp)
    return None


def _enum_problem(tp: type[enum.Enum]) -> str | None:
    """Why a member of the enum *tp* would not read back as itself, if one would not."""
    for member in tp:
        try:
            back = converter.structure(json.loads(json.dumps(converter.unstructure(member, tp))), tp)
        except Exception:  # noqa: BLE001 - a value json cannot write, or that reads back as no member
            back = None
        if back is not member:
            return (
                f"its enum {tp.__name__!r} has the member {member.name} = {show(member.value)}, which is stored "
                "by its value and would not read back; give the members str or int values"
            )
    return None


def _json_kind(tp: object) -> str:
    origin = typing.get_origin(tp) or tp
    if origin is bool:
        return "boolean"
    if origin is int:
        return "integer"  # json keeps 2 and 2.0 apart
    if origin is float:
        return "number"
    if origin in (list, tuple, set, frozenset):
        return "array"
    if origin is dict or (isinstance(origin, type) and attrs.has(origin)):
        return "object"
    return "string"  # str, bytes, datetime, date, enums, UUID...: all JSON strings


def _ambiguous_union(tp: object) -> str | None:
    """Why a union cannot round-trip (two members stored as the same JSON kind), if so."""
    origin = typing.get_origin(tp)
    if origin is not typing.Union and origin is not types.UnionType:
        return None
    members = [a for a in typing.get_args(tp) if a is not type(None)]
    seen: dict[str, object] = {}
    for member in members:
        kind = _json_kind(member)
        if kind == "object" and all(isinstance(m, type) and attrs.has(m) for m in members if _json_kind(m) == "object"):
            continue  # cattrs tells attrs classes apart by their fields
        if kind in seen:
            first = getattr(seen[kind], "__name__", seen[kind])
            second = getattr(member, "__name__", member)
            return (
                f"its union type mixes {first} and {second}, which are both stored as JSON {kind}s and "
                "could not be told apart when read back; use one type, or attrs classes"
            )
        seen[kind] = member
    return None


def structure(value: object, tp: Any) -> Any:
    """
    Build a value of type *tp* from its JSON-ready form.

    Raises:
        RecordLoadError: *value* does not fit *tp*; the error names the field,
            the expected type and the value found.
    """
    try:
        return converter.structure(value, tp)
    except Exception as exc:
        raise load_error(exc, value, tp) from exc


_MISSING: Any = object()


def load_error(exc: BaseException, data: object, tp: object) -> RecordLoadError:
    """The :class:`RecordLoadError` for *exc*, raised by cattrs while structuring *data* as *tp*."""
    root = type_label(tp)
    path, expected, leaf = _locate(exc, data, tp)
    if leaf is _MISSING:
        detail = f"missing (expected {type_label(expected)})"
    else:
        detail = f"expected {type_label(expected)} but got {show(leaf)} (type={type(leaf).__name__})"
    return RecordLoadError(f"a stored {root}", root + path, detail)


def _locate(exc: BaseException, data: object, tp: object) -> tuple[str, object, object]:
    """Follow cattrs' nested validation errors to the failing leaf: (path, its type, its stored value)."""
    path = ""
    expected = tp
    while True:
        subs: tuple[BaseException, ...] = getattr(exc, "exceptions", ())
        if not subs:
            return path, expected, data
        exc = subs[0]
        for note in getattr(exc, "__notes__", ()):
            if isinstance(note, AttributeValidationNote):
                if not isinstance(data, dict):
                    return path, expected, data  # not even an object: the value itself is wrong
                path += f".{note.name}"
                expected = note.type
                data = typing.cast("dict[str, object]", data).get(note.name, _MISSING)
                break
            if isinstance(note, IterableValidationNote):
                key: Any = note.index
                path += f"[{key!r}]"
                expected = note.type
                try:
                    data = typing.cast("Any", data)[key]
                except (LookupError, TypeError):
                    data = _MISSING
                break


def type_label(tp: object) -> str:
    """A short name for the annotation *tp* (``int``, ``list[Item]``, ``str | None``)."""
    if tp is None or tp is type(None):
        return "None"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(type_label(a) for a in args)
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is not None and args:
        inner = ", ".join("..." if a is Ellipsis else type_label(a) for a in args)
        return f"{getattr(origin, '__name__', None) or type_label(origin)}[{inner}]"
    name = getattr(tp, "__name__", None)
    return name if isinstance(name, str) else repr(tp).replace("typing.", "")


_repr = reprlib.Repr()  # keyword arguments only from Python 3.12
_repr.maxlevel = 3
_repr.maxdict = 4
_repr.maxstring = _repr.maxother = 80
_BIG_INT_BITS = 4096  # ints this long or longer are shown by size, not by their (maybe unprintable) digits


def show(value: object) -> str:
    """A short, safe ``repr`` of *value* for an error message (never raises)."""
    if isinstance(value, int) and value.bit_length() >= _BIG_INT_BITS:
        return f"<an int of {value.bit_length()} bits>"
    try:
        return _repr.repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__, an int too long to print inside a container
        return f"<a {type(value).__name__}>"


def unstructure(value: object, tp: Any = None) -> Any:
    """The JSON-ready form of *value*, declared as type *tp* (default: its own type)."""
    return converter.unstructure(value, unstructure_as=tp)


def dumps(value: object, tp: object) -> str:
    """*value* of declared type *tp* as compact JSON."""
    return json.dumps(converter.unstructure(value, unstructure_as=tp), separators=(",", ":"))


def loads(text: str, tp: Any) -> Any:
    """The value of type *tp* stored as *text*."""
    return converter.structure(json.loads(text), tp)
