"""
Hypothesis strategies derived from a workflow spec: inputs, forms, actors and fault plans.

A fault plan is a plain dict, so that a failing example prints it as it is: for a
step, what each attempt does (``"ok"``, ``"transient"``, ``"permanent"`` or
``"raise SomeError"`` for an error type the step routes with ``on_error``, all
before the attempt runs; ``"lost reply"`` and ``"crash"`` after it took effect);
for a compensation, which of its attempts hit a fault (never more than its retry
policy absorbs). A plan never injects more than :data:`MAX_INJECTED` faults into
one visit: ``Retry(attempts=1_000_000)`` is how "retry for ever" is written.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import attrs
from hypothesis import strategies as st

from statemachine_orch._conditions import conditions_of
from statemachine_orch._spec import TaskSpec, WorkflowSpec
from statemachine_orch._workflow import spec_of

OK = "ok"
TRANSIENT = "transient"
PERMANENT = "permanent"
RAISE = "raise "
LOST_REPLY = "lost reply"
"""The attempt's first ``ctx.call`` took effect, and its reply was lost (the call raises); no call: as ``CRASH``."""
CRASH = "crash"
"""The attempt's body ran to its end, then the process died before the commit: its writes are lost, not its effects."""
AFTER_EFFECT = (LOST_REPLY, CRASH)

MAX_INJECTED = 10
"""The most faults a plan injects into one visit of a step or compensation, whatever its retry policy allows."""

FaultPlan = dict[str, tuple[str, ...]]


def type_strategy(tp: object) -> st.SearchStrategy[Any]:
    """A strategy for values of the annotation *tp*; floats are finite (NaN is nobody's amount)."""
    if tp is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return st.one_of(*(type_strategy(a) for a in typing.get_args(tp)))
    if tp is None or tp is type(None):
        return st.none()
    if isinstance(tp, str):
        msg = f"cannot generate values for the unresolved annotation {tp!r}; pass inputs= explicitly"
        raise TypeError(msg)
    return st.from_type(typing.cast("type[Any]", tp))


def resolve_annotation(tp: object, owner: type[Any]) -> object:
    """*tp*, evaluated when it is still a string (``from __future__ import annotations``)."""
    if not isinstance(tp, str):
        return tp
    module = sys.modules.get(owner.__module__)
    holder = types.SimpleNamespace(__annotations__={"value": tp})
    try:
        hints = typing.get_type_hints(holder, vars(module) if module else {}, dict(vars(owner)))
    except Exception:  # noqa: BLE001 - left unresolved; type_strategy says so
        return tp
    return hints["value"]


@attrs.frozen
class Near:
    """
    The values guards compare with, by variable: where inputs, forms and messages are drawn besides their type.

    Attributes:
        by_field: For each variable (of the workflow and of its children), the constants its guards compare it with.
        pool: Every constant any of those guards compares with: tried for a field no guard names.
        pairs: Variables guards compare with each other (``wf.accepted == wf.quoted``).
    """

    by_field: Mapping[str, frozenset[object]]
    pool: frozenset[object]
    pairs: frozenset[tuple[str, str]]

    def values(self, name: str, tp: object) -> list[object]:
        """
        The values of type *tp* at and around the constants a field named *name* is compared with, and any other.

        Every constant counts for every field of its type: a variable is often
        computed from another (``wf.payout = min(form.payout, wf.amount)``), so the
        limit its guard compares with matters to the fields it comes from.
        """
        return _boundaries(tp, self.by_field.get(name, frozenset()) | self.pool)


def near_constants(specs: Sequence[tuple[type[Any], WorkflowSpec]]) -> Near:
    """The constants the guards of these workflows compare their variables with, names resolved."""
    by_field: dict[str, set[object]] = {}
    pairs: set[tuple[str, str]] = set()
    for owner, spec in specs:
        conditions = conditions_of(spec, owner)
        for name, found in conditions.constants().items():
            by_field.setdefault(name, set()).update(found)
        pairs |= conditions.pairs()
    pool = frozenset(c for found in by_field.values() for c in found)
    return Near({k: frozenset(v) for k, v in by_field.items()}, pool, frozenset(pairs))


