"""
The decorators of the DSL.

``step``, ``human_task``, ``timer``, ``wait_for``, ``subflow``, ``after``,
``goto``, ``.compensation``, ``.on_result`` and ``migration``.

Decorators only *mark*: they wrap the method in a :class:`Step` (or
:class:`Compensation`) carrying small frozen records. The compiler
(``_compile.py``) collects the marks once the class exists and reports every
problem together, so nothing here knows about the class being built.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar, cast, overload

import attrs

from ._errors import DefinitionProblem, WorkflowDefinitionError
from ._retry import Retry
from ._spec import StepKind
from ._types import R2, RR, RS, WD, C, E, F, P, R_co, W, W_contra

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Self

    from ._ctx import Ctx
    from ._errors import ChildWorkflowFailed

_order = itertools.count()

ExcTypes = type[BaseException] | tuple[type[BaseException], ...]


@attrs.frozen
class StepOptions:
    """What ``@step`` / ``@human_task`` said about one method."""

    kind: StepKind
    initial: bool = False
    final: bool = False
    retry: Retry | None = None
    timeout: float | None = None
    assignee: object | None = None
    candidate_groups: object = ()
    form: object | None = None
    due: float | None = None
    delay: float | None = None
    message: object | None = None
    fork: bool = False
    child: object | None = None
    limit: object = None
    tolerate: object = 0
    outcome: object | None = None


@attrs.frozen
class EdgeMark:
    """
    One ``@after`` or ``@goto`` mark: edges from each of ``sources`` to ``dest``.

    Several sources make a join. The objects are kept as the user gave them; the
    compiler checks that they are steps of the class and that guards are callable.
    """

    sources: tuple[object, ...]
    dest: object
    when: object | None
    on_error: object | None
    back: bool
    timeout: float | None = None
    reminder: float | None = None
    repeat: bool = False


def _qualname(fn: Callable[..., object]) -> str:
    return fn.__qualname__.replace("<locals>.", "")


def _split_qualname(fn: Callable[..., object]) -> tuple[str, str]:
    qual = _qualname(fn)
    owner, _, name = qual.rpartition(".")
    return owner or "<module>", name


def _seconds(value: timedelta | float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


class Step(Generic[W, P, R_co]):
    """
    A step of a workflow: the method, what its decorators declared, and the edges into it.

    You get one from ``@step`` or ``@human_task``; refer to it by name in later
    decorators (``@after(validate_order)``) and declare its undo with
    ``@validate_order.compensation``. On an instance it is the plain method.

    .. versionadded:: 0.1.0
    """

    fn: Callable[..., R_co]
    """The method as written."""
    options: StepOptions
    """What ``@step`` / ``@human_task`` / ``@timer`` / ``@wait_for`` said about it."""
    owner: str
    """The qualified name of the class body it was defined in."""
    name: str
    """Its name in the class."""
    order: int
    """Its position among all steps ever defined (declaration order)."""
    edges: list[EdgeMark]
    """The ``@after``/``@goto`` marks on it, top-down."""
    compensations: list[Compensation[W, Any]]
    """The compensations declared for it (one is valid)."""
    results: list[ResultHandler[W, Any]]
    """The ``.on_result`` handlers declared for it (one is valid, on a subflow step)."""

    def __init__(self, fn: Callable[..., R_co], options: StepOptions) -> None:
        self.fn = fn
        self.options = options
        self.owner, self.name = _split_qualname(fn)
        self.order = next(_order)
        # Edges declared on this step, top-down: @after marks (into it) and @goto marks (out of it).
        self.edges = []
        self.compensations = []
        self.results = []
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<Step {self.owner}.{self.name} ({self.options.kind.value})>"

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Self: ...
    @overload
    def __get__(self, obj: W, objtype: type | None = None) -> Callable[P, R_co]: ...
    def __get__(self, obj: W | None, objtype: type | None = None) -> Self | Callable[P, R_co]:
        if obj is None:
            return self
        bound: Callable[P, R_co] = self.fn.__get__(obj, objtype)
        return bound

    def is_step_of(self, workflow: W, /) -> bool:
        """
        Whether this is a step of *workflow*'s class: declared there, or inherited from a base class.

        Args:
            workflow: A workflow instance.

        Returns:
            ``True`` when its class (or a base class) holds this step.

        .. versionadded:: 0.1.0
        """
        return any(vars(klass).get(self.name) is self for klass in type(workflow).__mro__)

    @overload
    def compensation(self, fn: Callable[[W, Ctx], R2], /) -> Compensation[W, R2]: ...
    @overload
    def compensation(
        self, /, *, retry: Retry | None = None, attempted: bool = False
    ) -> Callable[[Callable[[W, Ctx], R2]], Compensation[W, R2]]: ...
    def compensation(
        self, fn: Callable[[W, Ctx], R2] | None = None, /, *, retry: Retry | None = None, attempted: bool = False
    ) -> Compensation[W, R2] | Callable[[Callable[[W, Ctx], R2]], Compensation[W, R2]]:
        """
        Declare the method that undoes this step.

        Usable bare (``@pay.compensation``) or with options
        (``@pay.compensation(retry=Retry(attempts=5))``). When an instance fails or
        is cancelled with compensation, the compensations of the completed steps run
        newest first, each exactly once per completion of its step.

        With ``attempted=True`` the undo is registered (durably) when the step's
        first attempt of a visit starts, not when it completes: it also runs when the
        step's last attempt failed (whether an ``on_error`` edge took the error or
        the instance failed) or when the step was cancelled in flight, since a call
        that timed out or was cut short may still have taken effect. It then holds
        its place in the saga from that start. Such an undo must cope with nothing to
        undo.

        Args:
            fn: The compensation method ``(self, ctx) -> None`` (sync or async).
            retry: Its own retry policy (default: 3 attempts, 0.5 s then doubling).
            attempted: Undo every attempted visit of the step, not only completed ones.

        Returns:
            A :class:`Compensation`, stored in the class under the method's name.

        .. versionchanged:: 0.1.0 ``attempted``.
        """

        def mark(f: Callable[[W, Ctx], R2]) -> Compensation[W, R2]:
            comp = Compensation(f, self, retry, attempted=attempted)
            self.compensations.append(comp)
            return comp

        if fn is None:
            return mark
        return mark(fn)

    def on_result(self, fn: Callable[[W, Ctx, R_co], None], /) -> ResultHandler[W, R_co]:
        """
        Declare the method that receives the finished child of a ``@subflow`` step.

        It runs once the child instance completed, with the child's workflow
        object (its final variables): ``(self, ctx, child: ChildWorkflow) -> None``;
        copy what the parent needs into its own fields there. On a ``@fan_out``
        step it runs once every child ended, with their results in item order:
        ``(self, ctx, results: Sequence[ChildWorkflow]) -> None``.

        Args:
            fn: The method.

        Returns:
            A :class:`ResultHandler`, stored in the class under the method's name.

        .. versionadded:: 0.1.0
        """
        handler: ResultHandler[W, R_co] = ResultHandler(fn, self)
        self.results.append(handler)
        return handler


class ResultHandler(Generic[W, R_co]):
    """
    What a ``@subflow`` step does with its finished child: ``@ship.on_result``.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("fn", "name", "step")

    fn: Callable[..., None]
    """The method as written."""
    name: str
    """Its name in the class."""

    def __init__(self, fn: Callable[..., None], step: Step[W, Any, Any]) -> None:
        self.fn = fn
        self.step: Step[W, Any, Any] = step
        self.name = fn.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<ResultHandler {self.name} of step {self.step.name}>"

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Self: ...
    @overload
    def __get__(self, obj: W, objtype: type | None = None) -> Callable[[Ctx, R_co], None]: ...
    def __get__(self, obj: W | None, objtype: type | None = None) -> Self | Callable[[Ctx, R_co], None]:
        if obj is None:
            return self
        bound: Callable[[Ctx, R_co], None] = self.fn.__get__(obj, objtype)
        return bound


