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

Hypothesis is needed only by :func:`WorkflowMachine` and its companions, which are
imported on first use: the plugin and the rest of this module work without it.
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

from ._coverage import Coverage as Coverage
from ._engine import CapturedEvent as CapturedEvent
from ._engine import capture_history as capture_history
from ._engine import virtual_engine as virtual_engine

if TYPE_CHECKING:
    from ._faults import InjectedFault as InjectedFault
    from ._faults import InjectedPermanentFault as InjectedPermanentFault
    from ._machine import CoverageError as CoverageError
    from ._machine import InvariantViolation as InvariantViolation
    from ._machine import RunawayLoop as RunawayLoop
    from ._machine import WorkflowMachine as WorkflowMachine
    from ._machine import WorkflowStateMachine as WorkflowStateMachine
    from ._strategies import Actor as Actor

__all__ = [
    "Actor",
    "Branch",
    "CapturedEvent",
    "Coverage",
    "CoverageError",
    "Ending",
    "ForkVisit",
    "GuardOutcome",
    "InjectedFault",
    "InjectedPermanentFault",
    "InvariantViolation",
    "Path",
    "RunawayLoop",
    "TooManyPaths",
    "WorkflowMachine",
    "WorkflowStateMachine",
    "capture_history",
    "paths",
    "virtual_engine",
]

_LAZY = {
    "Actor": "_strategies",
    "CoverageError": "_machine",
    "InjectedFault": "_faults",
    "InjectedPermanentFault": "_faults",
    "InvariantViolation": "_machine",
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
