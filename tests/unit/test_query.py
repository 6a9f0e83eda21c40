"""
Queries (issue 10, item 8): ``@query`` methods answered from an instance's current variables.

``engine.query(id, Cls.q, *args)`` and ``handle.query(Cls.q, ...)`` run the
query of that name on the instance's own class, on a copy of its variables; a
query that assigns a variable, raises, or does not exist there is a
``QueryError``; a misdeclared query is a definition error.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.
# Classes defined inside pytest.raises exist only to fail their own definition.
# pyright: reportUnusedClass=false

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import pytest

from statemachine_orch import (
    Ctx,
    InstanceNotFound,
    QueryError,
    Workflow,
    WorkflowDefinitionError,
    after,
    human_task,
    query,
    spec_of,
    step,
)

if TYPE_CHECKING:
    from tests.conftest import EngineFactory, Runner


@attrs.frozen
class QLine:
    """An order line."""

    sku: str
    cents: int


class QCart(Workflow, name="QCart", version="1"):
    """A cart that waits for checkout; its queries read the lines."""

    lines: list[QLine] = attrs.field(factory=list[QLine])
    checked_out: bool = False

    @step(initial=True)
    def fill(self, ctx: Ctx) -> None:
        self.lines.append(QLine("BOOK", 1200))
        self.lines.append(QLine("LAMP", 3400))

    @after(fill)
    @human_task(assignee="clerk")
    def checkout(self, ctx: Ctx) -> None:
        self.checked_out = True

    @after(checkout)
    @step(final=True)
    def ship(self, ctx: Ctx) -> None: ...

    @query
    def total(self) -> int:
        """The cart's total, in cents."""
        return sum(line.cents for line in self.lines)

    @query
    def line(self, sku: str, *, default: int = 0) -> int:
        return next((line.cents for line in self.lines if line.sku == sku), default)

    @query
    def sneaky(self) -> int:
        self.lines.clear()
        return 0

    @query
    def broken(self) -> int:
        return 1 // len(self.lines[5:])


class QCartV2(Workflow, name="QCart", version="2"):
    """Version 2 counts in euros; a caller holding it queries version 1 instances by name."""

    lines: list[QLine] = attrs.field(factory=list[QLine])

    @step(initial=True, final=True)
    def fill(self, ctx: Ctx) -> None: ...

    @query
    def total(self) -> int:
        return -1  # not used for version 1 instances

    @query
    def euros(self) -> float:
        return 0.0


def test_a_query_answers_from_the_current_variables(new_engine: EngineFactory, run: Runner) -> None:
    """Issue 10: engine.query and handle.query, with arguments; the answer follows the instance as it moves."""

    async def scenario() -> tuple[int, int, int, int, bool]:
        async with new_engine() as engine:
            handle = await engine.start(QCart())
            await handle.wait_idle()
            total = engine.query(handle.instance_id, QCart.total)
            lamp = handle.query(QCart.line, "LAMP")
            missing = handle.query(QCart.line, "SOFA", default=-1)
            by_name = engine.query(handle.instance_id, QCartV2.total)  # the instance's own (version 1) query
            return total, lamp, missing, by_name, handle.workflow.checked_out

    assert (4600, 3400, -1, 4600, False) == run(scenario())


def test_a_query_is_a_plain_method_on_a_workflow_object() -> None:
    """Issue 10: on an object the decorated method is the method itself."""
    cart = QCart(lines=[QLine("PEN", 5)])
    assert (5, 5) == (cart.total(), cart.line("PEN"))
    assert "The cart's total, in cents." == QCart.total.__doc__


