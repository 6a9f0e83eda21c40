"""
What a parent keeps about the children of the ``@fan_out`` step it waits at.

One :class:`FanOut` per visit (and attempt) of the step, on the record (or on the
fork branch) that waits there. It is stored with the parent, in the payload
column of its row (``{"fan": [...]}``), so that the children not started yet and
the order in which the parent saw the others end survive a crash: a child is
started in the commit that counts it as started, and never again.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from ._serialize import structure, unstructure
from ._status import InstanceStatus

_COMPLETED = InstanceStatus.COMPLETED


class FanOut:
    """
    The children of one visit of a fan-out step: started, ended, still to start.

    Attributes:
        total: How many children the step's method built.
        started: Children ``0 .. started - 1`` have been started (in item order).
        pending: The children not started yet, in item order (workflow objects).
        ended: ``(index, status)`` of each child seen ending, in the order the parent saw them.
        asked: The running children this process asked to cancel (not stored: asked again after a restart).
    """

    __slots__ = ("asked", "ended", "pending", "started", "total")

    total: int
    started: int

    def __init__(self, children: Iterable[object]) -> None:
        self.pending: deque[object] = deque(children)
        self.total = len(self.pending)
        self.started = 0
        self.ended: list[tuple[int, InstanceStatus]] = []
        self.asked: set[int] = set()

    def running(self) -> list[int]:
        """The children started and not seen ending, in item order."""
        done = {i for i, _ in self.ended}
        return [i for i in range(self.started) if i not in done]

    def failed(self) -> list[tuple[int, InstanceStatus]]:
        """The children seen ending without completing, in the order seen."""
        return [(i, s) for i, s in self.ended if s is not _COMPLETED]

    def completed(self) -> list[int]:
        """The children seen completing, in the order seen."""
        return [i for i, s in self.ended if s is _COMPLETED]

    def to_json(self) -> list[Any]:
        """``[total, started, [[index, status], ...], [child variables, ...]]`` (a list: jsonb keeps its order)."""
        pending = [unstructure(c) for c in self.pending]
        return [self.total, self.started, [[i, s.value] for i, s in self.ended], pending]

    @classmethod
    def from_json(cls, data: Sequence[Any], child: type) -> FanOut:
        """The progress :meth:`to_json` wrote, its children not started yet rebuilt as *child* objects."""
        total, started, ended, pending = data
        fan = cls(structure(p, child) for p in pending)
        fan.total = int(total)
        fan.started = int(started)
        fan.ended = [(int(i), InstanceStatus(s)) for i, s in ended]
        return fan


def child_of(prefix: str, index: int) -> str:
    """The id of child *index* of the fan-out whose children are named ``<prefix>/<index>``."""
    return f"{prefix}/{index}"


def visit_pattern(parent: str, visit: int) -> re.Pattern[str]:
    """Matches the ids of the children of every attempt of one visit of a fan-out step."""
    return re.compile(re.escape(f"{parent}/{visit}") + r"(\.\d+)?/\d+")
