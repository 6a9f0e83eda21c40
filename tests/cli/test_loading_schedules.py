"""Issue 10: ``orch_schedules`` in a worker module: a list of Schedule objects, or a function returning one."""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from types import ModuleType

import pytest

from statemachine_orch.cli.failures import UsageProblem
from statemachine_orch.cli.loading import schedules_of
from tests.cli import scheduled


def _module(name: str, value: object) -> ModuleType:
    module = ModuleType(name)
    module.orch_schedules = value  # type: ignore[attr-defined]
    return module


def test_schedules_come_from_a_list_or_a_function_in_module_order() -> None:
    """Issue 10: a function is called; modules without orch_schedules add nothing."""
    [tick] = scheduled.orch_schedules()
    found = schedules_of([scheduled, ModuleType("plain"), _module("listed", [tick])])
    assert ["cli-tick", "cli-tick"] == [s.id for s in found]


@pytest.mark.parametrize("value", ["0 2 * * *", ["nightly"], 5])
def test_anything_else_is_a_usage_problem(value: object) -> None:
    """Issue 10: a clear one-line problem naming the module and the attribute."""
    with pytest.raises(
        UsageProblem, match=r"^odd\.orch_schedules must be a list of Schedule objects \(or return one\)$"
    ):
        schedules_of([_module("odd", value)])