def input_strategy(workflow: type[Any], spec: WorkflowSpec, near: Near) -> st.SearchStrategy[Any]:
    """
    New instances of *workflow*: every field without a default drawn from its type.

    A field that guards compare with constants is also drawn at and right around
    them (``wf.weight < LIMIT`` makes LIMIT - 1, LIMIT and LIMIT + 1 likely, a
    float's neighbours too): guard gaps hide there. So are the constants the
    guards of its children compare a field of the same name with: a parent often
    hands a field on as it is. Two fields that guards compare with each other
    are drawn equal now and then.
    """
    required: dict[str, st.SearchStrategy[Any]] = {}
    types_of: dict[str, object] = {}
    for f in spec.fields:
        if f.has_default:
            continue
        tp = types_of[f.name] = resolve_annotation(f.type, workflow)
        required[f.name] = _with_near(type_strategy(tp), near.values(f.name, tp))
    pairs = [(a, b) for a, b in sorted(near.pairs) if a in required and b in required and types_of[a] == types_of[b]]
    if not pairs:
        return st.builds(workflow, **required)
    return st.fixed_dictionaries(required).flatmap(lambda kw: _paired(workflow, kw, pairs))


def _paired(workflow: type[Any], kwargs: dict[str, Any], pairs: list[tuple[str, str]]) -> st.SearchStrategy[Any]:
    """The instance from *kwargs*, each pair of fields compared by a guard drawn equal or not."""

    def build(equal: tuple[bool, ...]) -> Any:
        values = dict(kwargs)
        for (a, b), same in zip(pairs, equal, strict=True):
            if same:
                values[b] = values[a]
        return workflow(**values)

    return st.tuples(*(st.booleans() for _ in pairs)).map(build)


def _with_near(values: st.SearchStrategy[Any], near: list[object]) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(near), values) if near else values


def _boundaries(tp: object, constants: Iterable[object]) -> list[object]:
    out: set[object] = set()
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        for arm in typing.get_args(tp):
            out.update(_boundaries(arm, constants))
        return sorted(out, key=repr)
    for c in constants:
        if isinstance(c, bool):
            continue
        if tp is int and isinstance(c, (int, float)) and math.isfinite(c):
            out.update({math.floor(c) - 1, math.floor(c), math.ceil(c), math.ceil(c) + 1})
        elif tp is float and isinstance(c, (int, float)) and math.isfinite(c):
            out.update({float(c), math.nextafter(c, -math.inf), math.nextafter(c, math.inf)})
        elif tp is str and isinstance(c, str):
            out.add(c)
    return sorted(out, key=repr)


def record_strategy(cls: type[Any], near: Near) -> st.SearchStrategy[Any]:
    """
    Forms and messages of the attrs or dataclass *cls*: each field from its type, and near the guards' constants.

    A field named like a variable that guards compare is drawn at and around those
    constants; a number or string field named like none, around any of them.
    """
    fields = _record_fields(cls)
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable hints: hypothesis' own inference
        return st.from_type(cls)
    overrides: dict[str, st.SearchStrategy[Any]] = {}
    for name, param, required in fields:
        tp = hints.get(name)
        if tp is None:
            continue
        found = near.values(name, tp) if (required or name in near.by_field) else []
        if found:
            overrides[param] = _with_near(type_strategy(tp), found)
    return st.builds(cls, **overrides) if overrides else st.from_type(cls)


