"""
Running generated machines in tests: from scratch (no example database), the same stories on every run.

A test that the toolkit finds a bug (or covers every edge) must not depend on
luck: with hypothesis' random seed, a bug that the search meets in one run of
100 stories in twenty went unnoticed one run in twenty. So these runs are
derandomized (the seed comes from the machine), stop at the first bug found
(else how long hypothesis keeps looking for more, and so which story it
shrinks, would depend on the machine's speed: it stops 10 s after the first
one), and allow far more stories than any of these bugs needs.
"""

from __future__ import annotations

import pytest
from hypothesis import settings

from statemachine_orch.testing import InvariantViolation, WorkflowStateMachine

FIND_EXAMPLES = 1000
"""Stories a run may play to find its bug: each is found within the first hundred."""


def fresh(machine: type[WorkflowStateMachine], *, finding: bool = False) -> type[WorkflowStateMachine]:
    """*machine*, set to forget earlier failures and to play the same stories on every run (*finding*: a bug)."""
    case = machine.TestCase
    case.settings = settings(case.settings, database=None, derandomize=True)
    if finding:
        case.settings = settings(case.settings, max_examples=FIND_EXAMPLES, report_multiple_bugs=False)
    return machine


def find_bug(machine: type[WorkflowStateMachine]) -> InvariantViolation:
    """Run *machine*'s test case, which must fail; return the shrunk violation."""
    with pytest.raises(InvariantViolation) as err:
        fresh(machine, finding=True).TestCase().runTest()
    return err.value


def story(err: BaseException) -> str:
    """The notes hypothesis attached: the shrunk story, one event per line."""
    return "\n".join(getattr(err, "__notes__", []))


def passes(machine: type[WorkflowStateMachine]) -> None:
    """Run *machine*'s test case, which must pass."""
    fresh(machine).TestCase().runTest()
