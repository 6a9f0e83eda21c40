"""
Issue 11's visible gallery: each kind of bug found with WorkflowMachine's defaults, and its correct twin passing.

The full measure (20 seeded runs per kind, detection rate and time) is
``python bench/bench_toolkit.py``; here a few seeds per kind keep the suite fast.
"""

from __future__ import annotations

import pytest

from .gallery_kinds import KINDS, Kind, run

BUGGY_SEEDS = (0,)
TWIN_SEEDS = (0,)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: f"kind{k.number}")
@pytest.mark.parametrize("seed", BUGGY_SEEDS)
def test_the_bug_is_found_with_the_defaults(kind: Kind, seed: int) -> None:
    """Issue 11: the buggy workflow of each kind fails its seeded run, and the report names the bug."""
    outcome = run(kind.buggy(), seed)

    assert kind.found(outcome), f"kind {kind.number} not found: {outcome.error!r} {outcome.warned!r}"


# The long loop's twin runs 360 rounds in each instance of each story: a minute of the budget.
_TWINS = [pytest.param(k, marks=pytest.mark.slow) if k.number == 6 else k for k in KINDS]


@pytest.mark.parametrize("kind", _TWINS, ids=lambda k: f"kind{k.number}")
@pytest.mark.parametrize("seed", TWIN_SEEDS)
def test_the_correct_twin_passes(kind: Kind, seed: int) -> None:
    """Issue 11: the correct twin of each kind passes, without a coverage warning."""
    outcome = run(kind.twin(), seed)

    assert kind.passed(outcome), f"twin of kind {kind.number}: {outcome.error!r} {outcome.warned!r}"
