"""The ``Workflow`` base class: typed fields through attrs, compiled at class creation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, dataclass_transform

import attrs

from ._compile import compile_workflow
from ._errors import DefinitionProblem, WorkflowDefinitionError
from ._machine import build_machine

if TYPE_CHECKING:
    from transitions import Machine

    from ._spec import WorkflowSpec


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
            version they started on.
        abstract: ``True`` for a base class that only shares fields and helpers:
            it is not compiled and cannot be started.

    Instances compare by identity: each is one run of the process.

    .. versionadded:: 0.1.0
    """

    __orch_spec__: ClassVar[WorkflowSpec]
    __orch_machine__: ClassVar[Machine]
    __orch_abstract__: ClassVar[bool] = True

    def __init_subclass__(cls, *, version: str = "1", abstract: bool = False, **kwargs: Any) -> None:
        """Make the subclass an attrs class, then compile it into a spec and a machine."""
        super().__init_subclass__(**kwargs)
        try:
            attrs.define(cls, slots=False, eq=False, auto_attribs=True)
        except (ValueError, TypeError) as exc:
            problem = DefinitionProblem(cls.__name__, None, "fields", str(exc))
            raise WorkflowDefinitionError(cls.__name__, [problem]) from None
        cls.__orch_abstract__ = abstract
        if abstract:
            return
        spec = compile_workflow(cls, version)
        cls.__orch_spec__ = spec
        cls.__orch_machine__ = build_machine(spec)


def spec_of(workflow: object) -> WorkflowSpec:
    """
    The compiled :class:`WorkflowSpec` of a workflow class (or of an instance's class).

    Raises:
        TypeError: An abstract workflow, or not a workflow at all.

    .. versionadded:: 0.1.0
    """
    cls = workflow if isinstance(workflow, type) else type(workflow)
    if not issubclass(cls, Workflow) or cls.__orch_abstract__:
        msg = f"{cls.__qualname__} is not a concrete Workflow subclass"
        raise TypeError(msg)
    return cls.__orch_spec__
