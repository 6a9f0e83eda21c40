"""
The engine's schedules: the workers start each due time of ``Engine(schedules=[...])`` exactly once.

The timer loop (or, with a shared store, the fleet loop) calls
``_run_schedules`` when the earliest due time in memory (``_sched_next``) has
come. For each such schedule it reads the store's state (``ScheduleState``: the
cursor, every due time at or before which was dealt with), works out what the
pending due times in ``(cursor, now]`` call for under the catch-up and overlap
policies, starts those instances with their deterministic ids
(``<schedule>@<due time>``: a second start of one is ``InstanceExists``, so
exactly once across workers and restarts), then advances the cursor with a
compare-and-set. A crash between the starts and the cursor makes the next round
find them started; a worker whose view was stale writes nothing and looks again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import attrs

from ._engine_core import logger
from ._errors import StoreError
from ._messages import Messages
from ._schedule import CatchUp, Overlap, Schedule, iso_utc
from ._store import ScheduleState
from ._workflow import Workflow

_BATCH = 100
"""Due times one round starts at most per schedule (the rest: the next round, at once)."""

_MICRO = 1e-6
"""A microsecond: due times are kept to the microsecond."""

_RETRY = 0.05
"""First wait before a schedule whose store failed is looked at again (doubling, at most 30 s)."""


@attrs.frozen
class ScheduleInfo:
    """
    Where one of the engine's schedules stands (``Engine.schedules()``).

    Attributes:
        id: The schedule's id.
        last_due: The latest due time dealt with, started or skipped (engine clock,
            seconds since the epoch); ``None`` before the schedule's first round.
        next_due: Its next due time after that.
        last_instance: The instance it started last, if any.
        started: How many instances it started (across workers and restarts).

    .. versionadded:: 0.1.0
    """

    id: str
    last_due: float | None
    next_due: float
    last_instance: str | None
    started: int


def schedule_info(schedule: Schedule[Any], state: ScheduleState | None, now: float) -> ScheduleInfo:
    """Where *schedule* stands with the store's *state* of it (``None``: no round yet, so it counts from *now*)."""
    if state is None:
        return ScheduleInfo(schedule.id, None, schedule.next_after(now), None, 0)
    cursor = state.cursor
    return ScheduleInfo(schedule.id, cursor, schedule.next_after(cursor), state.last_instance, state.started)


