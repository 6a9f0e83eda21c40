"""
The actions of a generated story, and the violation a story reports.

A story is a list of actions (:data:`Action`): start an instance, complete a
task, deliver a message, fire the timers due, cancel. They are plain frozen
records, so that a failing story prints as code; a replay aims them again at
the same instances (:class:`AppliedAction` keeps what each touched).
"""

from __future__ import annotations

from typing import Any

import attrs

from ._strategies import Actor, FaultPlan


class InvariantViolation(AssertionError):
    """
    A generated story broke an invariant or revealed a modelling bug.

    The message tells the story's end: the broken rule, the instance, its inputs,
    the state it reached and its history. Hypothesis adds the whole shrunk story
    (each rule and what it did) as ``__notes__``.

    Attributes:
        rule: Which check failed: ``"invariant"``, ``"no-edge-enabled"``, ``"join-never-fires"``,
            ``"guard-error"``, ``"impure-guard"``, ``"runaway-loop"``,
            ``"compensation-failed"``, ``"assertion-failed"``, ``"saga"``,
            ``"stuck"``, ``"history"``, ``"unauthorised-completion"``, ``"hand-over"``, ``"missing-service"``,
            ``"child-saga"``, ``"orphan-child"``, ``"hung"``.
        workflow: The name of the failing instance's workflow (a child's, when it is a child).
        instance: The instance's name in the story (``i1``, ``i2``...; a child of ``i1``: ``i1/1``).
        step: The step the failure is about.

    .. versionadded:: 0.1.0
    """

    story: tuple[AppliedAction, ...]
    """The story's actions up to this failure, each with the instances it touched (empty when unknown)."""
    replay: tuple[Action, ...]
    """The actions of the test the notes end with (``Machine.replay(*err.replay)`` fails the same way)."""

    def __init__(self, message: str, *, rule: str, workflow: str, instance: str, step: str | None) -> None:
        self.rule = rule
        self.workflow = workflow
        self.instance = instance
        self.step = step
        self.story = ()
        self.replay = ()
        super().__init__(message)


@attrs.frozen
class AppliedAction:
    """
    One action of a story as it was applied: the instances it touched (by name) and the one it aimed at.

    .. versionadded:: 0.1.0
    """

    action: Action
    touched: frozenset[str]
    target: str | None


@attrs.frozen
class Start:
    """
    Start an instance from *workflow* (new, never started) with the fault plan *faults*.

    *messages* are delivered right after the start, before its first step runs:
    they arrive before the instance waits for them, and the engine keeps them.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.1.0 *messages*.
    """

    workflow: Any
    faults: FaultPlan
    messages: tuple[Any, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen
class Complete:
    """
    *by* completes, with *form*, one of the open tasks at *step*: 0 the newest, 1 the one before...

    Nothing happens when there are not that many. Counting only the tasks at this
    step, newest first, keeps the reference when the shrinker deletes other
    instances from the story.

    *echo* names fields of the form set, before it is sent, to the instance's
    variables of the same name (a form that answers about a quote carries its number).

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.1.0 *echo*.
    """

    step: str
    task: int
    form: Any
    by: Actor
    echo: tuple[str, ...] = ()


@attrs.frozen
class Cancel:
    """
    Cancel one of the waiting instances the story started: 0 the newest, 1 the one before... (if there are that many).

    .. versionadded:: 0.1.0
    """

    instance: int
    compensate: bool


@attrs.frozen
class Send:
    """
    Deliver *message* to one of the waiting instances that take it: 0 the newest... (if there are that many).

    *echo* names fields of the message set, before it is sent, to the instance's
    variables of the same name (an acceptance carries the number of the quote
    the instance sent, now and then).

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.1.0 *echo*.
    """

    instance: int
    message: Any
    echo: tuple[str, ...] = ()


@attrs.frozen
class FireTimers:
    """
    Move the clock to the earliest timer of a waiting instance; what is due then fires.

    .. versionadded:: 0.1.0
    """


@attrs.frozen
class CancelChild:
    """
    Cancel one of the waiting children (of ``@subflow`` steps), as an operator would: 0 the newest...

    Its parent's subflow step then fails with ``ChildWorkflowFailed``.

    .. versionadded:: 0.1.0
    """

    instance: int
    compensate: bool


@attrs.frozen
class HandOver:
    """
    Give an open task at ``step`` (0: the newest) to the user ``to``: reassign it, or delegate it.

    A reassignment is an operator's change (``Engine.reassign_task``: ``to`` becomes
    its only assignee, its groups go); a delegation is made by one it is for
    (``Engine.delegate_task``: ``to`` becomes its assignee, its groups stay). Either
    way the task must then be for ``to``, and the story's completions are made by them.

    .. versionadded:: 0.1.0
    """

    step: str
    task: int
    to: str
    delegate: bool


Action = Start | Complete | HandOver | Cancel | CancelChild | Send | FireTimers
"""What a step of a generated story does."""
