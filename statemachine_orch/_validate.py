"""
Checks of values against their declared types, at every door (Issue 8).

What start() is given, the variables after every step and compensation attempt,
signal messages and task forms are checked before anything is stored, so that
every stored record loads back. Each type gets, compiled once:

- a *fast* test: exact types only, no allocation. A value it accepts round-trips
  through the stores' converter and JSON unchanged, so nothing else is needed;
- the *full* check, run only when the fast test says no (or has nothing to say):
  a strict, descriptive type check (field, expected type, value), then a real round
  trip through :data:`~statemachine_orch._serialize.converter` and JSON, the way
  the stores write and load, for whatever the type check cannot judge (a value too
  big for JSON, a type cattrs cannot rebuild).
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import enum
import json
import operator
import sys
import types
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import compress
from operator import is_, is_not
from typing import Any

import attrs

from ._errors import VariableTypeError, WorkflowInputError
from ._serialize import converter, load_error, show, type_label
from ._spec import WorkflowSpec

Found = tuple[str, str, object]
"""What a checker found wrong: the path inside the value, the expected type, the value there."""

Checker = Callable[[object], "Found | None"]
Fast = Callable[[object], bool]

_MISSING: Any = object()
_GOOD_MAX = 256  # known-good class tuples kept per workflow class
_INT_FAST = 1 << 4096  # ints smaller than this always print as JSON (Python refuses past 4300 digits)
_dumps = json.JSONEncoder(separators=(",", ":")).encode  # as the SQLite store writes


def _ok(_: object) -> Found | None:
    return None


def _never(_: object) -> bool:
    return False


def _int_fits(v: int) -> bool:
    """Whether the int can be written as JSON (Python's int-to-text limit)."""
    if -_INT_FAST < v < _INT_FAST:
        return True
    try:
        int.__repr__(v)
    except ValueError:
        return False
    return True


def _int_label() -> str:
    return f"int of at most {sys.get_int_max_str_digits()} digits"


# ----------------------------------------------------------------- the full, descriptive check

_checkers: dict[object, Checker] = {}


def checker_for(tp: object) -> Checker:
    """The strict checker of the annotation *tp* (compiled once; unknown forms accept anything)."""
    try:
        found = _checkers.get(tp)
    except TypeError:  # an unhashable annotation
        return _build_checker(tp)
    if found is None:
        cell: list[Checker] = []

        def forward(v: object) -> Found | None:  # what a class that contains itself refers to
            return cell[0](v)

        _checkers[tp] = forward
        found = _build_checker(tp)
        cell.append(found)
        _checkers[tp] = found
    return found


def _build_checker(tp: object) -> Checker:
    if tp is Any or isinstance(tp, (str, typing.TypeVar)):
        return _ok
    if tp is None or tp is type(None):
        return lambda v: None if v is None else ("", "None", v)
    if tp is bool:
        return lambda v: None if isinstance(v, bool) else ("", "bool", v)
    if tp is int:
        return _check_int
    if tp is float:
        return _check_float
    supertype = getattr(tp, "__supertype__", None)  # typing.NewType
    if supertype is not None:
        return checker_for(supertype)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    label = type_label(tp)
    if origin is typing.Annotated:
        return checker_for(args[0])
    if origin is typing.Union or origin is types.UnionType:
        return _union([checker_for(a) for a in args], label)
    if origin is typing.Literal:
        return lambda v: None if any(type(v) is type(a) and v == a for a in args) else ("", label, v)
    if origin in (list, set, frozenset, Sequence) or (origin is tuple and len(args) == 2 and args[1] is ...):  # noqa: PLR2004
        kind: Any = origin
        container: Any = kind if kind is not Sequence else (list, tuple)
        return _each(container, checker_for(args[0]) if args else _ok, label)
    if origin is tuple and args:
        return _fixed_tuple([checker_for(a) for a in args], label)
    if origin in (dict, Mapping):
        key = checker_for(args[0]) if args else _ok
        val = checker_for(args[1]) if args else _ok
        return _mapping(key, val, label)
    if isinstance(origin, type):
        return lambda v: None if isinstance(v, origin) else ("", label, v)
    if isinstance(tp, type):
        if attrs.has(tp):
            return _attrs_checker(tp)
        return lambda v: None if isinstance(v, tp) else ("", label, v)
    return _ok


def _check_int(v: object) -> Found | None:
    if not isinstance(v, int) or isinstance(v, bool):
        return "", "int", v
    return None if _int_fits(v) else ("", _int_label(), v)


def _check_float(v: object) -> Found | None:
    if isinstance(v, float):
        return None
    if not isinstance(v, int) or isinstance(v, bool):
        return "", "float", v
    return None if _int_fits(v) else ("", _int_label(), v)


def _union(members: list[Checker], label: str) -> Checker:
    def check(v: object) -> Found | None:
        deeper: Found | None = None
        for member in members:
            bad = member(v)
            if bad is None:
                return None
            if deeper is None and bad[0]:
                deeper = bad  # the value is of this member's kind, something inside it is wrong
        return deeper if deeper is not None else ("", label, v)

    return check


def _each(container: Any, inner: Checker, label: str) -> Checker:
    def check(v: object) -> Found | None:
        if not isinstance(v, container):
            return "", label, v
        for i, item in enumerate(typing.cast("Sequence[object]", v)):
            bad = inner(item)
            if bad is not None:
                return f"[{i}]{bad[0]}", bad[1], bad[2]
        return None

    return check


def _fixed_tuple(members: list[Checker], label: str) -> Checker:
    def check(v: object) -> Found | None:
        if type(v) is not tuple and not isinstance(v, tuple):
            return "", label, v
        items = typing.cast("tuple[object, ...]", v)
        if len(items) != len(members):
            return "", label, items
        for i, (item, member) in enumerate(zip(items, members, strict=True)):
            bad = member(item)
            if bad is not None:
                return f"[{i}]{bad[0]}", bad[1], bad[2]
        return None

    return check


def _mapping(key: Checker, val: Checker, label: str) -> Checker:
    def check(v: object) -> Found | None:
        if not isinstance(v, Mapping):
            return "", label, v
        for k, item in typing.cast("Mapping[object, object]", v).items():
            bad = key(k)
            if bad is not None:
                return f"[{show(k)}]", f"a key of {label}", k
            bad = val(item)
            if bad is not None:
                return f"[{show(k)}]{bad[0]}", bad[1], bad[2]
        return None

    return check


def _field_types(cls: type) -> list[tuple[str, object]]:
    """The stored fields of an attrs class with their resolved annotations."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an unresolvable annotation is accepted as it is
        hints = {}
    return [(f.name, hints.get(f.name, f.type)) for f in attrs.fields(cls) if f.init]


def _attrs_checker(cls: type) -> Checker:
    fields = [(name, checker_for(tp)) for name, tp in _field_types(cls)]
    label = cls.__name__

    def check(v: object) -> Found | None:
        if not isinstance(v, cls):
            return "", label, v
        for name, field_check in fields:
            value = getattr(v, name)
            bad = field_check(value)
            if bad is not None:
                return f".{name}{bad[0]}", bad[1], bad[2]
        return None

    return check


# ----------------------------------------------------------------- the fast test

_fasts: dict[object, Fast | None] = {}
# Every value of these exact classes round-trips (a time may carry a zone it cannot write: not here).
_EXACT: tuple[type, ...] = (str, bool, bytes, dt.datetime, dt.date, dt.timedelta, decimal.Decimal, uuid.UUID)


def fast_for(tp: object) -> Fast | None:
    """
    An exact-type test of the annotation *tp*, or ``None`` when it has none.

    A value it accepts is of the declared type and round-trips through the stores
    unchanged; a value it refuses is judged by the full check.
    """
    try:
        if tp in _fasts:
            return _fasts[tp]
    except TypeError:
        return None
    cell: list[Fast | None] = [None]
    _fasts[tp] = lambda v: (f := cell[0]) is not None and f(v)  # a class that contains itself
    built = _build_fast(tp)
    cell[0] = built
    _fasts[tp] = built
    return built


def _fast_int(v: object) -> bool:
    return type(v) is int and -_INT_FAST < v < _INT_FAST


def _fast_float(v: object) -> bool:
    return type(v) is float or (type(v) is int and -_INT_FAST < v < _INT_FAST)


def _build_fast(tp: object) -> Fast | None:
    if tp is int:
        return _fast_int
    if tp is float:
        return _fast_float
    if tp is None or tp is type(None):
        return lambda v: v is None
    if isinstance(tp, type):
        cls: type = tp
        if cls in _EXACT or _plain_enum(cls):
            return lambda v: type(v) is cls
        if attrs.has(cls):
            return _fast_attrs(cls)
        return None
    origin: Any = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        if type(None) in args and len(args) == 2:  # noqa: PLR2004 - X | None
            inner = fast_for(next(a for a in args if a is not type(None)))
            if inner is not None:
                return lambda v: v is None or inner(v)
        return None
    if origin in (list, set, frozenset) or (origin is tuple and len(args) == 2 and args[1] is ...):  # noqa: PLR2004
        item = fast_for(args[0]) if args else None
        if item is None:
            return None
        flat = _flat_attrs(args[0])
        return _fast_each(origin, item) if flat is None else _fast_each_flat(origin, *flat)
    if origin is dict and len(args) == 2 and args[0] in (str, int):  # noqa: PLR2004
        key = fast_for(args[0])
        val = fast_for(args[1])
        if key is None or val is None:
            return None

        def mapping(v: object) -> bool:
            if type(v) is not dict:
                return False
            for k, item in typing.cast("dict[object, object]", v).items():  # noqa: SIM110 - a loop beats all() here
                if not (key(k) and val(item)):
                    return False
            return True

        return mapping
    return None


def _plain_enum(cls: type) -> bool:
    """Whether *cls* is an enum whose values are all str or int (stored as those)."""
    return issubclass(cls, enum.Enum) and all(type(m.value) in (str, int) for m in cls)


def _fast_each(container: type, item: Fast) -> Fast:
    def each(v: object) -> bool:
        if type(v) is not container:
            return False
        for i in typing.cast("list[object]", v):  # noqa: SIM110 - a loop beats all() and a generator here
            if not item(i):
                return False
        return True

    return each


def _fast_each_flat(
    container: type,
    cls: type,
    get: Callable[[object], tuple[object, ...]],
    expected: tuple[type, ...],
    ints: tuple[int, ...],
) -> Fast:
    """The fast test of a list of attrs objects whose fields all have simple types: one loop, no calls."""
    limit = _INT_FAST
    if len(expected) in (1, 2, 3):
        return _fast_each_small(container, cls, get, expected, ints)

    def each(v: object) -> bool:
        if type(v) is not container:
            return False
        for item in typing.cast("list[object]", v):
            if type(item) is not cls:
                return False
            values = get(item)
            for value, value_cls in zip(values, expected, strict=True):
                if type(value) is not value_cls:
                    return False
            for i in ints:
                if not -limit < values[i] < limit:  # type: ignore[operator]  # an int: its class was checked
                    return False
        return True

    return each


def _fast_each_small(
    container: type,
    cls: type,
    get: Callable[[object], tuple[object, ...]],
    expected: tuple[type, ...],
    ints: tuple[int, ...],
) -> Fast:
    """:func:`_fast_each_flat` for records of one to three fields: each field tested inline (a hot path of start())."""
    limit = _INT_FAST
    t0, t1, t2 = (*expected, _NoClass, _NoClass)[:3]
    n0, n1, n2 = (i in ints for i in range(3))
    size = len(expected)

    def each(v: object) -> bool:
        if type(v) is not container:
            return False
        for item in typing.cast("list[object]", v):
            if type(item) is not cls:
                return False
            values = get(item)
            a = values[0]
            if type(a) is not t0 or (n0 and not -limit < a < limit):  # type: ignore[operator]
                return False
            if size > 1:
                b = values[1]
                if type(b) is not t1 or (n1 and not -limit < b < limit):  # type: ignore[operator]
                    return False
                if size > 2:  # noqa: PLR2004 - the third field
                    c = values[2]
                    if type(c) is not t2 or (n2 and not -limit < c < limit):  # type: ignore[operator]
                        return False
        return True

    return each


def _flat_attrs(
    tp: object,
) -> tuple[type, Callable[[object], tuple[object, ...]], tuple[type, ...], tuple[int, ...]] | None:
    """For an attrs class whose fields all have simple types: the class, a getter, their classes, where ints are."""
    if not (isinstance(tp, type) and attrs.has(tp)):
        return None
    fields = _field_types(tp)
    classes = [_exact_type(t) for _, t in fields]
    exact = [c for c in classes if c is not None]
    if not fields or len(exact) != len(classes):
        return None
    ints = tuple(i for i, c in enumerate(exact) if c is int)
    return tp, _getter(tuple(name for name, _ in fields)), tuple(exact), ints


def _fast_attrs(cls: type) -> Fast | None:
    fields = _field_types(cls)
    shape = _shape([tp for _, tp in fields])
    if shape is None:
        return None
    get = _getter(tuple(name for name, _ in fields))
    return lambda v: type(v) is cls and shape(get(v))


def _exact_type(tp: object) -> type | None:
    """The one class a value of *tp* must have for the fast test (``float``: a float), if so simple."""
    if isinstance(tp, type) and (tp in _EXACT or tp is int or tp is float or _plain_enum(tp)):
        return tp
    return None


class _NoClass:
    """A class no value has: the place of a field without an exact class in a shape."""


def _is_none(v: object) -> bool:
    return v is None


def _shape(annotations: Sequence[object], *, partial: bool = False) -> Callable[[tuple[object, ...]], bool] | None:
    """
    The fast test of a tuple of values declared as *annotations* (an object's fields).

    A value of a simple type passes when its class is the declared one (no call);
    ints, ``X | None`` and the others go through their own fast tests. ``None`` when
    one of them has none (with *partial*, such a value always fails the test instead).
    """
    classes: list[type] = []
    tests: list[Fast | None] = []
    for tp in annotations:
        cls = _exact_type(tp)
        if cls is not None and cls is not int:
            classes.append(cls)
            tests.append(_fast_float if cls is float else None)  # a float variable may hold an int
            continue
        maybe = _optional_exact(tp)
        if maybe is not None:
            classes.append(maybe)
            tests.append(_is_none)
            continue
        test = fast_for(tp)
        if test is None:
            if not partial:
                return None
            test = _never
        classes.append(_NoClass)
        tests.append(test)
    expected = tuple(classes)
    called = tuple(tests)

    def check(values: tuple[object, ...]) -> bool:
        for value, cls, test in zip(values, expected, called, strict=True):
            if type(value) is cls:
                continue
            if test is None or not test(value):
                return False
        return True

    return check


def _optional_exact(tp: object) -> type | None:
    """``X`` for ``X | None`` where X is a simple type other than int (ints need a size check)."""
    origin = typing.get_origin(tp)
    if origin is not typing.Union and origin is not types.UnionType:
        return None
    args = typing.get_args(tp)
    if len(args) != 2 or type(None) not in args:  # noqa: PLR2004
        return None
    cls = _exact_type(next(a for a in args if a is not type(None)))
    return cls if cls is not int else None


def _getter(names: tuple[str, ...]) -> Callable[[object], tuple[object, ...]]:
    """``obj -> (obj.a, obj.b, ...)`` for *names*, always a tuple."""
    if not names:
        return lambda _: ()
    if len(names) == 1:
        name = names[0]
        return lambda obj: (getattr(obj, name),)
    return operator.attrgetter(*names)


# ----------------------------------------------------------------- copies for putting variables back

_IMMUTABLE: tuple[type, ...] = (
    str,
    int,
    float,
    bool,
    bytes,
    type(None),
    dt.datetime,
    dt.date,
    dt.time,
    dt.timedelta,
    decimal.Decimal,
    uuid.UUID,
    enum.Enum,
)


def _immutable(tp: object, seen: frozenset[object] = frozenset()) -> bool:
    """Whether values of *tp* cannot change in place (so a snapshot may share them)."""
    if tp is None or (isinstance(tp, type) and issubclass(tp, _IMMUTABLE)):
        return True
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        return True
    if origin in (typing.Union, types.UnionType, tuple, frozenset):
        return bool(args) and all(a is Ellipsis or _immutable(a, seen) for a in args)
    if isinstance(tp, type) and attrs.has(tp) and tp not in seen:
        return is_frozen(tp) and all(_immutable(t, seen | {tp}) for _, t in _field_types(tp))
    return False


def is_frozen(cls: type) -> bool:
    """Whether instances of the attrs class *cls* refuse new values for their fields."""
    props: Any = getattr(cls, "__attrs_props__", None)
    if props is not None:
        return bool(props.is_frozen)
    return getattr(cls.__setattr__, "__name__", "") == "_frozen_setattrs"  # attrs before ClassProps


def _copier_for(tp: object) -> Callable[[object], object] | None:
    """How to keep a value of *tp* safe from changes in place (``None``: it cannot change)."""
    if _immutable(tp):
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (list, set, dict) and args and all(_immutable(a) for a in args):
        return _shallow_copy
    return _deepcopy


def _shallow_copy(value: object) -> object:
    if type(value) is list or type(value) is dict or type(value) is set:
        return typing.cast("list[object] | dict[object, object] | set[object]", value).copy()
    return _deepcopy(value)  # not even the declared container: keep a full copy


def _deepcopy(value: object) -> object:
    try:
        return copy.deepcopy(value)
    except Exception:  # noqa: BLE001 - a value that cannot be copied is kept as it is
        return value


# ----------------------------------------------------------------- what is wrong, and where


@attrs.frozen
class Mismatch:
    """
    A value that does not match its declared type, or that cannot be stored.

    Attributes:
        path: Where, inside the checked value (``"count"``, ``"items[2].qty"``).
        expected: The declared type there.
        value: The value found there.
        why: Why it cannot be stored, when its type is right but JSON cannot hold it.
    """

    path: str
    expected: str
    value: object
    why: str | None = None

    def describe(self) -> str:
        """``expected int but got None (type=NoneType)``, or why it cannot be stored."""
        if self.why is not None:
            return f"{show(self.value)} cannot be stored as JSON ({self.why})"
        return f"expected {self.expected} but got {show(self.value)} (type={type(self.value).__name__})"


def _round_trip(value: object, tp: Any) -> str | None:
    """Why *value* does not survive the stores' write and load, or ``None`` when it does."""
    try:
        data = converter.unstructure(value, unstructure_as=tp)
        text = _dumps(data)
    except Exception as exc:  # noqa: BLE001 - whatever cattrs or json raise
        return f"{type(exc).__name__}: {exc}"
    try:
        converter.structure(json.loads(text), tp)
    except Exception as exc:  # noqa: BLE001 - whatever cattrs raises
        return str(load_error(exc, json.loads(text), tp).detail)
    return None


def _full(value: object, tp: object, check: Checker) -> Mismatch | None:
    bad = check(value)
    if bad is not None:
        return Mismatch(bad[0], bad[1], bad[2])
    why = _round_trip(value, tp)
    return None if why is None else Mismatch("", type_label(tp), value, why)


def value_mismatch(value: object, tp: object) -> Mismatch | None:
    """
    What is wrong with *value* as a value of *tp* (a message, a form), or ``None``.

    The path of the result starts at the value: ``.amount``, ``[2]``, or empty.
    """
    fast = fast_for(tp)
    if fast is not None and fast(value):
        return None
    return _full(value, tp, checker_for(tp))


# ----------------------------------------------------------------- one workflow class's variables


class VariablesValidator:
    """
    The checks of one workflow class's variables, compiled once per class.

    Called with a new workflow object (``start()``), it checks every variable and
    raises :class:`WorkflowInputError`. Around every step and compensation attempt,
    :meth:`snapshot` keeps the variables and :meth:`check_step` checks those the
    attempt changed (the others were checked before, or loaded by the converter).
    """

    __slots__ = (
        "_copies",
        "_copy_at",
        "_deep",
        "_fast",
        "_fields",
        "_good",
        "_indexes",
        "_n",
        "_numeric",
        "_pick_checked",
        "_plan",
        "_read",
        "_same",
        "_shape",
        "read",
        "start",
        "workflow",
    )

    def __init__(self, spec: WorkflowSpec) -> None:
        """Compile the checks of *spec*'s fields."""
        self.workflow = spec.name
        names = tuple(f.name for f in spec.fields)
        self._n = len(names)
        self._read = _getter(names)
        self.read: Callable[[object], tuple[object, ...]] = self._read
        """``read(wf)``: the variables of *wf*, in declaration order (a snapshot outside strict mode)."""
        shape = _shape([f.type for f in spec.fields], partial=True)
        assert shape is not None  # noqa: S101 - partial shapes always exist
        self._shape = shape
        self._fast: tuple[Fast, ...] = tuple(_field_fast(f.type) for f in spec.fields)
        self._fields: tuple[tuple[str, object, Checker], ...] = tuple(
            (f.name, f.type, checker_for(f.type)) for f in spec.fields
        )
        # Variables that can change in place: a strict snapshot keeps a copy of each.
        copies: list[tuple[int, Callable[[object], object]]] = []
        for i, f in enumerate(spec.fields):
            copier = _copier_for(f.type)
            if copier is not None:
                copies.append((i, copier))
        self._copies = tuple(copies)
        # How to tell that such a variable still holds what its copy holds (None: never sure).
        self._same = tuple(
            (
                i,
                _same_list
                if copier is _shallow_copy and typing.get_origin(spec.fields[i].type) is list
                else _same_dict
                if copier is _shallow_copy and typing.get_origin(spec.fields[i].type) is dict
                else None,
            )
            for i, copier in copies
        )
        self._indexes = tuple(range(self._n))
        self._copy_at = {i: self._n + j for j, (i, _) in enumerate(copies)}
        # The classes of a tuple of values that passed the full fast test: for the
        # variables whose class decides (str, bool, int...), the same classes pass
        # again; the others ("deep": containers, attrs objects...) are looked at anew.
        self._good: set[tuple[type, ...]] = set()
        self._deep = tuple(i for i, f in enumerate(spec.fields) if not _class_decides(f.type))
        self._numeric = tuple(i for i, f in enumerate(spec.fields) if _exact_type(f.type) in (int, float))
        checked = sorted({*self._deep, *self._numeric})
        self._pick_checked = operator.itemgetter(*checked) if checked else None
        # For start(): per variable, the class that passes at once (not int: its size
        # counts too), else its fast test.
        plan: list[tuple[str, type, Fast]] = []
        for f, fast in zip(spec.fields, self._fast, strict=True):
            cls = _exact_type(f.type)
            maybe = _optional_exact(f.type)
            if cls is not None and cls is not int:
                plan.append((f.name, cls, _fast_float if cls is float else _never))
            elif maybe is not None:
                plan.append((f.name, maybe, _is_none))
            else:
                plan.append((f.name, _NoClass, fast))
        self._plan = tuple(plan)
        self.start: Callable[[object], None] = self._start()
        """``start(wf)``: check a new instance's variables (raises :class:`WorkflowInputError`)."""

    def __call__(self, wf: object) -> None:
        """
        Check the variables of a workflow object about to start (as :attr:`start`).

        Raises:
            WorkflowInputError: A variable does not match its declared type, or
                cannot be stored.
        """
        self.start(wf)

    def _start(self) -> Callable[[object], None]:
        plan = self._plan
        slow = self._refuse

        def start(wf: object) -> None:
            # start()'s hot path: one pass, a variable of its exact class costs no call.
            for name, cls, test in plan:
                value = getattr(wf, name)
                if type(value) is not cls and not test(value):
                    slow(wf)
                    return

        return start

    def _refuse(self, wf: object) -> None:
        """The long way of :attr:`start`: raise for the first variable that is really wrong."""
        found = self._mismatches(self._read(wf), range(self._n), first=True)
        if found:
            _, bad = found[0]
            raise WorkflowInputError(self.workflow, bad.path, bad.describe())

    def _passes(self, values: tuple[object, ...], before: tuple[object, ...] | None) -> bool:
        """The fast test of *values* (with *before*: of the deep and numeric ones other than before)."""
        types = tuple(map(type, values))
        good = self._good
        if types not in good:
            if not self._shape(values):
                return False
            if len(good) < _GOOD_MAX:
                good.add(types)
            return True
        fast = self._fast
        for i in self._deep:
            value = values[i]
            if (before is None or value is not before[i]) and not fast[i](value):
                return False
        for i in self._numeric:
            value = values[i]
            if type(value) is int and not -_INT_FAST < value < _INT_FAST:  # an int too long for JSON
                return False
        return True

    def settled(self, wf: object, before: tuple[object, ...]) -> bool:
        """
        Whether the variables of *wf* after an attempt need no closer look (*before*: :meth:`snapshot` before it).

        The memory store's cheap test (see ``strict`` in :meth:`check_step`): true when
        every variable holds an object equal to *before*'s, or when those that changed
        pass the fast test. When false, :meth:`check_step` finds out what is wrong.
        """
        values = self._read(wf)
        if self._copies:
            before = before[: self._n]  # without the copies kept for restore()
        try:
            if values == before:
                return True
        except Exception:  # noqa: BLE001 - a value whose == raises (an array): look at each
            return False
        # The memory store's hot path, in C calls: the classes are known good, and
        # the deep and numeric variables (when any) hold what they held.
        if tuple(map(type, values)) in self._good and (
            self._pick_checked is None or self._pick_checked(values) == self._pick_checked(before)
        ):
            return True
        return self._passes(values, before)

    def _mismatches(
        self, values: tuple[object, ...], which: Iterable[int], *, first: bool
    ) -> list[tuple[int, Mismatch]]:
        out: list[tuple[int, Mismatch]] = []
        for i in which:
            value = values[i]
            if self._fast[i](value):
                continue
            name, tp, check = self._fields[i]
            bad = _full(value, tp, check)
            if bad is not None:
                out.append((i, attrs.evolve(bad, path=name + bad.path)))
                if first:
                    break
        return out

    def snapshot(self, wf: object, strict: bool = True) -> tuple[object, ...]:
        """
        The variables as they are now, for :meth:`check_step`.

        With *strict*, followed by a copy of each variable that can change in place
        (a list, a dict...), so that such changes are checked and undone too. (Read
        attribute by attribute: touching ``__dict__`` would slow every later access.)
        """
        values = self._read(wf)
        copies = self._copies
        if not strict or not copies:
            return values
        if len(copies) == 1:
            i, copier = copies[0]
            return (*values, copier(values[i]))
        return values + tuple([copier(values[i]) for i, copier in copies])

    def restore(self, wf: object, before: tuple[object, ...]) -> None:
        """
        Put every variable of *wf* back to what *before* (a strict :meth:`snapshot`) holds.

        A failed attempt changes nothing: what it assigned, and what it changed in
        place, are undone before the next attempt, the error route or the saga.
        """
        copy_at = self._copy_at if len(before) > self._n else {}
        for i, (name, _, _) in enumerate(self._fields):
            object.__setattr__(wf, name, before[copy_at.get(i, i)])

    def check_step(
        self,
        wf: object,
        before: tuple[object, ...],
        restore_all: bool = True,
        strict: bool = True,
        values: tuple[object, ...] | None = None,
    ) -> None:
        """
        Check the variables an attempt gave new values; on a mismatch put them back and raise.

        The others were checked after an earlier attempt, at start, or loaded by the
        converter.

        Args:
            wf: The workflow object.
            before: Its :meth:`snapshot` taken before the attempt (with the same *strict*).
            restore_all: Put every variable back (a step outside forks); otherwise
                only the mismatched ones (a branch: siblings may have written others).
            strict: For a store that writes JSON: a variable counts as new when it
                holds another object than before, and the contents of every variable
                that can change in place are checked. Without it (the memory store,
                which keeps the objects themselves and writes nothing) only variables
                given an unequal object are checked: cheaper, and nothing it lets pass
                can break that store.
            values: :meth:`read` after the attempt, when the caller has it already.

        Raises:
            VariableTypeError: A variable does not match its declared type, or cannot
                be stored; it names the first such field.
        """
        if values is None:
            if not strict and self.settled(wf, before):
                return
            values = self._read(wf)
        fast = self._fast
        # The variables holding another object than before (then, in strict mode, the
        # containers changed in place: no longer holding their copy's objects); the
        # fast test for each.
        suspects: list[int] | None = None
        for i in compress(self._indexes, map(is_not, values, before)):
            if not fast[i](values[i]):
                suspects = [*(suspects or ()), i]
        if strict:
            n = self._n
            for j, (i, same) in enumerate(self._same):
                value = values[i]
                if value is before[i] and (same is None or not same(value, before[n + j])) and not fast[i](value):
                    suspects = [*(suspects or ()), i]
        if suspects is None:
            return
        found = self._mismatches(values, suspects, first=False)
        if not found:
            return
        fields = self._fields
        copy_at = self._copy_at if len(before) > self._n else {}
        for i in range(self._n) if restore_all else (i for i, _ in found):
            object.__setattr__(wf, fields[i][0], before[copy_at.get(i, i)])
        bad = found[0][1]
        msg = bad.describe()
        if len(found) > 1:
            msg += f" (also wrong: {', '.join(m.path for _, m in found[1:])})"
        raise VariableTypeError(self.workflow, bad.path, msg)


def _same_list(value: Any, kept: Any) -> bool:
    """Whether a list still holds exactly the objects of its copy *kept* (``Any``: no cast() call on this hot path)."""
    return value.__class__ is list and len(value) == len(kept) and all(map(is_, value, kept))


def _same_dict(value: Any, kept: Any) -> bool:
    """Whether a dict still holds exactly the keys and objects of its copy *kept*."""
    return (
        value.__class__ is dict
        and len(value) == len(kept)
        and all(map(is_, value, kept))
        and all(map(is_, value.values(), kept.values()))
    )


def _class_decides(tp: object) -> bool:
    """Whether the class of a value alone says it fits *tp* (ints aside: their size is checked apart)."""
    return _exact_type(tp) is not None or _optional_exact(tp) is not None


def _field_fast(tp: object) -> Fast:
    """One field's part of the shape test: whether its value needs the full check."""
    cls = _exact_type(tp)
    if cls is int:
        return _fast_int
    if cls is not None:
        return lambda v: type(v) is cls
    return fast_for(tp) or _never


def input_validator(spec: WorkflowSpec) -> VariablesValidator:
    """
    Compile the variable checks of *spec*.

    Returns:
        A :class:`VariablesValidator`: called with a new instance's workflow object,
        it raises :class:`WorkflowInputError` when a variable does not match its
        declared type or cannot be stored.
    """
    return VariablesValidator(spec)
