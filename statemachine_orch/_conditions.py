"""
What guards compare, read from their source: simple conditions over the workflow's variables.

A guard such as ``lambda wf: wf.amount > LIMIT and not wf.vip`` is read into a
small formula: comparisons of one variable with a constant (numbers, strings,
enum members, booleans, ``None``; a name is resolved through the guard's
closure, defaults and globals, ``wf.NAME`` through the workflow class), joined
with ``and``, ``or`` and ``not``. Anything else (a call, a comparison of two
variables, arithmetic on a variable) is an opaque part that may be true or
false. So a set of conditions is unsatisfiable only when the readable parts
alone contradict each other, whatever the opaque parts say.

Three readers: :func:`paths` (a path needing contradictory guards cannot
happen; an edge whose guard only holds when an earlier edge's does is never
taken), the definition check that warns about such dead edges, and the
testing toolkit, which draws inputs, forms and messages at and around the
constants guards compare with.
"""

from __future__ import annotations

import ast
import enum
import inspect
import itertools
import math
import operator
import sys
import textwrap
import types
import typing
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import attrs

from ._spec import EdgeSpec, WorkflowSpec

_MAX_OPAQUE = 10  # opaque parts in one question beyond which it is not asked (answered "satisfiable")
_MAX_COMBINATIONS = 20_000


@attrs.frozen
class Atom:
    """A variable compared with a constant (``op`` ``"truth"``: the variable itself, as a bool)."""

    field: str
    op: str
    value: object = None


@attrs.frozen
class _FieldPair:
    """Two variables compared: opaque, but the toolkit draws them equal now and then."""

    left: str
    op: str
    right: str


@attrs.frozen
class Opaque:
    """A part of a guard that cannot be read: true or false, nobody knows which."""

    key: object


@attrs.frozen
class Not:
    """``not arg``."""

    arg: Cond


@attrs.frozen
class And:
    """Every one of ``args``."""

    args: tuple[Cond, ...]


@attrs.frozen
class Or:
    """At least one of ``args``."""

    args: tuple[Cond, ...]


@attrs.frozen
class Const:
    """A part whose value is known without any variable."""

    value: bool


Cond = Atom | Opaque | Not | And | Or | Const
"""A guard read as a formula."""

_OPS: dict[type[ast.cmpop], str] = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
}
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!=", "is": "is", "is not": "is not"}
_ARITH: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
}
_NOTHING = object()


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _simple(value: object) -> bool:
    """A value a comparison can be read against."""
    if value is None or isinstance(value, (bool, int, float, str, bytes, enum.Enum)):
        return True
    if isinstance(value, (tuple, frozenset, set, list)):
        return all(_simple(v) for v in typing.cast("Iterable[object]", value))
    return False


# ----------------------------------------------------------------------------- reading a guard


def function_node(
    fn: Callable[..., Any], text: str | None
) -> ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | None:
    """The AST of *fn* (a lambda is found by its body's text, as the compiler names guards)."""
    try:
        source = textwrap.dedent(inspect.getsource(fn)).strip()
    except (OSError, TypeError):
        return None
    for candidate in (source, source.lstrip("@"), f"({source})"):
        try:
            tree = ast.parse(candidate)
        except SyntaxError:
            continue
        name = getattr(fn, "__name__", "")
        if name == "<lambda>":
            lambdas = [n for n in ast.walk(tree) if isinstance(n, ast.Lambda)]
            # Lambdas of the same text in one statement (stacked decorators) read the same.
            matching = [n for n in lambdas if text is not None and ast.unparse(n.body) == text]
            if matching:
                return matching[0]
            return lambdas[0] if len(lambdas) == 1 else None
        defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name]
        return defs[0] if defs else None
    return None


def first_param(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> str | None:
    """The name of the first parameter (the workflow), if any."""
    args = [*node.args.posonlyargs, *node.args.args]
    return args[0].arg if args else None


def _returned(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> ast.expr | None:
    """The expression a guard returns: a lambda's body, or a def's only ``return`` (after its docstring)."""
    if isinstance(node, ast.Lambda):
        return node.body
    body = [
        s
        for s in node.body
        if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) and isinstance(s.value.value, str))
    ]
    if len(body) == 1 and isinstance(body[0], ast.Return) and body[0].value is not None:
        return body[0].value
    return None