class Compensation(Generic[W, R_co]):
    """
    The undo of a step, declared with ``@some_step.compensation``.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("attempted", "fn", "name", "retry", "step")

    fn: Callable[..., R_co]
    """The compensation method as written."""
    retry: Retry | None
    """Its own retry policy, when declared."""
    name: str
    """Its name in the class."""
    attempted: bool
    """Whether it undoes every attempted visit of its step, not only completed ones."""

    def __init__(
        self, fn: Callable[..., R_co], step: Step[W, Any, Any], retry: Retry | None, *, attempted: bool = False
    ) -> None:
        self.fn = fn
        self.attempted = attempted
        # Annotated here, not in the class body: there a Step-typed attribute would
        # be read through Step.__get__ by type checkers.
        self.step: Step[W, Any, Any] = step
        self.retry = retry
        self.name = fn.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<Compensation {self.name} of step {self.step.name}>"

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Self: ...
    @overload
    def __get__(self, obj: W, objtype: type | None = None) -> Callable[[Ctx], R_co]: ...
    def __get__(self, obj: W | None, objtype: type | None = None) -> Self | Callable[[Ctx], R_co]:
        if obj is None:
            return self
        bound: Callable[[Ctx], R_co] = self.fn.__get__(obj, objtype)
        return bound


def _make_step(fn: object, options: StepOptions) -> Step[Any, Any, Any]:
    if isinstance(fn, (Step, Compensation)):
        what = f"@{options.kind.value}"
        owner, name = _split_qualname(fn.fn)
        msg = f"{what} is applied to something that is already a step or compensation"
        problem = DefinitionProblem(owner, name, "decorated-twice", msg)
        raise WorkflowDefinitionError(owner, [problem])
    if not inspect.isfunction(fn):
        what = f"@{options.kind.value}"
        inner = getattr(fn, "__func__", None)
        where: tuple[str, str | None] = _split_qualname(inner) if inspect.isfunction(inner) else ("<unknown>", None)
        kind = type(fn).__name__
        msg = f"{what} must decorate a plain method (def or async def), not a {kind}"
        raise WorkflowDefinitionError(where[0], [DefinitionProblem(where[0], where[1], "not-a-function", msg)])
    return Step(fn, options)


class StepMaker(Protocol):
    """
    What ``@step(...)`` with options returns: it makes a step of a method, with or without an error parameter.

    .. versionadded:: 0.1.0
    """

    @overload
    def __call__(self, fn: Callable[[W, Ctx, E], R2], /) -> Step[W, [Ctx, E], R2]: ...
    @overload
    def __call__(self, fn: Callable[[W, Ctx], R2], /) -> Step[W, [Ctx], R2]: ...
    def __call__(self, fn: Callable[..., Any], /) -> Step[Any, Any, Any]:
        """Make *fn* a step: ``(self, ctx)``, or an ``on_error`` handler ``(self, ctx, error)``."""
        ...


@overload
def step(fn: Callable[[W, Ctx, E], R2], /) -> Step[W, [Ctx, E], R2]: ...
@overload
def step(fn: Callable[[W, Ctx], R2], /) -> Step[W, [Ctx], R2]: ...
@overload
def step(
    *,
    initial: bool = False,
    final: bool = False,
    retry: Retry | None = None,
    timeout: timedelta | float | None = None,
    fork: bool = False,
) -> StepMaker: ...
def step(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    initial: bool = False,
    final: bool = False,
    retry: Retry | None = None,
    timeout: timedelta | float | None = None,
    fork: bool = False,
) -> Step[Any, Any, Any] | StepMaker:
    """
    Declare a method ``(self, ctx) -> None`` (sync or ``async``) as a step.

    Usable bare (``@step``) or with options (``@step(initial=True)``). A step that
    an ``on_error`` edge leads to may take the error as a third parameter,
    ``(self, ctx, error: SomeError)``: it receives the exception of the step that
    failed (built again from the store after a restart, of the same class).

    Args:
        fn: The method, when used bare.
        initial: The instance starts here (exactly one step is initial).
        final: Completing this step completes the instance (it has no outgoing edge).
        retry: Retry policy (default: one attempt, no retry).
        timeout: Limit for each attempt of an ``async`` step (``timedelta`` or seconds).
        fork: Take every enabled outgoing edge at once, each into its own parallel
            branch (unguarded edges always, guarded ones when their guard holds: an
            inclusive gateway). A join, ``@after(a, b, ...)`` listing the last step of
            each branch, waits for every branch that was started.

    Returns:
        A :class:`Step` (or a decorator making one).

    .. versionadded:: 0.1.0
    """
    options = StepOptions(
        StepKind.STEP, initial=initial, final=final, retry=retry, timeout=_seconds(timeout), fork=fork
    )

    def mark(f: Callable[..., Any]) -> Step[Any, Any, Any]:
        return _make_step(f, options)

    if fn is None:
        maker: StepMaker = cast("StepMaker", mark)
        return maker
    return mark(fn)


# Who the task is for may be computed by methods of the workflow: those overloads come
# first and need one callable, so that a task with fixed people never leaves W unsolved.
@overload
def human_task(
    *,
    form: type[F],
    assignee: Callable[[W], str | None],
    candidate_groups: Iterable[str] | Callable[[W], Iterable[str]] = (),
    due: timedelta | float | None = None,
    initial: bool = False,
    final: bool = False,
    retry: Retry | None = None,
) -> Callable[[Callable[[W, Ctx, F], R2]], Step[W, [Ctx, F], R2]]: ...
@overload
def human_task(
    *,
    form: type[F],
    assignee: str | None = None,
    candidate_groups: Callable[[W], Iterable[str]],
    due: timedelta | float | None = None,
    initial: bool = False,
    final: bool = False,
    retry: Retry | None = None,
) -> Callable[[Callable[[W, Ctx, F], R2]], Step[W, [Ctx, F], R2]]: ...
@overload
def human_task(
    *,
    form: type[F],
    assignee: str | None = None,
    candidate_groups: Iterable[str] = (),
    due: timedelta | float | None = None,
    initial: bool = False,
    final: bool = False,
    retry: Retry | None = None,
) -> Callable[[Callable[[W, Ctx, F], R2]], Step[W, [Ctx, F], R2]]: ...
@overload
def human_task(
    *,
    form: None = None,
    assignee: Callable[[W], str | None],
    candidate_groups: Iterable[str] | Callable[[W], Iterable[str]] = (),
    due: timedelta | float | None = None,
    initial: bool = False,
    final: bool = False,
    retry: Retry | None = None,
) -> Callable[[Callable[[W, Ctx], R2]], Step[W, [Ctx], R2]]: ...
@overload
def human_task(
    *,
    form: None = None,
    assignee: str | None = None,
    candidate_groups: Callable[[W], Iterable[str]],
    due: timedelta | float | None = None,
    initial: bool = False,
    final: bool = False,
    retry: Retry | None = None,
) -> Callable[[Callable[[W, Ctx], R2]], Step[W, [Ctx], R2]]: ...
@overload
def human_task(
    *,
    form: None = None,
    assignee: str | None = None,
    candidate_groups: Iterable[str] = (),
    due: timedelta | float | None = None,
    initial: bool = False,
    final: bool = False,
    retry: Retry | None = None,
) -> Callable[[Callable[[W, Ctx], R2]], Step[W, [Ctx], R2]]: ...
def human_task(
    *,
    form: type[Any] | None = None,
    assignee: str | Callable[[Any], str | None] | None = None,
    candidate_groups: Iterable[str] | Callable[[Any], Iterable[str]] = (),
    due: timedelta | float | None = None,
    initial: bool = False,
    final: bool = False,
    retry: Retry | None = None,
) -> Callable[[Callable[..., Any]], Step[Any, Any, Any]]:
    """
    Declare a step that waits for a person to complete a task.

    Entering the step opens a task; the instance waits (status ``waiting``) until
    ``Engine.complete_task`` is called by the assignee or by a member of one of the
    candidate groups, with a form of the declared type. Then the method runs with
    that form: ``(self, ctx, form: FormType) -> None`` (``(self, ctx)`` without a form).

    Both who may complete it can be computed from the variables when the task
    opens: give a method (or lambda) ``(workflow) -> str | None`` as *assignee*,
    ``(workflow) -> Iterable[str]`` as *candidate_groups*, like a guard. A
    computation that raises, returns the wrong type or leaves nobody fails the
    instance (its compensations run). ``Engine.reassign_task`` and
    ``Engine.delegate_task`` change them while the task is open.

    Args:
        form: The type of the form the person fills in (an attrs class or dataclass).
        assignee: The user who may complete the task, or a callable computing it.
        candidate_groups: Groups whose members may complete the task, or a callable computing them.
        due: When the task is due, relative to its creation (shown on the task).
        initial: The instance starts here.
        final: Completing this step completes the instance.
        retry: Retry policy of the method that processes the form.

    Returns:
        A decorator making a :class:`Step`.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.1.0 *assignee* and *candidate_groups* may be callables.
    """
    groups: object = candidate_groups
    if isinstance(candidate_groups, str):
        groups = (candidate_groups,)
    elif not callable(candidate_groups):
        groups = tuple(candidate_groups)
    options = StepOptions(
        StepKind.HUMAN_TASK,
        initial=initial,
        final=final,
        retry=retry,
        assignee=assignee,
        candidate_groups=groups,
        form=form,
        due=_seconds(due),
    )

    def mark(f: Callable[..., Any]) -> Step[Any, Any, Any]:
        return _make_step(f, options)

    return mark


class FailureEndMaker(Protocol):
    """
    What ``@failure_end(...)`` with options returns: it makes a failure end of a method, with or without an error.

    .. versionadded:: 0.1.0
    """

    @overload
    def __call__(self, fn: Callable[[W, Ctx, E], RR], /) -> Step[W, [Ctx, E], RR]: ...
    @overload
    def __call__(self, fn: Callable[[W, Ctx], RR], /) -> Step[W, [Ctx], RR]: ...
    def __call__(self, fn: Callable[..., Any], /) -> Step[Any, Any, Any]:
        """Make *fn* a failure end: ``(self, ctx) -> str``, or ``(self, ctx, error) -> str`` after an error route."""
        ...


@overload
def failure_end(fn: Callable[[W, Ctx, E], RR], /) -> Step[W, [Ctx, E], RR]: ...
@overload
def failure_end(fn: Callable[[W, Ctx], RR], /) -> Step[W, [Ctx], RR]: ...
@overload
def failure_end(*, outcome: str = "failed", retry: Retry | None = None) -> FailureEndMaker: ...
def failure_end(
    fn: Callable[..., Any] | None = None, /, *, outcome: str = "failed", retry: Retry | None = None
) -> Step[Any, Any, Any] | FailureEndMaker:
    """
    Declare a final step that ends the instance ``failed``: a declared failure end.

    Its method ``(self, ctx) -> str`` (sync or ``async``) runs like a step's and
    returns the reason. Then the instance fails: the compensations of its completed
    steps run, newest first, and it ends ``failed`` with that reason, its
    ``outcome`` (``InstanceInfo.outcome``, ``WorkflowFailed.outcome``) being the one
    declared here. Use it where a process ends unsuccessfully by design (an order
    rejected by its approver), instead of a step that raises to get there or a
    guard gap that fails with ``NoEdgeEnabled``.

    Usable bare (``@failure_end``: the outcome is ``"failed"``) or with options.
    Reached by an ``on_error`` edge, it may take the error as a third parameter,
    like a step (:func:`step`); the instance's failure then keeps that error
    (``WorkflowFailed.error``).

    Args:
        fn: The method, when used bare.
        outcome: The name of this ending (``"rejected"``, ``"expired"``...): letters,
            digits, ``_`` and ``-``, not the name of another status.
        retry: Retry policy of the method (if it fails for good, the instance fails
            with that error instead).

    Returns:
        A :class:`Step` (or a decorator making one).

    .. versionadded:: 0.1.0
    """
    options = StepOptions(StepKind.STEP, final=True, retry=retry, outcome=outcome)

    def mark(f: Callable[..., Any]) -> Step[Any, Any, Any]:
        return _make_step(f, options)

    if fn is None:
        maker: FailureEndMaker = cast("FailureEndMaker", mark)
        return maker
    return mark(fn)


def _edge_decorator(target: object, where: str) -> None:
    if not isinstance(target, Step):
        fn: Any = target
        owner, name = _split_qualname(fn) if callable(fn) and hasattr(fn, "__qualname__") else ("<unknown>", repr(fn))
        msg = f"{where} must be placed above @step or @human_task (it decorates a step, not a plain function)"
        raise WorkflowDefinitionError(owner, [DefinitionProblem(owner, name, "edge-on-non-step", msg)])


class StepOf(Protocol[W_contra]):
    """
    **Protocol:** a step that runs on instances of ``W_contra``: a step of that class, or of a base class of it.

    What ``@after`` and ``@goto`` take as the edge's other end, so that a subclass
    connects the steps of an ``abstract=True`` base to its own.

    .. versionadded:: 0.1.0
    """

    def is_step_of(self, workflow: W_contra, /) -> bool:
        """Whether this is a step of *workflow*'s class (declared there or inherited)."""
        ...


