"""
Messages between instances: what a step sends, and starting an instance with its first message.

``ctx.signal``, ``ctx.start`` and ``ctx.signal_with_start`` make *effects*: each
is checked when the step asks for it (the target exists, waits for that type;
the new workflow's variables hold their types) by :class:`EngineOutbox`, kept in
the step's ``Ctx``, and written by the commit that records the step's completion
(``_stage_effects``): the messages as the record's ``signals_out`` (signal rows,
and with leases a ``wake`` command for each target), the new instances as its
``spawned`` records, inserted by the same transaction (``_save_sending``). A
failed attempt's effects are dropped with it, so each happens once, however
often the step body runs. ``Engine.signal_with_start`` does the same for a caller.

Without leases (the MemoryStore) nothing reads commands: after the commit the
engine wakes the targets itself (``_wake_for``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

import attrs

from ._client_api import ClientApi
from ._ctx import NO_MESSAGE
from ._engine_core import K, logger
from ._errors import (
    InstanceExists,
    InstanceFinished,
    StoreError,
    WorkflowInputError,
)
from ._handle import Handle
from ._instance import EMPTY, InstanceInfo, InstanceRecord
from ._machine import STATE_ATTRIBUTE
from ._message_types import accepted_type, type_name
from ._workflow import Workflow, spec_of

if TYPE_CHECKING:
    from collections.abc import Callable

W = TypeVar("W", bound=Workflow)

_ID_MAX = 200


def check_instance_id(workflow: object, instance_id: object) -> None:
    """A caller-given instance id: a printable text without "/" (child ids use it), at most 200 characters."""
    spec = getattr(type(workflow), "__orch_spec__", None) if isinstance(workflow, Workflow) else None
    name = spec.name if spec is not None else type(workflow).__name__
    if not isinstance(instance_id, str):
        msg = f"instance_id must be a str, got {instance_id!r} ({type(instance_id).__name__})"
        raise WorkflowInputError(name, "instance_id", msg)
    if not instance_id or len(instance_id) > _ID_MAX or not instance_id.isprintable() or "/" in instance_id:
        msg = (
            f"instance_id must be 1 to {_ID_MAX} printable characters without '/' "
            f"(reserved for child instances); got {instance_id!r}"
        )
        raise WorkflowInputError(name, "instance_id", msg)


@attrs.frozen
class SignalEffect:
    """``ctx.signal``: a message for *target*, filed under its declared type's name."""

    target: str
    type_name: str
    message: object


@attrs.frozen(eq=False)
class StartEffect:
    """``ctx.start`` / ``ctx.signal_with_start``: a new instance, with its first message if any."""

    workflow: Workflow
    instance_id: str
    message: tuple[str, object] | None


def _pending_start(pending: Sequence[object], instance_id: str) -> StartEffect | None:
    return next((e for e in pending if isinstance(e, StartEffect) and e.instance_id == instance_id), None)


class EngineOutbox:
    """The engine's side of ``ctx.signal`` and ``ctx.start``: the checks, made when the step asks."""

    __slots__ = ("_find", "_peek")

    def __init__(self, peek: Callable[[str], InstanceRecord], find: Callable[[str], InstanceInfo | None]) -> None:
        self._peek = peek
        self._find = find

    def signal(self, target: object, message: object, pending: Sequence[object]) -> object:
        """The effect of sending *message* to *target*: a :class:`SignalEffect`, or the caller's typed error."""
        if not isinstance(target, str):
            msg = f"ctx.signal() needs an instance id (a str), got {target!r} ({type(target).__name__})"
            raise TypeError(msg)
        starting = _pending_start(pending, target)
        if starting is not None:
            declared = accepted_type(spec_of(starting.workflow), message, target)
            return SignalEffect(target, type_name(declared), message)
        rec = self._peek(target)
        if rec.status.is_terminal:
            raise InstanceFinished(target, rec.status, f"deliver {type(message).__name__}")
        return SignalEffect(target, type_name(accepted_type(rec.spec, message, target)), message)

    def start(
        self, workflow: object, instance_id: str | None, default_id: str, message: object, pending: Sequence[object]
    ) -> tuple[object | None, str]:
        """The effect of starting *workflow* (with a first *message*): a :class:`StartEffect`, a signal, or none."""
        if not isinstance(workflow, Workflow) or type(workflow).__orch_abstract__:
            msg = f"ctx.start() needs an instance of a concrete Workflow subclass, got {workflow!r}"
            raise TypeError(msg)
        cls = type(workflow)
        name = cls.__orch_spec__.name
        if getattr(workflow, STATE_ATTRIBUTE, None) is not None or any(
            isinstance(e, StartEffect) and e.workflow is workflow for e in pending
        ):
            msg = "this object was started already; construct a new one for a new instance"
            raise WorkflowInputError(name, "<instance>", msg)
        cls.__orch_validate__.start(workflow)
        if instance_id is not None:
            check_instance_id(workflow, instance_id)
        new_id = default_id if instance_id is None else instance_id
        first = None
        if message is not NO_MESSAGE:
            first = (type_name(accepted_type(cls.__orch_spec__, message, new_id)), message)
        starting = _pending_start(pending, new_id)
        info = self._find(new_id)
        if info is None and starting is None:
            return StartEffect(workflow, new_id, first), new_id
        owner = info.workflow if info is not None else spec_of(starting.workflow if starting else workflow).name
        if owner != name:
            raise InstanceExists(new_id, f"it is an instance of {owner}, not of {name}")
        if first is None:
            return None, new_id  # started already: a re-run, or a start that raced this one
        if info is not None and info.status.is_terminal:
            raise InstanceFinished(new_id, info.status, f"deliver {type(message).__name__}")
        return SignalEffect(new_id, first[0], message), new_id


