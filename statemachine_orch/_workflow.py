"""The ``Workflow`` base class: typed fields through attrs, compiled at class creation."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, dataclass_transform

import attrs

from ._compile import compile_workflow
from ._errors import DefinitionProblem, WorkflowDefinitionError
from ._machine import build_machine
from ._registry import default_registry
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
        if kwargs:
            unknown = ", ".join(f"{k}=" for k in kwargs)
            msg = f"unknown class keyword {unknown}; Workflow accepts version=, name= and abstract="
            raise WorkflowDefinitionError(cls.__name__, [DefinitionProblem(cls.__name__, None, "class-keyword", msg)])
        super().__init_subclass__()
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
