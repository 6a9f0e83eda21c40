"""
Class body → :class:`WorkflowSpec`.

Collects the marks the decorators left (``Step``, ``Compensation``, edge marks)
and the attrs fields, resolves every reference, and hands the assembled spec to
``_checks`` for the structural rules. Every problem found anywhere is reported
in one ``WorkflowDefinitionError``.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Sized
from typing import Any, TypeGuard, cast

import attrs

from ._checks import structural_problems, warn_dead_edges
from ._decorators import Compensation, EdgeMark, Migration, ResultHandler, Step
from ._errors import DefinitionProblem, WorkflowDefinitionError
from ._forks import analyse_forks
from ._invariant import collect_invariants
from ._query import Query, collect_queries
from ._retry import COMPENSATION_RETRY, NO_RETRY, Retry
from ._serialize import serialisation_problem, show, type_label
from ._spec import (
    CompensationSpec,
    EdgeSpec,
    FanOutSpec,
    FieldSpec,
    MigrationSpec,
    StepKind,
    StepSpec,
    TaskSpec,
    WorkflowSpec,
)
from ._status import InstanceStatus
from ._validate import is_frozen

# Attributes the engine reads or writes on every instance; user names must not clash.
RESERVED_PREFIX = "_orch"

# The kinds of step that start child workflows.
_WITH_CHILDREN = (StepKind.SUBFLOW, StepKind.FAN_OUT)
_OUTCOME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_OTHER_STATUSES = frozenset(s.value for s in InstanceStatus) - {InstanceStatus.FAILED.value}


def compile_workflow(cls: type, version: object, name: object = None) -> WorkflowSpec:
    """
    Compile *cls* into its spec.

    Raises:
        WorkflowDefinitionError: Listing every broken rule.
    """
    builder = _Builder(cls)
    spec = builder.build(version, name)
    problems = builder.problems
    if spec is not None:
        forks, found = analyse_forks(spec)
        problems += [DefinitionProblem(spec.name, step, rule, msg) for step, rule, msg in found]
        if forks:
            spec = attrs.evolve(spec, forks=forks)
        problems += structural_problems(spec)
    if problems:
        raise WorkflowDefinitionError(cls.__name__, problems)
    assert spec is not None  # noqa: S101 - no problems means a spec was built
    warn_dead_edges(spec, cls)
    return spec


class _Builder:
    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.name = cls.__name__
        self.problems: list[DefinitionProblem] = []
        self.steps: dict[str, Step[Any, Any, Any]] = {}
        self.comps: dict[str, Compensation[Any, Any]] = {}
        self.results: dict[str, ResultHandler[Any, Any]] = {}
        self.migrations: list[Migration[Any, Any]] = [v for v in vars(cls).values() if isinstance(v, Migration)]
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                if isinstance(value, Step):
                    self.steps[attr] = value
                elif isinstance(value, Compensation):
                    self.comps[attr] = value
                elif isinstance(value, ResultHandler):
                    self.results[attr] = value
                else:
                    self.steps.pop(attr, None)
                    self.comps.pop(attr, None)
                    self.results.pop(attr, None)
        self.step_names: dict[int, str] = {id(s): n for n, s in self.steps.items()}
        # Steps whose method takes a third parameter, the error of the step an on_error edge leaves.
        self.takes_error: set[str] = set()

    def problem(self, step: str | None, rule: str, message: str) -> None:
        self.problems.append(DefinitionProblem(self.name, step, rule, message))

    def build(self, version: object, name: object) -> WorkflowSpec | None:
        if not isinstance(version, str) or not version:
            self.problem(None, "bad-version", f"version= must be a non-empty str, got {version!r}")
        if name is not None and (not isinstance(name, str) or not name):
            self.problem(None, "bad-name", f"name= must be a non-empty str, got {name!r}")
        wf_name = name if isinstance(name, str) and name else self.name
        fields = self.fields()
        ordered = sorted(self.steps.items(), key=lambda kv: kv[1].order)
        comp_of = self.compensations()
        step_specs = [self.step_spec(name, s, comp_of.get(name)) for name, s in ordered]
        edges = [e for _, s in ordered for mark in s.edges for e in self.edges(s, mark)]
        step_specs = [self.error_param(spec, edges) if spec.name in self.takes_error else spec for spec in step_specs]
        initial = [s.name for s in step_specs if s.initial]
        return WorkflowSpec(
            name=wf_name,
            qualname=f"{self.cls.__module__}.{self.cls.__qualname__}".replace("<locals>.", ""),
            version=version if isinstance(version, str) else str(version),
            fields=fields,
            steps=tuple(step_specs),
            edges=tuple(edges),
            initial=initial[0] if initial else "",
            migrations=tuple(self.migration_specs(wf_name)),
            invariants=collect_invariants(self.cls),
            queries=collect_queries(self.cls),
        )

    def migration_specs(self, wf_name: str) -> list[MigrationSpec]:
        out: list[MigrationSpec] = []
        for m in self.migrations:
            source_spec: WorkflowSpec | None = getattr(m.source, "__orch_spec__", None)
            if source_spec is None:
                msg = f"@migration({_describe(m.source)}) names a class that is not a concrete Workflow"
                self.problem(m.name, "bad-migration", msg)
                continue
            if source_spec.name != wf_name:
                msg = (
                    f"@migration({source_spec.name} version {source_spec.version}) migrates another "
                    f"workflow; only versions of {wf_name} can be migrated here"
                )
                self.problem(m.name, "bad-migration", msg)
                continue
            out.append(MigrationSpec(m.name, source_spec.version, m.fn))
        return out

    def fields(self) -> tuple[FieldSpec, ...]:
        resolved = _field_types(self.cls)
        out: list[FieldSpec] = []
        for f in attrs.fields(self.cls):
            if f.name.startswith(RESERVED_PREFIX):
                msg = f"field {f.name!r} uses the prefix {RESERVED_PREFIX!r}, reserved for the engine"
                self.problem(f.name, "reserved-name", msg)
            default: object = f.default
            if isinstance(default, (Step, Compensation)):
                msg = f"{f.name!r} is both an annotated field and a step; rename one of them"
                self.problem(f.name, "field-step-clash", msg)
            elif isinstance(default, Query):
                msg = f"{f.name!r} is both an annotated field and a query; rename one of them"
                self.problem(f.name, "field-step-clash", msg)
            tp = resolved.get(f.name, f.type)
            shared = _shared_default(f.name, f.default, tp)
            if shared is not None:
                self.problem(f.name, "mutable-default", shared)
            why = serialisation_problem(tp)
            if why is not None:
                msg = f"field {f.name!r} cannot be persisted: {why}"
                self.problem(f.name, "field-not-serialisable", msg)
            out.append(FieldSpec(f.name, tp, f.default is not attrs.NOTHING))
        return tuple(out)

    def compensations(self) -> dict[str, CompensationSpec]:
        out: dict[str, CompensationSpec] = {}
        for name, s in self.steps.items():
            own = [c for c in s.compensations if self.comps.get(c.name) is c]
            if len(own) > 1:
                names = ", ".join(c.name for c in own)
                msg = f"has {len(own)} compensations ({names}); a step is undone by exactly one method"
                self.problem(name, "compensation-twice", msg)
            if own:
                c = own[0]
                self.signature(c.name, c.fn, 2, "(self, ctx)")
                retry = self.retry(c.name, c.retry, COMPENSATION_RETRY)
                out[name] = CompensationSpec(
                    c.name, c.fn, inspect.iscoroutinefunction(c.fn), retry, attempted=c.attempted
                )
        for cname, c in self.comps.items():
            if id(c.step) not in self.step_names:
                msg = f"is declared as the compensation of {_describe(c.step)}, which is not a step of {self.name}"
                self.problem(cname, "compensation-not-a-step", msg)
        for name, s in self.steps.items():
            if s.options.kind in _WITH_CHILDREN:
                fan = s.options.kind is StepKind.FAN_OUT
                if name in out:
                    what, whose = ("fan-out", "children's") if fan else ("subflow", "child's")
                    msg = (
                        f"is a {what} step with its own compensation; a {what} is undone by its {whose} "
                        "compensations: drop this one"
                    )
                    self.problem(name, "subflow-compensation", msg)
                undo = f"{name}.children" if fan else f"{name}.child"
                out[name] = CompensationSpec(undo, _undo_child, is_async=True, retry=COMPENSATION_RETRY)
        return out

    def signature(self, name: str, fn: Callable[..., Any], count: int, shape: str) -> None:
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):  # pragma: no cover - builtins only
            return
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        required = [p for p in positional if p.default is p.empty]
        if len(required) > count or len(positional) < count:
            got = "(" + ", ".join(p.name for p in params) + ")"
            self.problem(name, "method-signature", f"must have the signature {shape}, not {got}")

    def retry(self, name: str, given: object, default: Retry) -> Retry:
        """The retry policy of step or compensation *name*, after recording what is wrong with *given*."""
        if given is None:
            return default
        if not isinstance(given, Retry):
            self.problem(name, "bad-retry", f"retry= must be a Retry(...), got {given!r} ({type(given).__name__})")
            return default
        for _, message in given.problems():
            self.problem(name, "bad-retry", f"retry={message}")
        return given

    def step_spec(self, name: str, s: Step[Any, Any, Any], comp: CompensationSpec | None) -> StepSpec:
        o = s.options
        fn: Callable[..., Any] = s.fn
        is_async = inspect.iscoroutinefunction(fn)
        task = None
        child: type | None = None
        start: Callable[..., Any] | None = None
        handlers = [h for h in s.results if self.results.get(h.name) is h]
        if handlers and o.kind not in _WITH_CHILDREN:
            msg = (
                f"has an @{name}.on_result handler ({handlers[0].name}), but only a @subflow or @fan_out step "
                "has a child result"
            )
            self.problem(name, "result-not-subflow", msg)
        fan: FanOutSpec | None = None
        if o.kind in _WITH_CHILDREN:
            self.signature(name, fn, 2, "(self, ctx)")
            spec_of_child: object = getattr(o.child, "__orch_spec__", None)
            if not isinstance(o.child, type) or spec_of_child is None or o.child is self.cls:
                what = "the workflow itself" if o.child is self.cls else _describe(o.child)
                msg = f"@{o.kind.value}({what}) needs another concrete Workflow class as its child"
                self.problem(name, "subflow-not-a-workflow", msg)
            else:
                child = o.child
            if len(handlers) > 1:
                names = ", ".join(h.name for h in handlers)
                takes = "the children's results" if o.kind is StepKind.FAN_OUT else "the child"
                self.problem(
                    name, "result-twice", f"has {len(handlers)} on_result handlers ({names}); one takes {takes}"
                )
            start = fn
            fn = handlers[0].fn if handlers else _keep_child
            if handlers:
                shape = "(self, ctx, results)" if o.kind is StepKind.FAN_OUT else "(self, ctx, child)"
                self.signature(handlers[0].name, fn, 3, shape)
            is_async = inspect.iscoroutinefunction(fn)
            if o.kind is StepKind.FAN_OUT:
                fan = self.fan_out(name, o.limit, o.tolerate)
        if o.kind is StepKind.HUMAN_TASK:
            if o.form is None:
                self.signature(name, s.fn, 2, "(self, ctx)")
            else:
                self.signature(name, s.fn, 3, "(self, ctx, form)")
            form = o.form if isinstance(o.form, type) else None
            if o.form is not None and form is None:
                self.problem(name, "bad-form", f"form= must be a class, got {o.form!r}")
            if form is not None and (why := serialisation_problem(form)) is not None:
                self.problem(name, "form-not-serialisable", f"the form cannot be persisted: {why}")
            assignee, assignee_of, assignee_name = self.people(name, "assignee", o.assignee)
            groups, groups_of, groups_name = self.people(name, "candidate_groups", o.candidate_groups)
            if assignee is None and not groups and assignee_of is None and groups_of is None:
                msg = "is a human task with neither assignee= nor candidate_groups=; nobody could complete it"
                self.problem(name, "task-without-assignee", msg)
            task = TaskSpec(
                assignee if isinstance(assignee, str) else None,
                typing.cast("tuple[str, ...]", groups) if isinstance(groups, tuple) else (),
                form,
                o.due,
                assignee_of=assignee_of,
                groups_of=groups_of,
                assignee_name=assignee_name,
                groups_name=groups_name,
            )
        elif o.kind is StepKind.WAIT_FOR:
            self.signature(name, s.fn, 3, "(self, ctx, message)")
            message = o.message if isinstance(o.message, type) else None
            if message is None:
                self.problem(name, "bad-message", f"@wait_for() needs a message class, got {o.message!r}")
            elif (why := serialisation_problem(message)) is not None:
                self.problem(name, "message-not-serialisable", f"the message cannot be persisted: {why}")
        elif o.kind is StepKind.STEP and _positional(s.fn) == 3:  # noqa: PLR2004 - (self, ctx, error)
            self.takes_error.add(name)
        else:
            self.signature(name, s.fn, 2, "(self, ctx)")
            if o.kind is StepKind.TIMER and (o.delay is None or o.delay < 0):
                self.problem(name, "bad-delay", f"@timer() needs a delay >= 0, got {o.delay!r}")
        outcome = self.outcome(name, o.outcome)
        if o.timeout is not None and not is_async:
            msg = "has timeout= but is not async; only an async step can be interrupted, so make it `async def`"
            self.problem(name, "timeout-needs-async", msg)
        if name.startswith(RESERVED_PREFIX):
            msg = f"step name {name!r} uses the prefix {RESERVED_PREFIX!r}, reserved for the engine"
            self.problem(name, "reserved-name", msg)
        return StepSpec(
            name=name,
            kind=o.kind,
            fn=fn,
            is_async=is_async,
            initial=o.initial,
            final=o.final,
            retry=self.retry(name, o.retry, NO_RETRY),
            timeout=o.timeout,
            task=task,
            compensation=comp,
            doc=inspect.getdoc(s.fn),
            delay=o.delay,
            message=o.message if isinstance(o.message, type) else None,
            fork=o.fork,
            child=child,
            start=start,
            fan=fan,
            outcome=outcome,
        )

    def fan_out(self, name: str, limit: object, tolerate: object) -> FanOutSpec:
        """The checked options of a ``@fan_out`` step (each bad one recorded, and replaced by its default)."""
        if limit is not None and (type(limit) is not int or limit < 1):
            msg = f"@fan_out(limit={limit!r}) must be a whole number >= 1 (children at once), or None for all"
            self.problem(name, "bad-fan-out", msg)
            limit = None
        if type(tolerate) is not int or tolerate < 0:
            msg = f"@fan_out(tolerate={tolerate!r}) must be a whole number >= 0 (children that may fail)"
            self.problem(name, "bad-fan-out", msg)
            tolerate = 0
        assert limit is None or isinstance(limit, int)  # noqa: S101 - checked above
        assert isinstance(tolerate, int)  # noqa: S101
        return FanOutSpec(limit, tolerate)

    def error_param(self, spec: StepSpec, edges: list[EdgeSpec]) -> StepSpec:
        """A step taking an error: entered only by on_error edges, its annotation a base of their types."""
        name = spec.name
        into = [e for e in edges if e.dest == name]
        other = [e for e in into if not e.is_error]
        if other or spec.initial or not into:
            why = "no edge leads to it"
            if other:
                why = f"the edge from {other[0].source} is no on_error edge"
            elif spec.initial:
                why = "it is the initial step"
            msg = (
                f"takes a third parameter, the error of a failed step, but {why}; only on_error edges "
                "pass an error: route errors here with @after(step, on_error=...), or drop the parameter"
            )
            self.problem(name, "error-param-without-error-edge", msg)
        raised = tuple(dict.fromkeys(t for e in into for t in e.on_error))
        declared = _third_annotation(spec.fn)
        if declared is not None:
            wrong = [t for t in raised if not issubclass(t, declared)]
            if wrong:
                names = ", ".join(t.__name__ for t in wrong)
                msg = (
                    f"is entered on_error={names}, but its error parameter is annotated {declared.__name__}; "
                    "annotate a base class of every error routed here"
                )
                self.problem(name, "error-param-type", msg)
        return attrs.evolve(spec, error=declared or _common_base(raised))

    def people(
        self, name: str, option: str, value: object
    ) -> tuple[object, Callable[[Any], object] | None, str | None]:
        """A human task's assignee= or candidate_groups=: (the value, or its computing callable and its name)."""
        if callable(value):
            fn: Callable[..., object] = value
            label = _guard_name(fn)
            try:
                inspect.signature(fn).bind(object())
            except TypeError:
                msg = f"@human_task({option}={label}) must accept exactly one argument (the workflow)"
                self.problem(name, "bad-task-people", msg)
            except ValueError:  # pragma: no cover - builtins without a signature
                pass
            return None, fn, label
        if option == "assignee":
            if value is not None and (not isinstance(value, str) or not value):
                msg = (
                    f"@human_task(assignee={value!r}) must be a user name (str), a callable (wf) -> str | None, or None"
                )
                self.problem(name, "bad-task-people", msg)
                return None, None, None
            return value, None, None
        items: tuple[object, ...] = typing.cast("tuple[object, ...]", value) if isinstance(value, tuple) else (value,)
        groups = tuple(g for g in items if isinstance(g, str) and g)
        if not isinstance(value, tuple) or len(groups) != len(items):
            msg = (
                f"@human_task(candidate_groups={value!r}) must be group names (str), "
                "or a callable (wf) -> Iterable[str]"
            )
            self.problem(name, "bad-task-people", msg)
            return (), None, None
        return groups, None, None

    def outcome(self, name: str, value: object) -> str | None:
        """The outcome of a failure end, or None after recording why it is not a valid one."""
        if value is None:
            return None
        if not isinstance(value, str) or _OUTCOME.fullmatch(value) is None:
            msg = (
                f"@failure_end(outcome={value!r}) needs a name: letters, digits, _ and -, "
                "starting with a letter (e.g. 'rejected')"
            )
            self.problem(name, "bad-outcome", msg)
            return "failed"
        if value in _OTHER_STATUSES:
            msg = (
                f"@failure_end(outcome={value!r}) names another status; a failure end ends the instance failed, "
                "so name how it failed (e.g. 'rejected'), or leave the default 'failed'"
            )
            self.problem(name, "bad-outcome", msg)
        return value

    def ref(self, site: str, obj: object, where: str) -> str | None:
        """The step name *obj* refers to, or None after recording why it is not a step."""
        if _is_step(obj):
            name = self.step_names.get(id(obj))
            if name is not None:
                return name
            msg = f"{where} refers to {_describe(obj)}, which is not a step of {self.name}"
            self.problem(site, "foreign-step", msg)
            return None
        msg = f"{where} refers to {_describe(obj)}, which is not a step; decorate it with @step"
        self.problem(site, "edge-not-a-step", msg)
        return None

    def edges(self, site: Step[Any, Any, Any], mark: EdgeMark) -> list[EdgeSpec]:
        site_name = self.step_names[id(site)]
        where = "@goto" if mark.back else "@after"
        guard, guard_name = self.guard(site_name, mark.when, where)
        on_error = self.on_error(site_name, mark.on_error)
        if on_error and guard is not None:
            msg = (
                f"{where}(..., when={guard_name}, on_error=...) has both; an error edge is chosen "
                "by the exception type alone: drop when="
            )
            self.problem(site_name, "error-edge-with-guard", msg)
        timeout = mark.timeout
        if mark.back:
            dest = self.ref(site_name, mark.dest, where)
            return [EdgeSpec(site_name, dest, guard, guard_name, on_error, back=True)] if dest else []
        sources = [self.ref(site_name, src, where) for src in mark.sources]
        join = len(sources) > 1
        reminder = mark.reminder
        if join and (guard is not None or on_error or timeout is not None or reminder is not None):
            names = ", ".join(s or "?" for s in sources)
            msg = (
                f"@after({names}, ...) is a join and takes no when=, on_error= or timeout="
                f"{' (nor reminder=)' if reminder is not None else ''}; "
                "it fires once every branch started by its fork has arrived"
            )
            self.problem(site_name, "join-with-condition", msg)
        if reminder is not None and not join and (guard is not None or on_error or timeout is not None):
            msg = (
                "@after(..., reminder=...) also has when=, on_error= or timeout=; a reminder runs its side "
                "step on time alone, and an escalation is an edge of its own"
            )
            self.problem(site_name, "bad-reminder", msg)
        if mark.repeat and reminder is None:
            self.problem(site_name, "bad-reminder", "@after(..., repeat=True) repeats a reminder: add reminder=")
        return [
            EdgeSpec(
                src,
                site_name,
                guard,
                guard_name,
                on_error,
                back=False,
                timeout=timeout,
                join=join,
                reminder=reminder,
                repeat=mark.repeat and reminder is not None,
            )
            for src in sources
            if src is not None
        ]

    def guard(self, site: str, when: object | None, where: str) -> tuple[Callable[[Any], bool] | None, str | None]:
        if when is None:
            return None, None
        if not callable(when):
            msg = (
                f"{where}(..., when={when!r}) has a guard of type {type(when).__name__}, "
                "which is not callable; use a method or a lambda (wf) -> bool"
            )
            self.problem(site, "guard-not-callable", msg)
            # Keep the edge guarded, so that one mistake is not also reported as a second default.
            return _never, repr(when)
        fn: Callable[..., Any] = when
        try:
            sig = inspect.signature(fn)
        except ValueError:  # pragma: no cover - builtins without a signature
            return fn, _guard_name(fn)
        try:
            sig.bind(object())
        except TypeError:
            shown = f"lambda: {_guard_name(fn)}" if getattr(fn, "__name__", "") == "<lambda>" else _guard_name(fn)
            takes = len(sig.parameters)
            msg = (
                f"{where}(..., when={shown}) must accept exactly one argument (the workflow), "
                f"but takes {takes or 'none'}"
            )
            self.problem(site, "guard-signature", msg)
        return fn, _guard_name(fn)

    def on_error(self, site: str, value: object | None) -> tuple[type[BaseException], ...]:
        if value is None:
            return ()
        items: tuple[object, ...] = value if isinstance(value, tuple) else (value,)  # pyright: ignore[reportUnknownVariableType]
        ok = [t for t in items if isinstance(t, type) and issubclass(t, BaseException)]
        if len(ok) != len(items) or not ok:
            msg = f"on_error= must be an exception class or a tuple of them, got {value!r}"
            self.problem(site, "bad-on-error", msg)
            # Keep it an error edge, so that one mistake is not also reported as a completion edge.
            return (Exception,)
        return tuple(ok)


