"""JSON for variables, forms and messages, through cattrs from the declared types."""

from __future__ import annotations

import json
import typing
from typing import Any

from cattrs.errors import StructureHandlerNotFoundError
from cattrs.preconf.json import make_converter

converter = make_converter()
"""The one converter used for everything the stores persist."""


def serialisation_problem(tp: object) -> str | None:
    """Why values of type *tp* cannot round-trip through JSON, or ``None`` when they can."""
    if isinstance(tp, str):
        return f"its annotation {tp!r} could not be resolved; define that type before the workflow class"
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
