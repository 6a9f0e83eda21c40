"""
Finding workflow classes by import path: ``MODULE:Class``, ``MODULE`` (its workflows), or a ``.py`` file.

The working directory is importable, as with ``python -m``: ``orch worker
examples.order_process`` works from a checkout. A module may define
``orch_services``: a mapping of service names to objects, or a function without
arguments returning one; workers register those services. It may define
``orch_schedules``: a list of :class:`~statemachine_orch.Schedule` objects (or a
function returning one); workers run those schedules.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Final

from statemachine_orch import Schedule, ServiceRegistry, Workflow

from .failures import UsageProblem

MODULES_ENV: Final = "ORCH_MODULES"
"""The environment variable naming modules to import before a command (comma-separated)."""

SERVICES_ATTRIBUTE: Final = "orch_services"
"""The module attribute a worker takes its services from (a mapping, or a function returning one)."""

SCHEDULES_ATTRIBUTE: Final = "orch_schedules"
"""The module attribute a worker takes its schedules from (a list of Schedule, or a function returning one)."""


def _importable_cwd() -> None:
    here = str(Path.cwd())
    if here not in sys.path:
        sys.path.insert(0, here)


def import_module(name: str) -> ModuleType:
    """
    Import the module *name* (dotted) or the Python file *name* (``path/to/flows.py``).

    Raises:
        UsageProblem: It cannot be found.
        WorkflowDefinitionError: A workflow class in it is invalid (as any error its import raises).
    """
    _importable_cwd()
    if name.endswith(".py"):
        path = Path(name).resolve()
        if not path.is_file():
            msg = f"no such file: {name}"
            raise UsageProblem(msg)
        module_name = path.stem
        if module_name in sys.modules and getattr(sys.modules[module_name], "__file__", None) == str(path):
            return sys.modules[module_name]
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            msg = f"cannot import {name}"
            raise UsageProblem(msg)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]  # as the import system does: a failed import leaves no module
            raise
        return module
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            msg = f"no module named {name!r} (is it on PYTHONPATH, or in the working directory?)"
            raise UsageProblem(msg) from None
        raise


def load_class(path: str) -> type[Workflow]:
    """
    The workflow class at ``MODULE:Class`` (``Class`` may be dotted: ``Outer.Inner``).

    Raises:
        UsageProblem: The path is malformed, or does not name a workflow class.
    """
    module_name, sep, qualname = path.partition(":")
    if not sep or not module_name or not qualname:
        msg = f"{path!r} is not MODULE:Class (for example examples.order_process:OrderProcess)"
        raise UsageProblem(msg)
    obj: object = import_module(module_name)
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            msg = f"{module_name} has no {qualname!r}"
            raise UsageProblem(msg) from None
    if not (isinstance(obj, type) and issubclass(obj, Workflow) and hasattr(obj, "__orch_spec__")):
        msg = f"{path} is not a workflow class (a subclass of statemachine_orch.Workflow)"
        raise UsageProblem(msg)
    return obj


def workflows_in(module: ModuleType) -> list[type[Workflow]]:
    """The concrete workflow classes defined in *module* (not those it imports), in definition order."""
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Workflow)
        and value.__module__ == module.__name__
        and hasattr(value, "__orch_spec__")
    ]


def import_all(names: Iterable[str]) -> list[ModuleType]:
    """Import each module of *names* and of ``$ORCH_MODULES``, once each."""
    wanted = [n.strip() for n in os.environ.get(MODULES_ENV, "").split(",") if n.strip()]
    wanted += [n for n in names if n not in wanted]
    return [import_module(n) for n in wanted]


def services_of(modules: Iterable[ModuleType]) -> ServiceRegistry:
    """
    The services the *modules* declare in ``orch_services``, merged.

    Raises:
        UsageProblem: An ``orch_services`` is neither a mapping nor a function returning one.
    """
    merged: dict[str, object] = {}
    for module in modules:
        declared: object = getattr(module, SERVICES_ATTRIBUTE, None)
        if declared is None:
            continue
        if callable(declared):
            declared = declared()
        if isinstance(declared, Mapping):
            for key, value in typing.cast("Mapping[object, object]", declared).items():
                merged[str(key)] = value
        else:
            msg = f"{module.__name__}.{SERVICES_ATTRIBUTE} must be a mapping of names to services (or return one)"
            raise UsageProblem(msg)
    return ServiceRegistry(merged)


def schedules_of(modules: Iterable[ModuleType]) -> list[Schedule[typing.Any]]:
    """
    The schedules the *modules* declare in ``orch_schedules``, in order.

    Raises:
        UsageProblem: An ``orch_schedules`` is not a list of Schedule objects (nor a function returning one).
    """
    found: list[Schedule[typing.Any]] = []
    for module in modules:
        declared: object = getattr(module, SCHEDULES_ATTRIBUTE, None)
        if declared is None:
            continue
        if callable(declared):
            declared = declared()
        items = list(typing.cast("Iterable[object]", declared)) if isinstance(declared, (list, tuple)) else None
        if items is None or not all(isinstance(item, Schedule) for item in items):
            msg = f"{module.__name__}.{SCHEDULES_ATTRIBUTE} must be a list of Schedule objects (or return one)"
            raise UsageProblem(msg)
        found.extend(typing.cast("list[Schedule[typing.Any]]", items))
    return found
