"""An instance's diagram as SVG: its workflow drawn by Graphviz, its steps coloured by what it did."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from statemachine_orch._errors import UnknownWorkflowVersion
from statemachine_orch.diagrams import GraphvizUnavailable, Overlay, render

from ._context import ApiError, Web


async def diagram_svg(web: Web, instance_id: str) -> bytes:
    """
    The SVG of *instance_id*'s workflow with its overlay (done, current, failed, compensated steps, a failed undo).

    Raises:
        UnknownWorkflowVersion: Its version has no class here.
        ApiError: Graphviz cannot draw (503).
    """
    engine = web.engine
    info = engine.info(instance_id)
    cls = engine.registry.resolve(info.workflow, info.version)
    if cls is None:
        raise UnknownWorkflowVersion(instance_id, info.workflow, info.version, engine.registry.versions(info.workflow))
    overlay = await web.read(lambda: Overlay.of(engine, instance_id))
    try:
        # Graphviz's dot is a process of its own: the app answers other requests meanwhile.
        return await run_in_threadpool(render, cls, "svg", overlay=overlay)
    except GraphvizUnavailable as exc:
        raise ApiError(503, "GraphvizUnavailable", str(exc)) from None
