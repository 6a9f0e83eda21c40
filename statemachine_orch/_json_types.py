"""
The JSON forms of money and time (issue 10): ``Decimal``, ``UUID``, ``timedelta``, ``time``, zoned ``datetime``.

Each is written as a JSON string that reads back as an equal value of the same
type, with nothing lost: a ``Decimal`` keeps its digits and exponent (``"12.50"``
stays ``12.50``), a ``timedelta`` its microseconds (an ISO 8601 duration,
``"P1DT2H0.5S"``), a ``datetime`` its UTC offset and, when its zone is a
``zoneinfo.ZoneInfo``, the zone's name too (RFC 9557: ``"2026-03-29T09:00:00+02:00[Europe/Paris]"``),
so that arithmetic after a restart crosses daylight-saving changes as before it.
Reading is a little more lenient than writing where JSON from outside may say
the same thing another way: a number for a ``Decimal`` or a ``timedelta``
(seconds).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from cattrs import Converter

_DURATION = re.compile(r"(-)?P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)(?:\.(\d{1,6}))?S)?)?")


def _not_a(what: str, value: object) -> TypeError:
    return TypeError(f"expected {what}, got {value!r} ({type(value).__name__})")


def decimal_text(value: Decimal) -> str:
    """*value* with every digit and its exponent: ``Decimal("12.50")`` is ``"12.50"``."""
    return str(value)


def decimal_of(value: object, _: object = None) -> Decimal:
    """The ``Decimal`` a JSON string (or an int, or a float by its shortest repr) stands for."""
    if isinstance(value, str):
        return Decimal(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    raise _not_a("a decimal number as a string such as '12.50'", value)


def uuid_of(value: object, _: object = None) -> uuid.UUID:
    """The ``UUID`` of a JSON string."""
    if isinstance(value, str):
        return uuid.UUID(value)
    raise _not_a("a UUID as a string", value)


def duration_text(value: dt.timedelta) -> str:
    """*value* as an ISO 8601 duration in days, hours, minutes and seconds: ``"-P1DT2H0.000001S"``."""
    sign = "-" if value < dt.timedelta(0) else ""
    value = abs(value)
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    clock = ""
    if hours:
        clock += f"{hours}H"
    if minutes:
        clock += f"{minutes}M"
    if seconds or value.microseconds:
        clock += f"{seconds}.{value.microseconds:06d}".rstrip("0").rstrip(".") + "S"
    text = f"{value.days}D" if value.days else ""
    if clock:
        text += "T" + clock
    return f"{sign}P{text}" if text else "PT0S"


def duration_of(value: object, _: object = None) -> dt.timedelta:
    """The ``timedelta`` of an ISO 8601 duration as :func:`duration_text` writes it, or of a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.timedelta(seconds=value)
    if not isinstance(value, str):
        raise _not_a("a duration such as 'PT1H30M' or a number of seconds", value)
    found = _DURATION.fullmatch(value)
    if found is None or not any(found.groups()[1:]):
        msg = f"expected an ISO 8601 duration such as 'P1DT2H30M' or 'PT0.5S', got {value!r}"
        raise ValueError(msg)
    minus, days, hours, minutes, seconds, fraction = found.groups()
    made = dt.timedelta(
        days=int(days or 0),
        hours=int(hours or 0),
        minutes=int(minutes or 0),
        seconds=int(seconds or 0),
        microseconds=int((fraction or "").ljust(6, "0")),
    )
    return -made if minus else made


def time_text(value: dt.time) -> str:
    """*value* in ISO 8601; a time whose zone has no fixed offset cannot be stored (use a ``datetime``)."""
    if value.tzinfo is not None and value.utcoffset() is None:
        msg = f"the time {value} has the zone {value.tzinfo} but no UTC offset; store a datetime to keep a zone"
        raise ValueError(msg)
    return value.isoformat()


def time_of(value: object, _: object = None) -> dt.time:
    """The ``time`` of an ISO 8601 string."""
    if isinstance(value, str):
        return dt.time.fromisoformat(value)
    raise _not_a("a time such as '09:30:00'", value)


def datetime_text(value: dt.datetime) -> str:
    """*value* in ISO 8601, followed by ``[zone name]`` when its zone is a named ``ZoneInfo``."""
    text = value.isoformat()
    zone = value.tzinfo
    if isinstance(zone, ZoneInfo) and zone.key:
        return f"{text}[{zone.key}]"
    return text


def datetime_of(value: object, _: object = None) -> dt.datetime:
    """The ``datetime`` of :func:`datetime_text`'s form (any ISO 8601 text that Python reads)."""
    if not isinstance(value, str):
        raise _not_a("a date and time in ISO 8601 such as '2026-01-01T09:00:00+00:00'", value)
    if not value.endswith("]"):
        return dt.datetime.fromisoformat(value)
    text, _, key = value[:-1].rpartition("[")
    moment = dt.datetime.fromisoformat(text)
    zone = ZoneInfo(key)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=zone)
    # The same wall time in the zone, and of the two a repeated hour has, the one
    # with the stored offset; if the zone's rules changed since, the same instant.
    for fold in (0, 1):
        local = moment.replace(tzinfo=zone, fold=fold)
        if local.utcoffset() == moment.utcoffset():
            return local
    return moment.astimezone(zone)


BUILT_IN: tuple[type, ...] = (Decimal, uuid.UUID, dt.timedelta, dt.time, dt.datetime, dt.date)
"""The types this module gives a JSON form (``register_type`` refuses them)."""


def install(converter: Converter) -> None:
    """Give *converter* the JSON forms of this module's types."""
    hooks: list[tuple[type, Any, Any]] = [
        (Decimal, decimal_text, decimal_of),
        (uuid.UUID, str, uuid_of),
        (dt.timedelta, duration_text, duration_of),
        (dt.time, time_text, time_of),
        (dt.datetime, datetime_text, datetime_of),
    ]
    for tp, write, read in hooks:
        converter.register_unstructure_hook(tp, write)
        converter.register_structure_hook(tp, read)
