"""How far an instance is along its workflow."""

from __future__ import annotations

from collections import deque
from functools import cache
from typing import TYPE_CHECKING

import attrs

from ._history import EventKind
from ._instance import active_steps
from ._status import InstanceStatus

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._history import HistoryEvent
    from ._instance import InstanceRecord
    from ._spec import WorkflowSpec


@attrs.frozen
class Progress:
    """
    How far an instance is.

    Attributes:
        instance_id: The instance.
        status: Its status.
        step: The current step (``None`` once it left the steps; the first branch's, inside a fork).
        steps_done: Step completions so far (a step visited twice counts twice).
        steps_left: The fewest steps still to run to complete from here
            (0 once terminal), the current one included; a ``@failure_end`` is
            no completion, so it does not shorten the way.
        fraction: ``steps_done / (steps_done + steps_left)``, 1.0 once completed.

    .. versionadded:: 0.1.0
    """

    instance_id: str
    status: InstanceStatus
    step: str | None
    steps_done: int
    steps_left: int
    fraction: float

    def __str__(self) -> str:
        """``[#####-----] 50% at step`` for progress displays."""
        filled = round(self.fraction * 20)
        where = f" at {self.step}" if self.step else ""
        return f"[{'#' * filled}{'-' * (20 - filled)}] {self.fraction:4.0%} {self.status.value}{where}"


@cache
def steps_to_end(spec: WorkflowSpec) -> dict[str, int]:
    """For each step, the fewest steps (itself included) on a path to a final step that completes the instance."""
    incoming: dict[str, list[str]] = {s.name: [] for s in spec.steps}
    for e in spec.edges:
        if e.is_completion:
            incoming[e.dest].append(e.source)
    dist = {s.name: 1 for s in spec.steps if s.final and not s.ends_failed}
    todo = deque(dist)
    while todo:
        name = todo.popleft()
        for src in incoming[name]:
            if src not in dist:
                dist[src] = dist[name] + 1
                todo.append(src)
    return dist


def progress_of(rec: InstanceRecord, history: Iterable[HistoryEvent]) -> Progress:
    """The :class:`Progress` of one instance, given its whole history."""
    done = sum(1 for e in history if e.kind is EventKind.STEP_COMPLETED)
    steps = active_steps(rec.state)
    step = steps[0] if steps else None
    # Inside a fork, the branch farthest from the end sets what is left.
    dist = steps_to_end(rec.spec)
    left = 0 if rec.status.is_terminal or step is None else max(dist.get(s, 1) for s in steps)
    total = done + left
    fraction = 1.0 if rec.status is InstanceStatus.COMPLETED else (done / total if total else 0.0)
    return Progress(rec.id, rec.status, step, done, left, fraction)
