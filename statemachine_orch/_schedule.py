"""
``Schedule``: when a workflow is started by the clock (a cron expression or a fixed interval), and how.

A schedule is a value: its due times are computed from the expression (cron
through ``cronsim``) or from the interval (aligned to the Unix epoch plus an
offset), so every worker that declares it agrees on them, and each due time has
one instance id, ``<schedule id>@<due time in UTC, ISO 8601>``. The engine side
(``_schedules.py``) starts them.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Generic, TypeVar, cast

from cronsim import CronSim, CronSimError

from ._errors import ScheduleError

W = TypeVar("W")

_ID_MAX = 150
"""A schedule id's length at most: its instance ids add ``@`` and up to 27 characters of time."""

_US = 1_000_000


class CatchUp(enum.Enum):
    """
    What a schedule does with due times it *missed*: noticed more than ``grace`` after they fell due.

    Due times noticed within ``grace`` are on time and always start. Missed ones
    happen while no worker runs (a deployment, an outage) or when a worker's
    event loop is blocked.

    .. versionadded:: 0.1.0
    """

    SKIP = "skip"
    """Start none of them: the schedule goes on with its next due time."""
    ONE = "one"
    """Start the most recent one, once, unless a due time on time starts now anyway; skip the older ones."""
    ALL = "all"
    """Start every one, oldest first, each with its own instance."""


class Overlap(enum.Enum):
    """
    What a schedule does when a due time comes while the instance it started last has not ended.

    .. versionadded:: 0.1.0
    """

    SKIP = "skip"
    """Skip the due time: one run at a time (Temporal's default)."""
    ALLOW = "allow"
    """Start it anyway: runs may overlap."""


def _seconds(value: object, what: str, schedule_id: str) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    msg = f"{what}= must be a timedelta or a number of seconds, got {value!r}"
    raise ScheduleError(schedule_id, what, msg)


