"""
Issue 2: the class body compiles once into a WorkflowSpec, and every definition rule
fails at class creation with one WorkflowDefinitionError naming the class, the step
and the rule.

Workflow classes that must not compile are defined inside ``pytest.raises``; the
assertions read ``err.value.problems`` (workflow, step, rule id, message).
"""

# Classes defined inside pytest.raises exist only to fail their own definition; where a
# type checker already rejects the mistake statically, a `type: ignore` marks the line.
# pyright: reportUnusedClass=false

from __future__ import annotations

from typing import Any, cast

import attrs
import pytest

from examples.order_process import Approval, OrderProcess
from statemachine_orch import (
    CompensationSpec,
    Ctx,
    DeadEdgeWarning,
    DefinitionProblem,
    Retry,
    StepKind,
    TaskSpec,
    Workflow,
    WorkflowDefinitionError,
    after,
    goto,
    human_task,
    machine_of,
    spec_of,
    step,
)

ProblemInfo = pytest.ExceptionInfo[WorkflowDefinitionError]


def problems(err: ProblemInfo) -> list[DefinitionProblem]:
    """The problems an error reports, in order."""
    return list(err.value.problems)


def rules(err: ProblemInfo) -> list[tuple[str | None, str]]:
    """``(step, rule)`` of each problem, in order."""
    return [(p.step, p.rule) for p in err.value.problems]


def class_name(qualified: str) -> str:
    """The last part of a dotted name (decorator-time errors name the class by its qualname)."""
    return qualified.rpartition(".")[2]


@attrs.frozen
class Form:
    """A human-task form used by the definitions below."""

    ok: bool


# --------------------------------------------------------------------------- the error itself


def test_error_is_a_type_error_raised_by_the_class_statement_with_a_readable_message() -> None:
    """Issue 2: a misdeclared class raises WorkflowDefinitionError (also a TypeError) when defined."""
    with pytest.raises(TypeError) as err:

        class NoInitial(Workflow):
            @step(final=True)
            def only(self, ctx: Ctx) -> None: ...

    assert isinstance(err.value, WorkflowDefinitionError)
    workflow = "NoInitial"
    assert workflow == err.value.workflow
    expected = (
        "NoInitial is invalid: NoInitial: has no initial step; "
        "mark the first one with @step(initial=True) [no-initial-step]"
    )
    assert expected == str(err.value)


def test_every_problem_of_a_class_is_reported_at_once() -> None:
    """Issue 2: one WorkflowDefinitionError lists every broken rule, each naming the class and step."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Broken(Workflow):
            @step
            def first(self, ctx: Ctx) -> None: ...

            @after(first)
            @step
            def dead_end(self, ctx: Ctx) -> None: ...

            @after(first, when=lambda wf: True)
            @step(final=True, timeout=5)
            def sync_with_timeout(self, ctx: Ctx) -> None: ...

            @after(first, when=lambda wf: False)
            @human_task(form=Form, final=True)
            def nobody(self, ctx: Ctx, form: Form) -> None: ...

    expected = [
        ("sync_with_timeout", "timeout-needs-async"),
        ("nobody", "task-without-assignee"),
        (None, "no-initial-step"),
        ("dead_end", "no-way-out"),
    ]
    assert expected == rules(err)
    assert {"Broken"} == {p.workflow for p in err.value.problems}
    message = str(err.value)
    assert message.startswith("Broken is invalid for 4 reasons:\n")
    assert "\n  - Broken.dead_end: is not final and has no outgoing edge" in message
    assert "\n  - Broken.nobody: is a human task with neither assignee= nor candidate_groups=" in message


# --------------------------------------------------------------------------- structure of the graph


def test_no_steps() -> None:
    """Issue 2: a workflow class without any step is rejected (rule no-steps)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Empty(Workflow):
            amount: int = 0

    expected = [DefinitionProblem("Empty", None, "no-steps", "declares no step; decorate methods with @step")]
    assert expected == problems(err)