class EdgeDecorator(Protocol):
    """
    **Protocol:** what ``@after(...)`` and ``@goto(...)`` return: it records an edge on a step and returns the step.

    The step keeps its type, whichever class declared the edge's other end: an
    edge from a step of an ``abstract=True`` base into a step of the subclass
    leaves the latter a step of the subclass, so later guards on edges out of it
    read the subclass's variables.

    .. versionadded:: 0.1.0
    """

    def __call__(self, step: Step[WD, P, RS], /) -> Step[WD, P, RS]:
        """Record the edge on *step*."""
        ...


def after(
    source: StepOf[W],
    /,
    *more_sources: StepOf[Any],
    when: Callable[[W], bool] | None = None,
    on_error: ExcTypes | None = None,
    timeout: timedelta | float | None = None,
    reminder: timedelta | float | None = None,
    repeat: bool = False,
) -> EdgeDecorator:
    """
    Declare an edge into the decorated step from an earlier step.

    The guarded edges leaving a step are tried in declaration order and the first
    whose guard holds is taken; the one unguarded edge is the default, taken when
    no guard holds. With ``on_error``, the edge is taken instead when *source*
    fails (after its retries) with an exception of that type, like ``except``.
    Several sources make a join (it needs a fork). With ``timeout``, *source* must
    be a waiting step (``@human_task`` or ``@wait_for``): when the wait lasts longer,
    its task is cancelled and the instance escalates to the decorated step.

    With ``reminder``, *source* must be a waiting step too, and the decorated step
    is a *side step* (a plain ``@step`` with no other edge): once the wait has
    lasted *reminder*, the side step runs while the task stays open (or the
    message is still awaited), and the instance goes on waiting; with
    ``repeat=True`` it runs again every *reminder* until the wait ends. A side
    step is not retried; its failure is in the history and the wait goes on.

    *source* may be a step inherited from an ``abstract=True`` base class: the
    decorated step keeps the subclass's type. The guard is then typed with the
    class that declared *source* (type checkers type a lambda before they see the
    decorated step), so it reads the base's variables; a guard on an edge out of
    one of the subclass's own steps reads the subclass's.

    Args:
        source: The step the edge leaves.
        more_sources: Further sources (a join).
        when: A guard ``(workflow) -> bool``: reads variables, no side effects.
        on_error: Exception type(s) routed to the decorated step.
        timeout: How long *source* may wait before escalating here.
        reminder: How long *source* may wait before the decorated side step runs.
        repeat: Run the side step again every *reminder* while the wait lasts.

    Returns:
        A decorator that records the edge on the step.

    .. versionadded:: 0.1.0
    """

    def mark(dest: Step[Any, Any, Any]) -> Step[Any, Any, Any]:
        _edge_decorator(dest, "@after")
        # Decorators apply bottom-up; inserting at the front keeps `edges` in the
        # top-down order the user reads, which is the order guards are tried in.
        mark_ = EdgeMark(
            (source, *more_sources),
            dest,
            when,
            on_error,
            back=False,
            timeout=_seconds(timeout),
            reminder=_seconds(reminder),
            repeat=repeat,
        )
        dest.edges.insert(0, mark_)
        return dest

    return mark


