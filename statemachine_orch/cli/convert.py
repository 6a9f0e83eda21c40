"""
Typed values from the command line's JSON: forms, signals and a workflow's input.

The JSON is structured into the declared type by the library's own converter
(the one the stores use); a value that does not fit fails with the library's
typed error, naming the field (``TaskFormError``, ``SignalTypeError``,
``WorkflowInputError``).
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

import attrs

from statemachine_orch import (
    RecordLoadError,
    SignalTypeError,
    Task,
    TaskFormError,
    Workflow,
    WorkflowInputError,
    spec_of,
)
from statemachine_orch._serialize import show, structure, type_label, unstructure

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


_NO_FIELD: Any = object()


def _member_type(tp: object, key: str | int) -> object:
    """The declared type of field or item *key* of a value of type *tp* (``Any`` when unknown)."""
    if isinstance(tp, type) and attrs.has(tp) and isinstance(key, str):
        return typing.get_type_hints(tp).get(key, Any)
    args = typing.get_args(tp)
    origin = typing.get_origin(tp)
    if origin in (list, tuple, set, frozenset) and args:
        return args[0] if origin is not tuple or (len(args) == 2 and args[1] is Ellipsis) else Any  # noqa: PLR2004
    if origin is dict and len(args) == 2:  # noqa: PLR2004
        return args[1]
    return Any


def _differs(given: object, made: object, path: str, tp: object) -> tuple[str, object, object, object] | None:
    """Where the JSON *given* and the structured value's JSON *made* differ: (path, given, read as, declared type)."""
    seen: tuple[object, object] = (given, made)
    if isinstance(given, dict) and isinstance(made, dict):
        made_fields = typing.cast("dict[str, object]", made)
        for key, value in typing.cast("dict[str, object]", given).items():
            if key not in made_fields:
                return f"{path}.{key}", value, _NO_FIELD, Any
            found = _differs(value, made_fields[key], f"{path}.{key}", _member_type(tp, key))
            if found is not None:
                return found
        return None
    if isinstance(given, list) and isinstance(made, list):
        given_items = typing.cast("list[object]", given)
        made_items = typing.cast("list[object]", made)
        if len(given_items) == len(made_items):
            for index, (a, b) in enumerate(zip(given_items, made_items, strict=True)):
                found = _differs(a, b, f"{path}[{index}]", _member_type(tp, index))
                if found is not None:
                    return found
            return None
    # bool is an int to Python, but true is no number and 1 no boolean in the input.
    if given == made and isinstance(given, bool) == isinstance(made, bool):
        return None
    return path, seen[0], seen[1], tp


def _typed(value: object, tp: type) -> tuple[object, RecordLoadError | None]:
    """
    *value* structured as *tp* by the stores' converter, strictly.

    The converter is lenient where a stored record is concerned (``"yes"`` reads
    as ``True``, ``"5"`` as ``5``): a value whose JSON does not come back the same
    is refused here, naming the field.
    """
    try:
        made = structure(value, tp)
    except RecordLoadError as exc:
        return None, exc
    bad = _differs(value, unstructure(made, tp), type_label(tp), tp)
    if bad is None:
        return made, None
    path, given, read, declared = bad
    if read is _NO_FIELD:
        return None, RecordLoadError(f"a given {type_label(tp)}", path, "no such field")
    detail = f"expected {type_label(declared)} but got {show(given)} (type={type(given).__name__})"
    return None, RecordLoadError(f"a given {type_label(tp)}", path, detail)


def form_for(task: Task, value: object) -> object:
    """
    The form to complete *task* with, built from JSON *value*.

    Raises:
        TaskFormError: The task takes no form and one was given, or *value* does not fit its form type.
    """
    if task.form_type is None:
        if value is not None:
            raise TaskFormError(task.id, "takes no form; leave out --form-json")
        return None
    form, bad = _typed(value, task.form_type)
    if bad is not None:
        raise TaskFormError(task.id, f"{bad.field_path}: {bad.detail}", field_path=bad.field_path)
    return form


def message_for(workflow: type[Workflow], instance_id: str, type_name: str, value: object) -> object:
    """
    The signal message of type *type_name* (a ``@wait_for`` type of *workflow*) built from JSON *value*.

    Raises:
        SignalTypeError: *workflow* waits for no type of that name, or *value* does not fit it.
    """
    accepted = [s.message for s in spec_of(workflow).steps if s.message is not None]
    matching = [t for t in accepted if type_name in (t.__name__, t.__qualname__, f"{t.__module__}.{t.__qualname__}")]
    if not matching:
        names = ", ".join(sorted({t.__name__ for t in accepted})) or "none"
        msg = f"{spec_of(workflow).name} does not wait for {type_name} (it waits for: {names})"
        raise SignalTypeError(instance_id, msg)
    message, bad = _typed(value, matching[0])
    if bad is not None:
        raise SignalTypeError(instance_id, f"{bad.field_path}: {bad.detail}", field_path=bad.field_path)
    return message


# Types stored as JSON text: `-i amount=12.50` means the text "12.50", not the float 12.5
# (which would lose the Decimal's trailing zero), and `-i id=007` the text "007".
_TEXT_TYPES: tuple[type, ...] = (str, Decimal, UUID, dt.datetime, dt.date, dt.time, dt.timedelta)


def _input_value(text: str, tp: object = None) -> object:
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
        data[key.strip()] = _input_value(raw, types_of.get(key.strip()))
    name = spec_of(workflow).name
    declared = set(types_of)
    unknown = sorted(set(data) - declared)
    if unknown:
        msg = f"no such field (fields: {', '.join(sorted(declared))})"
        raise WorkflowInputError(name, unknown[0], msg)
    made, bad = _typed(data, workflow)
    if bad is not None:
        path = bad.field_path.removeprefix(workflow.__name__).lstrip(".") or "(input)"
        raise WorkflowInputError(name, path, bad.detail)
    assert isinstance(made, workflow)  # noqa: S101 - the converter builds the class it was given
    return made
