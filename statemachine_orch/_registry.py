"""Which workflow class runs a stored (name, version): needed to load instances."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._workflow import Workflow


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order of version labels: ``"2" < "10"``, ``"1.9" < "1.10"``."""
    parts = re.split(r"[.\-_]", version)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


class WorkflowRegistry:
    """
    The workflow classes an engine can run, by ``(name, version)``.

    Every concrete Workflow class registers itself in the default registry when
    its class statement runs (a later class with the same name and version
    replaces the earlier one). Pass ``Engine(workflows=[...])`` to pin classes.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_classes", "_parent")

    def __init__(self, classes: Iterable[type[Workflow]] = (), parent: WorkflowRegistry | None = None) -> None:
        # Every definition registered under a (name, version), newest last: two
        # classes may share a name (tests, modules) while differing in shape.
        self._classes: dict[tuple[str, str], list[type[Workflow]]] = {}
        self._parent = parent
        for cls in classes:
            self.register(cls)

    def register(self, cls: type[Workflow]) -> None:
        """Make *cls* the newest class of its ``(name, version)`` (replacing one of the same shape)."""
        spec = cls.__orch_spec__
        known = self._classes.setdefault((spec.name, spec.version), [])
        known[:] = [c for c in known if c.__orch_spec__.fingerprint != spec.fingerprint]
        known.append(cls)

    def resolve(self, name: str, version: str, fingerprint: str | None = None) -> type[Workflow] | None:
        """
        The class registered for *name* at *version*, if any.

        With *fingerprint*, only a class of exactly that shape (see
        ``WorkflowSpec.fingerprint``); otherwise the newest.
        """
        for cls in reversed(self._classes.get((name, version), ())):
            if fingerprint is None or cls.__orch_spec__.fingerprint == fingerprint:
                return cls
        if self._parent is not None:
            return self._parent.resolve(name, version, fingerprint)
        return None

    def has(self, name: str, version: str) -> bool:
        """Whether any class is registered for *name* at *version*."""
        return (name, version) in self._classes or (self._parent is not None and self._parent.has(name, version))

    def versions(self, name: str) -> list[str]:
        """Every registered version of *name*, oldest first."""
        own = {v for (n, v) in self._classes if n == name}
        if self._parent is not None:
            own.update(self._parent.versions(name))
        return sorted(own, key=version_key)

    def __iter__(self) -> Iterator[type[Workflow]]:
        """Every registered class, this registry's first."""
        for classes in self._classes.values():
            yield from classes
        if self._parent is not None:
            yield from self._parent

    def latest(self, name: str) -> type[Workflow] | None:
        """The class of the newest registered version of *name*."""
        versions = self.versions(name)
        return self.resolve(name, versions[-1]) if versions else None


default_registry = WorkflowRegistry()
"""Where every concrete Workflow class registers itself."""
