"""What one instance did, drawn over its workflow's diagram."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import attrs

from ._history import EventKind, HistoryEvent
from ._instance import InstanceInfo
from ._status import InstanceStatus


class InstanceReader(Protocol):
    """
    **Protocol:** what :meth:`Overlay.of` reads an instance through.

    An :class:`~statemachine_orch.Engine` is one, running workers or not: a client
    ``Engine(store, concurrency=0)`` reads a store that workers in other processes write.

    .. versionadded:: 0.1.0
    """

    def info(self, instance_id: str) -> InstanceInfo:
        """A snapshot of the instance."""
        ...

    def history(self, instance_id: str) -> Sequence[HistoryEvent]:
        """The instance's history, oldest first."""
        ...


def _names(value: Iterable[str]) -> frozenset[str]:
    if isinstance(value, str):
        # A lone step name is a set of one, not of its letters.
        return frozenset((value,))
    return frozenset(value)


# The statuses in which the instance's own failure (its instance_failed entry) names
# the failed step: a step failure routed by on_error, or a retried one, does not fail it.
_FAILING = (InstanceStatus.FAILED, InstanceStatus.COMPENSATING, InstanceStatus.COMPENSATION_FAILED)


@attrs.frozen
class Overlay:
    """
    What one instance did, to draw over its workflow's diagram.

    Each step is drawn in at most one of the five states; when a step is in
    several, the first of *compensation_failed*, *failed*, *current*,
    *compensated*, *completed* wins (a step completed and then undone shows as
    compensated; a loop back to a completed step shows it as current; a step
    whose undo failed shows so even when it is also the failed step).

    Attributes:
        completed: The steps that completed at least once.
        current: The steps the instance stands at now (several inside a fork).
        failed: The step whose failure failed the instance, if one did.
        compensated: The steps whose compensation ran to the end.
        compensation_failed: The step whose compensation failed the instance
            (status ``compensation_failed``), if one did.
        instance_id: The instance drawn, when known (it titles the diagram).
        status: Its status, when known.
        workflow: The name of the workflow it runs, when known.
        version: The version it runs, when known: drawing it over another
            version's diagram is refused.

    .. versionadded:: 0.1.0
    """

    completed: frozenset[str] = attrs.field(default=frozenset[str](), converter=_names)
    current: frozenset[str] = attrs.field(default=frozenset[str](), converter=_names)
    failed: str | None = None
    compensated: frozenset[str] = attrs.field(default=frozenset[str](), converter=_names)
    compensation_failed: str | None = attrs.field(default=None, kw_only=True)
    instance_id: str | None = attrs.field(default=None, kw_only=True)
    status: InstanceStatus | None = attrs.field(default=None, kw_only=True)
    workflow: str | None = attrs.field(default=None, kw_only=True)
    version: str | None = attrs.field(default=None, kw_only=True)

    @classmethod
    def of(cls, engine: InstanceReader, instance_id: str) -> Overlay:
        """
        The overlay of a stored or running instance, from its info and history.

        Args:
            engine: An engine, or a client engine on the store (``Engine(store, concurrency=0)``).
            instance_id: The instance to draw.

        Raises:
            InstanceNotFound: No instance has this id.
        """
        info = engine.info(instance_id)
        history = engine.history(instance_id)
        return cls.from_history(info, history)

    @classmethod
    def from_history(cls, info: InstanceInfo, history: Iterable[HistoryEvent]) -> Overlay:
        """The overlay of the instance *info* describes, whose history is *history*."""
        completed: set[str] = set()
        compensated: set[str] = set()
        failed: str | None = None
        undo_failed: str | None = None
        for event in history:
            if event.step is None:
                continue
            if event.kind is EventKind.STEP_COMPLETED:
                completed.add(event.step)
            elif event.kind is EventKind.COMPENSATION_COMPLETED:
                compensated.add(event.step)
                if event.step == undo_failed:
                    undo_failed = None  # retried (orch retry) and done
            elif event.kind is EventKind.COMPENSATION_FAILED:
                undo_failed = event.step
            elif event.kind is EventKind.INSTANCE_FAILED:
                failed = event.step
        status = info.status
        live = status in (InstanceStatus.RUNNING, InstanceStatus.WAITING)
        current = (info.steps or ((info.step,) if info.step else ())) if live else ()
        return cls(
            completed,
            current,
            failed if status in _FAILING else None,
            compensated,
            compensation_failed=undo_failed if status is InstanceStatus.COMPENSATION_FAILED else None,
            instance_id=info.id,
            status=status,
            workflow=info.workflow,
            version=info.version,
        )

    def state_of(self, step: str) -> str | None:
        """
        How *step* is drawn (the first state it is in, in this order).

        ``"compensation_failed"``, ``"failed"``, ``"current"``, ``"compensated"``,
        ``"completed"`` or ``None``.
        """
        if step == self.compensation_failed:
            return "compensation_failed"
        if step == self.failed:
            return "failed"
        if step in self.current:
            return "current"
        if step in self.compensated:
            return "compensated"
        if step in self.completed:
            return "completed"
        return None

    def steps(self) -> frozenset[str]:
        """Every step the overlay names."""
        named = self.completed | self.current | self.compensated
        return named | {s for s in (self.failed, self.compensation_failed) if s is not None}

    @property
    def caption(self) -> str:
        """``instance ID (status)`` for a diagram's title, or ``''`` when the instance is not known."""
        if self.instance_id is None:
            return ""
        return f"instance {self.instance_id}" + (f" ({self.status.value})" if self.status is not None else "")


OVERLAY_STATES = ("completed", "current", "failed", "compensated", "compensation_failed")
"""The states an overlay draws a step in, in the order a legend lists them."""

OVERLAY_COLOURS = {
    "completed": ("#c8e6c9", "#2e7d32"),
    "current": ("#ffb300", "#e65100"),
    "failed": ("#ef9a9a", "#b71c1c"),
    "compensated": ("#d1c4e9", "#4527a0"),
    "compensation_failed": ("#f48fb1", "#880e4f"),
}
"""Fill and border colour of each overlay state, the same in every format."""

OVERLAY_STRONG = frozenset(("current", "failed", "compensation_failed"))
"""The overlay states drawn with a thicker border: where the instance stands, and what needs an operator."""
