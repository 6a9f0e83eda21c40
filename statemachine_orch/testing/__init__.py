"""
Testing workflows: every path, generated stories with injected faults, coverage.

- :func:`paths` lists every path through a workflow (from its spec, no engine),
  forks included (:class:`ForkVisit`, :class:`Branch`).
- :func:`WorkflowMachine` builds a hypothesis state machine that runs real
  instances on an in-memory engine with a virtual clock, injects faults, and
  checks the saga guarantee, the instance lifecycle, history consistency and the
  workflow's own ``@invariant`` methods; failures shrink to a readable story.
- :func:`virtual_engine` makes a test engine; :func:`capture_history` records
  what it does.
- The pytest plugin (``statemachine_orch.pytest_plugin``, loaded automatically)
  adds the ``orch_engine`` fixture and the ``--orch-coverage`` report.

It needs hypothesis: ``pip install 'statemachine-orch[testing]'`` (the ``testing``
extra). Without it, importing this module raises an ImportError saying so; the
rest of the package, and the pytest plugin's option, work without it.
:func:`WorkflowMachine` and its companions are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from statemachine_orch._paths import Branch as Branch
from statemachine_orch._paths import Ending as Ending
from statemachine_orch._paths import ForkVisit as ForkVisit
from statemachine_orch._paths import GuardOutcome as GuardOutcome
from statemachine_orch._paths import Path as Path
from statemachine_orch._paths import TooManyPaths as TooManyPaths
from statemachine_orch._paths import paths as paths

from . import _requires  # noqa: F401  # pyright: ignore[reportUnusedImport] - first: without hypothesis, say what to install
from ._coverage import Coverage as Coverage
from ._coverage import CoverageWarning as CoverageWarning
from ._engine import CapturedEvent as CapturedEvent
from ._engine import capture_history as capture_history
from ._engine import virtual_engine as virtual_engine

if TYPE_CHECKING:
    from ._actions import AppliedAction as AppliedAction
    from ._actions import Cancel as Cancel
    from ._actions import CancelChild as CancelChild
    from ._actions import Complete as Complete
    from ._actions import FireTimers as FireTimers
    from ._actions import HandOver as HandOver
    from ._actions import InvariantViolation as InvariantViolation
    from ._actions import Send as Send
    from ._actions import Start as Start
    from ._faults import InjectedFault as InjectedFault
    from ._faults import InjectedPermanentFault as InjectedPermanentFault
    from ._machine import CoverageError as CoverageError
    from ._machine import RunawayLoop as RunawayLoop
    from ._machine import WorkflowMachine as WorkflowMachine
    from ._machine import WorkflowStateMachine as WorkflowStateMachine
    from ._strategies import Actor as Actor

__all__ = [
    "Actor",
    "AppliedAction",
    "Branch",
    "Cancel",
    "CancelChild",
    "CapturedEvent",
    "Complete",
    "Coverage",
    "CoverageError",
    "CoverageWarning",
    "Ending",
    "FireTimers",
    "ForkVisit",
    "GuardOutcome",
    "HandOver",
    "InjectedFault",
    "InjectedPermanentFault",
    "InvariantViolation",
    "Path",
    "RunawayLoop",
    "Send",
    "Start",
    "TooManyPaths",
    "WorkflowMachine",
    "WorkflowStateMachine",
    "capture_history",
    "paths",
    "virtual_engine",
]

_LAZY = {
    "Actor": "_strategies",
    "AppliedAction": "_actions",
    "Cancel": "_actions",
    "CancelChild": "_actions",
    "Complete": "_actions",
    "FireTimers": "_actions",
    "HandOver": "_actions",
    "Send": "_actions",
    "Start": "_actions",
    "CoverageError": "_machine",
    "InjectedFault": "_faults",
    "InjectedPermanentFault": "_faults",
    "InvariantViolation": "_actions",
    "RunawayLoop": "_machine",
    "WorkflowMachine": "_machine",
    "WorkflowStateMachine": "_machine",
}


def _public(obj: Any) -> Any:
    # Reprs and tracebacks show the public path, not the private module.
    module = getattr(obj, "__module__", "")
    if module.startswith(f"{__name__}._") or module == "statemachine_orch._paths":
        obj.__module__ = __name__
    return obj


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = _public(getattr(importlib.import_module(f"{__name__}.{module}"), name))
    globals()[name] = value
    return value


for _name in __all__:
    if _name not in _LAZY:
        _public(globals()[_name])