def _field_types(cls: type) -> dict[str, object]:
    """Each field's annotation, resolved one by one so that one bad name spoils only its field."""
    module = sys.modules.get(cls.__module__)
    globalns = dict(vars(module)) if module is not None else {}
    localns = dict(vars(cls))
    out: dict[str, object] = {}
    for f in attrs.fields(cls):
        if not isinstance(f.type, str):
            out[f.name] = f.type
            continue
        holder = type("_Annotation", (), {"__annotations__": {f.name: f.type}})
        try:
            out[f.name] = typing.get_type_hints(holder, globalns, localns)[f.name]
        except Exception:  # noqa: BLE001 - unresolvable: reported by the caller as a string type
            out[f.name] = f.type
    return out


def _positional(fn: Callable[..., Any]) -> int:
    """How many positional parameters *fn* takes (-1: it cannot be told)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins only
        return -1
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _third_annotation(fn: Callable[..., Any]) -> type[BaseException] | None:
    """The exception class the third parameter of *fn* is annotated with, when it can be resolved."""
    try:
        third = list(inspect.signature(fn).parameters)[2]
        hint: object = typing.get_type_hints(fn).get(third)
    except Exception:  # noqa: BLE001 - an annotation naming a local class: it cannot be checked here
        return None
    return hint if isinstance(hint, type) and issubclass(hint, BaseException) else None


def _common_base(types: tuple[type[BaseException], ...]) -> type[BaseException]:
    """The most derived class every one of *types* is a subclass of (``BaseException`` for none)."""
    if not types:
        return BaseException
    return next(
        (c for c in types[0].__mro__ if issubclass(c, BaseException) and all(issubclass(t, c) for t in types)),
        BaseException,
    )


def _never(_: object) -> bool:
    return False


def _shared_default(name: str, default: object, annotation: object) -> str | None:
    """Why a field's default is one object that every instance would share and change (``None``: it is not)."""
    kind: type = type(default)
    if issubclass(kind, (list, dict, set, bytearray)):
        if len(cast("Sized", default)):
            factory = f"lambda: {show(default)}"
        else:
            # The annotation's own parameters, so that strict pyright infers no list[Unknown].
            factory = type_label(annotation) if typing.get_origin(annotation) is kind else kind.__name__
    elif _mutable_record(default):
        factory = f"lambda: {type(default).__name__}(...)"
    else:
        return None
    return (
        f"field {name!r} has the mutable default {show(default)}: one object that every instance would share, "
        f"so a change by one instance would show in all; give each its own with attrs.field(factory={factory})"
    )