class Messages(ClientApi):
    """What steps send to other instances, and starts with a first message (see the module's docstring)."""

    def _stage_effects(self, rec: InstanceRecord, step: str, effects: Sequence[object]) -> None:
        """*step*'s attempt succeeded: its effects go with the record's next commit, noted in its history."""
        for effect in effects:
            if isinstance(effect, SignalEffect):
                self._send(rec, effect.target, effect.type_name, effect.message)
                self._note(rec, K.SIGNAL_SENT, step, 0, f"{effect.target} {type(effect.message).__name__}")
                continue
            assert isinstance(effect, StartEffect)  # noqa: S101 - the only other kind
            self._note(rec, K.STARTED_INSTANCE, step, 0, f"{effect.instance_id} {spec_of(effect.workflow).name}")
            new = self._create(effect.workflow, effect.instance_id)
            if effect.message is not None:
                new.send_signal(new.id, *effect.message)
            if rec.spawned is EMPTY:
                rec.spawned = [new]
            else:
                rec.spawned.append(new)

    def _send(self, rec: InstanceRecord, target: str, kind: str, message: object) -> None:
        rec.send_signal(target, kind, message)
        if self._leasing and target != rec.id:
            rec.send(target, "wake", {})  # whichever worker holds (or next claims) it looks

    async def _save_sending(self, rec: InstanceRecord, more: tuple[InstanceRecord, ...]) -> None:
        """Commit *rec* with the instances its step started and the messages it sent; then run and wake them."""
        new: list[InstanceRecord] = list(rec.spawned)
        rec.spawned = EMPTY
        try:
            while True:
                sent = [(target, message) for target, _, message in rec.signals_out if target != rec.id]
                try:
                    await self._save(rec, *more, *new, effects=False)
                    break
                except InstanceExists as exc:
                    taken = next((n for n in new if n.id == exc.instance_id), None)
                    if taken is None:
                        raise
                    # Started meanwhile by another caller: this start is done; its first message goes to it.
                    new.remove(taken)
                    self._drop_new(taken)
                    setattr(taken.wf, STATE_ATTRIBUTE, None)
                    for _, kind, message in taken.signals_out:
                        self._send(rec, taken.id, kind, message)
                    logger.info("start_found_started", instance_id=taken.id, by=rec.id)
        except BaseException:
            for n in new:
                self._drop_new(n)
            raise
        for n in new:
            self._live[n.id] = n
            self._enqueue(n)
        for target, message in sent:
            self._wake_sent(target, message)

    def _wake_sent(self, target: str, message: object) -> None:
        """A committed message for *target*: make its driver look, in this process if it may."""
        if self._leasing:
            self._kick(target)
            return
        try:
            found = self._peek(target)
        except (LookupError, StoreError):
            return  # gone or quarantined since: the message stays kept for it
        self._wake_for(found, message)

    async def _start(
        self, workflow: Workflow, instance_id: str | None, message: object = NO_MESSAGE
    ) -> tuple[str, bool]:
        """
        Start a new instance (with a first *message*): its id, and False when it existed already (nothing started).

        See :meth:`Engine.start` for the checks and errors.
        """
        if instance_id is not None:
            check_instance_id(workflow, instance_id)
        first = None
        if message is not NO_MESSAGE:
            spec = spec_of(workflow)
            first = (type_name(accepted_type(spec, message, instance_id or spec.name)), message)
        if instance_id is not None and self._existing(workflow, instance_id):
            return instance_id, False
        rec = self._create(workflow, instance_id)
        if first is not None:
            rec.send_signal(rec.id, *first)
        self._live[rec.id] = rec
        try:
            await self._save(rec)
        except InstanceExists:
            self._drop_new(rec)
            setattr(workflow, STATE_ATTRIBUTE, None)  # nothing of it was started
            self._existing(workflow, rec.id)
            return rec.id, False
        except StoreError:
            if self.store.info(rec.id) is None:
                self._drop_new(rec)
                raise
            # The commit landed and only its acknowledgement was lost: it started.
            rec.committed()
        if self._drives:
            self._enqueue(rec)
        else:
            self._live.pop(rec.id, None)  # a client: a worker of the fleet claims it
        return rec.id, True

    async def signal_with_start(self, workflow: W, message: object, *, instance_id: str) -> Handle[W]:
        """
        Deliver *message* to the instance *instance_id*, starting it from *workflow* first if it does not exist.

        A new instance is inserted with the message already kept for it, in one
        transaction, so its ``@wait_for`` step consumes it; an existing one gets
        it as from :meth:`signal`. However many callers (in however many
        processes) do this at once, there is one instance and every message is
        kept once.

        Args:
            workflow: The new instance's workflow object, used only if it is started.
            message: The message (an instance of a ``@wait_for`` type of *workflow*).
            instance_id: The instance's id (as for :meth:`start`).

        Returns:
            A :class:`Handle` to the instance.

        Raises:
            SignalTypeError: No ``@wait_for`` step of the workflow takes this type, or
                a field of the message does not hold its declared type (nothing done).
            InstanceFinished: The instance exists and is terminal.
            InstanceExists: *instance_id* belongs to an instance of another workflow.
            WorkflowInputError: A variable does not match its declared type, the object
                was started before, or *instance_id* is not a usable id.
            TypeError: *workflow* is not an instance of a concrete Workflow class.
            StoreError: The store could not record it.

        .. versionadded:: 0.1.0
        """
        _, started = await self._start(workflow, instance_id, message)
        if not started:
            await self.signal(instance_id, message)
        return Handle(self, instance_id)
