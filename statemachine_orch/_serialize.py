"""JSON for variables, forms and messages, through cattrs from the declared types."""

from __future__ import annotations

import json
import types
import typing
from typing import Any

import attrs
from cattrs.errors import StructureHandlerNotFoundError
from cattrs.preconf.json import make_converter

converter = make_converter()
"""The one converter used for everything the stores persist."""


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
    except StructureHandlerNotFoundError as exc:
        return f"its type {getattr(tp, '__name__', tp)!r} cannot be stored as JSON ({exc})"
    except Exception as exc:  # noqa: BLE001 - cattrs raises many kinds for odd types
        return f"its type {tp!r} cannot be stored as JSON ({type(exc).__name__}: {exc})"
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
    """Build a value of type *tp* from its JSON-ready form."""
    return converter.structure(value, tp)


def unstructure(value: object, tp: Any = None) -> Any:
    """The JSON-ready form of *value*, declared as type *tp* (default: its own type)."""
    return converter.unstructure(value, unstructure_as=tp)


def dumps(value: object, tp: object) -> str:
    """*value* of declared type *tp* as compact JSON."""
    return json.dumps(converter.unstructure(value, unstructure_as=tp), separators=(",", ":"))


def loads(text: str, tp: Any) -> Any:
    """The value of type *tp* stored as *text*."""
    return converter.structure(json.loads(text), tp)
