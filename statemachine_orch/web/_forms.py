"""
A task's form class as an HTML form, and a posted HTML form back as the form object.

Each attrs field of the form class is one input, chosen by its declared type:
``str`` (text), ``int``, ``float`` and ``Decimal`` (numbers), ``bool`` (a
checkbox), an ``Enum`` (a choice of its members), ``date`` and ``datetime``
(pickers; a datetime is read as UTC); ``X | None`` makes a field optional (left
empty: ``None``); any other type is written as JSON in a text area. Parsing
checks every field and reports every wrong one, by field name, with nothing
built: the page shows each message beside its input.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Final

import attrs

from statemachine_orch._serialize import type_label, unstructure
from statemachine_orch._typed_json import typed
from statemachine_orch._validate import value_mismatch

_INT: Final = re.compile(r"^[+-]?\d{1,30}$")
_NUMBER_MAX: Final = 100
"""The longest number (in characters) a form takes."""

TEXT_MAX: Final = 10_000
"""The longest text one field takes."""


@attrs.frozen
class FormField:
    """
    One input of a form, as a page shows it.

    Attributes:
        name: The field's name (the input's name).
        label: What the page calls it.
        kind: The input: ``text``, ``integer``, ``number``, ``decimal``, ``checkbox``,
            ``select``, ``date``, ``datetime``, ``json``.
        type_name: The declared type (``int | None``).
        required: Whether it must be filled in.
        value: The text shown in it (for a checkbox: ``"true"`` when ticked).
        choices: For a select: ``(value, label)`` pairs, the empty one first when optional.
        error: What is wrong with the value given, if anything.
    """

    name: str
    label: str
    kind: str
    type_name: str
    required: bool
    value: str
    choices: tuple[tuple[str, str], ...] = ()
    error: str | None = None


def _unwrap(tp: object) -> tuple[object, bool]:
    """The type inside ``X | None`` and whether it was optional."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:  # noqa: PLR2004 - X | None
            return args[0], True
    return tp, False


def _kind(tp: object) -> str:
    if tp is bool:
        return "checkbox"
    if tp is int:
        return "integer"
    if tp is float:
        return "number"
    if tp is decimal.Decimal:
        return "decimal"
    if tp is str:
        return "text"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "select"
    if tp is dt.datetime:
        return "datetime"
    if tp is dt.date:
        return "date"
    return "json"


def _fields(form_type: type) -> list[tuple[attrs.Attribute[Any], object]]:
    hints = typing.get_type_hints(form_type)
    return [(a, hints.get(a.name, Any)) for a in attrs.fields(form_type)]


def _default(attribute: attrs.Attribute[Any]) -> object:
    default: object = attribute.default
    if default is attrs.NOTHING:
        return attrs.NOTHING
    factory: Any = default
    if hasattr(factory, "takes_self") and callable(getattr(factory, "factory", None)):  # an attrs.Factory
        return attrs.NOTHING if factory.takes_self else factory.factory()
    return default


def _shown(value: object, kind: str) -> str:
    """A value as its input shows it."""
    if value is None or value is attrs.NOTHING:
        return ""
    if kind == "checkbox":
        return "true" if value is True else ""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S") if value.tzinfo else value.isoformat()
    if isinstance(value, (dt.date, decimal.Decimal, int, float, str)):
        return value.isoformat() if isinstance(value, dt.date) else str(value)
    return json.dumps(unstructure(value), ensure_ascii=False)


def describe(form_type: type | None) -> dict[str, Any] | None:
    """The form as the JSON API describes it: its type and its fields (name, kind, type, required, choices)."""
    if form_type is None:
        return None
    return {
        "type": form_type.__name__,
        "fields": [
            {
                "name": f.name,
                "kind": f.kind,
                "type": f.type_name,
                "required": f.required,
                "default": f.value,
                "choices": [value for value, _ in f.choices if value],
            }
            for f in fields_of(form_type)
        ],
    }


def fields_of(
    form_type: type, given: Mapping[str, str] | None = None, errors: Mapping[str, str] | None = None
) -> list[FormField]:
    """
    The inputs of *form_type*'s form: its defaults, or the values *given* (a post shown again) with their *errors*.

    Args:
        form_type: An attrs class.
        given: The posted values, by field name.
        errors: What is wrong, by field name (``""``: the form as a whole).
    """
    out: list[FormField] = []
    for attribute, declared in _fields(form_type):
        inner, optional = _unwrap(declared)
        kind = base_kind = _kind(inner)
        default = _default(attribute)
        choices: tuple[tuple[str, str], ...] = ()
        if kind == "checkbox" and optional:
            kind = "select"
            choices = (("", "—"), ("true", "yes"), ("false", "no"))
        elif kind == "select" and isinstance(inner, type) and issubclass(inner, enum.Enum):
            members: list[enum.Enum] = list(inner)
            choices = tuple((str(m.value), m.name.replace("_", " ").lower()) for m in members)
            if optional:
                choices = (("", "—"), *choices)
        if given is not None:
            value = given.get(attribute.name, "")
        elif kind == "select" and choices and not optional and default is attrs.NOTHING:
            value = choices[0][0]
        elif kind == "select" and choices[:1] == (("", "—"),) and isinstance(default, bool):
            value = "true" if default else "false"
        else:
            value = _shown(default, base_kind)
        out.append(
            FormField(
                name=attribute.name,
                label=attribute.name.replace("_", " "),
                kind=kind,
                type_name=type_label(declared),
                required=default is attrs.NOTHING and not optional and kind != "checkbox",
                value=value,
                choices=choices,
                error=(errors or {}).get(attribute.name),
            )
        )
    return out


