"""Running generated machines in tests: from scratch (no example database), with their other defaults."""

from __future__ import annotations

import pytest
from hypothesis import settings

from statemachine_orch.testing import InvariantViolation, WorkflowStateMachine


def fresh(machine: type[WorkflowStateMachine]) -> type[WorkflowStateMachine]:
    """*machine*, set to forget earlier failures: each run must find its bug anew."""
    case = machine.TestCase
    case.settings = settings(case.settings, database=None)
    return machine


def find_bug(machine: type[WorkflowStateMachine]) -> InvariantViolation:
    """Run *machine*'s test case, which must fail; return the shrunk violation."""
    with pytest.raises(InvariantViolation) as err:
        fresh(machine).TestCase().runTest()
    return err.value


def story(err: BaseException) -> str:
    """The notes hypothesis attached: the shrunk story, one event per line."""
    return "\n".join(getattr(err, "__notes__", []))


def passes(machine: type[WorkflowStateMachine]) -> None:
    """Run *machine*'s test case, which must pass."""
    fresh(machine).TestCase().runTest()
