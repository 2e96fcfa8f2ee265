"""Off-peak windows: a daily local-time window ``"HH:MM-HH:MM"`` (it may wrap midnight, e.g.
``22:00-06:00``) in an IANA time zone, read with :mod:`zoneinfo`, so the window follows the
zone's daylight-saving changes (the same wall-clock hours in winter and in summer, which are
other UTC hours)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_SPEC = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


def parse_window(spec: str) -> tuple[time, time]:
    """``"22:00-06:00"`` -> (22:00, 06:00).

    Raises:
        ValueError: not ``HH:MM-HH:MM`` (24-hour clock), or an empty window (start = end).
    """
    m = _SPEC.match(spec)
    if m is None:
        raise ValueError(f"window {spec!r} is not HH:MM-HH:MM (24-hour clock)")
    start = time(int(m[1]), int(m[2]))
    end = time(int(m[3]), int(m[4]))
    if start == end:
        raise ValueError(f"window {spec!r} is empty")
    return start, end


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``.

    Raises:
        ValueError: an unknown zone.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def inside(at: datetime, window: tuple[time, time], tz: ZoneInfo) -> bool:
    """Whether UTC instant ``at`` falls in ``window`` on the local clock of ``tz``."""
    start, end = window
    local = at.astimezone(tz).time().replace(tzinfo=None)
    if start < end:
        return start <= local < end
    return local >= start or local < end


def next_open(at: datetime, window: tuple[time, time], tz: ZoneInfo) -> datetime:
    """``at`` (UTC) when it is inside ``window``, else the next instant the window opens, UTC.
    A start that a spring-forward gap skips on some day opens at the first instant after the
    gap (zoneinfo's reading of the wall-clock time)."""
    if inside(at, window, tz):
        return at
    local = at.astimezone(tz)
    for days in range(0, 3):
        day = local.date() + timedelta(days=days)
        opening = datetime.combine(day, window[0], tzinfo=tz).astimezone(UTC)
        if opening > at:
            return opening
    raise AssertionError("a daily window opens within two days")  # pragma: no cover
