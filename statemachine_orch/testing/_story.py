"""
Retelling a failing story: only the actions that touched the failing instance, checked by replaying, as a test.

Hypothesis shrinks a story by what it can delete while the test still fails;
actions on other instances often survive, because removing them shifts the
positions the later actions count by ("the newest open task"...). The failing
instance is known, and so is what each action touched: the actions that never
touched its family (it, its parent, its children) are dropped, the others are
aimed at the same instances again, and the shorter story is replayed on a fresh
engine. If it breaks the same check on the same step, it replaces the story in
the notes; either way the notes end with a test that replays it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis.vendor.pretty import pretty

from ._actions import Action, Complete, InvariantViolation, Start
from ._strategies import Actor

Replay = Callable[[list[tuple[Action, str | None]]], tuple[InvariantViolation | None, list[Action], list[str]]]
"""Plays a story whose actions may name the instance they aim at: what broke, the actions played, the notes."""


def _root(name: str) -> str:
    return name.split("/", 1)[0]


def retell(replay: Replay, workflow: type[Any], err: InvariantViolation) -> None:
    """Replace *err*'s story by the actions that touched the failing instance, replayed; end with a test."""
    story = err.story
    if not story:
        return
    root = _root(err.instance)
    kept = [entry for entry in story if any(_root(n) == root for n in entry.touched)] or list(story)
    # The instances the story starts are numbered again, in the order it starts them.
    renamed: dict[str, str] = {}
    for entry in kept:
        if isinstance(entry.action, Start):
            started = next((n for n in entry.touched if "/" not in n and n not in renamed), None)
            if started is not None:
                renamed[started] = f"i{len(renamed) + 1}"

    def aim(name: str | None) -> str | None:
        if name is None:
            return None
        head, sep, rest = name.partition("/")
        return renamed.get(head, head) + sep + rest

    actions: list[Action] = [entry.action for entry in story]
    instance = err.instance
    found, played, replayed = replay([(e.action, aim(e.target)) for e in kept])
    now = aim(err.instance) or err.instance
    if found is not None and (found.rule, found.workflow, found.step, found.instance) == (
        err.rule,
        err.workflow,
        err.step,
        now,
    ):
        dropped = len(story) - len(played)
        if dropped:
            named = f", {err.instance} now named {now}" if now != err.instance else ""
            head = (
                f"The story, shortened to the {_count(len(played), 'action')} that touched {err.instance} "
                f"({_count(dropped, 'other')} dropped; replayed, it fails the same way{named}):"
            )
        else:
            head = "The story (replayed, it fails the same way):"
        # Hypothesis' own account gives way; a line to reproduce its run stays.
        kept_notes = [n for n in getattr(err, "__notes__", []) if "@reproduce_failure" in n]
        err.__notes__ = [head, *replayed, *kept_notes]
        actions = played
        instance = now
    err.replay = tuple(actions)
    err.add_note(as_test(workflow, actions, err, instance))


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _code(value: Any) -> str:
    return pretty(value)


def action_code(action: Action) -> str:
    """*action* as Python source that builds it."""
    if isinstance(action, Start):
        messages = f", messages={_code(action.messages)}" if action.messages else ""
        return f"Start(workflow={_code(action.workflow)}, faults={_code(action.faults)}{messages})"
    if isinstance(action, Complete):
        by: Actor = action.by
        actor = f"Actor({by.user!r}" + (f", {by.groups!r}" if by.groups else "")
        actor += ", authorised=False)" if not by.authorised else ")"
        echo = f", echo={action.echo!r}" if action.echo else ""
        return f"Complete(step={action.step!r}, task={action.task}, form={_code(action.form)}, by={actor}{echo})"
    return _code(action)


def as_test(workflow: type[Any], actions: list[Action], err: InvariantViolation, instance: str) -> str:
    """A test that replays *actions*: paste it into the workflow's tests (it fails until the bug is fixed)."""
    kinds = sorted({type(a).__name__ for a in actions} | {"WorkflowMachine"})
    if any(isinstance(a, Complete) for a in actions):
        kinds = sorted({*kinds, "Actor"})
    # The workflow, and the forms and messages the actions carry, from where they are defined.
    used: dict[str, set[str]] = {workflow.__module__: {workflow.__name__}}
    for a in actions:
        for value in (
            getattr(a, "workflow", None),
            getattr(a, "form", None),
            getattr(a, "message", None),
            *getattr(a, "messages", ()),
        ):
            if value is not None and type(value).__module__ != "builtins":
                used.setdefault(type(value).__module__, set()).add(type(value).__qualname__.split(".")[0])
    name = f"test_{workflow.__name__.lower()}_{err.rule.replace('-', '_')}"
    lines = [
        "As a test (build the machine as your test does: services=, inputs=...):",
        *(f"from {module} import {', '.join(sorted(names))}" for module, names in sorted(used.items())),
        f"from statemachine_orch.testing import {', '.join(kinds)}",
        "",
        f"def {name}() -> None:",
        f'    """{err.workflow}: {err.rule} at {err.step} of {instance}."""',
        f"    WorkflowMachine({workflow.__name__}).replay(",
        *(f"        {action_code(a)}," for a in actions),
        "    )",
    ]
    return "\n".join(lines)
