"""The driver's forks: branches run side by side, their gates and joins, and leaving a fork."""

from __future__ import annotations

import asyncio

from ._driver_fanout import DriverFanOut
from ._engine_core import InboxCommand, K, child_id_of, poke_fork, sync_wake, trigger, type_label
from ._errors import (
    NoEdgeEnabled,
)
from ._instance import NO_PAYLOAD, Branch, InstanceRecord, active_steps, leaves
from ._machine import DONE, START, ForkMachine
from ._reminders import escalation_due, next_wake, started
from ._spec import (
    StepKind,
    StepSpec,
)
from ._status import InstanceStatus


def _in_fork(rec: InstanceRecord) -> bool:
    state: object = rec.state
    return isinstance(state, list)


class DriverForks(DriverFanOut):
    """The driver's forks."""

    # ----------------------------------------------------------------- forks

    def _resume(self, rec: InstanceRecord) -> None:
        """Something a branch (or the instance) waited for arrived: run it."""
        if rec.worker is None:
            self._enqueue(rec)
        elif rec.poke is not None and not rec.poke.done():
            poke_fork(rec)  # a fork's driver waiting on its branches looks again
        else:
            # Its driver is between moves (committing, leaving): a note in its inbox
            # makes it look again before it lets go of the instance.
            self._inbox.setdefault(rec.id, []).append(InboxCommand(None, None, interrupt=False))

    def _sync_branches(self, rec: InstanceRecord) -> None:
        """Keep one branch record per current step inside forks; a new visit for each new step."""
        steps = active_steps(rec.state) if _in_fork(rec) else []
        branches = rec.branches
        if not steps:
            if branches:
                rec.branches = {}
                rec.wake_at = None  # the branches' timers went with them
            return
        if not branches:
            branches = rec.branches = {}
        current = set(steps)
        for name in [n for n in branches if n not in current]:
            del branches[name]
        for name in steps:
            if name not in branches:
                rec.visit += 1
                branches[name] = Branch(rec.visit)
        sync_wake(rec)

    def _cancel_branches(self, rec: InstanceRecord, why: str, *, keep: object = None) -> None:
        """Cancel the steps in flight of the fork's branches (but *keep*'s)."""
        runners = rec.runners or {}
        for name, task in runners.items():
            if task is keep or task.done():
                continue
            branch = rec.branches.get(name)
            if branch is not None:
                branch.cancelled = why
            task.cancel()

    def _leave_fork(self, rec: InstanceRecord, why: str, *, compensate: bool = True) -> None:
        """The instance leaves its fork for good: cancel the branches, their tasks and timers."""
        self._cancel_branches(rec, why, keep=asyncio.current_task())
        for name, branch in rec.branches.items():
            if branch.task_id is not None:
                self._close_task(rec, why, branch)
            step = rec.spec.step(name)
            if step.fan is not None:
                self._fan_abandon(rec, step, branch, why, compensate=compensate)
            elif branch.waiting and step.child is not None:
                self._cancel_child(rec, child_id_of(rec, branch), why, compensate=compensate)
        rec.branches = {}
        rec.wake_at = None

    async def _drive_fork(self, rec: InstanceRecord) -> bool:
        """Run the runnable branches of a fork together; True when every branch waits."""
        loop = asyncio.get_running_loop()
        runners: dict[str, asyncio.Task[None]] = {}
        rec.runners = runners
        inbox = self._inbox
        try:
            while True:
                if inbox and rec.id in inbox:
                    await self._apply_inbox(rec)
                if not _in_fork(rec) or rec.cancel is not None:
                    return False
                if self._fork_gates(rec):
                    await self._save(rec)
                    continue
                if not rec.branches:
                    self._sync_branches(rec)
                for name, branch in rec.branches.items():
                    if name not in runners and self._runnable(rec, name, branch):
                        runners[name] = loop.create_task(self._branch_turn(rec, name, branch))
                if not runners:
                    sync_wake(rec)
                    if rec.status is not InstanceStatus.WAITING:
                        self._set_status(rec, InstanceStatus.WAITING)
                        await self._save(rec)
                    return True
                if rec.status is InstanceStatus.WAITING:
                    self._set_status(rec, InstanceStatus.RUNNING)
                poke = rec.poke = loop.create_future()
                await asyncio.wait([*runners.values(), poke], return_when=asyncio.FIRST_COMPLETED)
                rec.poke = None
                for name, task in list(runners.items()):
                    if task.done():
                        del runners[name]
                        if not task.cancelled() and (exc := task.exception()) is not None:
                            raise exc
        finally:
            rec.runners = None
            rec.poke = None
            pending = [t for t in runners.values() if not t.done()]
            for t in pending:
                # A step cancelled already (a sibling failed, the instance was
                # cancelled) may be finishing its cleanup: let it, once.
                if not t.cancelling():
                    t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    def _fork_gates(self, rec: InstanceRecord) -> bool:
        """Start or skip the branches of a fork just entered, or fire a join; True when something fired."""
        machine = rec.machine
        assert type(machine) is ForkMachine  # noqa: S101 - only classes with forks have list states
        state = rec.state
        all_leaves = leaves(state)
        starts = [leaf for leaf in all_leaves if leaf.endswith("." + START)]
        wf = rec.wf
        spec = rec.spec
        if starts:
            entered: dict[str, int] = {}
            for leaf in starts:
                branch = leaf.rsplit(".", 2)[-2].removesuffix("@branch")
                held = spec.branch_of(branch)
                assert held is not None  # noqa: S101 - a branch's first step is in it
                fork = held[0].step
                entered.setdefault(fork, 0)
                try:
                    ok = trigger(rec, f"enter@{branch}", wf)
                except Exception as exc:  # noqa: BLE001 - a guard raised
                    why = f"{fork}: the guard of the branch {branch} raised {type(exc).__name__}: {exc}"
                    self._fail(rec, why, fork, exc)
                    return True
                if ok:
                    entered[fork] += 1
                    self._note(rec, K.TRANSITION, fork, 0, branch)
                else:
                    trigger(rec, f"skip@{branch}", wf)
                    self._note(rec, K.BRANCH_SKIPPED, fork, 0, branch)
            for fork, count in entered.items():
                if not count:
                    gap = NoEdgeEnabled(spec.name, fork)
                    self._fail(rec, str(gap), fork, gap)
                    return True
            self._sync_branches(rec)
            return True
        present = set(all_leaves)
        # Innermost forks first: their join may complete an outer branch.
        for fork, regions in sorted(machine.region_paths.items(), key=lambda kv: -kv[1][0].count(".")):
            if all(f"{r}.{DONE}" in present for r in regions):
                trigger(rec, f"join@{fork}", wf)
                fork_spec = spec.fork(fork)
                assert fork_spec is not None  # noqa: S101 - a machine's forks are the spec's
                rec.visit += 1
                self._note(rec, K.JOINED, fork, 0, fork_spec.join)
                self._sync_branches(rec)
                return True
        return False

    def _runnable(self, rec: InstanceRecord, name: str, branch: Branch) -> bool:
        if not branch.woken and branch.wake_at is not None and branch.wake_at <= self.clock.now():
            branch.woken = True  # due (after a restart, before the timer loop saw it)
            sync_wake(rec)
        if not branch.waiting or branch.woken or branch.payload is not NO_PAYLOAD:
            return True
        kind = rec.spec.step(name).kind
        if kind is StepKind.SUBFLOW:
            info = self._find_info(child_id_of(rec, branch))
            return info is None or info.status.is_terminal
        if kind is StepKind.FAN_OUT:
            return self._fan_moved(rec, name, branch)
        return kind is StepKind.WAIT_FOR and self._message_arrived(rec, name)

    async def _branch_turn(self, rec: InstanceRecord, name: str, branch: Branch) -> None:
        """One move of one branch: wait, or run one attempt of its step."""
        step = rec.spec.step(name)
        if branch.woken:
            branch.wake_at = None  # its timer is consumed now; the next commit says so
            sync_wake(rec)
        if step.kind.waits and branch.payload is NO_PAYLOAD:
            await self._branch_wait(rec, branch, step)
            return
        branch.waiting = False
        await self._run_step(rec, step, branch)

    async def _branch_wait(self, rec: InstanceRecord, branch: Branch, step: StepSpec) -> None:
        """Enter or re-check a branch's waiting step (as :meth:`_wait` does outside forks)."""
        woken, branch.woken = branch.woken, False
        if step.kind is StepKind.SUBFLOW:
            await self._child_wait(rec, step, branch)
            return
        if step.kind is StepKind.FAN_OUT:
            await self._fan_wait(rec, step, branch)
            return
        name = step.name
        timeout = next((e for e in rec.spec.outgoing(name) if e.is_timeout), None)
        if step.kind is StepKind.TIMER:
            if woken:
                self._note(rec, K.TIMER_FIRED, name, 0, None)
                branch.payload = None
                branch.waiting = False
                return
            if not branch.waiting:
                delay = step.delay or 0.0
                branch.waiting = True
                branch.wake_at = self.clock.now() + delay
                sync_wake(rec)
                self._wake_timers()
                self._note(rec, K.TIMER_SET, name, 0, f"in {delay:g}s")
                await self._save(rec)
            return
        if woken and timeout is not None and escalation_due(branch.waited, timeout, self.clock.now()):
            branch.waited = None
            if branch.task_id is not None:
                self._close_task(rec, "escalated", branch)
            self._note(rec, K.ESCALATED, name, 0, f"waited {timeout.timeout:g}s")
            before = leaves(rec.state)
            trigger(rec, f"timeout@{name}", rec.wf)
            self._moved(rec, name, before)
            await self._save(rec)
            return
        if woken and branch.waited is not None:
            await self._remind(rec, step, timeout, branch)  # the wait goes on: the side steps that fell due run
        if step.kind is StepKind.WAIT_FOR and (message := self._take_message(rec, step)) is not NO_PAYLOAD:
            branch.payload = message
            branch.wake_at = None
            branch.waited = None
            branch.waiting = False
            sync_wake(rec)
            self._note(rec, K.MESSAGE_RECEIVED, name, 0, type_label(step.message))
            return
        if branch.waiting:
            return
        if step.kind is StepKind.HUMAN_TASK:
            if not self._open_task(rec, step, branch):
                await self._save(rec)
                return
        else:
            assert step.message is not None  # noqa: S101
            self._note(rec, K.MESSAGE_AWAITED, name, 0, step.message.__name__)
        branch.waiting = True
        now = self.clock.now()
        reminders = rec.spec.reminders(name)
        branch.waited = started(now, reminders)
        wake = next_wake(branch.waited, reminders, timeout) if reminders else None
        if wake is None and timeout is not None and timeout.timeout is not None:
            wake = now + timeout.timeout
        if wake is not None:
            branch.wake_at = wake
            sync_wake(rec)
            self._wake_timers()
        await self._save(rec)
