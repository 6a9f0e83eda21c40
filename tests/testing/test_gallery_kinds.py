"""
Issue 11's visible gallery: each kind of bug found with WorkflowMachine's defaults in every one of 20 seeded runs,
and its correct twin passing.

One test per kind and seed, so that a miss names the seed that replays it
(``run(kind.buggy(), seed)``). A twin's run plays the whole budget (a buggy run
stops at its bug), so the suite plays the twins on fewer seeds: all 20 of them,
for every kind, cost about 13 more minutes of CPU, beyond what the suite may
add. ``python bench/bench_toolkit.py`` plays 20 seeds of both and prints the
detection rate and the time per kind (figures in ``bench/README.md``).
"""

from __future__ import annotations

import pytest

from statemachine_orch.testing import Cancel, InvariantViolation, Start, WorkflowMachine

from .gallery_kinds import KINDS, EventBooking, EventBookingFixed, Kind, Repayment, run

BUGGY_SEEDS = range(20)
"""Issue 11's measure: the bug found in every one of 20 seeded runs."""
TWIN_SEEDS = range(5)
"""The twins' seeds here (``bench_toolkit.py`` plays 20)."""

# CPU-bound runs of a whole hypothesis budget: on a busy shared machine a run gets a
# fraction of a core, so the per-test limit is the wall time of a run at a tenth of one.
_LIMIT = pytest.mark.timeout(600)


@_LIMIT
@pytest.mark.parametrize("seed", BUGGY_SEEDS)
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: f"kind{k.number}")
def test_the_bug_is_found_with_the_defaults(kind: Kind, seed: int) -> None:
    """Issue 11: the buggy workflow of each kind fails its seeded run, and the report names the bug."""
    outcome = run(kind.buggy(), seed)

    assert kind.found(outcome), f"kind {kind.number}, seed {seed}: not found: {outcome.error!r} {outcome.warned!r}"


# The long loop's twin runs 360 rounds of three steps in every instance of every story:
# about 25 s of CPU a run (the other twins: 2-3 s), so one seed of it here.
_TWINS = [
    pytest.param(k, s, id=f"kind{k.number}-{s}", marks=[pytest.mark.slow] if k.number == 6 else [])
    for k in KINDS
    for s in (TWIN_SEEDS[:1] if k.number == 6 else TWIN_SEEDS)
]


@_LIMIT
@pytest.mark.parametrize(("kind", "seed"), _TWINS)
def test_the_correct_twin_passes(kind: Kind, seed: int) -> None:
    """Issue 11: the correct twin of each kind passes its seeded run, without a coverage warning."""
    outcome = run(kind.twin(), seed)

    assert kind.passed(outcome), f"twin of kind {kind.number}, seed {seed}: {outcome.error!r} {outcome.warned!r}"


# ----------------------------------------------------------------------------- kind 4, story by story


def test_a_leak_after_a_failure_is_blamed_on_the_step_without_a_compensation() -> None:
    """Issue 11, kind 4: book_venue fails for good; the seats hold_seats took are named, not the undo that ran last."""
    with pytest.raises(InvariantViolation) as err:
        WorkflowMachine(EventBooking).replay(
            Start(EventBooking(event="gala"), {"book_venue": ("permanent",)}),
        )

    assert ("invariant", "hold_seats") == (err.value.rule, err.value.step)
    assert (
        "the instance is failed; completed steps without a compensation, and what each changed: "
        "hold_seats (seats_held); hold_seats left seats_held as it made it: nothing undoes it"
    ) in str(err.value)


def test_a_leak_after_a_compensating_cancel_names_each_step_and_what_it_changed() -> None:
    """Issue 11, kind 4: cancelled at the organiser's task, book_venue is undone, hold_seats is not: it is named."""
    with pytest.raises(InvariantViolation) as err:
        WorkflowMachine(EventBooking).replay(Start(EventBooking(event="gala"), {}), Cancel(0, compensate=True))

    assert ("invariant", "hold_seats") == (err.value.rule, err.value.step)
    assert "last ran: cancel_venue (undoing book_venue)" in str(err.value)
    assert "completed steps without a compensation, and what each changed: hold_seats (seats_held)" in str(err.value)


@pytest.mark.parametrize("workflow", [EventBooking, EventBookingFixed], ids=["buggy", "twin"])
def test_a_cancel_without_compensation_is_told_to_the_invariant(workflow: type[EventBooking]) -> None:
    """Issue 11, kind 4: after cancel(compensate=False) the invariant gets compensated=False: the seats may stay."""
    WorkflowMachine(workflow).replay(Start(workflow(event="gala"), {}), Cancel(0, compensate=False))


def test_the_twin_releases_its_seats_on_a_compensating_cancel_and_on_a_failure() -> None:
    """Issue 11, kind 4: the twin's release_seats undoes hold_seats, so neither undo leaves anything held."""
    WorkflowMachine(EventBookingFixed).replay(Start(EventBookingFixed(event="gala"), {}), Cancel(0, compensate=True))
    WorkflowMachine(EventBookingFixed).replay(Start(EventBookingFixed(event="gala"), {"book_venue": ("permanent",)}))


def test_a_runaway_loops_story_shows_the_first_and_last_events_of_its_action() -> None:
    """Issue 11, kind 6: one action that loops 2000 transitions tells its story in a few dozen lines, not 4,000."""
    story = Start(workflow=Repayment(debt=-1, monthly=-1, rate_percent=1, months=0), faults={})

    with pytest.raises(InvariantViolation) as caught:
        WorkflowMachine(Repayment).replay(story)

    text = "\n".join(caught.value.__notes__)
    assert "did not end within 2000 transitions" in str(caught.value)
    assert "    i1  transition    statement -> pay_month" in text
    assert "events of this action left out)" in text
    assert len(text.splitlines()) < 250, len(text.splitlines())