class _Reader:
    """Reads one guard's expression into a :data:`Cond`."""

    def __init__(self, fn: Callable[..., Any], param: str, fields: frozenset[str], owner: type | None) -> None:
        self.fn = fn
        self.param = param
        self.fields = fields
        self.owner = owner
        self.env: dict[str, object] = {}
        try:
            found = inspect.getclosurevars(fn)
        except (TypeError, ValueError):
            found = None
        if found is not None:
            self.env.update(found.builtins)
            self.env.update(found.globals)
            self.env.update(found.nonlocals)
        defaults = getattr(fn, "__defaults__", None) or ()
        code = getattr(fn, "__code__", None)
        if code is not None and defaults:
            names = code.co_varnames[: code.co_argcount]
            self.env.update(zip(names[len(names) - len(defaults) :], defaults, strict=True))
        # Opaque parts with the same text are the same condition, unless the guard closes over values.
        self.identity = fn if getattr(fn, "__closure__", None) or defaults else None

    def read(self, node: ast.expr) -> Cond:
        if isinstance(node, ast.BoolOp):
            args = tuple(self.read(v) for v in node.values)
            return And(args) if isinstance(node.op, ast.And) else Or(args)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return Not(self.read(node.operand))
        if isinstance(node, ast.Compare):
            parts: list[Cond] = []
            left = node.left
            for op, right in zip(node.ops, node.comparators, strict=True):
                parts.append(self._compare(left, op, right))
                left = right
            return parts[0] if len(parts) == 1 else And(tuple(parts))
        field = self._field(node)
        if field is not None:
            return Atom(field, "truth")
        value = self.constant(node)
        if value is not _NOTHING:
            return Const(bool(value))
        return self._opaque(node)

    def _opaque(self, node: ast.AST) -> Opaque:
        return Opaque((self.identity, ast.dump(node)))

    def _field(self, node: ast.expr) -> str | None:
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == self.param
            and node.attr in self.fields
        ):
            return node.attr
        return None

    def _compare(self, left: ast.expr, op: ast.cmpop, right: ast.expr) -> Cond:
        name = _OPS.get(type(op))
        if name is None:
            return self._opaque(ast.Compare(left, [op], [right]))
        lf, rf = self._field(left), self._field(right)
        lv = self.constant(left) if lf is None else _NOTHING
        rv = self.constant(right) if rf is None else _NOTHING
        if lf is not None and rv is not _NOTHING:
            return Atom(lf, name, rv)
        if rf is not None and lv is not _NOTHING and name in _FLIPPED:
            return Atom(rf, _FLIPPED[name], lv)
        if lf is not None and rf is not None:
            return Opaque(_FieldPair(lf, name, rf))
        if lv is not _NOTHING and rv is not _NOTHING:
            try:
                return Const(bool(_evaluate(name, lv, rv)))
            except Exception:  # noqa: BLE001 - a comparison that raises: unknown
                return self._opaque(ast.Compare(left, [op], [right]))
        return self._opaque(ast.Compare(left, [op], [right]))

    def constant(self, node: ast.expr) -> object:
        """The value *node* stands for whatever the variables are, or ``_NOTHING``."""
        value = self._value(node)
        return value if value is not _NOTHING and _simple(value) else _NOTHING

    def _value(self, node: ast.expr) -> object:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self.env.get(node.id, _NOTHING) if node.id != self.param else _NOTHING
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == self.param:
                # wf.LIMIT: a class attribute of the workflow, not one of its variables.
                if node.attr in self.fields or self.owner is None:
                    return _NOTHING
                found = inspect.getattr_static(self.owner, node.attr, _NOTHING)
                return found if _simple(found) else _NOTHING
            base = self._value(node.value)
            if isinstance(base, (types.ModuleType, type)) or (base is not _NOTHING and _simple(base)):
                found = getattr(base, node.attr, _NOTHING)
                return found if _simple(found) or isinstance(found, (types.ModuleType, type)) else _NOTHING
            return _NOTHING
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = self._value(node.operand)
            if isinstance(inner, (int, float)) and not isinstance(inner, bool):
                return -inner if isinstance(node.op, ast.USub) else inner
            return _NOTHING
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
            a, b = self._value(node.left), self._value(node.right)
            if _number(a) and _number(b):
                try:
                    return _ARITH[type(node.op)](a, b)
                except ArithmeticError:
                    return _NOTHING
            return _NOTHING
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items = [self._value(e) for e in node.elts]
            if any(i is _NOTHING for i in items):
                return _NOTHING
            return tuple(items)
        return _NOTHING


