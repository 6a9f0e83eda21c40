"""The engine's record of one instance (the workflow object is its machine model)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._status import InstanceStatus

if TYPE_CHECKING:
    from transitions import Machine

    from ._history import HistoryEvent
    from ._spec import WorkflowSpec

NO_FORM: Any = object()
"""Marks a human-task step whose task has not been completed yet."""


class InstanceRecord:
    """
    Everything the engine keeps about one instance besides its variables.

    ``saga`` holds ``(step, visit)`` for each completion of a step that has a
    compensation, oldest first: compensation pops from the end.
    """

    __slots__ = (
        "attempt",
        "cancel",
        "comp_attempt",
        "created_at",
        "error",
        "form",
        "history",
        "id",
        "in_step",
        "machine",
        "saga",
        "spec",
        "status",
        "task_id",
        "timer_token",
        "visit",
        "wf",
        "worker",
    )

    def __init__(self, instance_id: str, wf: Any, spec: WorkflowSpec, machine: Machine, now: float) -> None:
        self.id = instance_id
        self.wf = wf
        self.spec = spec
        self.machine = machine
        self.status = InstanceStatus.RUNNING
        self.history: list[HistoryEvent] = []
        self.saga: list[tuple[str, int]] = []
        self.attempt = 1
        self.comp_attempt = 1
        self.visit = 0
        self.task_id: str | None = None
        self.form: Any = NO_FORM
        self.error: str | None = None
        self.cancel: tuple[str, bool] | None = None
        self.timer_token = 0
        self.in_step = False
        self.worker: Any = None
        self.created_at = now

    @property
    def state(self) -> str:
        """The machine state: a step name or a lifecycle state (``@completed``...)."""
        state: str = self.wf._orch_state
        return state
