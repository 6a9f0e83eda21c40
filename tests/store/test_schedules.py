"""
Issue 10, item 7: a schedule's state, kept by every store.

``schedule`` reads what ``save_schedule`` wrote; ``save_schedule`` is a
compare-and-set on the cursor (inserting only when the schedule has no state),
so of two workers advancing one schedule from the same view exactly one writes.
"""

# STYLE.md rule 33: tests assert `expected == actual`, which ruff calls a Yoda condition.

from __future__ import annotations

from typing import TYPE_CHECKING

from statemachine_orch._store import ScheduleState

if TYPE_CHECKING:
    from statemachine_orch import Store
    from tests.store.conftest import Stores

T0 = 1_900_000_000.0


def test_a_schedule_has_no_state_until_one_is_saved(store: Store) -> None:
    """Issue 10: the first save inserts; a second insert of the same schedule writes nothing."""
    assert store.schedule("nightly") is None
    assert store.save_schedule(ScheduleState("nightly", T0), None)
    assert not store.save_schedule(ScheduleState("nightly", T0 + 5, "other", 3), None)
    assert ScheduleState("nightly", T0, None, 0) == store.schedule("nightly")
    assert store.schedule("hourly") is None


def test_save_schedule_is_a_compare_and_set_on_the_cursor(store: Store) -> None:
    """Issue 10: written only while the stored cursor is the one expected; fractions of a second kept exactly."""
    store.save_schedule(ScheduleState("every-tenth", T0 + 0.1), None)
    advanced = ScheduleState("every-tenth", T0 + 0.30000000000000004, "every-tenth@x", 2)
    assert store.save_schedule(advanced, T0 + 0.1)
    assert not store.save_schedule(ScheduleState("every-tenth", T0 + 9, "stale", 9), T0 + 0.1)
    assert not store.save_schedule(ScheduleState("nobody", T0 + 9), T0)
    assert advanced == store.schedule("every-tenth")
    assert store.schedule("nobody") is None


def test_two_processes_advancing_one_schedule_from_one_view_write_once(durable: Stores) -> None:
    """Issue 10: two stores on one file or database: one compare-and-set wins, the other sees its state."""
    first, second = durable.open(), durable.open()
    assert first.save_schedule(ScheduleState("nightly", T0), None)
    seen = second.schedule("nightly")
    assert seen is not None
    won = first.save_schedule(ScheduleState("nightly", T0 + 86400, "nightly@a", 1), seen.cursor)
    lost = second.save_schedule(ScheduleState("nightly", T0 + 86400, "nightly@b", 1), seen.cursor)
    assert (True, False) == (won, lost)
    assert ScheduleState("nightly", T0 + 86400, "nightly@a", 1) == second.schedule("nightly")
