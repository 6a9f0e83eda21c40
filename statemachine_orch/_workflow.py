"""
The ``Workflow`` base class: typed fields through attrs, compiled at class creation.

Also the :class:`WorkflowRegistry` every concrete class joins when its class
statement runs. The two live together because each needs the other: the
registry holds ``type[Workflow]`` and ``Workflow.__init_subclass__`` registers
into ``default_registry``. (``_registry.py`` re-exports them.)
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar, dataclass_transform

import attrs

from ._compile import compile_workflow
from ._errors import DefinitionProblem, WorkflowDefinitionError
from ._machine import build_machine
from ._validate import input_validator

if TYPE_CHECKING:
    from transitions import Machine

    from ._spec import WorkflowSpec
    from ._validate import VariablesValidator


@dataclass_transform(eq_default=False, field_specifiers=(attrs.field,))
class Workflow:
    """
    Base class of every workflow.

    Subclass it with typed fields (the process variables; attrs semantics, so the
    constructor is typed) and methods decorated with ``@step``, ``@human_task``,
    ``@after``, ``@goto`` and ``@x.compensation``. The class is checked and compiled
    when its ``class`` statement runs: any misdeclaration raises one
    :class:`WorkflowDefinitionError` listing every problem.

    Class keywords:
        version: A label for this definition (default ``"1"``); instances record the
            version they started on and finish on it.
        name: The workflow's stable name in stores (default: the class name). Give
            two versions of one workflow, living in two classes, the same name.
        abstract: ``True`` for a base class that only shares fields and helpers:
            it is not compiled and cannot be started.

    Instances compare by identity: each is one run of the process.

    .. versionadded:: 0.1.0
    """

    # Declared for type checkers only: runtime annotations on this base would be
    # evaluated by typing.get_type_hints (attrs, cattrs) in the namespace of the
    # public module, where these names do not exist.
    if TYPE_CHECKING:
        __orch_spec__: ClassVar[WorkflowSpec]
        __orch_machine__: ClassVar[Machine]
        __orch_abstract__: ClassVar[bool]
        __orch_validate__: ClassVar[VariablesValidator]
    __orch_abstract__ = True
    # The machine's model attribute: None until the engine starts the instance
    # (a class default, so that reading it on a fresh object is not a failed lookup).
    _orch_state: str | None = None

    def __init_subclass__(
        cls, *, version: str = "1", name: str | None = None, abstract: bool = False, **kwargs: Any
    ) -> None:
        """Make the subclass an attrs class, then compile it into a spec and a machine."""
        super().__init_subclass__()
        collected = _collected.get()
        if collected is None:
            _define(cls, version, name, abstract, kwargs)
            return
        try:
            _define(cls, version, name, abstract, kwargs)
        except WorkflowDefinitionError as exc:
            collected.append(exc)  # the class stays, with no spec: nothing runs it


def _define(cls: type[Workflow], version: str, name: str | None, abstract: bool, kwargs: dict[str, Any]) -> None:
    """Workflow.__init_subclass__'s work: check, attrs, compile, register."""
    if kwargs:
        unknown = ", ".join(f"{k}=" for k in kwargs)
        msg = f"unknown class keyword {unknown}; Workflow accepts version=, name= and abstract="
        raise WorkflowDefinitionError(cls.__name__, [DefinitionProblem(cls.__name__, None, "class-keyword", msg)])
    try:
        attrs.define(cls, slots=False, eq=False, auto_attribs=True)
    except (ValueError, TypeError) as exc:
        problem = DefinitionProblem(cls.__name__, None, "fields", _fields_message(str(exc)))
        raise WorkflowDefinitionError(cls.__name__, [problem]) from None
    cls.__orch_abstract__ = abstract
    if abstract:
        return
    spec = compile_workflow(cls, version, name)
    cls.__orch_spec__ = spec
    cls.__orch_machine__ = build_machine(spec)
    cls.__orch_validate__ = input_validator(spec)
    default_registry.register(cls)


_collected: ContextVar[list[WorkflowDefinitionError] | None] = ContextVar("orch_definition_errors", default=None)


@contextmanager
def collect_definition_errors() -> Generator[list[WorkflowDefinitionError]]:
    """
    Within this block a workflow class with definition errors does not raise: its error is collected.

    For tools that check a whole module (``orch check``): the module's import goes on
    past an invalid class, which is left without a spec (nothing can run it), and the
    yielded list holds each class's :class:`WorkflowDefinitionError`, in definition order.

    .. versionadded:: 0.1.0
    """
    errors: list[WorkflowDefinitionError] = []
    token = _collected.set(errors)
    try:
        yield errors
    finally:
        _collected.reset(token)


def _fields_message(attrs_message: str) -> str:
    # attrs reports a mandatory field after a defaulted one with a long repr of
    # the Attribute; say it in the user's terms.
    found = re.search(r"Attribute\(name='(\w+)'", attrs_message)
    if "No mandatory attributes allowed after" in attrs_message and found:
        return (
            f"field {found.group(1)!r} has no default but follows a field that has one; move it up, "
            "give it a default, or declare it with attrs.field(kw_only=True)"
        )
    return attrs_message


def spec_of(workflow: object) -> WorkflowSpec:
    """
    The compiled :class:`WorkflowSpec` of a workflow class (or of an instance's class).

    Raises:
        TypeError: An abstract workflow, or not a workflow at all.

    .. versionadded:: 0.1.0
    """
    cls = workflow if isinstance(workflow, type) else type(workflow)
    if not issubclass(cls, Workflow) or cls.__orch_abstract__:
        name = cls.__qualname__.replace("<locals>.", "")
        msg = f"{name} is not a concrete Workflow subclass"
        raise TypeError(msg)
    return cls.__orch_spec__


# The registry of workflow classes: here, not in a module of its own, because it
# holds type[Workflow] while Workflow.__init_subclass__ fills default_registry.


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
