"""
Issue 3: the definition rules of the durable DSL.

Timers (``@timer``), message waits (``@wait_for``), escalations
(``@after(waiting_step, timeout=...)``), migrations (``@migration``) and
persistence (every field, form and message must round-trip through JSON) add
rules that fail at class creation with one ``WorkflowDefinitionError``. One test
per rule asserts the problem exactly: workflow, step, rule id and message.

Workflow classes that must not compile are defined inside ``pytest.raises``.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.
# Classes defined inside pytest.raises exist only to fail their own definition.
# pyright: reportUnusedClass=false

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

import attrs
import pytest

from statemachine_orch import (
    Ctx,
    DefinitionProblem,
    Workflow,
    WorkflowDefinitionError,
    after,
    goto,
    human_task,
    migration,
    spec_of,
    step,
    timer,
    wait_for,
)

ProblemInfo = pytest.ExceptionInfo[WorkflowDefinitionError]


def problems(err: ProblemInfo) -> list[DefinitionProblem]:
    """The problems an error reports, in order."""
    return list(err.value.problems)


@attrs.frozen
class Paid:
    """A message."""

    amount: int


@attrs.frozen
class Form:
    """A task form."""

    ok: bool


class Opaque:
    """A plain class: nothing knows how to store it as JSON."""

    def __init__(self, handle: int) -> None:
        self.handle = handle


class Elsewhere(Workflow, version="1"):
    """Another workflow, for a migration that names the wrong one."""

    @step(initial=True, final=True)
    def a(self, ctx: Ctx) -> None: ...


# --------------------------------------------------------------------------- escalations


def test_a_timeout_edge_from_a_step_that_does_not_wait() -> None:
    """Issue 3: only a @human_task or @wait_for step can time out (rule timeout-needs-wait)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Impatient(Workflow):
            @step(initial=True)
            def work(self, ctx: Ctx) -> None: ...

            @after(work, timeout=timedelta(minutes=5))
            @step
            def hurry(self, ctx: Ctx) -> None: ...

            @after(work)
            @after(hurry)
            @step(final=True)
            def done(self, ctx: Ctx) -> None: ...

    message = "has a timeout edge to hurry, but only a waiting step (@human_task or @wait_for) can time out"
    assert [DefinitionProblem("Impatient", "work", "timeout-needs-wait", message)] == problems(err)


def test_a_timer_step_cannot_time_out_either() -> None:
    """Issue 3: a @timer step waits for its own delay; a timeout edge from it is refused (rule timeout-needs-wait)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Snooze(Workflow):
            @timer(60, initial=True)
            def nap(self, ctx: Ctx) -> None: ...

            @after(nap, timeout=30)
            @step
            def alarm(self, ctx: Ctx) -> None: ...

            @after(nap)
            @after(alarm)
            @step(final=True)
            def up(self, ctx: Ctx) -> None: ...

    message = "has a timeout edge to alarm, but only a waiting step (@human_task or @wait_for) can time out"
    assert [DefinitionProblem("Snooze", "nap", "timeout-needs-wait", message)] == problems(err)


def test_a_wait_with_two_timeout_edges() -> None:
    """Issue 3: a wait escalates one way only (rule several-timeouts)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class TwoWays(Workflow):
            @step(initial=True)
            def submit(self, ctx: Ctx) -> None: ...

            @after(submit)
            @human_task(assignee="manager")
            def approve(self, ctx: Ctx) -> None: ...

            @after(approve, timeout=timedelta(days=1))
            @step
            def remind(self, ctx: Ctx) -> None: ...

            @after(approve, timeout=timedelta(days=2))
            @step
            def escalate(self, ctx: Ctx) -> None: ...

            @after(approve)
            @after(remind)
            @after(escalate)
            @step(final=True)
            def done(self, ctx: Ctx) -> None: ...

    message = "has 2 timeout edges (to remind, escalate); a wait escalates one way"
    assert [DefinitionProblem("TwoWays", "approve", "several-timeouts", message)] == problems(err)


