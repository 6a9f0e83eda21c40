"""Checks of start() input against the declared field types, compiled once per class."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._errors import WorkflowInputError
from ._spec import WorkflowSpec

# A checker returns None when the value fits, else (path suffix, what was expected).
Checker = Callable[[object], "tuple[str, str] | None"]


def _ok(_: object) -> tuple[str, str] | None:
    return None


def _describe(tp: object) -> str:
    return getattr(tp, "__name__", None) or repr(tp)


def checker_for(tp: object) -> Checker:
    """A checker for the annotation *tp* (unknown forms accept anything)."""
    if tp is Any or isinstance(tp, (str, typing.TypeVar)):
        return _ok
    if tp is None or tp is type(None):
        return lambda v: None if v is None else ("", "None")
    if tp is float:
        return lambda v: None if isinstance(v, (int, float)) and not isinstance(v, bool) else ("", "float")
    if tp is int:
        return lambda v: None if isinstance(v, int) and not isinstance(v, bool) else ("", "int")
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        members = [checker_for(a) for a in args]
        expected = " | ".join(_describe(a) for a in args)
        return lambda v: None if any(m(v) is None for m in members) else ("", expected)
    if origin is typing.Literal:
        return lambda v: None if v in args else ("", f"one of {args!r}")
    if origin in (list, set, frozenset, Sequence) or (origin is tuple and len(args) == 2 and args[1] is ...):  # noqa: PLR2004
        container: type = origin if isinstance(origin, type) and origin is not Sequence else (list | tuple)  # type: ignore[assignment]
        inner = checker_for(args[0]) if args else _ok
        return _each(container, inner, _describe(tp))
    if origin in (dict, Mapping):
        key = checker_for(args[0]) if args else _ok
        val = checker_for(args[1]) if args else _ok
        return _mapping(key, val, _describe(tp))
    if isinstance(origin, type):
        return lambda v: None if isinstance(v, origin) else ("", _describe(tp))
    if isinstance(tp, type):
        return lambda v: None if isinstance(v, tp) else ("", tp.__name__)
    return _ok


def _each(container: Any, inner: Checker, expected: str) -> Checker:
    def check(v: object) -> tuple[str, str] | None:
        if not isinstance(v, container):
            return "", expected
        for i, item in enumerate(typing.cast("Sequence[object]", v)):
            bad = inner(item)
            if bad is not None:
                return f"[{i}]{bad[0]}", bad[1]
        return None

    return check


def _mapping(key: Checker, val: Checker, expected: str) -> Checker:
    def check(v: object) -> tuple[str, str] | None:
        if not isinstance(v, Mapping):
            return "", expected
        for k, item in typing.cast("Mapping[object, object]", v).items():
            if key(k) is not None:
                return f"[{k!r}]", "a valid key: " + expected
            bad = val(item)
            if bad is not None:
                return f"[{k!r}]{bad[0]}", bad[1]
        return None

    return check


def input_validator(spec: WorkflowSpec) -> Callable[[object], None]:
    """
    Compile the input checks of *spec*.

    Returns:
        A function raising :class:`WorkflowInputError` when a new instance's
        variables do not match the declared field types.
    """
    checks = [(f.name, checker_for(f.type)) for f in spec.fields]

    def validate(wf: object) -> None:
        for name, check in checks:
            value = getattr(wf, name)
            bad = check(value)
            if bad is not None:
                path, expected = bad
                msg = f"expected {expected} but got {value!r} (type={type(value).__name__})"
                if path:
                    msg = f"expected {expected} at {name}{path} in {value!r}"
                raise WorkflowInputError(spec.name, name + path, msg)

    return validate