def test_no_initial_step() -> None:
    """Issue 2: a workflow must mark one step initial (rule no-initial-step)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class NoStart(Workflow):
            @step
            def a(self, ctx: Ctx) -> None: ...

            @after(a)
            @step(final=True)
            def b(self, ctx: Ctx) -> None: ...

    message = "has no initial step; mark the first one with @step(initial=True)"
    assert [DefinitionProblem("NoStart", None, "no-initial-step", message)] == problems(err)


def test_several_initial_steps() -> None:
    """Issue 2: exactly one step may be initial (rule several-initial-steps)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class TwoStarts(Workflow):
            @step(initial=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(a)
            @step(initial=True, final=True)
            def b(self, ctx: Ctx) -> None: ...

    message = "has 2 initial steps (a, b); exactly one may be initial"
    assert [DefinitionProblem("TwoStarts", None, "several-initial-steps", message)] == problems(err)


def test_unreachable_step() -> None:
    """Issue 2: a step no edge leads to from the initial step is rejected (rule unreachable-step)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Island(Workflow):
            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

            @step(final=True)
            def orphan(self, ctx: Ctx) -> None: ...

    message = "is not reachable from the initial step a; add an @after edge into it"
    assert [DefinitionProblem("Island", "orphan", "unreachable-step", message)] == problems(err)


def test_non_final_step_without_a_way_out() -> None:
    """Issue 2: a non-final step with no outgoing edge is rejected (rule no-way-out)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class DeadEnd(Workflow):
            @step(initial=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(a)
            @step
            def stuck(self, ctx: Ctx) -> None: ...

    message = (
        "is not final and has no outgoing edge; add @after(stuck) to a later step, "
        "@goto(...) on it, or mark it final=True"
    )
    assert [DefinitionProblem("DeadEnd", "stuck", "no-way-out", message)] == problems(err)


def test_a_step_whose_only_edge_is_an_error_route_has_no_way_out() -> None:
    """Issue 2: an on_error edge does not count as a way out of a successful step (rule no-way-out)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class OnlyOnError(Workflow):
            @step(initial=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(a, on_error=ValueError)
            @step(final=True)
            def handler(self, ctx: Ctx) -> None: ...

    expected = [("a", "no-way-out")]
    assert expected == rules(err)


def test_final_step_with_outgoing_edges() -> None:
    """Issue 2: a final step ends the instance, so it may have no outgoing edge (rule final-with-edges)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class FinalGoesOn(Workflow):
            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(a)
            @step(final=True)
            def b(self, ctx: Ctx) -> None: ...

    message = "is final=True but has outgoing edges (to b); a final step ends the instance"
    assert [DefinitionProblem("FinalGoesOn", "a", "final-with-edges", message)] == problems(err)


def test_two_default_edges_from_one_step() -> None:
    """Issue 2: only one unguarded (default) edge may leave a step (rule several-defaults)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class TwoDefaults(Workflow):
            @step(initial=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(a)
            @step(final=True)
            def b(self, ctx: Ctx) -> None: ...

            @after(a)
            @step(final=True)
            def c(self, ctx: Ctx) -> None: ...

    message = (
        "has 2 unguarded (default) edges, to b, c; only one edge may be the default: give the others a when= guard"
    )
    assert [DefinitionProblem("TwoDefaults", "a", "several-defaults", message)] == problems(err)


def test_a_goto_back_edge_counts_as_a_default_too() -> None:
    """Issue 2: an unguarded @goto and an unguarded @after from one step are two defaults."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class LoopAndOn(Workflow):
            @step(initial=True)
            def a(self, ctx: Ctx) -> None: ...

            @goto(a)
            @after(a)
            @step
            def b(self, ctx: Ctx) -> None: ...

            @after(b)
            @step(final=True)
            def c(self, ctx: Ctx) -> None: ...

    expected = [("b", "several-defaults")]
    assert expected == rules(err)


def test_duplicate_edge() -> None:
    """Issue 2: the same guarded edge declared twice is rejected (rule duplicate-edge)."""

    def big(wf: Any) -> bool:
        return True

    with pytest.raises(WorkflowDefinitionError) as err:

        class Twice(Workflow):
            @step(initial=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(a, when=big)
            @after(a, when=big)
            @step(final=True)
            def b(self, ctx: Ctx) -> None: ...

    message = "has the same edge to b declared 2 times"
    assert [DefinitionProblem("Twice", "a", "duplicate-edge", message)] == problems(err)


def test_join_without_fork() -> None:
    """@after with several sources is a join and needs a fork whose branches end there (join-without-fork)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class LonelyJoin(Workflow):
            @step(initial=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(a, when=lambda wf: True)
            @step
            def b(self, ctx: Ctx) -> None: ...

            @after(a, b)
            @step(final=True)
            def c(self, ctx: Ctx) -> None: ...

    message = (
        "@after(a, b) with several sources is a join, but no step with fork=True splits into branches "
        "that all end there; for 'after any of them', stack one @after per source"
    )
    assert [DefinitionProblem("LonelyJoin", "c", "join-without-fork", message)] == problems(err)


def test_a_workflow_that_can_never_end_is_rejected() -> None:
    """Issue 2 / DESIGN §1: a step from which no final step is reachable has no way out."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Forever(Workflow):
            @step(initial=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(a)
            @goto(a)
            @step
            def b(self, ctx: Ctx) -> None: ...

    assert {"a", "b"} <= {p.step for p in err.value.problems}


# --------------------------------------------------------------------------- references


def test_edge_to_something_that_is_not_a_step() -> None:
    """Issue 2: @after/@goto must name a step; a plain function is rejected (rule edge-not-a-step)."""

    def helper(self: Any, ctx: Ctx) -> None: ...

    not_a_step = cast("Any", helper)
    with pytest.raises(WorkflowDefinitionError) as err:

        class BadRef(Workflow):
            @step(initial=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(a)
            @after(not_a_step, when=lambda wf: False)
            @step(final=True)
            def b(self, ctx: Ctx) -> None: ...

    message = (
        "@after refers to test_edge_to_something_that_is_not_a_step.helper (function), "
        "which is not a step; decorate it with @step"
    )
    assert [DefinitionProblem("BadRef", "b", "edge-not-a-step", message)] == problems(err)


def test_goto_to_something_that_is_not_a_step() -> None:
    """Issue 2: a @goto target must be a step too (rule edge-not-a-step)."""
    target = cast("Any", print)
    with pytest.raises(WorkflowDefinitionError) as err:

        class BadLoop(Workflow):
            @step(initial=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(a)
            @goto(target, when=lambda wf: False)
            @step(final=True)
            def b(self, ctx: Ctx) -> None: ...

    expected = [("b", "edge-not-a-step")]
    assert expected == rules(err)
    assert err.value.problems[0].message.startswith("@goto refers to print")


class Elsewhere(Workflow):
    """A valid workflow whose steps other classes must not reference."""

    @step(initial=True, final=True)
    def pay(self, ctx: Ctx) -> None: ...


def test_edge_from_a_step_of_another_workflow() -> None:
    """Issue 2: an edge may only connect steps of the same class (rule foreign-step)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Borrower(Workflow):
            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(Elsewhere.pay)  # type checkers let it through (tests/typing/wrong_not_yet)
            @step(final=True)
            def b(self, ctx: Ctx) -> None: ...

    message = "@after refers to step Elsewhere.pay, which is not a step of Borrower"
    assert DefinitionProblem("Borrower", "b", "foreign-step", message) == err.value.problems[0]
    # b is then unreachable as well: both problems are reported.
    expected = [("b", "foreign-step"), ("b", "unreachable-step")]
    assert expected == rules(err)


def test_compensation_of_something_that_is_not_a_step_of_the_class() -> None:
    """Issue 2: a compensation must undo a step of its own class (rule compensation-not-a-step)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class UndoesOther(Workflow):
            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

            @Elsewhere.pay.compensation  # type: ignore[arg-type]
            def refund(self, ctx: Ctx) -> None: ...

    message = "is declared as the compensation of step Elsewhere.pay, which is not a step of UndoesOther"
    assert [DefinitionProblem("UndoesOther", "refund", "compensation-not-a-step", message)] == problems(err)


def test_two_compensations_for_one_step() -> None:
    """Issue 2: a step is undone by exactly one method (rule compensation-twice)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class DoubleUndo(Workflow):
            @step(initial=True, final=True)
            def pay(self, ctx: Ctx) -> None: ...

            @pay.compensation
            def refund(self, ctx: Ctx) -> None: ...

            @pay.compensation
            def refund_again(self, ctx: Ctx) -> None: ...

    message = "has 2 compensations (refund, refund_again); a step is undone by exactly one method"
    assert [DefinitionProblem("DoubleUndo", "pay", "compensation-twice", message)] == problems(err)


# --------------------------------------------------------------------------- guards and error routes


def test_guard_that_is_not_callable() -> None:
    """Issue 2: when= must be callable (rule guard-not-callable)."""
    not_callable = cast("Any", "wf.amount > 1000")
    with pytest.raises(WorkflowDefinitionError) as err:

        class StringGuard(Workflow):
            @step(initial=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(a, when=not_callable)
            @step(final=True)
            def b(self, ctx: Ctx) -> None: ...

    message = (
        "@after(..., when='wf.amount > 1000') has a guard of type str, which is not callable; "
        "use a method or a lambda (wf) -> bool"
    )
    assert [DefinitionProblem("StringGuard", "b", "guard-not-callable", message)] == problems(err)


def test_guard_with_the_wrong_signature() -> None:
    """Issue 2: a guard takes exactly one argument, the workflow (rule guard-signature)."""

    def two_args(wf: object, other: object) -> bool:
        return True

    guard = cast("Any", two_args)
    with pytest.raises(WorkflowDefinitionError) as err:

        class GreedyGuard(Workflow):
            @step(initial=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(a, when=guard)
            @step(final=True)
            def b(self, ctx: Ctx) -> None: ...

    message = "@after(..., when=two_args) must accept exactly one argument (the workflow), but takes 2"
    assert [DefinitionProblem("GreedyGuard", "b", "guard-signature", message)] == problems(err)


def test_on_error_that_is_not_an_exception_class() -> None:
    """Issue 2: on_error= takes exception classes (rule bad-on-error)."""
    bad = cast("Any", (ValueError, "KeyError"))
    with pytest.raises(WorkflowDefinitionError) as err:

        class BadCatch(Workflow):
            @step(initial=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(a, on_error=bad)
            @step
            def handler(self, ctx: Ctx) -> None: ...

            @after(a)
            @after(handler)
            @step(final=True)
            def end(self, ctx: Ctx) -> None: ...

    message = "on_error= must be an exception class or a tuple of them, got (<class 'ValueError'>, 'KeyError')"
    assert [DefinitionProblem("BadCatch", "handler", "bad-on-error", message)] == problems(err)


# --------------------------------------------------------------------------- methods and options


def test_step_method_with_the_wrong_signature() -> None:
    """Issue 2: a step is (self, ctx) (rule method-signature)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class NoCtx(Workflow):
            @step(initial=True, final=True)  # type: ignore[arg-type]
            def a(self) -> None: ...

    message = "must have the signature (self, ctx), not (self)"
    assert [DefinitionProblem("NoCtx", "a", "method-signature", message)] == problems(err)


def test_human_task_method_must_take_the_form() -> None:
    """Issue 2: a human task with form= is (self, ctx, form) (rule method-signature)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class FormlessReview(Workflow):
            @step(initial=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(a)
            @human_task(assignee="alice", form=Form, final=True)  # type: ignore[arg-type]
            def review(self, ctx: Ctx) -> None: ...

    message = "must have the signature (self, ctx, form), not (self, ctx)"
    assert [DefinitionProblem("FormlessReview", "review", "method-signature", message)] == problems(err)


def test_compensation_method_with_the_wrong_signature() -> None:
    """Issue 2: a compensation is (self, ctx) (rule method-signature, naming the compensation)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class GreedyUndo(Workflow):
            @step(initial=True, final=True)
            def pay(self, ctx: Ctx) -> None: ...

            @pay.compensation  # type: ignore[arg-type]
            def refund(self, ctx: Ctx, amount: int) -> None: ...

    message = "must have the signature (self, ctx), not (self, ctx, amount)"
    assert [DefinitionProblem("GreedyUndo", "refund", "method-signature", message)] == problems(err)


def test_timeout_on_a_sync_step() -> None:
    """Issue 2: only an async step can be interrupted, so timeout= needs async (rule timeout-needs-async)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class SyncTimeout(Workflow):
            @step(initial=True, final=True, timeout=5)
            def a(self, ctx: Ctx) -> None: ...

    message = "has timeout= but is not async; only an async step can be interrupted, so make it `async def`"
    assert [DefinitionProblem("SyncTimeout", "a", "timeout-needs-async", message)] == problems(err)


def test_human_task_nobody_may_complete() -> None:
    """Issue 2: a human task needs an assignee or candidate groups (rule task-without-assignee)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Unassigned(Workflow):
            @step(initial=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(a)
            @human_task(form=Form, final=True)
            def review(self, ctx: Ctx, form: Form) -> None: ...

    message = "is a human task with neither assignee= nor candidate_groups=; nobody could complete it"
    assert [DefinitionProblem("Unassigned", "review", "task-without-assignee", message)] == problems(err)


def test_human_task_form_must_be_a_class() -> None:
    """Issue 2: form= is the class of the form (rule bad-form)."""
    not_a_class = cast("type[Form]", Form(ok=True))
    with pytest.raises(WorkflowDefinitionError) as err:

        class FormInstance(Workflow):
            @step(initial=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(a)
            @human_task(assignee="alice", form=not_a_class, final=True)
            def review(self, ctx: Ctx, form: Form) -> None: ...

    message = "form= must be a class, got Form(ok=True)"
    assert [DefinitionProblem("FormInstance", "review", "bad-form", message)] == problems(err)


def test_version_must_be_a_non_empty_string() -> None:
    """Issue 2: the class keyword version= is a non-empty str (rule bad-version)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Unversioned(Workflow, version=""):
            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

    message = "version= must be a non-empty str, got ''"
    assert [DefinitionProblem("Unversioned", None, "bad-version", message)] == problems(err)


def test_error_edge_with_a_guard() -> None:
    """Issue 2: an on_error edge is chosen by the exception type alone, so it takes no when= (rule error-edge-with-guard)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class GuardedCatch(Workflow):
            @step(initial=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(a, on_error=ValueError, when=lambda wf: True)
            @after(a)
            @step(final=True)
            def b(self, ctx: Ctx) -> None: ...

    message = (
        "@after(..., when=True, on_error=...) has both; an error edge is chosen by the exception type alone: drop when="
    )
    assert [DefinitionProblem("GuardedCatch", "b", "error-edge-with-guard", message)] == problems(err)


class Opaque:
    """A plain class: nothing knows how to store it as JSON."""

    def __init__(self, handle: int) -> None:
        self.handle = handle


def test_field_that_cannot_be_persisted() -> None:
    """DESIGN §3: a variable whose type cannot round-trip through JSON is a definition error (rule field-not-serialisable)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Unstorable(Workflow):
            connection: Opaque
            count: int = 0

            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

    [problem] = problems(err)
    expected = ("Unstorable", "connection", "field-not-serialisable")
    assert expected == (problem.workflow, problem.step, problem.rule)
    assert problem.message.startswith("field 'connection' cannot be persisted: its type 'Opaque' cannot be stored")


def test_optional_field_that_cannot_be_persisted() -> None:
    """DESIGN §3: `Opaque | None` cannot be persisted any more than `Opaque`."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class MaybeUnstorable(Workflow):
            connection: Opaque | None = None

            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

    expected = [("connection", "field-not-serialisable")]
    assert expected == rules(err)


def test_only_the_field_with_an_unresolvable_annotation_is_reported() -> None:
    """DESIGN §3: the problem names the field whose type cannot be found, not its neighbours."""

    @attrs.frozen
    class LocalAnswer:
        ok: bool

    with pytest.raises(WorkflowDefinitionError) as err:

        class Unresolved(Workflow):
            answer: LocalAnswer | None = None
            count: int = 0

            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

    expected = [("answer", "field-not-serialisable")]
    assert expected == rules(err)


def test_form_that_cannot_be_persisted() -> None:
    """DESIGN §3: a human task's form type must round-trip through JSON (rule form-not-serialisable)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class OpaqueForm(Workflow):
            @step(initial=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(a)
            @human_task(assignee="alice", form=Opaque, final=True)
            def review(self, ctx: Ctx, form: Opaque) -> None: ...

    [problem] = problems(err)
    expected = ("OpaqueForm", "review", "form-not-serialisable")
    assert expected == (problem.workflow, problem.step, problem.rule)
    assert problem.message.startswith("the form cannot be persisted: its type 'Opaque' cannot be stored as JSON")


def test_unknown_class_keyword() -> None:
    """Issue 2: a misspelt class keyword (versoin=) is a definition error, not silently ignored (rule class-keyword)."""
    keywords: dict[str, Any] = {"versoin": "2"}
    with pytest.raises(WorkflowDefinitionError) as err:

        class Misspelt(Workflow, **keywords):
            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

    message = "unknown class keyword versoin=; Workflow accepts version=, name= and abstract="
    assert [DefinitionProblem("Misspelt", None, "class-keyword", message)] == problems(err)


# --------------------------------------------------------------------------- names


def test_names_with_the_engine_prefix_are_reserved() -> None:
    """Issue 2: fields and steps may not use the engine's _orch prefix (rule reserved-name)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Prefixed(Workflow):
            _orch_note: str = ""

            @step(initial=True, final=True)
            def _orch_go(self, ctx: Ctx) -> None: ...

    assert [
        DefinitionProblem(
            "Prefixed",
            "_orch_note",
            "reserved-name",
            "field '_orch_note' uses the prefix '_orch', reserved for the engine",
        ),
        DefinitionProblem(
            "Prefixed",
            "_orch_go",
            "reserved-name",
            "step name '_orch_go' uses the prefix '_orch', reserved for the engine",
        ),
    ] == problems(err)


def test_names_of_the_engine_attributes_are_reserved() -> None:
    """Issue 2: a step that would shadow the engine's own class attributes is rejected (rule reserved-name)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Shadowing(Workflow):
            @step(initial=True, final=True)
            def __orch_machine__(self, ctx: Ctx) -> None: ...  # type: ignore[override]

    message = "'__orch_machine__' is an attribute of the engine; rename it"
    assert [DefinitionProblem("Shadowing", "__orch_machine__", "reserved-name", message)] == problems(err)


def test_a_name_that_is_both_a_field_and_a_step() -> None:
    """Issue 2: an annotated field may not reuse a step's name (rule field-step-clash)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Clash(Workflow):
            @step(initial=True, final=True)
            def go(self, ctx: Ctx) -> None: ...  # pyright: ignore[reportRedeclaration]

            go: int  # type: ignore[no-redef]

    message = "'go' is both an annotated field and a step; rename one of them"
    assert DefinitionProblem("Clash", "go", "field-step-clash", message) in problems(err)


def test_field_declaration_errors_of_attrs_are_definition_errors() -> None:
    """Issue 2: attrs' own field errors (a mandatory field after a default) are reported the same way (rule fields)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Misordered(Workflow):
            amount: float = 0.0
            order_id: str  # type: ignore[misc]

            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

    message = (
        "field 'order_id' has no default but follows a field that has one; move it up, "
        "give it a default, or declare it with attrs.field(kw_only=True)"
    )
    assert [DefinitionProblem("Misordered", None, "fields", message)] == problems(err)


# --------------------------------------------------------------------------- decorator misuse


def test_step_decorated_twice() -> None:
    """Issue 2: @step on something that already is a step is rejected (rule decorated-twice)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Twice(Workflow):
            @step  # type: ignore[call-overload]
            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

    [problem] = problems(err)
    expected = ("Twice", "a", "decorated-twice")
    assert expected == (class_name(problem.workflow), problem.step, problem.rule)
    message = "@step is applied to something that is already a step or compensation"
    assert message == problem.message


def test_edge_decorator_on_a_plain_method() -> None:
    """Issue 2: @after must sit above @step/@human_task (rule edge-on-non-step)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Undecorated(Workflow):
            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(a)  # type: ignore[arg-type]
            def b(self, ctx: Ctx) -> None: ...

    [problem] = problems(err)
    expected = ("Undecorated", "b", "edge-on-non-step")
    assert expected == (class_name(problem.workflow), problem.step, problem.rule)
    message = "@after must be placed above @step or @human_task (it decorates a step, not a plain function)"
    assert message == problem.message


def test_step_on_something_that_is_not_a_function() -> None:
    """Issue 2: @step decorates a plain method; a staticmethod is rejected naming the class and step (rule not-a-function)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Static(Workflow):
            @step  # type: ignore[arg-type]
            @staticmethod
            def a(ctx: Ctx) -> None: ...

    [problem] = problems(err)
    expected = ("Static", "a", "not-a-function")
    assert expected == (class_name(problem.workflow), problem.step, problem.rule)
    message = "@step must decorate a plain method (def or async def), not a staticmethod"
    assert message == problem.message


# --------------------------------------------------------------------------- the compiled spec


def test_order_example_steps() -> None:
    """Issue 2: the order example compiles into its seven steps, in declaration order, with their policies."""
    spec = spec_of(OrderProcess)
    header = ("OrderProcess", "1", "validate_order")
    assert header == (spec.name, spec.version, spec.initial)
    expected = [
        ("validate_order", StepKind.STEP, True, True, False, Retry(attempts=3, initial=0.01), 5.0),
        ("check_inventory", StepKind.STEP, True, False, False, Retry(), None),
        ("manual_approval", StepKind.HUMAN_TASK, False, False, False, Retry(), None),
        ("reject_order", StepKind.STEP, False, False, True, Retry(), None),
        ("process_payment", StepKind.STEP, True, False, False, Retry(attempts=3, initial=0.01), None),
        ("update_inventory", StepKind.STEP, True, False, False, Retry(attempts=3, initial=0.01), None),
        ("send_confirmation", StepKind.STEP, False, False, True, Retry(), None),
    ]
    actual = [(s.name, s.kind, s.is_async, s.initial, s.final, s.retry, s.timeout) for s in spec.steps]
    assert expected == actual


def test_order_example_fields() -> None:
    """Issue 2: the typed fields are the process variables, in declaration order."""
    expected = [
        ("order_id", False),
        ("customer_id", False),
        ("amount", False),
        ("items", True),
        ("validated", True),
        ("approved", True),
        ("approval_comment", True),
        ("payment_id", True),
        ("confirmation_sent", True),
    ]
    assert expected == [(f.name, f.has_default) for f in spec_of(OrderProcess).fields]


def test_order_example_edges_in_guard_order_default_last() -> None:
    """Issue 2: the edges carry their guards; from the gateway the guarded edge comes before the default."""
    spec = spec_of(OrderProcess)
    expected = [
        ("validate_order", "check_inventory", "wf.validated"),
        ("check_inventory", "manual_approval", "needs_approval"),
        ("validate_order", "reject_order", None),
        ("manual_approval", "reject_order", None),
        ("check_inventory", "process_payment", None),
        ("manual_approval", "process_payment", "wf.approved"),
        ("process_payment", "update_inventory", None),
        ("update_inventory", "send_confirmation", None),
    ]
    assert expected == [(e.source, e.dest, e.guard_name) for e in spec.edges]
    gateway = spec.outgoing("check_inventory")
    expected_gateway = [("manual_approval", False), ("process_payment", True)]
    assert expected_gateway == [(e.dest, e.is_default) for e in gateway]
    # The shared machine tries the transitions in the same order.
    machine = machine_of(OrderProcess)
    tried = ["manual_approval", "process_payment"]
    assert tried == [t.dest for t in machine.events["next"].transitions["check_inventory"]]


def test_order_example_compensations_and_task() -> None:
    """Issue 2: compensations (default retry policy) and the human task's spec are compiled."""
    spec = spec_of(OrderProcess)
    compensation_retry = Retry(attempts=3, initial=0.5)
    payment = spec.step("process_payment").compensation
    stock = spec.step("update_inventory").compensation
    assert payment is not None
    assert stock is not None
    assert ("refund_payment", True, compensation_retry) == (payment.name, payment.is_async, payment.retry)
    assert ("restore_stock", True, compensation_retry) == (stock.name, stock.is_async, stock.retry)
    without = [s.name for s in spec.steps if s.compensation is None]
    expected = ["validate_order", "check_inventory", "manual_approval", "reject_order", "send_confirmation"]
    assert expected == without
    task = spec.step("manual_approval").task
    assert TaskSpec("manager", (), Approval, 2 * 24 * 3600.0) == task
    assert isinstance(payment, CompensationSpec)


def test_compensation_retry_policy_can_be_given() -> None:
    """Issue 2: @x.compensation(retry=...) sets the compensation's own retry policy."""

    class CustomUndo(Workflow):
        @step(initial=True, final=True)
        def pay(self, ctx: Ctx) -> None: ...

        @pay.compensation(retry=Retry(attempts=7, initial=2))
        def refund(self, ctx: Ctx) -> None: ...

    comp = spec_of(CustomUndo).step("pay").compensation
    assert comp is not None
    assert ("refund", Retry(attempts=7, initial=2.0)) == (comp.name, comp.retry)


def test_default_declared_before_a_guard_is_still_tried_last() -> None:
    """Issue 2: the machine tries guarded edges in declaration order and the default last, wherever it is declared."""
    with pytest.warns(DeadEdgeWarning, match=r"a -> large \[when wf.x > 10\] is never taken"):
        DefaultFirst = _default_first()  # noqa: N806 - a class
    machine = machine_of(DefaultFirst)
    tried = ["positive", "large", "fallback"]
    assert tried == [t.dest for t in machine.events["next"].transitions["a"]]
    guards = {None, "wf.x > 0", "wf.x > 10"}
    assert guards == {e.guard_name for e in spec_of(DefaultFirst).outgoing("a")}


def _default_first() -> type[Workflow]:
    class DefaultFirst(Workflow):
        x: int = 0

        @step(initial=True)
        def a(self, ctx: Ctx) -> None: ...

        @after(a)
        @step(final=True)
        def fallback(self, ctx: Ctx) -> None: ...

        @after(a, when=lambda wf: wf.x > 0)
        @step(final=True)
        def positive(self, ctx: Ctx) -> None: ...

        @after(a, when=lambda wf: wf.x > 10)
        @step(final=True)
        def large(self, ctx: Ctx) -> None: ...

    return DefaultFirst


def test_spec_is_built_once_and_frozen() -> None:
    """Issue 2: the spec is compiled once per class and cannot be changed."""
    spec = spec_of(OrderProcess)
    assert spec is spec_of(OrderProcess)
    assert spec is spec_of(OrderProcess(order_id="o", customer_id="c", amount=1.0))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        spec.version = "2"  # type: ignore[misc]


def test_one_machine_per_class_without_models() -> None:
    """Issue 2 / DESIGN §2: one transitions machine per class, shared, with no instance ever added as a model."""
    machine = machine_of(OrderProcess)
    assert machine is machine_of(OrderProcess)
    no_models: list[object] = []
    assert no_models == machine.models
    steps = [s.name for s in spec_of(OrderProcess).steps]
    assert set(steps) <= set(machine.states)
    assert machine is not machine_of(Elsewhere)


def test_spec_of_rejects_abstract_workflows() -> None:
    """Issue 2: an abstract base class is not compiled and has no spec."""

    class Base(Workflow, abstract=True):
        tenant: str = ""

    class Concrete(Base):
        @step(initial=True, final=True)
        def a(self, ctx: Ctx) -> None: ...

    with pytest.raises(TypeError, match="Base is not a concrete Workflow subclass"):
        spec_of(Base)
    fields = ["tenant"]
    assert fields == [f.name for f in spec_of(Concrete).fields]


@attrs.define
class Address:
    """A mutable record: a default instance of it would be shared too."""

    city: str = ""


@attrs.frozen
class Coordinates:
    """A frozen record: one shared default instance is fine."""

    lat: float = 0.0


def test_a_mutable_default_is_a_definition_error_that_names_the_factory() -> None:
    """Issue 10: `items: list[str] = []` would be one list shared by every instance (rule mutable-default)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Cart(Workflow):
            items: list[str] = []  # the mistake under test
            prices: dict[str, float] = {"tea": 2.5}
            seen: set[int] = attrs.field(default=set[int]())
            address: Address = Address()
            where: Coordinates = Coordinates()  # frozen: sharing it is harmless
            notes: tuple[str, ...] = ()
            lines: list[str] = attrs.field(factory=list[str])

            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

    found = {p.step: (p.rule, p.message.rpartition("; ")[2]) for p in problems(err)}
    assert {
        "items": ("mutable-default", "give each its own with attrs.field(factory=list[str])"),
        "prices": ("mutable-default", "give each its own with attrs.field(factory=lambda: {'tea': 2.5})"),
        "seen": ("mutable-default", "give each its own with attrs.field(factory=set[int])"),
        "address": ("mutable-default", "give each its own with attrs.field(factory=lambda: Address(...))"),
    } == found
    [first] = [p for p in problems(err) if p.step == "items"]
    assert first.message.startswith(
        "field 'items' has the mutable default []: one object that every instance would share"
    )


def test_an_abstract_bases_mutable_default_is_reported_in_each_concrete_class() -> None:
    """Issue 10: the rule is checked where the class is compiled: a concrete subclass of the base."""

    class Audited(Workflow, abstract=True):
        audit: list[str] = []

    with pytest.raises(WorkflowDefinitionError) as err:

        class Refund(Audited):
            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

    assert [("audit", "mutable-default")] == rules(err)
