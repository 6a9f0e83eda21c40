"""Checks of start() input against the declared field types, compiled once per class."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

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


_EXACT = (str, int, float, bool, bytes)


def _fast_check(tp: object) -> Callable[[object], bool] | None:
    """An exact-type test for the common annotations; when it says no, the full checker decides."""
    if isinstance(tp, type) and (tp in (str, bool, bytes) or attrs.has(tp)):
        return lambda v: type(v) is tp
    if tp is int:
        return lambda v: type(v) is int
    if tp is float:
        return lambda v: type(v) is float or type(v) is int
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is list and len(args) == 1 and isinstance(args[0], type):
        item = args[0]

        def each(v: object) -> bool:
            if type(v) is not list:
                return False
            for i in typing.cast("list[object]", v):  # noqa: SIM110 - a loop beats all() and a generator here
                if type(i) is not item:
                    return False
            return True

        return each
    if (origin is typing.Union or origin is types.UnionType) and len(args) == 2 and type(None) in args:  # noqa: PLR2004
        inner = _fast_check(next(a for a in args if a is not type(None)))
        if inner is not None:
            return lambda v: v is None or inner(v)
    return None


def input_validator(spec: WorkflowSpec) -> Callable[[object], None]:
    """
    Compile the input checks of *spec*.

    Returns:
        A function raising :class:`WorkflowInputError` when a new instance's
        variables do not match the declared field types.
    """
    # Per field: the exact type that passes at once (the common case), or a fast
    # test; only a value failing those goes through the full, descriptive checker.
    plan: list[tuple[str, type | None, Callable[[object], bool] | None, Checker]] = []
    for f in spec.fields:
        exact = f.type if isinstance(f.type, type) and (f.type in _EXACT or attrs.has(f.type)) else None
        plan.append((f.name, exact, None if exact is not None else _fast_check(f.type), checker_for(f.type)))

    def validate(wf: object) -> None:
        for name, exact, fast, check in plan:
            value = getattr(wf, name)
            if exact is not None:
                if type(value) is exact:
                    continue
            elif fast is not None and fast(value):
                continue
            bad = check(value)
            if bad is not None:
                path, expected = bad
                msg = f"expected {expected} but got {value!r} (type={type(value).__name__})"
                if path:
                    msg = f"expected {expected} at {name}{path} in {value!r}"
                raise WorkflowInputError(spec.name, name + path, msg)

    return validate