def goto(
    target: StepOf[W],
    /,
    *,
    when: Callable[[W], bool] | None = None,
) -> EdgeDecorator:
    """
    Declare a back edge (a loop) from the decorated step to an earlier *target*.

    Guards and defaults work exactly as for :func:`after`; *target* may be a
    step inherited from an ``abstract=True`` base class.

    Args:
        target: The earlier step to go back to.
        when: A guard ``(workflow) -> bool``.

    Returns:
        A decorator that records the edge on the step.

    .. versionadded:: 0.1.0
    """

    def mark(src: Step[Any, Any, Any]) -> Step[Any, Any, Any]:
        _edge_decorator(src, "@goto")
        src.edges.insert(0, EdgeMark((src,), target, when, None, back=True))
        return src

    return mark


def timer(
    delay: timedelta | float,
    *,
    initial: bool = False,
    final: bool = False,
    retry: Retry | None = None,
) -> Callable[[Callable[[W, Ctx], R2]], Step[W, [Ctx], R2]]:
    """
    Declare a step that waits *delay*, then runs its method ``(self, ctx) -> None``.

    The timer is durable: its due time is stored with the instance, it survives a
    restart, and a timer that fell due while no engine ran fires at once.

    Args:
        delay: How long to wait after entering the step (``timedelta`` or seconds).
        initial: The instance starts here.
        final: Completing this step completes the instance.
        retry: Retry policy of the method run when the timer fires.

    Returns:
        A decorator making a :class:`Step`.

    .. versionadded:: 0.1.0
    """
    options = StepOptions(StepKind.TIMER, initial=initial, final=final, retry=retry, delay=_seconds(delay))

    def mark(f: Callable[[W, Ctx], R2]) -> Step[W, [Ctx], R2]:
        return _make_step(f, options)

    return mark


