"""
``@query``: a read-only question a workflow answers from its variables, asked by a caller.

The decorator wraps the method in a :class:`Query` (a descriptor, like ``Step``:
on the class it is the typed query object, on an instance the plain method).
``Engine.query(instance_id, Order.total, ...)`` finds the query of the same name
on the instance's own class (so a caller holding the newest version's class
queries instances of older versions too) and evaluates it on a copy of the
instance's variables: a query that assigns a variable is refused.
"""

from __future__ import annotations

import copy
import inspect
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

from ._errors import DefinitionProblem, QueryError, WorkflowDefinitionError
from ._spec import QuerySpec
from ._types import W

if TYPE_CHECKING:
    from typing import Self

    from ._instance import InstanceRecord

P = ParamSpec("P")
R = TypeVar("R")


class Query(Generic[W, P, R]):
    """
    A read-only query of a workflow, declared with :func:`query`.

    Pass it to :meth:`Engine.query` (or :meth:`Handle.query`) with its arguments;
    on a workflow object it is the plain method.

    .. versionadded:: 0.1.0
    """

    fn: Callable[Concatenate[W, P], R]
    """The method as written."""
    name: str
    """Its name in the class."""

    def __init__(self, fn: Callable[Concatenate[W, P], R]) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<Query {self.fn.__qualname__.replace('<locals>.', '')}>"

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Self: ...
    @overload
    def __get__(self, obj: W, objtype: type | None = None) -> Callable[P, R]: ...
    def __get__(self, obj: W | None, objtype: type | None = None) -> Self | Callable[P, R]:
        if obj is None:
            return self
        bound: Callable[P, R] = self.fn.__get__(obj, objtype)
        return bound


def _reject(fn: object, message: str) -> WorkflowDefinitionError:
    qualname = str(getattr(fn, "__qualname__", repr(fn))).replace("<locals>.", "")
    owner, _, name = qualname.rpartition(".")
    owner = owner or "<module>"
    return WorkflowDefinitionError(owner, [DefinitionProblem(owner, name, "bad-query", message)])


def query(fn: Callable[Concatenate[W, P], R], /) -> Query[W, P, R]:
    """
    Declare a read-only query: a plain method ``(self, *args) -> value`` that reads variables.

    A caller asks it with ``engine.query(instance_id, Order.total, *args)`` (or
    ``handle.query(Order.total)``), from any engine on the store, a client
    included: it is evaluated on the instance's current variables, on a copy, and
    assigning a variable in it is a :class:`QueryError`. It runs no step and
    changes nothing.

    Args:
        fn: The method (not ``async``: a query answers at once).

    Returns:
        A :class:`Query`.

    Raises:
        WorkflowDefinitionError: *fn* is not a plain function, is ``async``, or is a
            step already.

    .. versionadded:: 0.1.0
    """
    if not inspect.isfunction(fn):
        raise _reject(fn, f"@query must decorate a plain method (def), not a {type(fn).__name__}")
    if inspect.iscoroutinefunction(fn):
        raise _reject(fn, "@query must decorate a plain def: a query answers at once, it cannot be async")
    return Query(fn)


def ask(rec: InstanceRecord, asked: Query[Any, P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Evaluate the query of *asked*'s name on the record's own class, on a copy of its variables."""
    given = cast("object", asked)
    if not isinstance(given, Query):
        msg = "pass the query itself, as declared on the workflow class (Order.total)"
        raise QueryError(rec.id, repr(given), msg)
    name = asked.name
    wf: object = rec.wf
    found: object = getattr(type(wf), name, None)
    if not isinstance(found, Query):
        msg = f"{rec.spec.name} version {rec.spec.version} declares no @query {name}"
        raise QueryError(rec.id, name, msg)
    own = cast("Query[Any, P, R]", found)
    shadow = copy.deepcopy(wf)
    try:
        answer = own.fn(shadow, *args, **kwargs)
    except Exception as exc:
        raise QueryError(rec.id, name, f"raised {type(exc).__name__}: {exc}") from exc
    changed = [f.name for f in rec.spec.fields if getattr(shadow, f.name) != getattr(wf, f.name)]
    if changed:
        msg = f"a query is read-only, but it assigned {', '.join(changed)}"
        raise QueryError(rec.id, name, msg)
    return answer


def _answer(fn: Callable[..., Any]) -> object:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - a name only the type checker sees: keep the annotation as written
        hints = {}
    return hints.get("return", fn.__annotations__.get("return"))


def collect_queries(cls: type) -> tuple[QuerySpec, ...]:
    """
    The queries of *cls* and of its bases, by name.

    A subclass attribute of the same name that is not a query hides the base's query.
    """
    found: dict[str, Query[Any, Any, Any]] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, Query):
                found[name] = value
            else:
                found.pop(name, None)
    out: list[QuerySpec] = []
    for name in sorted(found):
        fn = found[name].fn
        parameters = tuple(inspect.signature(fn).parameters)[1:]
        out.append(QuerySpec(name, fn, parameters, _answer(fn), fn.__doc__))
    return tuple(out)
