"""
An overlay from a real run (issue 12): an engine on a SqliteStore in a temporary directory.

One shipment fails at its last step, so its charge and reservation are undone;
another waits at the manager's approval. ``Overlay.of`` reads each back through
the running engine and through a client ``Engine(store, concurrency=0)`` on the
same file, and the diagrams show what happened.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from statemachine_orch import Engine, InstanceStatus, SqliteStore, WorkflowFailed
from statemachine_orch.diagrams import COLOURS, Overlay, render
from tests.conftest import Runner

from .flows import DgShipment
from .reading import fills, read_png, rgb, svg_nodes

Ids = tuple[str, str]


def run_two_shipments(run: Runner, db: Path) -> tuple[Ids, Overlay, Overlay]:
    """Start a doomed and a waiting shipment; the overlays read by the engine that ran them."""

    async def scenario() -> tuple[Ids, Overlay, Overlay]:
        with SqliteStore(db) as store:
            async with Engine(store, workflows=[DgShipment]) as engine:
                doomed = await engine.start(DgShipment(amount=50, truck_ok=False))
                waiting = await engine.start(DgShipment(amount=5000))
                with pytest.raises(WorkflowFailed):
                    await doomed.result()
                assert await waiting.wait_idle() is InstanceStatus.WAITING
                ids = (doomed.instance_id, waiting.instance_id)
                return ids, Overlay.of(engine, ids[0]), Overlay.of(engine, ids[1])

    return run(scenario())


def test_a_failed_and_compensated_instance(run: Runner, tmp_path: Path) -> None:
    (doomed, _), overlay, _ = run_two_shipments(run, tmp_path / "runs.db")
    assert (
        Overlay(
            completed=["reserve", "charge"],
            current=(),
            failed="ship",
            compensated=["reserve", "charge"],
            instance_id=doomed,
            status=InstanceStatus.FAILED,
            workflow="DgShipment",
            version="1",
        )
        == overlay
    )
    text = render(DgShipment, "mermaid", overlay=overlay).decode()
    assert "    class ship failed\n" in text
    assert "    class reserve,charge compensated\n" in text
    assert "class " + "current" not in text


def test_a_waiting_instance_read_by_a_client_engine(run: Runner, tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    (doomed, waiting), _, live = run_two_shipments(run, db)
    assert live.current == {"approve"}
    assert live.completed == {"reserve"}
    assert live.failed is None
    with SqliteStore(db) as store:
        client = Engine(store, concurrency=0, workflows=[DgShipment])
        assert live == Overlay.of(client, waiting)
        failed = Overlay.of(client, doomed)
    assert failed.failed == "ship"
    nodes = svg_nodes(render(DgShipment, "svg", overlay=live))
    current = COLOURS["current"][0]
    assert {"approve", "(legend) current"} == {name for name, g in nodes.items() if current in fills(g)}
    picture = read_png(render(DgShipment, "png", overlay=failed))
    assert picture.count(rgb(COLOURS["failed"][0])) > 500
    assert picture.count(rgb(COLOURS["compensated"][0])) > 500
    assert picture.count(rgb(current)) == 0


def test_a_step_whose_compensation_failed_is_coloured_in_every_format(run: Runner, tmp_path: Path) -> None:
    """The refund fails: charge is drawn as compensation_failed (Mermaid class, DOT fill, SVG, PNG), reserve stays completed."""

    async def scenario() -> Overlay:
        with SqliteStore(tmp_path / "stuck.db") as store:
            async with Engine(store, workflows=[DgShipment]) as engine:
                stuck = await engine.start(DgShipment(amount=50, truck_ok=False, refund_ok=False))
                assert await stuck.wait_idle() is InstanceStatus.COMPENSATION_FAILED
                return Overlay.of(engine, stuck.instance_id)

    overlay = run(scenario())
    assert "charge" == overlay.compensation_failed
    assert (overlay.failed, overlay.compensated) == ("ship", frozenset())
    assert "compensation_failed" == overlay.state_of("charge")
    assert "completed" == overlay.state_of("reserve")
    fill, border = COLOURS["compensation_failed"]
    text = render(DgShipment, "mermaid", overlay=overlay).decode()
    assert f"    classDef compensation_failed fill:{fill},stroke:{border},stroke-width:3px\n" in text
    assert "    class charge compensation_failed\n" in text
    assert "    class reserve completed\n" in text
    dot = render(DgShipment, "dot", overlay=overlay).decode()
    assert f'fillcolor="{fill}"' in dot
    nodes = svg_nodes(render(DgShipment, "svg", overlay=overlay))
    coloured = {name for name, g in nodes.items() if fill in fills(g)}
    assert {"charge", "charge@undo", "(legend) compensation_failed"} == coloured, coloured
    picture = read_png(render(DgShipment, "png", overlay=overlay))
    assert picture.count(rgb(fill)) > 500


def test_a_failure_routed_by_on_error_is_not_the_failed_step(run: Runner, tmp_path: Path) -> None:
    async def scenario() -> Overlay:
        with SqliteStore(tmp_path / "routed.db") as store:
            async with Engine(store, workflows=[DgShipment]) as engine:
                declined = await engine.start(DgShipment(amount=50, card_ok=False))
                await declined.result()
                return Overlay.of(engine, declined.instance_id)

    overlay = run(scenario())
    assert overlay.status is InstanceStatus.COMPLETED
    assert (overlay.failed, overlay.current, overlay.compensated) == (None, frozenset(), frozenset())
    assert {"reserve", "notify_declined"} == overlay.completed


def test_the_title_names_the_instance(run: Runner, tmp_path: Path) -> None:
    (doomed, _), overlay, _ = run_two_shipments(run, tmp_path / "runs.db")
    assert f'label="DgShipment version 1: instance {doomed} (failed)"'.encode() in render(
        DgShipment, "dot", overlay=overlay
    )