def subflow(
    child: type[C],
    *,
    initial: bool = False,
    final: bool = False,
    retry: Retry | None = None,
) -> Callable[[Callable[[W, Ctx], C]], Step[W, [Ctx], C]]:
    """
    Declare a step that runs a child workflow and waits for it to end.

    The method ``(self, ctx) -> ChildWorkflow`` builds the child from the parent's
    variables; the engine starts it as an instance of its own (id
    ``<parent id>/<visit>``, started in the same commit that parks the parent)
    and the parent waits, durably, without holding a worker. When the child
    completes, the step's ``@x.on_result`` handler (if any) receives it and the
    parent moves on; when the child fails, the step fails with
    :class:`ChildWorkflowFailed` (routable with ``on_error``; a retry starts a new
    child). Compensating the step compensates the child through the child's own
    compensations; cancelling the parent cancels the child.

    Args:
        child: The child workflow class.
        initial: The instance starts here.
        final: Completing this step completes the instance.
        retry: Retry policy: each attempt starts a new child.

    Returns:
        A decorator making a :class:`Step`.

    .. versionadded:: 0.1.0
    """
    options = StepOptions(StepKind.SUBFLOW, initial=initial, final=final, retry=retry, child=child)

    def mark(f: Callable[[W, Ctx], C]) -> Step[W, [Ctx], C]:
        return _make_step(f, options)

    return mark