def test_a_timeout_edge_with_a_guard() -> None:
    """Issue 3: a timeout edge is taken because time ran out, never on a condition (rule timeout-with-condition)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Conditional(Workflow):
            urgent: bool = False

            @wait_for(Paid, initial=True)
            def await_payment(self, ctx: Ctx, msg: Paid) -> None: ...

            @after(await_payment, timeout=timedelta(hours=1), when=lambda wf: wf.urgent)
            @step
            def chase(self, ctx: Ctx) -> None: ...

            @after(await_payment)
            @after(chase)
            @step(final=True)
            def done(self, ctx: Ctx) -> None: ...

    message = "the timeout edge to chase also has when= or on_error=; a timeout edge takes neither"
    assert [DefinitionProblem("Conditional", "await_payment", "timeout-with-condition", message)] == problems(err)


def test_a_timeout_that_is_not_positive() -> None:
    """Issue 3: an escalation after zero seconds is a mistake (rule bad-timeout)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Instant(Workflow):
            @wait_for(Paid, initial=True)
            def await_payment(self, ctx: Ctx, msg: Paid) -> None: ...

            @after(await_payment, timeout=timedelta(0))
            @step
            def chase(self, ctx: Ctx) -> None: ...

            @after(await_payment)
            @after(chase)
            @step(final=True)
            def done(self, ctx: Ctx) -> None: ...

    message = "the timeout edge to chase has timeout=0s; it must be > 0"
    assert [DefinitionProblem("Instant", "await_payment", "bad-timeout", message)] == problems(err)


# --------------------------------------------------------------------------- timers and messages


def test_a_timer_with_a_negative_delay() -> None:
    """Issue 3: a timer waits zero seconds or more (rule bad-delay)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class BackInTime(Workflow):
            @timer(timedelta(minutes=-5), initial=True)
            def wait(self, ctx: Ctx) -> None: ...

            @after(wait)
            @step(final=True)
            def done(self, ctx: Ctx) -> None: ...

    message = "@timer() needs a delay >= 0, got -300.0"
    assert [DefinitionProblem("BackInTime", "wait", "bad-delay", message)] == problems(err)


def test_wait_for_given_a_message_object_instead_of_its_class() -> None:
    """Issue 3: @wait_for takes the message class (rule bad-message)."""
    not_a_class = cast("type[Paid]", Paid(5))
    with pytest.raises(WorkflowDefinitionError) as err:

        class ObjectMessage(Workflow):
            @wait_for(not_a_class, initial=True, final=True)
            def await_payment(self, ctx: Ctx, msg: Paid) -> None: ...

    message = "@wait_for() needs a message class, got Paid(amount=5)"
    assert [DefinitionProblem("ObjectMessage", "await_payment", "bad-message", message)] == problems(err)


def test_a_message_type_that_cannot_be_persisted() -> None:
    """Issue 3: a message waits in the store, so its type must round-trip through JSON (rule message-not-serialisable)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class OpaqueMessage(Workflow):
            @wait_for(Opaque, initial=True, final=True)
            def receive(self, ctx: Ctx, msg: Opaque) -> None: ...

    [problem] = problems(err)
    assert ("OpaqueMessage", "receive", "message-not-serialisable") == (problem.workflow, problem.step, problem.rule)
    assert problem.message.startswith(
        "the message cannot be persisted: its type 'Opaque' cannot be stored as JSON; make it an attrs class, or "
        "register its JSON form with statemachine_orch.register_type(Opaque, to_json=..., from_json=...)"
    ), problem.message


def test_a_form_type_that_cannot_be_persisted() -> None:
    """Issue 3: a completed form waits in the store for its step, so it must round-trip (rule form-not-serialisable)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class OpaqueForm(Workflow):
            @step(initial=True)
            def submit(self, ctx: Ctx) -> None: ...

            @after(submit)
            @human_task(assignee="alice", form=Opaque, final=True)
            def review(self, ctx: Ctx, form: Opaque) -> None: ...

    [problem] = problems(err)
    assert ("OpaqueForm", "review", "form-not-serialisable") == (problem.workflow, problem.step, problem.rule)
    assert problem.message.startswith(
        "the form cannot be persisted: its type 'Opaque' cannot be stored as JSON; make it an attrs class, or "
        "register its JSON form with statemachine_orch.register_type(Opaque, to_json=..., from_json=...)"
    ), problem.message


def test_a_field_type_that_cannot_be_persisted() -> None:
    """Issue 3: variables are stored as JSON; a complex field cannot be, and is refused (rule field-not-serialisable)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Phases(Workflow):
            phase: complex = 1j

            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

    [problem] = problems(err)
    assert ("Phases", "phase", "field-not-serialisable") == (problem.workflow, problem.step, problem.rule)
    assert (
        "field 'phase' cannot be persisted: its type 'complex' cannot be stored as JSON; make it an attrs class, or "
        "register its JSON form with statemachine_orch.register_type(complex, to_json=..., from_json=...) before "
        "this class"
    ) == problem.message