def iso_utc(due: float, timespec: str = "auto") -> str:
    """A due time in UTC (``2026-01-01T02:00:00Z``), to *timespec*; ``auto``: as precise as it needs."""
    micros = round(due * _US)
    when = datetime.fromtimestamp(micros // _US, UTC).replace(microsecond=micros % _US)
    if timespec == "auto":
        timespec = "seconds" if micros % _US == 0 else "milliseconds" if micros % 1000 == 0 else "microseconds"
    return when.replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


class Schedule(Generic[W]):
    """
    Start a workflow on a cron expression or at a fixed interval: give it to ``Engine(schedules=[...])``.

    Every worker that declares a schedule runs it; each of its due times starts
    exactly once across workers and restarts, as the instance
    ``<id>@<due time in UTC>`` (``nightly-report@2026-01-02T02:00:00Z``), whose
    workflow ``start`` builds from the due time. The store keeps how far the
    schedule got, so a restart carries on where it stopped; due times missed
    meanwhile are handled by ``catch_up``.

    Args:
        id: The schedule's stable name (up to 150 printable characters, no ``/``).
        start: Builds the workflow to start for a due time (an aware ``datetime`` in
            *tz*), e.g. ``lambda due: Report(day=due.date().isoformat())``.
        cron: A cron expression: five fields (minute hour day month weekday), or six
            with seconds first; evaluated in *tz*, daylight saving time included.
        every: Or a fixed interval (a ``timedelta`` or seconds): due times are the
            multiples of it since the Unix epoch, plus *offset*.
        offset: With *every*: shifts its due times (``every=timedelta(hours=1),
            offset=timedelta(minutes=5)``: five past every hour, UTC).
        tz: The time zone of *cron* and of the due times *start* receives (default UTC).
        catch_up: What to do with due times missed while no worker ran (default
            :attr:`CatchUp.ONE`).
        overlap: What to do when a due time comes while the last instance it started
            runs (default :attr:`Overlap.SKIP`).
        grace: How late a due time may be noticed and still count as on time
            (default one minute).

    Raises:
        ScheduleError: An argument is invalid (naming the schedule and the argument).

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_cron", "_every", "_offset", "_timespec", "catch_up", "grace", "id", "overlap", "start", "tz")

    id: str
    """The schedule's stable name."""
    start: Callable[[datetime], W]
    """Builds the workflow to start for a due time."""
    tz: tzinfo
    """The time zone of the cron expression and of the due times given to :attr:`start`."""
    catch_up: CatchUp
    """What it does with missed due times."""
    overlap: Overlap
    """What it does when a due time comes while its last instance runs."""
    grace: float
    """Seconds a due time may be noticed late and still be on time."""

    def __init__(
        self,
        id: str,  # noqa: A002 - the schedule's id, as Temporal names it
        start: Callable[[datetime], W],
        *,
        cron: str | None = None,
        every: timedelta | float | None = None,
        offset: timedelta | float = 0.0,
        tz: tzinfo = UTC,
        catch_up: CatchUp = CatchUp.ONE,
        overlap: Overlap = Overlap.SKIP,
        grace: timedelta | float = 60.0,
    ) -> None:
        given = cast("object", id)
        if not isinstance(given, str) or not id or len(id) > _ID_MAX or not id.isprintable() or "/" in id:
            msg = f"the id must be 1 to {_ID_MAX} printable characters without '/', got {id!r}"
            raise ScheduleError(str(id), "id", msg)
        self.id = id
        if not callable(cast("object", start)):
            msg = f"start= must be a callable (due: datetime) -> Workflow, got {start!r}"
            raise ScheduleError(id, "start", msg)
        self.start = start
        if (cron is None) == (every is None):
            msg = "give exactly one of cron= (an expression) and every= (an interval)"
            raise ScheduleError(id, "cron" if cron is not None else "every", msg)
        zone = cast("object", tz)
        if not isinstance(zone, tzinfo):
            raise ScheduleError(id, "tz", f"tz= must be a tzinfo (zoneinfo.ZoneInfo(...), datetime.UTC), got {tz!r}")
        self.tz = tz
        self._cron = cron
        self._every = 0
        self._offset = 0
        # One precision for all of a schedule's ids, so that they sort as their due times do.
        self._timespec = "seconds"
        if cron is not None:
            self._check_cron(cron)
        else:
            every_us = round(_seconds(every, "every", id) * _US)
            if every_us <= 0:
                raise ScheduleError(id, "every", f"every= must be a positive interval, got {every!r}")
            self._every = every_us
            self._offset = round(_seconds(offset, "offset", id) * _US) % every_us
            if every_us % _US or self._offset % _US:
                whole_ms = every_us % 1000 == 0 and self._offset % 1000 == 0
                self._timespec = "milliseconds" if whole_ms else "microseconds"
        policies = cast("tuple[object, object]", (catch_up, overlap))
        if not isinstance(policies[0], CatchUp):
            raise ScheduleError(id, "catch_up", f"catch_up= must be a CatchUp (SKIP, ONE or ALL), got {catch_up!r}")
        if not isinstance(policies[1], Overlap):
            raise ScheduleError(id, "overlap", f"overlap= must be an Overlap (SKIP or ALLOW), got {overlap!r}")
        self.catch_up = catch_up
        self.overlap = overlap
        self.grace = _seconds(grace, "grace", id)
        if self.grace < 0:
            raise ScheduleError(id, "grace", f"grace= must not be negative, got {grace!r}")

    def _check_cron(self, cron: object) -> None:
        if not isinstance(cron, str):
            raise ScheduleError(self.id, "cron", f"cron= must be a str, got {cron!r}")
        try:
            next(CronSim(cron, datetime(2000, 1, 1, tzinfo=self.tz)))
        except (CronSimError, StopIteration) as exc:
            raise ScheduleError(self.id, "cron", f"cron={cron!r} is not a cron expression: {exc}") from None

    def __repr__(self) -> str:
        when = f"cron={self._cron!r}" if self._cron is not None else f"every={self._every / _US:g}s"
        return f"<Schedule {self.id} {when} catch_up={self.catch_up.value} overlap={self.overlap.value}>"

    def next_after(self, moment: float) -> float:
        """The first due time strictly after *moment* (seconds since the epoch)."""
        if self._cron is None:
            at = round(moment * _US)
            steps = (at - self._offset) // self._every + 1
            return (self._offset + steps * self._every) / _US
        return next(CronSim(self._cron, datetime.fromtimestamp(moment, self.tz))).timestamp()

    def last_at(self, moment: float) -> float:
        """The latest due time at or before *moment*."""
        if self._cron is None:
            at = round(moment * _US)
            steps = (at - self._offset) // self._every
            return (self._offset + steps * self._every) / _US
        # cronsim steps back from the whole second after *moment*: the latest match up to it.
        after = datetime.fromtimestamp(math.floor(moment) + 1, self.tz)
        return next(CronSim(self._cron, after, reverse=True)).timestamp()

    def instance_id(self, due: float) -> str:
        """The id of the instance this schedule starts for *due*: ``<id>@<due time in UTC>``."""
        return f"{self.id}@{iso_utc(due, self._timespec)}"

    def due_datetime(self, due: float) -> datetime:
        """*due* as the aware ``datetime`` in :attr:`tz` that :attr:`start` receives."""
        micros = round(due * _US)
        return datetime.fromtimestamp(micros // _US, self.tz) + timedelta(microseconds=micros % _US)
