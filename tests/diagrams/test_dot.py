"""
DOT text drawn by transitions' GraphMachine from the spec (issue 12, "Diagrams a person opens").

Read back statement by statement: every step is a node, every declared edge an
arrow labelled by its guard's source, human tasks and compensations are marked,
and none of the running machine's lifecycle states is drawn.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from examples.order_process import OrderProcess
from examples.trip_booking import TripBookingSaga
from statemachine_orch import spec_of
from statemachine_orch._spec import LIFECYCLE_STATES
from statemachine_orch.diagrams import COLOURS, FORMATS, Overlay, OverlayMismatch, render

from .flows import DgShipment
from .reading import first_line, parse_dot


def dot_of(workflow: type, overlay: Overlay | None = None) -> str:
    return render(workflow, "dot", overlay=overlay).decode()


def test_every_step_is_a_node_named_and_labelled_by_it() -> None:
    dot = parse_dot(dot_of(DgShipment))
    steps = [s.name for s in spec_of(DgShipment).steps]
    for name in steps:
        assert name == first_line(dot.nodes[name]["label"])
    assert {"@start", "@end", "reserve@undo", "charge@undo"} | set(steps) == {
        n for n in dot.nodes if not n.startswith("(legend)")
    }


def test_edges_carry_the_guards_source_and_mark_defaults_errors_and_escalations() -> None:
    dot = parse_dot(dot_of(DgShipment))
    assert {
        ("@start", "reserve"): "",
        ("reserve", "review"): "needs_review",
        ("reserve", "approve"): "wf.amount > 1000",
        ("reserve", "charge"): "[default]",
        ("review", "approve"): "wf.express and (not wf.fragile)",
        ("review", "charge"): "[default]",
        ("approve", "charge"): "timeout 60s | done",
        ("charge", "notify_declined"): "on_error DgDeclinedError",
        ("charge", "ship"): "",
        ("notify_declined", "@end"): "",
        ("ship", "@end"): "",
        ("reserve", "reserve@undo"): "undo",
        ("charge", "charge@undo"): "undo",
    } == {pair: dot.label(*pair) for pair in dot.edges}
    assert dot.edges["charge", "notify_declined"]["style"] == "dashed"
    assert "style" not in dot.edges["charge", "ship"]


def test_a_spec_draws_as_its_class() -> None:
    assert render(DgShipment, "dot") == render(spec_of(DgShipment), "dot")


def test_no_condition_placeholder_nor_trigger_name_is_shown() -> None:
    text = dot_of(DgShipment)
    assert "[condition" not in text
    assert "<lambda>" not in text
    labels = {attrs.get("label") for attrs in parse_dot(text).edges.values()}
    assert not labels & {"next", "error", "timeout", "fail", "cancel"}


def test_lifecycle_states_are_not_drawn() -> None:
    for workflow in (DgShipment, OrderProcess, TripBookingSaga):
        text = dot_of(workflow)
        for state in LIFECYCLE_STATES:
            assert state not in text, f"{state} drawn in {workflow.__name__}"


def test_a_human_task_is_marked_by_its_shape_and_names_who_completes_it() -> None:
    dot = parse_dot(dot_of(OrderProcess))
    task = dot.nodes["manual_approval"]
    plain = dot.nodes["check_inventory"]
    assert task["label"] == "manual_approval\\lhuman task: manager\\l"
    assert task["peripheries"] == "2"
    assert plain["peripheries"] == "1"
    assert task["style"] != plain["style"]
    assert "(legend) human_task" in dot.nodes


def test_a_compensation_is_a_note_hanging_off_the_step_it_undoes() -> None:
    dot = parse_dot(dot_of(OrderProcess))
    undo = dot.nodes["process_payment@undo"]
    assert undo["shape"] == "note"
    assert first_line(undo["label"]) == "refund_payment"
    edge = dot.edges["process_payment", "process_payment@undo"]
    assert (edge["label"], edge["style"]) == ("undo", "dashed")
    assert "send_confirmation@undo" not in dot.nodes  # no compensation, no note
    assert "(legend) compensation" in dot.nodes


def test_a_fork_is_a_parallel_frame_of_branches_up_to_the_join() -> None:
    text = dot_of(TripBookingSaga)
    dot = parse_dot(text)
    assert "cluster_plan_trip@fork" in dot.clusters
    branches = {c for c in dot.clusters if c.endswith("@branch")}
    assert {f"cluster_plan_trip@fork.{b}@branch" for b in ("book_flight", "book_hotel", "book_car")} == branches
    for b in ("book_flight", "book_hotel", "book_car"):
        node = f"plan_trip@fork.{b}@branch.{b}"
        assert first_line(dot.nodes[node]["label"]) == b
        assert (node, "take_payment") in dot.edges
        assert dot.edges["plan_trip", f"plan_trip@fork.{b}@branch"]["lhead"] == f"cluster_plan_trip@fork.{b}@branch"
    assert dot.nodes["take_payment"]["label"] == "take_payment\\ljoin\\l"
    assert "compound=true" in text


def test_an_overlay_fills_the_steps_in_dot() -> None:
    overlay = Overlay(completed=["reserve", "charge"], current=["approve"], compensated=["charge"])
    dot = parse_dot(dot_of(DgShipment, overlay))
    assert dot.nodes["reserve"]["fillcolor"] == COLOURS["completed"][0]
    assert dot.nodes["approve"]["fillcolor"] == COLOURS["current"][0]
    assert dot.nodes["approve"]["peripheries"] == "2"  # still a human task
    assert dot.nodes["charge"]["fillcolor"] == COLOURS["compensated"][0]
    assert dot.nodes["charge@undo"]["fillcolor"] == COLOURS["compensated"][0]
    assert dot.nodes["reserve@undo"]["fillcolor"] != COLOURS["compensated"][0]
    assert dot.nodes["ship"]["fillcolor"] == "white"
    legend = {n.removeprefix("(legend) ") for n in dot.nodes if n.startswith("(legend)")}
    assert {"human_task", "compensation", "completed", "current", "compensated"} == legend


def test_an_overlay_of_another_version_or_with_unknown_steps_is_refused() -> None:
    with pytest.raises(OverlayMismatch, match=r"ghost") as err:
        render(DgShipment, "dot", overlay=Overlay(completed=["reserve", "ghost"]))
    assert ("ghost",) == err.value.steps
    other = Overlay(instance_id="i-1", workflow="DgShipment", version="2")
    with pytest.raises(OverlayMismatch, match=r"instance i-1 runs DgShipment version 2, not DgShipment version 1"):
        render(DgShipment, "mermaid", overlay=other)


def test_unknown_formats_are_refused() -> None:
    assert ("mermaid", "dot", "svg", "png") == FORMATS
    with pytest.raises(ValueError, match=r"cannot draw a diagram as 'gif'"):
        render(DgShipment, "gif")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]


def test_graphviz_is_imported_only_when_a_graphviz_format_is_asked_for() -> None:
    script = textwrap.dedent(
        """
        import sys
        from examples.order_process import OrderProcess
        from statemachine_orch.diagrams import render
        render(OrderProcess, "mermaid")
        assert "graphviz" not in sys.modules, "graphviz imported for Mermaid"
        render(OrderProcess, "dot")
        assert "graphviz" in sys.modules
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=100)
    assert done.returncode == 0, done.stderr