def test_a_union_field_whose_members_json_cannot_tell_apart() -> None:
    """Issue 3: a datetime in a `datetime | str` field would come back as a str, so the type is refused (rule field-not-serialisable)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Stamp(Workflow):
            when: datetime | str = ""

            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

    message = (
        "field 'when' cannot be persisted: its union type mixes datetime and str, which are both stored as JSON "
        "strings and could not be told apart when read back; use one type, or attrs classes"
    )
    assert [DefinitionProblem("Stamp", "when", "field-not-serialisable", message)] == problems(err)


def test_a_number_union_that_round_trips_is_accepted() -> None:
    """Issue 3: only a type that cannot round-trip is a definition error; `int | float` round-trips (2 vs 2.0)."""

    class Measure(Workflow):
        amount: int | float = 0

        @step(initial=True, final=True)
        def a(self, ctx: Ctx) -> None: ...

    assert ["amount"] == [f.name for f in spec_of(Measure).fields]


# --------------------------------------------------------------------------- versions and migrations


def test_a_migration_from_something_that_is_not_a_workflow() -> None:
    """Issue 3: @migration names an older version of this workflow, a concrete Workflow class (rule bad-migration)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class FromForm(Workflow, version="2"):
            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

            @migration(Form)
            @staticmethod
            def from_form(old: Form, step: str) -> tuple[FromForm, str]:
                return FromForm(), step

    message = "@migration(Form (type)) names a class that is not a concrete Workflow"
    assert [DefinitionProblem("FromForm", "from_form", "bad-migration", message)] == problems(err)


def test_a_migration_from_another_workflow() -> None:
    """Issue 3: only versions of the same workflow (same name=) can be migrated (rule bad-migration)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Borrower(Workflow, version="2"):
            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

            @migration(Elsewhere)
            @staticmethod
            def from_elsewhere(old: Elsewhere, step: str) -> tuple[Borrower, str]:
                return Borrower(), step

    message = (
        "@migration(Elsewhere version 1) migrates another workflow; only versions of Borrower can be migrated here"
    )
    assert [DefinitionProblem("Borrower", "from_elsewhere", "bad-migration", message)] == problems(err)


def test_an_empty_workflow_name() -> None:
    """Issue 3: name= is the workflow's stable name in stores, a non-empty str (rule bad-name)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Nameless(Workflow, name=""):
            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

    message = "name= must be a non-empty str, got ''"
    assert [DefinitionProblem("Nameless", None, "bad-name", message)] == problems(err)


def test_a_misspelt_class_keyword() -> None:
    """Issue 3: `nmae=` is not silently ignored: the stored name would not be the intended one (rule class-keyword)."""
    keywords: dict[str, Any] = {"nmae": "Order"}
    with pytest.raises(WorkflowDefinitionError) as err:

        class Misspelt(Workflow, **keywords):
            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

    message = "unknown class keyword nmae=; Workflow accepts version=, name= and abstract="
    assert [DefinitionProblem("Misspelt", None, "class-keyword", message)] == problems(err)


# --------------------------------------------------------------------------- ends and errors


def test_a_loop_from_which_no_final_step_can_be_reached() -> None:
    """Issue 3: an instance entering b could only loop b <-> d forever (rule no-end-reachable, for each such step)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class Treadmill(Workflow):
            fast: bool = False

            @step(initial=True)
            def a(self, ctx: Ctx) -> None: ...

            @after(a, when=lambda wf: wf.fast)
            @step
            def b(self, ctx: Ctx) -> None: ...

            @after(a)
            @step(final=True)
            def c(self, ctx: Ctx) -> None: ...

            @after(b)
            @goto(b)
            @step
            def d(self, ctx: Ctx) -> None: ...

    message = "cannot reach any final step: every path from it loops forever; add an exit edge to a final step"
    assert [
        DefinitionProblem("Treadmill", "b", "no-end-reachable", message),
        DefinitionProblem("Treadmill", "d", "no-end-reachable", message),
    ] == problems(err)


def test_an_error_edge_with_a_guard() -> None:
    """Issue 3: an on_error edge is chosen by the exception type alone; a guard on it is refused (rule error-edge-with-guard)."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class GuardedCatch(Workflow):
            retries: int = 0

            @wait_for(Paid, initial=True)
            def await_payment(self, ctx: Ctx, msg: Paid) -> None: ...

            @after(await_payment, on_error=ValueError, when=lambda wf: wf.retries < 3)
            @step
            def refund(self, ctx: Ctx) -> None: ...

            @after(await_payment)
            @after(refund)
            @step(final=True)
            def done(self, ctx: Ctx) -> None: ...

    message = (
        "@after(..., when=wf.retries < 3, on_error=...) has both; an error edge is chosen by the exception type "
        "alone: drop when="
    )
    assert [DefinitionProblem("GuardedCatch", "refund", "error-edge-with-guard", message)] == problems(err)