def read_guard(
    fn: Callable[..., Any], text: str | None, fields: frozenset[str], owner: type | None = None
) -> Cond | None:
    """*fn* (a guard) as a formula over the *fields*; ``None`` when its source cannot be read at all."""
    node = function_node(fn, text)
    if node is None:
        return None
    param = first_param(node)
    expr = _returned(node)
    if param is None or expr is None:
        return None
    return _Reader(fn, param, fields, owner).read(expr)


# ----------------------------------------------------------------------------- deciding


def _evaluate(op: str, value: object, constant: object) -> bool:
    """``value op constant`` (``truth``: ``bool(value)``); a comparison that raises is false."""
    try:
        if op == "truth":
            return bool(value)
        if op in ("is", "is not"):
            same = (
                value is constant
                if constant is None or isinstance(constant, (enum.Enum, bool))
                else (value == constant and type(value) is type(constant))
            )
            return same if op == "is" else not same
        if op in ("in", "not in"):
            inside = value in typing.cast("Any", constant)
            return inside if op == "in" else not inside
        compare: Callable[[Any, Any], Any] = {
            "<": operator.lt,
            "<=": operator.le,
            ">": operator.gt,
            ">=": operator.ge,
            "==": operator.eq,
            "!=": operator.ne,
        }[op]
        return bool(compare(value, constant))
    except Exception:  # noqa: BLE001 - e.g. None < 3: the comparison would raise, so it does not hold
        return False


def _numbers(constants: Iterable[object]) -> list[float]:
    out: list[float] = []
    for c in constants:
        if isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c):
            out.append(c)
        elif isinstance(c, (tuple, frozenset, set, list)):
            out += _numbers(typing.cast("Iterable[object]", c))
    return out


def _flat(constants: Iterable[object]) -> list[object]:
    out: list[object] = []
    for c in constants:
        if isinstance(c, (tuple, frozenset, set, list)):
            out += _flat(typing.cast("Iterable[object]", c))
        else:
            out.append(c)
    return out


def candidates(tp: object, constants: Iterable[object]) -> list[object]:
    """
    Values of type *tp* that, together, fall on every side of every comparison with *constants*.

    For numbers: each constant, its neighbours, a point between each two and beyond
    both ends; for finite types (``bool``, enums, ``Literal``) every value.
    """
    consts = _flat(constants)
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return [v for arg in typing.get_args(tp) for v in candidates(arg, consts)]
    if tp is None or tp is type(None):
        return [None]
    if origin is typing.Literal:
        return list(typing.get_args(tp))
    if tp is bool:
        return [False, True]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return list(tp)
    numbers = sorted(set(_numbers(consts)))
    if tp is int:
        out: set[int] = {0}
        for c in numbers:
            out.update({math.floor(c) - 1, math.floor(c), math.ceil(c), math.ceil(c) + 1})
        if numbers:
            out.update({math.floor(numbers[0]) - 2, math.ceil(numbers[-1]) + 2})
        return [*sorted(out)]
    if tp is float:
        points: set[float] = {0.0}
        for c in numbers:
            points.update({float(c), math.nextafter(c, -math.inf), math.nextafter(c, math.inf)})
        points.update((a + b) / 2 for a, b in itertools.pairwise(numbers))
        if numbers:
            points.update({numbers[0] - 1.0, numbers[-1] + 1.0})
        return [*sorted(points)]
    if tp is str:
        return [*{c for c in consts if isinstance(c, str)}, "", "\x00none of the constants"]
    # Unknown: every kind of value the constants suggest.
    return [*candidates(int, consts), *candidates(float, consts), *consts, None, True, False, "", "\x00other"]