def _mutable_record(value: object) -> bool:
    """Whether *value* is an attrs or dataclass instance whose fields can be assigned."""
    cls = type(value)
    if attrs.has(cls):
        return not is_frozen(cls)
    params: Any = getattr(cls, "__dataclass_params__", None)
    return params is not None and not params.frozen


def _keep_child(_wf: object, _ctx: object, _child: object) -> None:
    """A subflow step without an on_result handler: the child's end is all it waits for."""


async def _undo_child(_wf: object, _ctx: object) -> None:  # pragma: no cover - the engine runs the child's own
    """Stands for a subflow step's compensation: the engine compensates the child instead."""


def _is_step(obj: object) -> TypeGuard[Step[Any, Any, Any]]:
    return isinstance(obj, Step)


def _describe(obj: object) -> str:
    if _is_step(obj):
        return f"step {obj.owner}.{obj.name}"
    name = getattr(obj, "__qualname__", None)
    if isinstance(name, str):
        return f"{name.replace('<locals>.', '')} ({type(obj).__name__})"
    return f"{obj!r} ({type(obj).__name__})"


def _guard_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__name__", None)
    if name != "<lambda>":
        return str(name) if name else repr(fn)
    return _lambda_text(fn) or "<lambda>"


def _lambda_text(fn: Callable[..., Any]) -> str | None:
    """The body of a lambda as source text (``wf.amount > 1000``), when it can be found."""
    code = getattr(fn, "__code__", None)
    if code is not None:
        found = _lambda_in_file(fn, code)
        if found is not None:
            return found
    try:
        source = textwrap.dedent(inspect.getsource(fn)).strip()
    except (OSError, TypeError):
        return None
    candidates = [source.lstrip("@"), source, f"({source})"]
    for text in candidates:
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        lambdas = [n for n in ast.walk(tree) if isinstance(n, ast.Lambda)]
        if len(lambdas) == 1:
            return ast.unparse(lambdas[0].body)
        return None
    return None


