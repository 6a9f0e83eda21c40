"""
Typed values from the command line's JSON: forms, signals and a workflow's input.

The JSON is structured into the declared type strictly, by
``statemachine_orch._typed_json`` (shared with the web API); a value that does
not fit fails with the library's typed error, naming the field
(``TaskFormError``, ``SignalTypeError``, ``WorkflowInputError``).
"""

from __future__ import annotations

import datetime as dt
import json
import types
import typing
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from uuid import UUID

from statemachine_orch import Task, TaskFormError, Workflow, spec_of
from statemachine_orch._typed_json import form_for as _form_for
from statemachine_orch._typed_json import input_for, message_for

from .failures import UsageProblem


def parse_json(text: str, option: str) -> Any:
    """
    The value of the JSON *text* given to *option*.

    Raises:
        UsageProblem: It is not JSON.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        msg = f"{option}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        raise UsageProblem(msg) from None


__all__ = ["form_for", "input_value", "message_for", "parse_json", "workflow_input"]


def form_for(task: Task, value: object) -> object:
    """
    The form to complete *task* with, built from the JSON of ``--form-json``.

    Raises:
        TaskFormError: The task takes no form and one was given, or *value* does not fit its form type.
    """
    if task.form_type is None and value is not None:
        raise TaskFormError(task.id, "takes no form; leave out --form-json")
    return _form_for(task, value)


# Types stored as JSON text: `-i amount=12.50` means the text "12.50", not the float 12.5
# (which would lose the Decimal's trailing zero), and `-i id=007` the text "007".
_TEXT_TYPES: tuple[type, ...] = (str, Decimal, UUID, dt.datetime, dt.date, dt.time, dt.timedelta)


def input_value(text: str, tp: object = None) -> object:
    """
    A ``k=v`` value: JSON when it parses (numbers, booleans, lists...), else the text itself.

    For a field whose type is stored as text (``str``, ``Decimal``, dates, durations,
    UUIDs, or such a type or ``None``), the text itself, unless it is a quoted JSON
    string or ``null`` for an optional field.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    members = [a for a in typing.get_args(tp) if a is not type(None)] if _is_optional(tp) else [tp]
    if len(members) == 1 and isinstance(members[0], type) and issubclass(members[0], _TEXT_TYPES):
        if isinstance(value, str) or (value is None and _is_optional(tp)):
            return value
        return text
    return value


def _is_optional(tp: object) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def workflow_input(workflow: type[Workflow], pairs: Sequence[str], json_text: str | None) -> Workflow:
    """
    A new workflow object from ``--input k=v`` pairs and/or ``--input-json``.

    Raises:
        UsageProblem: A pair is not ``k=v``, or the JSON is not an object.
        WorkflowInputError: A field is missing, unknown, or does not fit its type.
    """
    data: dict[str, object] = {}
    if json_text is not None:
        given = parse_json(json_text, "--input-json")
        if not isinstance(given, dict):
            raise UsageProblem("--input-json: must be a JSON object of the workflow's fields")
        data.update({str(k): v for k, v in typing.cast("dict[object, object]", given).items()})
    types_of = {f.name: f.type for f in spec_of(workflow).fields}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            msg = f"--input {pair!r}: use NAME=VALUE"
            raise UsageProblem(msg)
        data[key.strip()] = input_value(raw, types_of.get(key.strip()))
    return input_for(workflow, data)