class Conditions:
    """
    The guards of one workflow read as formulas, and questions about them.

    Args:
        spec: The workflow's spec.
        owner: The workflow class (resolves ``wf.NAME`` class attributes), if known.
    """

    def __init__(self, spec: WorkflowSpec, owner: type | None = None) -> None:
        self.spec = spec
        self.fields = frozenset(f.name for f in spec.fields)
        self.types = {f.name: _resolved(f.type, owner) for f in spec.fields}
        self._of: dict[int, Cond | None] = {}
        for e in spec.edges:
            if e.guard is not None:
                self._of[id(e)] = read_guard(e.guard, e.guard_name, self.fields, owner)
        # Invariants compare variables with the values that matter too (a cap, a limit): for generation only.
        self._invariants = [read_guard(i.fn, None, self.fields, owner) for i in spec.invariants]
        self._cache: dict[tuple[tuple[int, bool], ...], bool] = {}

    def of(self, edge: EdgeSpec) -> Cond | None:
        """The guard of *edge* as a formula (``None``: unguarded, or unreadable)."""
        return self._of.get(id(edge))

    def satisfiable(self, parts: Iterable[tuple[EdgeSpec, bool]]) -> bool:
        """Whether the guards of the edges can have these values at once (``True`` unless proven impossible)."""
        known = [(e, holds) for e, holds in parts if self._of.get(id(e)) is not None]
        key = tuple(sorted({(id(e), holds) for e, holds in known}))
        found = self._cache.get(key)
        if found is None:
            formula: list[Cond] = []
            for e, holds in known:
                cond = self._of[id(e)]
                assert cond is not None  # noqa: S101 - filtered above
                formula.append(cond if holds else Not(cond))
            found = self._cache[key] = _satisfiable(And(tuple(formula)), self.types)
        return found

    def reads(self, edge: EdgeSpec) -> frozenset[str]:
        """The variables the readable parts of *edge*'s guard compare."""
        cond = self._of.get(id(edge))
        return frozenset(a.field for a in _atoms(cond)) if cond is not None else frozenset()

    def shadowed(self) -> Iterator[tuple[EdgeSpec, tuple[EdgeSpec, ...]]]:
        """
        Each completion edge that can never be taken, with the earlier edges that take its instances.

        Guards are tried in declaration order and the first that holds wins: an
        edge whose guard holds only when an earlier one's does is never taken (the
        earlier edges are named; none when its own guard can never hold). A default
        edge is dead when the guards before it cover every case. Forks start every
        branch whose guard holds, so only a guard that can never hold kills one.
        """
        for s in self.spec.steps:
            edges = [e for e in self.spec.outgoing(s.name) if e.is_completion]
            if s.fork:
                for e in edges:
                    if e.guard is not None and not self.satisfiable([(e, True)]):
                        yield e, ()
                continue
            before: list[EdgeSpec] = []
            # Tried in declaration order, the default last wherever it is declared.
            for e in sorted(edges, key=lambda e: e.guard is None):
                if e.guard is None:
                    if before and not self.satisfiable([(b, False) for b in before]):
                        yield e, tuple(before)
                    continue
                if not self.satisfiable([(e, True)]):
                    yield e, ()
                elif not self.satisfiable([(e, True), *((b, False) for b in before)]):
                    single = [b for b in before if not self.satisfiable([(e, True), (b, False)])]
                    yield e, tuple(single[:1] or before)
                before.append(e)

    def constants(self) -> dict[str, set[object]]:
        """For each variable, the constants guards (and invariants) compare it with (names resolved)."""
        out: dict[str, set[object]] = {}
        for cond in [*self._of.values(), *self._invariants]:
            for a in _atoms(cond):
                if a.op != "truth":
                    out.setdefault(a.field, set()).update(_flat([a.value]))
        return out

    def pairs(self) -> set[tuple[str, str]]:
        """The pairs of variables guards compare with each other (``wf.accepted == wf.quoted``)."""
        out: set[tuple[str, str]] = set()
        for cond in self._of.values():
            for o in _opaques(cond):
                if isinstance(o.key, _FieldPair):
                    out.add((o.key.left, o.key.right))
        return out