@overload
def fan_out(
    child: type[C],
    *,
    limit: int | None = None,
    tolerate: Literal[0] = 0,
    initial: bool = False,
    final: bool = False,
    retry: Retry | None = None,
) -> Callable[[Callable[[W, Ctx], Sequence[C]]], Step[W, [Ctx], Sequence[C]]]: ...
@overload
def fan_out(
    child: type[C],
    *,
    limit: int | None = None,
    tolerate: int,
    initial: bool = False,
    final: bool = False,
    retry: Retry | None = None,
) -> Callable[[Callable[[W, Ctx], Sequence[C]]], Step[W, [Ctx], Sequence[C | ChildWorkflowFailed]]]: ...
def fan_out(
    child: type[Any],
    *,
    limit: int | None = None,
    tolerate: int = 0,
    initial: bool = False,
    final: bool = False,
    retry: Retry | None = None,
) -> Callable[[Callable[..., Any]], Step[Any, Any, Any]]:
    """
    Declare a step that runs a child workflow per item, side by side, and waits for them all.

    The method ``(self, ctx) -> list[ChildWorkflow]`` builds the children, one per
    item of a list variable, in item order. The engine starts them as instances of
    their own, ids ``<parent id>/<visit>/<index>`` (``<visit>.<attempt>`` after a
    retry), at most *limit* at a time: each start happens once, in the commit that
    records it, and the children not started yet are kept with the parent. When
    every child has ended, the step's ``@x.on_result`` handler (if any) receives
    their results in item order, ``(self, ctx, results: Sequence[ChildWorkflow])``.

    Failures: by default the first child that does not complete fails the step:
    the children still running are cancelled (each compensates its own steps),
    those not started never start, and the completed ones are undone through their
    compensations, newest first; then the step fails with
    :class:`ChildWorkflowFailed` (routable with ``on_error``, or retried with
    *retry*: a new set of children). With ``tolerate=k``, up to *k* children may fail
    and the step still completes; the results then hold a
    :class:`ChildWorkflowFailed` in the place of each failed child. Compensating
    the step undoes its completed children, newest first.

    Args:
        child: The child workflow class.
        limit: How many children may run at once (``None``: all of them).
        tolerate: How many children may fail without failing the step.
        initial: The instance starts here.
        final: Completing this step completes the instance.
        retry: Retry policy: each attempt builds and starts a new set of children.

    Returns:
        A decorator making a :class:`Step`.

    .. versionadded:: 0.1.0
    """
    options = StepOptions(
        StepKind.FAN_OUT, initial=initial, final=final, retry=retry, child=child, limit=limit, tolerate=tolerate
    )

    def mark(f: Callable[..., Any]) -> Step[Any, Any, Any]:
        return _make_step(f, options)

    return mark


