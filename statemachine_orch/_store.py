"""The ``Store`` protocol and the in-memory store."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from ._tasks import Task, TaskStatus

if TYPE_CHECKING:
    from ._instance import InstanceRecord


class Store(Protocol):
    """
    **Protocol:** where an engine keeps instances and tasks.

    The engine calls :meth:`save` at every state change, after the instance record
    and its history have been updated; a durable store commits the change then.

    .. versionadded:: 0.1.0
    """

    async def add(self, record: InstanceRecord) -> None:
        """Store a new instance."""
        ...

    async def save(self, record: InstanceRecord) -> None:
        """Commit the instance's new state, variables and history."""
        ...

    def get(self, instance_id: str) -> InstanceRecord | None:
        """The instance with this id, if any."""
        ...

    def records(self) -> Iterable[InstanceRecord]:
        """Every instance."""
        ...

    async def save_task(self, task: Task) -> None:
        """Store a new or changed task."""
        ...

    def task(self, task_id: str) -> Task | None:
        """The task with this id, if any."""
        ...

    def open_tasks(self) -> Iterable[Task]:
        """Every open task."""
        ...


class MemoryStore:
    """
    Keeps everything in this process's memory: fast, and gone when the process ends.

    Meant for tests and for workflows that need no durability.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_closed_tasks", "_open_tasks", "_records")

    def __init__(self) -> None:
        self._records: dict[str, InstanceRecord] = {}
        self._open_tasks: dict[str, Task] = {}
        self._closed_tasks: dict[str, Task] = {}

    async def add(self, record: InstanceRecord) -> None:
        """Keep *record*."""
        self._records[record.id] = record

    def add_nowait(self, record: InstanceRecord) -> None:
        """Keep *record* (the store needs no I/O)."""
        self._records[record.id] = record

    async def save(self, record: InstanceRecord) -> None:
        """Nothing to do: the record is the stored object."""

    def get(self, instance_id: str) -> InstanceRecord | None:
        """The instance with this id, if any."""
        return self._records.get(instance_id)

    def records(self) -> Iterable[InstanceRecord]:
        """Every instance, oldest first."""
        return self._records.values()

    async def save_task(self, task: Task) -> None:
        """Keep *task*, indexed by whether it is open."""
        if task.status is TaskStatus.OPEN:
            self._open_tasks[task.id] = task
        else:
            self._open_tasks.pop(task.id, None)
            self._closed_tasks[task.id] = task

    def task(self, task_id: str) -> Task | None:
        """The task with this id, if any."""
        return self._open_tasks.get(task_id) or self._closed_tasks.get(task_id)

    def open_tasks(self) -> Iterable[Task]:
        """Every open task, oldest first."""
        return self._open_tasks.values()

    def __len__(self) -> int:
        """The number of instances."""
        return len(self._records)
