"""
Mermaid with an overlay (issue 12): ``classDef`` styles, one class per step.

``mermaid()`` is public and unchanged without an overlay; ``render(..., "mermaid")``
gives the same text.
"""

from __future__ import annotations

from examples.order_process import OrderProcess
from examples.trip_booking import TripBookingSaga
from statemachine_orch import mermaid
from statemachine_orch.diagrams import COLOURS, Overlay, render

from .flows import DgShipment


def class_lines(text: str) -> dict[str, set[str]]:
    """``class a,b name`` statements: name -> steps."""
    found: dict[str, set[str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "class":
            found[parts[2]] = set(parts[1].split(","))
    return found


def test_render_mermaid_is_mermaid() -> None:
    for workflow in (OrderProcess, TripBookingSaga, DgShipment):
        assert mermaid(workflow).encode() == render(workflow, "mermaid")
        overlay = Overlay(completed=[workflow.__orch_spec__.initial])
        assert mermaid(workflow, overlay=overlay).encode() == render(workflow, "mermaid", overlay=overlay)


def test_without_an_overlay_mermaid_has_no_classes() -> None:
    text = mermaid(OrderProcess)
    assert "classDef" not in text
    assert "class " not in text
    assert text.startswith("stateDiagram-v2\n    [*] --> validate_order\n")


def test_each_overlay_state_is_a_class_with_its_colours() -> None:
    overlay = Overlay(
        completed=["validate_order", "check_inventory", "process_payment"],
        current=(),
        failed="update_inventory",
        compensated=["process_payment"],
    )
    text = mermaid(OrderProcess, overlay=overlay)
    assert {
        "completed": {"validate_order", "check_inventory"},
        "failed": {"update_inventory"},
        "compensated": {"process_payment"},
    } == class_lines(text)
    fill, stroke = COLOURS["failed"]
    assert f"    classDef failed fill:{fill},stroke:{stroke},stroke-width:3px\n" in text
    assert "classDef current" not in text  # only the classes used


def test_precedence_failed_then_current_then_compensated_then_completed() -> None:
    overlay = Overlay(completed=["reserve", "charge", "ship"], current=["ship", "approve"], failed="ship")
    assert {"completed": {"reserve", "charge"}, "current": {"approve"}, "failed": {"ship"}} == class_lines(
        mermaid(DgShipment, overlay=overlay)
    )


def test_a_fork_overlay_marks_steps_not_pseudo_states() -> None:
    overlay = Overlay(completed=["plan_trip", "book_flight"], current=["book_hotel", "book_car"])
    text = mermaid(TripBookingSaga, overlay=overlay)
    assert {"completed": {"plan_trip", "book_flight"}, "current": {"book_hotel", "book_car"}} == class_lines(text)


def test_a_single_name_is_one_step_not_its_letters() -> None:
    assert frozenset({"ship"}) == Overlay(current="ship").current