class Schedules(Messages):
    """The engine's schedules (see the module's docstring)."""

    _schedules: dict[str, Schedule[Any]]
    _sched_due: dict[str, float]  # each schedule's next due time as last seen (-inf: look now)
    _sched_failures: dict[str, int]

    def _init_schedules(self, schedules: Iterable[Schedule[Any]]) -> None:
        """Called by ``Engine.__init__``: the engine's schedules, each looked at in the first round."""
        self._schedules = {}
        for schedule in schedules:
            given = cast("object", schedule)
            if not isinstance(given, Schedule):
                msg = f"Engine(schedules=...) takes Schedule objects, got {schedule!r}"
                raise TypeError(msg)
            if schedule.id in self._schedules:
                msg = f"Engine(schedules=...): two schedules have the id {schedule.id!r}"
                raise ValueError(msg)
            self._schedules[schedule.id] = schedule
        if self._schedules and not self._drives:
            msg = "Engine(schedules=...) needs workers: a client engine (concurrency=0) starts no schedule"
            raise ValueError(msg)
        self._sched_due = dict.fromkeys(self._schedules, float("-inf"))
        self._sched_failures = {}
        self._sched_next = float("-inf") if self._schedules else None

    def schedules(self) -> list[ScheduleInfo]:
        """
        Where each of this engine's schedules stands, as the store has it.

        .. versionadded:: 0.1.0
        """
        now = self._now()
        return [schedule_info(schedule, self.store.schedule(schedule.id), now) for schedule in self._schedules.values()]

    async def _run_schedules(self, now: float) -> None:
        """Start what every schedule due by *now* calls for; each one's next due time moves past what it did."""
        for schedule in self._schedules.values():
            if self._sched_due[schedule.id] > now:
                continue
            try:
                self._sched_due[schedule.id] = await self._schedule_round(schedule, now)
            except Exception as exc:  # noqa: BLE001 - the store's failures, mostly: never the timer loop's end
                failures = self._sched_failures[schedule.id] = self._sched_failures.get(schedule.id, 0) + 1
                delay = min(_RETRY * 2.0 ** (failures - 1), 30.0)
                logger.error("schedule_failed", schedule=schedule.id, error=str(exc), retry_in=delay)
                self._sched_due[schedule.id] = now + delay
            else:
                self._sched_failures.pop(schedule.id, None)
        self._sched_next = min(self._sched_due.values(), default=None)
        if self._idle_waiters and self._is_idle():
            self._release_idle_waiters()  # a round that started nothing leaves the engine idle

    async def _schedule_round(self, schedule: Schedule[Any], now: float) -> float:
        """One round of *schedule* at *now*: start its pending due times, advance its cursor; when to look again."""
        state = self.store.schedule(schedule.id)
        if state is None:
            # New: its first due time is the first after now (no backfill).
            if self.store.save_schedule(ScheduleState(schedule.id, now), None):
                return schedule.next_after(now)
            return float("-inf")  # another worker made it first: read its state next round
        first = schedule.next_after(state.cursor)
        if first > now:
            return first
        plan, cursor = self._plan(schedule, state.cursor, first, now)
        last = state.last_instance
        started = state.started
        for due in plan:
            instance_id = schedule.instance_id(due)
            if self._find_info(instance_id) is not None:
                last = instance_id  # started by a round whose worker died before it moved the cursor
                started += 1
                continue
            if schedule.overlap is Overlap.SKIP and last is not None and last != instance_id:
                running = self._find_info(last)
                if running is not None and not running.status.is_terminal:
                    logger.info("schedule_skipped", schedule=schedule.id, due=iso_utc(due), running=last)
                    continue
            if await self._start_due(schedule, due, instance_id):
                last = instance_id
                started += 1
        if not self.store.save_schedule(ScheduleState(schedule.id, cursor, last, started), state.cursor):
            return float("-inf")  # another worker advanced it meanwhile: look again
        return schedule.next_after(cursor)

    def _plan(self, schedule: Schedule[Any], cursor: float, first: float, now: float) -> tuple[list[float], float]:
        """The due times of ``(cursor, now]`` to start, oldest first (at most a batch), and the new cursor."""
        # Due times before *late* were missed: noticed more than grace after they fell due.
        late = now - schedule.grace
        if first < late:
            logger.warning(
                "schedule_missed",
                schedule=schedule.id,
                first=iso_utc(first),
                last=iso_utc(schedule.last_at(late - _MICRO)),
                catch_up=schedule.catch_up.value,
            )
        plan: list[float] = []
        if schedule.catch_up is CatchUp.ALL:
            plan.append(first)
            while len(plan) < _BATCH and (nxt := schedule.next_after(plan[-1])) <= now:
                plan.append(nxt)
            return plan, plan[-1]
        due = schedule.next_after(max(cursor, late - _MICRO))
        while due <= now and len(plan) < _BATCH:
            plan.append(due)
            due = schedule.next_after(due)
        if len(plan) == _BATCH:
            return plan, plan[-1]
        if first < late and not plan and schedule.catch_up is CatchUp.ONE:
            plan = [schedule.last_at(late - _MICRO)]  # the newest missed one stands for them all
        return plan, schedule.last_at(now)

    async def _start_due(self, schedule: Schedule[Any], due: float, instance_id: str) -> bool:
        """Start *schedule*'s instance for *due*; whether it exists now (started now or before)."""
        try:
            workflow: object = schedule.start(schedule.due_datetime(due))
            if not isinstance(workflow, Workflow):
                msg = f"start must return a workflow object to start, got {workflow!r}"
                raise TypeError(msg)
            _, new = await self._start(workflow, instance_id)
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - start's own code, a bad workflow, an id taken: that due time fails
            logger.error(
                "schedule_start_failed",
                schedule=schedule.id,
                due=iso_utc(due),
                instance_id=instance_id,
                error=f"{type(exc).__name__}: {exc}",
            )
            return False
        logger.info(
            "schedule_started" if new else "schedule_found_started", schedule=schedule.id, instance_id=instance_id
        )
        return True
