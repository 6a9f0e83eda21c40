"""
Which workflow class runs a stored (name, version): needed to load instances.

The registry is defined in ``_workflow.py``, next to the ``Workflow`` base class
that registers every concrete subclass into ``default_registry`` when its class
statement runs (the registry holds ``type[Workflow]``, so the two modules would
otherwise import each other). This module is where the engine and the stores
import it from.
"""

from __future__ import annotations

from ._workflow import WorkflowRegistry, default_registry, version_key

__all__ = ["WorkflowRegistry", "default_registry", "version_key"]
