"""
Typed values from JSON a person wrote: forms, signal messages and a workflow's input.

The JSON is structured into the declared type by the library's own converter
(the one the stores use), strictly: a value whose JSON does not come back the
same (``"5"`` for an ``int``, ``1`` for a ``bool``) is refused, and every refusal
is the library's typed error naming the field (``TaskFormError``,
``SignalTypeError``, ``WorkflowInputError``). The command line and the web API
both read their input through here.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any

import attrs

from ._errors import RecordLoadError, SignalTypeError, TaskFormError, WorkflowInputError
from ._serialize import show, structure, type_label, unstructure
from ._tasks import Task
from ._workflow import Workflow, spec_of

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


def typed(value: object, tp: type) -> tuple[object, RecordLoadError | None]:
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
            raise TaskFormError(task.id, "takes no form, but one was given")
        return None
    form, bad = typed(value, task.form_type)
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
    message, bad = typed(value, matching[0])
    if bad is not None:
        raise SignalTypeError(instance_id, f"{bad.field_path}: {bad.detail}", field_path=bad.field_path)
    return message


def input_for(workflow: type[Workflow], data: Mapping[str, object]) -> Workflow:
    """
    A new workflow object from the JSON object *data* of its fields.

    Raises:
        WorkflowInputError: A field is missing, unknown, or does not fit its type.
    """
    name = spec_of(workflow).name
    declared = {f.name for f in spec_of(workflow).fields}
    unknown = sorted(set(data) - declared)
    if unknown:
        msg = f"no such field (fields: {', '.join(sorted(declared))})"
        raise WorkflowInputError(name, unknown[0], msg)
    made, bad = typed(dict(data), workflow)
    if bad is not None:
        path = bad.field_path.removeprefix(workflow.__name__).lstrip(".") or "(input)"
        raise WorkflowInputError(name, path, bad.detail)
    assert isinstance(made, workflow)  # noqa: S101 - the converter builds the class it was given
    return made
