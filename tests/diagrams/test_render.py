"""
SVG and PNG rendered by Graphviz's dot, read back (issue 12, "PNG and SVG rendered and checked").

The SVG is parsed as XML and the current step's node must carry the highlight
colour; the PNG is decoded with zlib alone: a valid header, a plausible size
from IHDR, and pixels of the highlight colour present (and absent without an
overlay). A missing graphviz package or dot program is one typed error naming it.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from examples.order_process import OrderProcess
from examples.trip_booking import TripBookingSaga
from statemachine_orch import spec_of
from statemachine_orch.diagrams import COLOURS, GraphvizUnavailable, Overlay, render

from .flows import DgQuoted
from .reading import SIGNATURE, SVG, fills, png_size, read_png, rgb, svg_nodes

CURRENT = COLOURS["current"][0]
COMPLETED = COLOURS["completed"][0]

ORDER_OVERLAY = Overlay(completed=["validate_order", "check_inventory"], current=["manual_approval"])


def test_svg_is_xml_whose_current_step_carries_the_highlight() -> None:
    nodes = svg_nodes(render(OrderProcess, "svg", overlay=ORDER_OVERLAY))
    assert {"validate_order", "check_inventory", "manual_approval", "process_payment", "send_confirmation"} <= set(
        nodes
    )
    assert CURRENT in fills(nodes["manual_approval"])
    assert COMPLETED in fills(nodes["validate_order"])
    highlighted = {name for name, g in nodes.items() if CURRENT in fills(g)}
    assert {"manual_approval", "(legend) current"} == highlighted


def test_svg_without_an_overlay_highlights_nothing() -> None:
    nodes = svg_nodes(render(OrderProcess, "svg"))
    assert not [name for name, g in nodes.items() if CURRENT in fills(g)]


def test_svg_of_a_fork_highlights_each_current_branch() -> None:
    overlay = Overlay(completed=["plan_trip", "book_flight"], current=["book_hotel", "book_car"])
    nodes = svg_nodes(render(TripBookingSaga, "svg", overlay=overlay))
    highlighted = {name.rpartition(".")[2] for name, g in nodes.items() if CURRENT in fills(g)}
    assert {"book_hotel", "book_car", "(legend) current"} == highlighted
    assert COMPLETED in fills(nodes["plan_trip@fork.book_flight@branch.book_flight"])


def test_png_has_a_valid_header_a_plausible_size_and_the_highlight() -> None:
    data = render(OrderProcess, "png", overlay=ORDER_OVERLAY)
    assert data.startswith(SIGNATURE)
    width, height = png_size(data)
    # Seven steps left to right, two undo notes and a legend: wide, not tall, not absurd.
    assert 800 < width < 8000
    assert 150 < height < 2000
    assert width > height
    picture = read_png(data)
    assert (picture.width, picture.height) == (width, height)
    current = picture.count(rgb(CURRENT))
    completed = picture.count(rgb(COMPLETED))
    # A node's inside is hundreds of pixels at least; the legend adds one more of each.
    assert current > 1000
    assert completed > 1000


def test_png_without_an_overlay_has_no_highlight_pixels() -> None:
    picture = read_png(render(OrderProcess, "png"))
    assert picture.count(rgb(CURRENT)) == 0
    assert picture.count(rgb(COMPLETED)) == 0


def test_a_guard_with_quotes_and_backslashes_is_shown_as_written() -> None:
    [guarded] = [e for e in spec_of(DgQuoted).edges if e.guard_name]
    assert guarded.guard_name == "wf.note == 'say \"hi\" \\\\ bye <b>'"
    root = ET.fromstring(render(DgQuoted, "svg"))  # noqa: S314 - our own output
    assert guarded.guard_name in [t.text for t in root.iter(f"{SVG}text")]


def test_without_the_graphviz_package_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "graphviz", None)
    with pytest.raises(GraphvizUnavailable, match=r"statemachine-orch\[diagrams\]") as err:
        render(OrderProcess, "dot")
    assert err.value.missing == "graphviz"
    assert isinstance(err.value, ImportError)
    assert render(OrderProcess, "mermaid").startswith(b"stateDiagram-v2\n")


def test_without_dot_svg_and_png_name_the_program_and_dot_text_still_works(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    for fmt in ("svg", "png"):
        with pytest.raises(GraphvizUnavailable, match=r"dot program") as err:
            render(OrderProcess, fmt)
        assert err.value.missing == "dot"
    assert render(OrderProcess, "dot").startswith(b'digraph "OrderProcess version 1"')
