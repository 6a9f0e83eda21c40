"""``Handle``: a reference to one started instance."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar

import attrs

from ._errors import OrchError, WorkflowFailed
from ._status import InstanceStatus
from ._workflow import Workflow

if TYPE_CHECKING:
    from ._failure import Failure
    from ._history import HistoryEvent
    from ._instance import InstanceInfo
    from ._progress import Progress
    from ._query import Query

W = TypeVar("W", bound=Workflow)
P = ParamSpec("P")
R = TypeVar("R")


@attrs.frozen
class EngineStatistics:
    """
    What an engine is doing right now (``Engine.statistics()``).

    Attributes:
        live: Instance records held in memory (running, queued or recently touched).
        active: Instances queued or being run by a worker.
        queued: Instances waiting for a free worker.
        next_timer_in: Seconds until the next timer is due (``None``: no timer).
        commits: Store commits made so far (each may carry several instances).
        committed_records: Instance changes written by those commits.

    .. versionadded:: 0.1.0
    """

    live: int
    active: int
    queued: int
    next_timer_in: float | None
    commits: int
    committed_records: int


@attrs.frozen
class RecoveryReport:
    """
    What ``Engine.recover()`` found in the store.

    Attributes:
        resumed: Instances that were in flight and run again now.
        orphaned: Instances whose workflow version has no registered class; they
            are left untouched until that class is registered.

    .. versionadded:: 0.1.0
    """

    resumed: int
    orphaned: tuple[str, ...]


class EngineView(Protocol):
    """What a :class:`Handle` asks of its engine (:class:`Engine` provides it)."""

    def info(self, instance_id: str) -> InstanceInfo:
        """See :meth:`Engine.info`."""
        ...

    def workflow(self, instance_id: str) -> Any:
        """See :meth:`Engine.workflow`."""
        ...

    def history(self, instance_id: str) -> list[HistoryEvent]:
        """See :meth:`Engine.history`."""
        ...

    def failure(self, instance_id: str) -> Failure | None:
        """See :meth:`Engine.failure`."""
        ...

    def progress(self, instance_id: str) -> Progress:
        """See :meth:`Engine.progress`."""
        ...

    async def wait_instance(self, instance_id: str, *, terminal: bool = True) -> InstanceStatus:
        """See :meth:`Engine.wait_instance`."""
        ...

    async def wait_result(self, instance_id: str) -> tuple[InstanceStatus, Any]:
        """See :meth:`Engine.wait_result`."""
        ...

    def query(self, instance_id: str, query: Query[Any, P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """See :meth:`Engine.query`."""
        ...


class Handle(Generic[W]):
    """
    A reference to one started instance.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_engine", "instance_id")

    instance_id: str
    """The instance's id."""

    def __init__(self, engine: EngineView, instance_id: str) -> None:
        self._engine = engine
        self.instance_id = instance_id

    def __repr__(self) -> str:
        return f"<Handle {self.instance_id} {self.status.value}>"

    @property
    def status(self) -> InstanceStatus:
        """The instance's status now."""
        return self._engine.info(self.instance_id).status

    @property
    def workflow(self) -> W:
        """The instance's workflow object: its variables as they are now."""
        wf: W = self._engine.workflow(self.instance_id)
        return wf

    @property
    def step(self) -> str | None:
        """The current step, or ``None`` once the instance left the steps."""
        return self._engine.info(self.instance_id).step

    def history(self) -> list[HistoryEvent]:
        """See :meth:`Engine.history`."""
        return self._engine.history(self.instance_id)

    def query(self, query: Query[W, P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """
        Ask the instance a ``@query`` of its workflow (see :meth:`Engine.query`).

        .. versionadded:: 0.1.0
        """
        return self._engine.query(self.instance_id, query, *args, **kwargs)

    def progress(self) -> Progress:
        """See :meth:`Engine.progress`."""
        return self._engine.progress(self.instance_id)

    async def wait_idle(self) -> InstanceStatus:
        """
        Wait until the instance settles: it waits (task, timer, message) or ended; return its status.

        A parent waiting for a child settles once the child does. With a
        ``VirtualClock(autojump=False)``, an instance parked on a retry's backoff has
        settled too (its status is then ``running``): only the test moves the clock on.
        """
        return await self._engine.wait_instance(self.instance_id, terminal=False)

    async def result(self) -> W:
        """
        Wait until the instance is terminal.

        Returns:
            The workflow object (its final variables) when it completed.

        Raises:
            WorkflowFailed: It ended failed, cancelled or compensation_failed.
        """
        status, wf = await self._engine.wait_result(self.instance_id)
        if status is not InstanceStatus.COMPLETED:
            info = self._engine.info(self.instance_id)
            try:
                why = self._engine.failure(self.instance_id)
            except OrchError:  # its class is unknown here, or its record cannot be read: the info says enough
                why = None
            if why is None:
                raise WorkflowFailed(self.instance_id, status, info.error, outcome=info.outcome)
            raise WorkflowFailed(
                self.instance_id, status, info.error, outcome=why.outcome, step=why.step, error=why.error
            )
        result: W = wf
        return result