def test_the_spec_lists_the_queries_inherited_ones_included() -> None:
    """Issue 10: WorkflowSpec.queries, by name, with parameters and answer type; a non-query attribute hides one."""
    spec = spec_of(QCart)
    assert ["broken", "line", "sneaky", "total"] == [q.name for q in spec.queries]
    total = spec.query("total")
    assert total is not None
    assert ((), int, "The cart's total, in cents.") == (total.parameters, total.answer, total.doc)
    line = spec.query("line")
    assert line is not None
    assert (("sku", "default"), int) == (line.parameters, line.answer)
    assert spec.query("ship") is None

    class Cheaper(QCart, name="Cheaper"):
        def sneaky(self) -> int:  # pyright: ignore[reportIncompatibleVariableOverride] - a plain method hides the query
            return 0

        @query
        def count(self) -> int:
            return len(self.lines)

    assert ["broken", "count", "line", "total"] == [q.name for q in spec_of(Cheaper).queries]
    # A query changes no instance: adding one keeps the definition's fingerprint.
    assert spec_of(QCart).fingerprint == attrs.evolve(spec, queries=()).fingerprint


def test_a_query_that_assigns_raises_or_is_missing_is_a_query_error(new_engine: EngineFactory, run: Runner) -> None:
    """Issue 10: read-only (the variables are unchanged), errors chained, unknown queries named."""

    async def scenario() -> tuple[list[tuple[str, str, str]], int, type[BaseException] | None]:
        async with new_engine() as engine:
            handle = await engine.start(QCart())
            await handle.wait_idle()
            found: list[tuple[str, str, str]] = []
            cause: type[BaseException] | None = None
            asked: list[Any] = [QCart.sneaky, QCart.broken, QCartV2.euros, QCart.fill]
            for q in asked:
                with pytest.raises(QueryError) as err:
                    engine.query(handle.instance_id, q)
                assert handle.instance_id == err.value.instance_id
                found.append((err.value.instance_id, err.value.query, str(err.value)))
                if err.value.__cause__ is not None:
                    cause = type(err.value.__cause__)
            return found, len(handle.workflow.lines), cause

    found, lines, cause = run(scenario())
    assert ["sneaky", "broken", "euros", "<Step QCart.fill (step)>"] == [q for _, q, _ in found]
    assert found[0][2].endswith("query sneaky: a query is read-only, but it assigned lines")
    assert found[1][2].endswith("query broken: raised ZeroDivisionError: integer division or modulo by zero")
    assert found[2][2].endswith("query euros: QCart version 1 declares no @query euros")
    assert "pass the query itself" in found[3][2]
    assert 2 == lines
    assert ZeroDivisionError is cause


def test_querying_an_unknown_instance_raises_instance_not_found(new_engine: EngineFactory, run: Runner) -> None:
    """Issue 10: as every other read."""

    async def scenario() -> None:
        async with new_engine() as engine:
            engine.query("nobody", QCart.total)

    with pytest.raises(InstanceNotFound):
        run(scenario())


def test_misdeclared_queries_fail_at_definition() -> None:
    """Issue 10: an async query, a query on a non-function, and a query named like a field are definition errors."""
    with pytest.raises(WorkflowDefinitionError) as err:

        class AsyncQuery(Workflow):
            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

            @query
            async def total(self) -> int:
                return 1

    assert ["bad-query"] == [p.rule for p in err.value.problems]
    assert "a query answers at once, it cannot be async" in str(err.value)

    with pytest.raises(WorkflowDefinitionError) as err:
        query(print)  # pyright: ignore[reportArgumentType]
    assert "@query must decorate a plain method (def), not a builtin_function_or_method" in str(err.value)

    with pytest.raises(WorkflowDefinitionError) as err:

        class Clash(Workflow):
            @query
            def total(self) -> int:  # pyright: ignore[reportRedeclaration]
                return 1

            total: int  # type: ignore[no-redef]

            @step(initial=True, final=True)
            def a(self, ctx: Ctx) -> None: ...

    assert [("total", "field-step-clash")] == [(p.step, p.rule) for p in err.value.problems]
    assert "'total' is both an annotated field and a query; rename one of them" in str(err.value)
