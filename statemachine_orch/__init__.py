"""
statemachine-orch: typed, class-based service orchestration on ``transitions``.

Where each layer lives:
  class body ── decorators (_decorators.py: step, human_task, failure_end, after, goto, .compensation)
      │          mark methods; Workflow (_workflow.py) makes the class an attrs class
      ▼
  WorkflowSpec (_spec.py) ── built once per class by _compile.py, checked by _checks.py
      │
      ├── transitions machine (_machine.py): one per class, instances are its models
      ├── input checks (_validate.py), progress (_progress.py), diagrams (_diagram.py)
      ▼
  Engine (_engine.py) ── Store (_store.py: MemoryStore) · Clock (_clock.py)
      │   layers: _schedules.py ─ _messages.py ─ _client_api.py ─ _driver*.py ─ _commands.py ─ _runtime.py ─
      │           _records.py ─ _engine_core.py
      └── services (_services.py) · Ctx (_ctx.py) · history (_history.py) · tasks (_tasks.py)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._checks import DeadEdgeWarning as DeadEdgeWarning
from ._clock import Clock as Clock
from ._clock import SystemClock as SystemClock
from ._clock import VirtualClock as VirtualClock
from ._ctx import Ctx as Ctx
from ._decorators import Compensation as Compensation
from ._decorators import Migration as Migration
from ._decorators import ResultHandler as ResultHandler
from ._decorators import Step as Step
from ._decorators import after as after
from ._decorators import failure_end as failure_end
from ._decorators import fan_out as fan_out
from ._decorators import goto as goto
from ._decorators import human_task as human_task
from ._decorators import migration as migration
from ._decorators import step as step
from ._decorators import subflow as subflow
from ._decorators import timer as timer
from ._decorators import wait_for as wait_for
from ._diagram import mermaid as mermaid
from ._engine import Engine as Engine
from ._engine import machine_of as machine_of
from ._errors import ChildWorkflowFailed as ChildWorkflowFailed
from ._errors import DefinitionProblem as DefinitionProblem
from ._errors import GuardError as GuardError
from ._errors import InstanceExists as InstanceExists
from ._errors import InstanceFinished as InstanceFinished
from ._errors import InstanceNotFound as InstanceNotFound
from ._errors import InstanceStateError as InstanceStateError
from ._errors import LeaseLost as LeaseLost
from ._errors import MigrationError as MigrationError
from ._errors import NoEdgeEnabled as NoEdgeEnabled
from ._errors import NonRetryableError as NonRetryableError
from ._errors import OrchError as OrchError
from ._errors import QueryError as QueryError
from ._errors import RecordLoadError as RecordLoadError
from ._errors import ScheduleError as ScheduleError
from ._errors import ServiceNotFound as ServiceNotFound
from ._errors import SignalTypeError as SignalTypeError
from ._errors import StoreError as StoreError
from ._errors import TaskAlreadyCompleted as TaskAlreadyCompleted
from ._errors import TaskClaimed as TaskClaimed
from ._errors import TaskError as TaskError
from ._errors import TaskFormError as TaskFormError
from ._errors import TaskNotAuthorized as TaskNotAuthorized
from ._errors import TaskNotFound as TaskNotFound
from ._errors import UnknownWorkflowVersion as UnknownWorkflowVersion
from ._errors import VariableTypeError as VariableTypeError
from ._errors import WorkflowDefinitionError as WorkflowDefinitionError
from ._errors import WorkflowFailed as WorkflowFailed
from ._errors import WorkflowInputError as WorkflowInputError
from ._failure import Failure as Failure
from ._handle import EngineStatistics as EngineStatistics
from ._handle import Handle as Handle
from ._handle import RecoveryReport as RecoveryReport
from ._history import EventKind as EventKind
from ._history import HistoryEvent as HistoryEvent
from ._http_errors import HttpRejected as HttpRejected
from ._http_errors import HttpServiceError as HttpServiceError
from ._http_errors import HttpUnavailable as HttpUnavailable
from ._instance import Command as Command
from ._instance import InstanceInfo as InstanceInfo
from ._instance import Signal as Signal
from ._invariant import invariant as invariant
from ._paths import paths as paths
from ._progress import Progress as Progress
from ._query import Query as Query
from ._query import query as query
from ._registry import WorkflowRegistry as WorkflowRegistry
from ._retry import Retry as Retry
from ._schedule import CatchUp as CatchUp
from ._schedule import Overlap as Overlap
from ._schedule import Schedule as Schedule
from ._schedules import ScheduleInfo as ScheduleInfo
from ._serialize import register_type as register_type
from ._services import InProcessService as InProcessService
from ._services import Service as Service
from ._services import ServiceRegistry as ServiceRegistry
from ._spec import CompensationSpec as CompensationSpec
from ._spec import EdgeSpec as EdgeSpec
from ._spec import FanOutSpec as FanOutSpec
from ._spec import FieldSpec as FieldSpec
from ._spec import MigrationSpec as MigrationSpec
from ._spec import QuerySpec as QuerySpec
from ._spec import StepKind as StepKind
from ._spec import StepSpec as StepSpec
from ._spec import TaskSpec as TaskSpec
from ._spec import WorkflowSpec as WorkflowSpec
from ._status import InstanceStatus as InstanceStatus
from ._store import MemoryStore as MemoryStore
from ._store import Store as Store
from ._store_sqlite import SqliteStore as SqliteStore
from ._tasks import Task as Task
from ._tasks import TaskClaim as TaskClaim
from ._tasks import TaskStatus as TaskStatus
from ._workflow import Workflow as Workflow
from ._workflow import spec_of as spec_of

if TYPE_CHECKING:
    from ._http_service import HttpRoute as HttpRoute  # httpx is optional: imported when first used
    from ._http_service import HttpService as HttpService
    from ._store_postgres import PostgresStore as PostgresStore  # psycopg is optional: imported when first used

__all__ = [
    "CatchUp",
    "ChildWorkflowFailed",
    "Clock",
    "Command",
    "Compensation",
    "CompensationSpec",
    "Ctx",
    "DeadEdgeWarning",
    "DefinitionProblem",
    "EdgeSpec",
    "Engine",
    "EngineStatistics",
    "EventKind",
    "Failure",
    "FanOutSpec",
    "FieldSpec",
    "GuardError",
    "Handle",
    "HistoryEvent",
    "HttpRejected",
    "HttpServiceError",
    "HttpUnavailable",
    "InProcessService",
    "InstanceExists",
    "InstanceFinished",
    "InstanceInfo",
    "InstanceNotFound",
    "InstanceStateError",
    "InstanceStatus",
    "LeaseLost",
    "MemoryStore",
    "Migration",
    "MigrationError",
    "MigrationSpec",
    "NoEdgeEnabled",
    "NonRetryableError",
    "OrchError",
    "Overlap",
    "Progress",
    "Query",
    "QueryError",
    "QuerySpec",
    "RecordLoadError",
    "RecoveryReport",
    "ResultHandler",
    "Retry",
    "Schedule",
    "ScheduleError",
    "ScheduleInfo",
    "Service",
    "ServiceNotFound",
    "ServiceRegistry",
    "Signal",
    "SignalTypeError",
    "SqliteStore",
    "Step",
    "StepKind",
    "StepSpec",
    "Store",
    "StoreError",
    "SystemClock",
    "Task",
    "TaskAlreadyCompleted",
    "TaskClaim",
    "TaskClaimed",
    "TaskError",
    "TaskFormError",
    "TaskNotAuthorized",
    "TaskNotFound",
    "TaskSpec",
    "TaskStatus",
    "UnknownWorkflowVersion",
    "VariableTypeError",
    "VirtualClock",
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowFailed",
    "WorkflowInputError",
    "WorkflowRegistry",
    "WorkflowSpec",
    "after",
    "failure_end",
    "fan_out",
    "goto",
    "human_task",
    "invariant",
    "machine_of",
    "mermaid",
    "migration",
    "paths",
    "query",
    "register_type",
    "spec_of",
    "step",
    "subflow",
    "timer",
    "wait_for",
]


def _fixup_module_metadata() -> None:
    # Tracebacks and reprs should show the public path, not the private module.
    for name in __all__:
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith("statemachine_orch._"):
            obj.__module__ = __name__


_fixup_module_metadata()


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version  # noqa: PLC0415 - only when asked for

        return version("statemachine-orch")
    if name == "PostgresStore":
        # psycopg is optional (the `postgres` extra): imported only when the store is asked for.
        from ._store_postgres import PostgresStore  # noqa: PLC0415

        PostgresStore.__module__ = __name__
        globals()[name] = PostgresStore
        return PostgresStore
    if name in ("HttpService", "HttpRoute"):
        # httpx is optional (the `http` extra): imported only when an HTTP service is asked for.
        try:
            from . import _http_service  # noqa: PLC0415
        except ImportError as exc:
            msg = f"{name} needs httpx: pip install 'statemachine-orch[http]' ({exc})"
            raise ImportError(msg) from exc
        for public in (_http_service.HttpService, _http_service.HttpRoute):
            public.__module__ = __name__
            globals()[public.__name__] = public
        return globals()[name]
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