def wait_for(
    message: type[F],
    *,
    initial: bool = False,
    final: bool = False,
    retry: Retry | None = None,
) -> Callable[[Callable[[W, Ctx, F], R2]], Step[W, [Ctx, F], R2]]:
    """
    Declare a step that waits for an external message of type *message*.

    ``Engine.signal(instance_id, message)`` delivers it; the method then runs with
    it: ``(self, ctx, msg: MessageType) -> None``. A message that arrives before the
    instance reaches the step is kept and consumed when it gets there (oldest first).

    Args:
        message: The message type (an attrs class or dataclass).
        initial: The instance starts here.
        final: Completing this step completes the instance.
        retry: Retry policy of the method that processes the message.

    Returns:
        A decorator making a :class:`Step`.

    .. versionadded:: 0.1.0
    """
    options = StepOptions(StepKind.WAIT_FOR, initial=initial, final=final, retry=retry, message=message)

    def mark(f: Callable[[W, Ctx, F], R2]) -> Step[W, [Ctx, F], R2]:
        return _make_step(f, options)

    return mark


S_old = TypeVar("S_old")
S_new = TypeVar("S_new")


class Migration(Generic[S_old, S_new]):
    """
    A declared way to move instances of an older workflow version to this class.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("fn", "name", "source")

    source: type[S_old]
    """The older workflow class it migrates from."""
    fn: Callable[[S_old, str], tuple[S_new, str]]
    """``(old, step) -> (new, step)``."""
    name: str
    """Its name in the class."""

    def __init__(self, source: type[S_old], fn: Callable[[S_old, str], tuple[S_new, str]]) -> None:
        self.source = source
        self.fn = fn
        self.name = fn.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<Migration {self.name} from {self.source.__qualname__}>"


def migration(
    source: type[S_old],
) -> Callable[[Callable[[S_old, str], tuple[S_new, str]]], Migration[S_old, S_new]]:
    """
    Declare, in a new workflow version, how to move an instance of *source* to it.

    The decorated function ``(old, step) -> (new, step)`` receives the old
    instance's workflow object and the step it is at, and returns the new
    workflow object and the step of the new class to continue at.
    ``Engine.migrate(instance_id, to=NewClass)`` applies it, deliberately, to one
    instance that is not in the middle of running a step.

    Args:
        source: The older workflow class (same workflow name, another version).

    Returns:
        A decorator making a :class:`Migration`.

    .. versionadded:: 0.1.0
    """

    def mark(fn: Callable[[S_old, str], tuple[S_new, str]]) -> Migration[S_old, S_new]:
        return Migration(source, fn)

    return mark
