"""
Which step left what behind: the variables each completed step changed, and the step to blame for a leak.

When an invariant fails on an instance that failed or was cancelled, the step
that ran last (an undo, an expiry) is seldom the culprit: the effect nobody
undid is. So the story records, per instance, what each completed step changed
in the variables, and a broken invariant after an undo is blamed on the latest
completed step without a compensation that changed what the invariant reads.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable
from typing import cast

import attrs

from statemachine_orch._history import EventKind, HistoryEvent
from statemachine_orch._paths import fields_read
from statemachine_orch._spec import InvariantSpec, WorkflowSpec
from statemachine_orch._status import InstanceStatus
from statemachine_orch._workflow import spec_of

_K = EventKind
_AFTER_UNDO = (
    InstanceStatus.FAILED,
    InstanceStatus.CANCELLED,
    InstanceStatus.COMPENSATING,
    InstanceStatus.COMPENSATION_FAILED,
)


@attrs.frozen
class Done:
    """A completed step, and the variables it changed."""

    step: str
    changed: tuple[str, ...]


class Changes:
    """
    What each completed step of each instance changed in its variables (for workflows with invariants).

    Args:
        workflow: The live workflow object of an instance, by id.
    """

    def __init__(self, workflow: Callable[[str], object]) -> None:
        self._workflow = workflow
        self._before: dict[tuple[str, str], tuple[object, ...]] = {}
        self._done: dict[str, list[Done]] = {}
        # Per spec (by identity; the spec is kept so its id stays its own): its field names and a reader of them.
        self._readers: dict[int, tuple[WorkflowSpec, tuple[str, ...], Callable[[object], tuple[object, ...]]]] = {}

    def __call__(self, instance_id: str, event: HistoryEvent) -> None:
        """Record *event* of *instance_id*: snapshot before a step, compare after it."""
        kind, step = event.kind, event.step
        if step is None or kind not in (_K.STEP_STARTED, _K.STEP_COMPLETED):
            return
        wf = self._workflow(instance_id)
        spec = spec_of(wf)
        if not spec.invariants:
            return
        names, read = self._reader(spec)
        now = tuple(v if type(v) in _IMMUTABLE else copy.deepcopy(v) for v in read(wf))
        if kind is _K.STEP_STARTED:
            self._before[instance_id, step] = now
            return
        before = self._before.pop((instance_id, step), None)
        changed = tuple(n for n, a, b in zip(names, before or now, now, strict=True) if _differs(a, b))
        self._done.setdefault(instance_id, []).append(Done(step, changed))

    def _reader(self, spec: WorkflowSpec) -> tuple[tuple[str, ...], Callable[[object], tuple[object, ...]]]:
        """The names of *spec*'s fields, and a function reading all of them from a workflow at once."""
        known = self._readers.get(id(spec))
        if known is None:
            names = tuple(f.name for f in spec.fields)
            known = self._readers[id(spec)] = (spec, names, _read_all(names))
        return known[1], known[2]

    def done(self, instance_id: str) -> list[Done]:
        """The completed steps of the instance, in order, with what each changed."""
        return list(self._done.get(instance_id, ()))


_IMMUTABLE = frozenset({int, float, str, bool, bytes, type(None)})
"""Types whose values cannot change: kept as they are, anything else is deep-copied."""


def _read_all(names: tuple[str, ...]) -> Callable[[object], tuple[object, ...]]:
    """A function reading the attributes *names* of an object, as a tuple (one C call for them all)."""
    if not names:
        return lambda _: ()
    if len(names) == 1:
        one = operator.attrgetter(names[0])
        return lambda wf: (one(wf),)
    many = operator.attrgetter(*names)
    return lambda wf: cast("tuple[object, ...]", many(wf))


def _differs(a: object, b: object) -> bool:
    try:
        return bool(a != b)
    except Exception:  # noqa: BLE001 - a value whose == raises: count it as changed
        return True


def leak(
    spec: WorkflowSpec, invariant: InvariantSpec, status: InstanceStatus, done: list[Done]
) -> tuple[str | None, str | None]:
    """
    For an invariant broken after an undo (or an abandon): the step to blame, and what to tell the user.

    Returns:
        ``(step, text)``: the latest completed step without a compensation that changed
        a variable the invariant reads (``None`` when there is none), and a sentence
        listing every completed step without a compensation with what it changed
        (``None`` when the instance did not fail or was not cancelled).
    """
    if status not in _AFTER_UNDO:
        return None, None
    fields = frozenset(f.name for f in spec.fields)
    reads = fields_read(invariant.fn, None, fields)
    kept = [d for d in done if spec.has_step(d.step) and spec.step(d.step).compensation is None]
    if not kept:
        return None, f"every completed step has a compensation (the instance is {status.value})"
    blamed = next((d.step for d in reversed(kept) if d.changed and (reads is None or reads & set(d.changed))), None)
    listed = ", ".join(f"{d.step} ({', '.join(d.changed) or 'nothing'})" for d in kept)
    text = f"the instance is {status.value}; completed steps without a compensation, and what each changed: {listed}"
    if blamed is not None:
        what = next(d.changed for d in reversed(kept) if d.step == blamed)
        text += f"; {blamed} left {', '.join(what)} as it made {'them' if len(what) > 1 else 'it'}: nothing undoes it"
    return blamed, text