def _resolved(tp: object, owner: type | None) -> object:
    if not isinstance(tp, str) or owner is None:
        return tp
    module = sys.modules.get(owner.__module__)
    holder = types.SimpleNamespace(__annotations__={"value": tp})
    try:
        return typing.get_type_hints(holder, vars(module) if module else {}, dict(vars(owner)))["value"]
    except Exception:  # noqa: BLE001 - unresolvable: treated as unknown
        return tp


def _atoms(cond: Cond | None) -> Iterator[Atom]:
    if isinstance(cond, Atom):
        yield cond
    elif isinstance(cond, Not):
        yield from _atoms(cond.arg)
    elif isinstance(cond, (And, Or)):
        for a in cond.args:
            yield from _atoms(a)


def _opaques(cond: Cond | None) -> Iterator[Opaque]:
    if isinstance(cond, Opaque):
        yield cond
    elif isinstance(cond, Not):
        yield from _opaques(cond.arg)
    elif isinstance(cond, (And, Or)):
        for a in cond.args:
            yield from _opaques(a)


def _holds(cond: Cond, truth: Mapping[Atom, bool], bits: Mapping[Opaque, bool]) -> bool:
    if isinstance(cond, Atom):
        return truth[cond]
    if isinstance(cond, Opaque):
        return bits[cond]
    if isinstance(cond, Not):
        return not _holds(cond.arg, truth, bits)
    if isinstance(cond, And):
        return all(_holds(a, truth, bits) for a in cond.args)
    if isinstance(cond, Or):
        return any(_holds(a, truth, bits) for a in cond.args)
    return cond.value


def _satisfiable(cond: Cond, types_of: Mapping[str, object]) -> bool:
    """Whether some values of the variables (and of the opaque parts) make *cond* true."""
    atoms = list(dict.fromkeys(_atoms(cond)))
    opaque = list(dict.fromkeys(_opaques(cond)))
    if len(opaque) > _MAX_OPAQUE:
        return True
    by_field: dict[str, list[Atom]] = {}
    for a in atoms:
        by_field.setdefault(a.field, []).append(a)
    # Per variable, the combinations of its comparisons' outcomes some value gives.
    choices: list[list[dict[Atom, bool]]] = []
    total = 2 ** len(opaque)
    for field, mine in by_field.items():
        values = candidates(types_of.get(field, object), [a.value for a in mine if a.op != "truth"])
        seen = {tuple(_evaluate(a.op, v, a.value) for a in mine) for v in values}
        choices.append([dict(zip(mine, vector, strict=True)) for vector in seen])
        total *= len(seen)
        if total > _MAX_COMBINATIONS:
            return True
    for combo in itertools.product(*choices):
        truth: dict[Atom, bool] = {}
        for part in combo:
            truth.update(part)
        for bits in itertools.product((False, True), repeat=len(opaque)):
            if _holds(cond, truth, dict(zip(opaque, bits, strict=True))):
                return True
    return False


_BY_SPEC: weakref.WeakKeyDictionary[WorkflowSpec, Conditions] = weakref.WeakKeyDictionary()


def conditions_of(spec: WorkflowSpec, owner: type | None = None) -> Conditions:
    """The :class:`Conditions` of *spec* (read once per spec; *owner* resolves ``wf.NAME``)."""
    found = _BY_SPEC.get(spec)
    if found is None:
        found = _BY_SPEC[spec] = Conditions(spec, owner)
    return found