def _record_fields(cls: type[Any]) -> list[tuple[str, str, bool]]:
    """Each field of an attrs or dataclass *cls* the constructor takes: name, parameter, required."""
    if attrs.has(cls):
        return [(f.name, f.alias or f.name, f.default is attrs.NOTHING) for f in attrs.fields(cls) if f.init]
    if dataclasses.is_dataclass(cls):
        return [
            (f.name, f.name, f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
            for f in dataclasses.fields(cls)
            if f.init
        ]
    return []


def form_strategy(task: TaskSpec, near: Near) -> st.SearchStrategy[Any]:
    """Forms of the task's declared type (``None`` for a task without a form), near the guards' constants."""
    form: type[Any] | None = task.form
    if form is None:
        return st.none()
    return record_strategy(form, near)


@attrs.frozen(repr=False)
class Actor:
    """
    Who tries to complete a task in a generated story.

    .. versionadded:: 0.1.0
    """

    user: str
    groups: tuple[str, ...] = ()
    authorised: bool = True

    def __repr__(self) -> str:
        """``'manager'``, ``'member-of-finance' in ('finance',)``, or ``'intruder' (not authorised)``."""
        text = repr(self.user)
        if self.groups:
            text += f" in {self.groups!r}"
        if not self.authorised:
            text += " (not authorised)"
        return text


STAND_IN = "stand-in"
"""The user a story's ``HandOver`` gives a task to (reassigned or delegated)."""


def actors(task: TaskSpec) -> list[Actor]:
    """The people who may complete *task*, then one who may not (shrinking prefers the first)."""
    out: list[Actor] = []
    if task.assignee_of is not None or task.groups_of is not None:
        # Computed when the task opens: WorkflowMachine puts the opened task's own people in its place.
        out.append(Actor("one-it-is-for"))
    if task.assignee is not None:
        out.append(Actor(task.assignee))
    out += [Actor(f"member-of-{g}", (g,)) for g in task.candidate_groups]
    taken = {task.assignee, *task.candidate_groups}
    intruder = next(n for n in ("intruder", "mallory", "eve", "trudy") if n not in taken)
    outsiders = next(g for g in ("outsiders", "visitors", "strangers") if g not in taken)
    out.append(Actor(intruder, (outsiders,), authorised=False))
    return out


def make_error(exc_type: type[BaseException]) -> Callable[[str], BaseException] | None:
    """How to build an instance of *exc_type* from a message, or ``None`` when it cannot be built."""

    def with_message(message: str) -> BaseException:
        return exc_type(message)

    def bare(message: str) -> BaseException:  # noqa: ARG001 - same shape as with_message
        return exc_type()

    for build in (with_message, bare):
        try:
            build("probe")
        except Exception:  # noqa: BLE001, S112 - any constructor failure means: try the next way
            continue
        return build
    return None


def _step_plans(attempts: int | None, retryable: list[str]) -> list[tuple[str, ...]]:
    """
    Every way a visit's attempts can fail, shortest first: retryable faults, maybe ending permanent.

    A step that is retried also meets a fault *after* its first attempt took effect
    (its reply lost, or a crash before the commit), then a retry that works: a
    step that is not idempotent then acts twice. Unlimited retries (``attempts=None``)
    cannot be used up: their plans inject as many faults as a plan may.
    """
    longest = 3 if attempts is None else min(attempts, 3)
    plans: list[tuple[str, ...]] = []
    for n in range(1, longest + 1):
        plans += [tuple(p) for p in itertools.product(retryable, repeat=n)]
        plans += [(*p, PERMANENT) for p in itertools.product(retryable, repeat=n - 1)]
    if attempts is None or attempts > longest:
        # Every retry used up, or as many faults as a plan may inject when there are more.
        plans.append((TRANSIENT,) * (MAX_INJECTED if attempts is None else min(attempts, MAX_INJECTED)))
    plans.sort(key=lambda p: (len(p), p != (TRANSIENT,) * len(p)))
    if attempts is None or attempts > 1:
        plans[1:1] = [(LOST_REPLY,), (CRASH,)]
    return plans


def capped(spec: WorkflowSpec) -> list[str]:
    """
    What the fault plans of *spec* (and its children) leave out: retry policies longer than :data:`MAX_INJECTED`.

    One line per step or compensation, saying that its retries are never all used up.
    """
    out: list[str] = []
    for s in spec.steps:
        policies = [(s.name, s.retry.attempts)]
        if s.compensation is not None and s.child is None:
            policies.append((f"{s.compensation.name} (undoing {s.name})", s.compensation.retry.attempts))
        for name, attempts in policies:
            if attempts is None or attempts > MAX_INJECTED:  # None: unlimited retries
                out.append(
                    f"{spec.name}.{name}: Retry(attempts={attempts}), at most {MAX_INJECTED} faults injected "
                    "into one visit, so its retries are never all used up"
                )
        if s.child is not None:
            out += capped(spec_of(s.child))
    return out


def fault_plans(spec: WorkflowSpec, errors: Mapping[str, object]) -> st.SearchStrategy[FaultPlan]:
    """
    Fault plans for one instance of *spec*: none, or for some steps and compensations how their attempts fail.

    About half the instances run without faults (that is where the deep edges
    are); the others with faults in one step or compensation only, or with a plan
    for any of them. A plan shrinks to fewer entries, then to shorter ones. The
    children of ``@subflow`` steps get entries of their own (``step/child_step``).

    Plans of one entry are there for the late steps: in a plan for any step each
    entry is drawn about half the time and most of them fail their step, so a
    plan that lets every earlier step pass and fails only the last one is about
    ``2**-n`` likely after *n* steps. A bug that needs such a plan (a parent
    failing after its child completed) was missed by one run of 100 stories in
    twenty; with them, the stories meet it about twice as early.

    Args:
        spec: The workflow.
        errors: The names of the ``on_error`` exception types that can be built.
    """
    optional = _optional_faults(spec, errors)
    if not optional:
        return st.just(cast("FaultPlan", {}))
    # Not a one_of of the entries: hypothesis would flatten it into the outer one_of,
    # and plans without faults would be drawn one time in len(optional) + 2.
    one = st.sampled_from(list(optional)).flatmap(lambda name: optional[name].map(functools.partial(_one_entry, name)))
    # Measured: this shape (an optional entry per step) lets the shrinker delete whole
    # actions of a story; padding a sampled_from with "no fault" entries did not.
    plans = st.fixed_dictionaries({}, optional=optional).map(dict)
    return st.one_of(st.just(cast("FaultPlan", {})), one, plans)


def _one_entry(name: str, plan: tuple[str, ...]) -> FaultPlan:
    return {name: plan}


def _optional_faults(spec: WorkflowSpec, errors: Mapping[str, object]) -> dict[str, st.SearchStrategy[tuple[str, ...]]]:
    """
    The plan entries *spec* may have, by step or compensation name.

    A ``@subflow`` step's child has its own entries, its names prefixed with the
    step's (``ship/pack``): they apply to every child that step starts.
    """
    optional: dict[str, st.SearchStrategy[tuple[str, ...]]] = {}
    for s in spec.steps:
        routed = [RAISE + t.__name__ for e in spec.outgoing(s.name) for t in e.on_error if t.__name__ in errors]
        optional[s.name] = st.sampled_from(_step_plans(s.retry.attempts, [TRANSIENT, *routed]))
    for s in spec.steps:
        comp = s.compensation
        # A subflow step's compensation is its child's own: faults go into those.
        attempts = comp.retry.attempts if comp is not None else 1
        if comp is not None and (attempts is None or attempts > 1) and s.child is None:
            # Never more faults than the policy absorbs: a failure is then the compensation's own.
            budget = MAX_INJECTED if attempts is None else min(attempts - 1, MAX_INJECTED)
            comp_plans = [(TRANSIENT,) * n for n in sorted({1, min(budget, 2), budget})]
            optional[comp.name] = st.sampled_from([comp_plans[0], (LOST_REPLY,), (CRASH,), *comp_plans[1:]])
    for s in spec.steps:
        if s.child is not None:
            for name, plan in _optional_faults(spec_of(s.child), errors).items():
                optional[f"{s.name}/{name}"] = plan
    return optional