def shown_values(form: object) -> dict[str, str]:
    """The inputs' texts that show the form object *form* (what :func:`parse` reads back as it)."""
    out: dict[str, str] = {}
    for attribute, declared in _fields(type(form)):
        inner, optional = _unwrap(declared)
        value: object = getattr(form, attribute.name)
        if inner is bool and optional:
            out[attribute.name] = "" if value is None else ("true" if value else "false")
        else:
            out[attribute.name] = _shown(value, _kind(inner))
    return out


class _Wrong(Exception):
    """One field's value is not of its type (the message says why)."""


def _number_text(text: str) -> str:
    text = text.strip()
    if len(text) > _NUMBER_MAX:
        msg = f"at most {_NUMBER_MAX} characters"
        raise _Wrong(msg)
    return text


def _parse(text: str, tp: object, kind: str) -> object:
    """The value of one filled-in input (not empty)."""
    label = type_label(tp)
    if kind == "text":
        return text
    if kind == "integer":
        text = _number_text(text)
        if _INT.match(text) is None:
            msg = f"{text!r} is not a whole number"
            raise _Wrong(msg)
        return int(text)
    if kind == "number":
        text = _number_text(text)
        try:
            number = float(text)
        except ValueError:
            msg = f"{text!r} is not a number"
            raise _Wrong(msg) from None
        if not math.isfinite(number):
            msg = f"{text!r} is not a finite number"
            raise _Wrong(msg)
        return number
    if kind == "decimal":
        text = _number_text(text)
        try:
            exact = decimal.Decimal(text)
        except decimal.InvalidOperation:
            msg = f"{text!r} is not a decimal number"
            raise _Wrong(msg) from None
        if not exact.is_finite():
            msg = f"{text!r} is not a finite number"
            raise _Wrong(msg)
        return exact
    if kind == "select" and isinstance(tp, type) and issubclass(tp, enum.Enum):
        members: list[enum.Enum] = list(tp)
        for member in members:
            if str(member.value) == text:
                return member
        msg = f"{text!r} is not one of {', '.join(str(m.value) for m in members)}"
        raise _Wrong(msg)
    if kind == "date":
        try:
            return dt.date.fromisoformat(text.strip())
        except ValueError:
            msg = f"{text!r} is not a date (YYYY-MM-DD)"
            raise _Wrong(msg) from None
    if kind == "datetime":
        try:
            moment = dt.datetime.fromisoformat(text.strip())
        except ValueError:
            msg = f"{text!r} is not a date and time (YYYY-MM-DDTHH:MM)"
            raise _Wrong(msg) from None
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)
    try:
        data = json.loads(text)
    except ValueError:
        msg = f"not JSON (a {label} is written as JSON here)"
        raise _Wrong(msg) from None
    value, bad = typed(data, typing.cast("type", tp))
    if bad is not None:
        raise _Wrong(bad.detail)
    return value


def parse(form_type: type, posted: Mapping[str, str]) -> tuple[object | None, dict[str, str]]:
    """
    The form object of *posted* (field name -> text), or ``None`` and what is wrong, by field name.

    Every field is checked and every wrong one reported; posted names that are
    no field are ignored (the CSRF token...). The key ``""`` holds an error of
    the form as a whole (its class refused the values).
    """
    values: dict[str, object] = {}
    errors: dict[str, str] = {}
    for attribute, declared in _fields(form_type):
        name = attribute.name
        inner, optional = _unwrap(declared)
        kind = _kind(inner)
        text = posted.get(name, "")
        if len(text) > TEXT_MAX:
            errors[name] = f"at most {TEXT_MAX} characters"
            continue
        if kind == "checkbox" and not optional:
            values[name] = text in ("true", "on")  # an unticked box is not posted at all
            continue
        if text.strip() == "" and (kind != "text" or optional or _default(attribute) is attrs.NOTHING):
            if optional:
                values[name] = None
            elif _default(attribute) is attrs.NOTHING:
                errors[name] = "required"
            continue
        if kind == "checkbox":  # an optional bool: yes, no or nothing
            if text not in ("true", "false"):
                errors[name] = f"{text!r} is not yes or no"
                continue
            values[name] = text == "true"
            continue
        try:
            values[name] = _parse(text, inner, kind)
        except _Wrong as exc:
            errors[name] = str(exc)
    if errors:
        return None, errors
    try:
        form = form_type(**values)
    except (TypeError, ValueError) as exc:
        return None, {"": f"{form_type.__name__} refused these values: {exc}"}
    bad = value_mismatch(form, form_type)
    if bad is not None:
        field = bad.path.lstrip(".").split(".")[0].split("[")[0]
        return None, {field: bad.describe()}
    return form, {}
