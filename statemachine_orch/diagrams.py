"""
Diagrams a person opens: Mermaid, DOT, SVG and PNG, with an instance drawn over them.

Every format is drawn from the workflow's compiled spec. Mermaid is text and
needs nothing; DOT, SVG and PNG are drawn by ``transitions``' own
``GraphMachine`` (``HierarchicalGraphMachine`` for a workflow with forks) with its
``graphviz`` engine, which needs the ``diagrams`` extra
(``pip install 'statemachine-orch[diagrams]'``) and, for SVG and PNG, Graphviz's
``dot`` program. ``graphviz`` is imported only when one of those is asked for.

::

    from statemachine_orch.diagrams import Overlay, render

    png = render(OrderProcess, "png", overlay=Overlay.of(engine, instance_id))
    Path("order.png").write_bytes(png)

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

from ._diagram import GraphvizUnavailable, OverlayMismatch, checked, mermaid, spec_from
from ._overlay import OVERLAY_COLOURS, InstanceReader, Overlay
from ._spec import WorkflowSpec
from ._workflow import Workflow

__all__ = [
    "COLOURS",
    "FORMATS",
    "Format",
    "GraphvizUnavailable",
    "InstanceReader",
    "Overlay",
    "OverlayMismatch",
    "render",
]

Format = Literal["mermaid", "dot", "svg", "png"]
"""The formats :func:`render` draws."""

FORMATS: tuple[Format, ...] = ("mermaid", "dot", "svg", "png")
"""Every :data:`Format`, for a command line's choices."""

COLOURS: Mapping[str, tuple[str, str]] = MappingProxyType(dict(OVERLAY_COLOURS))
"""
The fill and border colour of each overlay state (``completed``, ``current``,
``failed``, ``compensated``, ``compensation_failed``).
"""


def render(workflow: type[Workflow] | WorkflowSpec, fmt: Format, *, overlay: Overlay | None = None) -> bytes:
    """
    Draw *workflow* in *fmt*, with *overlay*'s instance drawn over it.

    Guards label their edges with their source (``wf.amount > 1000``, a method's
    name), ``[default]`` the default edge of a choice; error routes and
    escalations are labelled ``on_error ...`` and ``timeout ...``. Human tasks are
    double-bordered boxes naming who completes them, compensations dashed notes
    hanging off the step they undo, and a fork's branches are framed together up
    to the join. The lifecycle states of the running machine are not drawn.

    An overlay colours the steps the instance completed, stands at, failed at,
    compensated and failed to compensate (:data:`COLOURS`): Mermaid ``classDef`` classes, fill colours in
    DOT, SVG and PNG, which also get a legend.

    Args:
        workflow: A workflow class, or its spec.
        fmt: ``"mermaid"`` (``stateDiagram-v2``, the text :func:`~statemachine_orch.mermaid`
            gives) or ``"dot"`` (text), ``"svg"``, ``"png"``.
        overlay: One instance's run: :meth:`Overlay.of` ``(engine, instance_id)``.

    Returns:
        The diagram; text formats in UTF-8.

    Raises:
        GraphvizUnavailable: DOT, SVG or PNG without the ``graphviz`` package, or
            SVG or PNG without Graphviz's ``dot`` program.
        OverlayMismatch: The overlay's instance runs another workflow or version, or
            it names steps the workflow does not have.
        ValueError: *fmt* is not one of :data:`FORMATS`.

    .. versionadded:: 0.1.0
    """
    if fmt not in FORMATS:
        msg = f"cannot draw a diagram as {fmt!r}: the formats are {', '.join(FORMATS)}"
        raise ValueError(msg)
    spec = spec_from(workflow)
    if fmt == "mermaid":
        return mermaid(spec, overlay=overlay).encode()
    shown = checked(spec, overlay)
    # Imported here: this is the only way in to graphviz, and only when asked for.
    from ._graphviz import render_graphviz  # noqa: PLC0415

    return render_graphviz(spec, fmt, shown)
