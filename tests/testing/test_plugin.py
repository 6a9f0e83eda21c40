"""
Issue 4: the pytest plugin (entry point ``pytest11``): the ``orch_engine`` fixture and ``--orch-coverage``.

Each test runs pytest in a subprocess (``pytester``) on a small suite that uses the
plugin the way a user's suite would, so the plugin is found through its entry point
exactly as in a user's project, and asserts on the outcome and the output.
"""

from __future__ import annotations

import pytest

DOOR = """
import asyncio

from statemachine_orch import Ctx, InstanceStatus, Workflow, after, step


class Door(Workflow, version="1"):
    locked: bool

    @step(initial=True)
    def knock(self, ctx: Ctx) -> None:
        pass

    @after(knock, when=lambda wf: not wf.locked)
    @step(final=True)
    def enter(self, ctx: Ctx) -> None:
        pass

    @after(knock)
    @step(final=True)
    def leave(self, ctx: Ctx) -> None:
        pass


def test_an_open_door(orch_engine):
    async def scenario():
        handle = await orch_engine.start(Door(locked=False))
        await handle.result()
        return handle.status

    assert InstanceStatus.COMPLETED == asyncio.run(scenario())
"""


def test_the_fixture_gives_an_engine_on_a_virtual_clock(pytester: pytest.Pytester) -> None:
    """Issue 4: a user's test asks for orch_engine and runs an instance with asyncio.run."""
    pytester.makepyfile(test_door=DOOR)

    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)


def test_orch_coverage_reports_edges_taken_and_missed(pytester: pytest.Pytester) -> None:
    """Issue 4: --orch-coverage prints, per workflow, each edge's count and guard outcomes; misses are marked."""
    pytester.makepyfile(test_door=DOOR)

    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "--orch-coverage")

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*statemachine-orch edge coverage*",
            "Door: 1/2 edges (50%), 1 instances",
            "     knock -> enter [when not wf.locked]: 1x  guard: true/false never",
            "  !! knock -> leave [default]: 0x",
        ]
    )


def test_no_report_without_the_option(pytester: pytest.Pytester) -> None:
    """Issue 4: the report is opt-in."""
    pytester.makepyfile(test_door=DOOR)

    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)
    assert "statemachine-orch edge coverage" not in result.stdout.str()


def test_workflow_machines_feed_the_report(pytester: pytest.Pytester) -> None:
    """Issue 4: the three-line setup of the issue works, and its stories count in the report."""
    pytester.makepyfile(
        test_door_stories=DOOR
        + """
from hypothesis import settings
from statemachine_orch.testing import WorkflowMachine, paths

TestDoor = WorkflowMachine(Door, require_coverage=1.0).TestCase
TestDoor.settings = settings(TestDoor.settings, max_examples=20, database=None, derandomize=True)


def test_every_path_is_reachable():
    assert all(p.reachable for p in paths(Door))
"""
    )

    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "--orch-coverage")

    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["Door: 2/2 edges (100%), * instances"])


def test_a_failing_story_fails_the_users_test(pytester: pytest.Pytester) -> None:
    """Issue 4: WorkflowMachine's TestCase reports a modelling bug as a test failure, with the story."""
    pytester.makepyfile(
        test_gap="""
from hypothesis import settings
from statemachine_orch import Ctx, Workflow, after, step
from statemachine_orch.testing import WorkflowMachine


class Gate(Workflow, version="1"):
    age: int

    @step(initial=True)
    def check(self, ctx: Ctx) -> None:
        pass

    @after(check, when=lambda wf: wf.age >= 18)
    @step(final=True)
    def admit(self, ctx: Ctx) -> None:
        pass


TestGate = WorkflowMachine(Gate).TestCase
TestGate.settings = settings(TestGate.settings, database=None, derandomize=True)
"""
    )

    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*InvariantViolation: Gate: after check completed no edge could be taken*",
            "*i1 = start Gate(age=17)*",
        ]
    )
