"""
Issue 10: the testing toolkit runs workflows that send messages, start instances and declare queries.

``paths()`` and ``WorkflowMachine`` take such classes as they are: the steps'
messages and starts happen on the toolkit's engine, queries are ignored. (The
toolkit does not model other instances: a generated target id that does not
exist fails the step, as it would in production.)
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from hypothesis import settings

from statemachine_orch.testing import WorkflowMachine, paths
from tests.unit.test_messages import MsgFork, MsgInbox, MsgLauncher
from tests.unit.test_query import QCart


def test_paths_and_the_machine_run_workflows_that_send_and_query() -> None:
    """Issue 10: no crash, no invariant broken, for a launcher (starts), a fork that sends, an inbox, a cart."""
    assert all(paths(wf) for wf in (MsgLauncher, MsgFork, MsgInbox, QCart))
    for wf in (MsgLauncher, MsgInbox, QCart):
        machine = WorkflowMachine(wf)
        machine.TestCase.settings = settings(max_examples=15, deadline=None, database=None)
        machine.TestCase().runTest()