def _lambda_in_file(fn: Callable[..., Any], code: types.CodeType) -> str | None:
    """
    The lambda's body, found in its whole source file by where its code sits.

    ``inspect.getsource`` of a lambda in a decorator returns the whole decorated
    method, so two lambdas on one step cannot be told apart by their text; the
    columns the compiler recorded for the lambda's own instructions can.
    """
    try:
        lines, _ = inspect.findsource(fn)
    except (OSError, TypeError, IndexError):
        return None
    tree = _parsed("".join(lines))
    if tree is None:
        return None
    on_line = [n for n in ast.walk(tree) if isinstance(n, ast.Lambda) and n.lineno == code.co_firstlineno]
    if len(on_line) <= 1:
        return ast.unparse(on_line[0].body) if on_line else None
    # Zero-width positions belong to the function's entry and exit, not to its body.
    spots = [
        (line, col, end_line, end_col)
        for line, end_line, col, end_col in code.co_positions()
        if line is not None and end_line is not None and col is not None and end_col is not None
        if (line, col) != (end_line, end_col)
    ]
    holding = [n for n in on_line if spots and all(_holds(n.body, spot) for spot in spots)]
    if not holding:
        return None
    # A lambda inside another holds its own code; the outer one holds it too.
    innermost = min(holding, key=lambda n: _extent(n.body))
    return ast.unparse(innermost.body)


def _holds(node: ast.expr, spot: tuple[int, int, int, int]) -> bool:
    line, col, end_line, end_col = spot
    if node.end_lineno is None or node.end_col_offset is None:
        return False
    return (node.lineno, node.col_offset) <= (line, col) and (end_line, end_col) <= (
        node.end_lineno,
        node.end_col_offset,
    )


def _extent(node: ast.expr) -> tuple[int, int]:
    return ((node.end_lineno or node.lineno) - node.lineno, (node.end_col_offset or 0) - node.col_offset)


@functools.lru_cache(maxsize=8)
def _parsed(source: str) -> ast.Module | None:
    # Several guards of one class read the same file: parse it once.
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None
