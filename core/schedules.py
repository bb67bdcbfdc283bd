"""When periodic tasks run: ``schedule`` (every N seconds) and ``crontab`` (Celery's fields).

Both answer one question, :meth:`Schedule.next_after`: the first scheduled instant after a given
one, in UTC. Scheduled instants are fixed points in time (an interval is aligned to the Unix
epoch, a crontab to the wall clock of the app's timezone), so every beat process computes the
same ticks and a tick can be keyed by its scheduled time. ``crontab`` has Celery's semantics,
including that a day must match both ``day_of_month`` and ``day_of_week`` when both are set.
Celery's own ``schedule`` and ``crontab`` objects are accepted (:func:`as_schedule`) without
importing celery.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Protocol

from .exceptions import ConfigError

UTC = timezone.utc
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DAY_WORDS = ("Sundays", "Mondays", "Tuesdays", "Wednesdays", "Thursdays", "Fridays", "Saturdays")
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH_WORDS = ("January", "February", "March", "April", "May", "June", "July", "August",
                "September", "October", "November", "December")


class Schedule(Protocol):
    """What the beat asks of a schedule."""

    def next_after(self, when: datetime) -> datetime:
        """The first scheduled instant strictly after ``when`` (aware), in UTC."""

    def describe(self) -> str:
        """The schedule in words, for people ("every 5 minutes", "at 03:00 on Mondays")."""


def ticks(sched: Schedule, after: datetime, until: datetime, limit: int) -> list[datetime]:
    """The scheduled instants in ``(after, until]``, at most the ``limit`` latest of them."""
    found: list[datetime] = []
    tick = sched.next_after(after)
    while tick <= until:
        found.append(tick)
        if len(found) > limit:
            del found[0]
        tick = sched.next_after(tick)
    return found


def latest_at_or_before(sched: Schedule, when: datetime) -> datetime:
    """The last scheduled instant at or before ``when`` (where a new entry starts counting)."""
    step = timedelta(minutes=1)
    while True:
        probe = when - step
        tick = sched.next_after(probe)
        if tick <= when:
            following = sched.next_after(tick)
            while following <= when:
                tick, following = following, sched.next_after(following)
            return tick
        step *= 2


@dataclass(frozen=True)
class schedule:  # noqa: N801 - Celery's name
    """Every ``run_every`` seconds (or timedelta), at multiples of it since the Unix epoch."""

    run_every: float

    def __init__(self, run_every: float | timedelta) -> None:
        seconds = run_every.total_seconds() if isinstance(run_every, timedelta) else run_every
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
                or not math.isfinite(seconds) or seconds <= 0:
            raise ConfigError(f"a schedule's interval must be a positive number of seconds or "
                              f"a timedelta, got {run_every!r}")
        object.__setattr__(self, "run_every", float(seconds))

    def next_after(self, when: datetime) -> datetime:
        stamp = when.timestamp()
        n = math.floor(stamp / self.run_every) + 1
        return datetime.fromtimestamp(n * self.run_every, UTC)

    def describe(self) -> str:
        seconds = self.run_every
        for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
            if seconds >= size and seconds % size == 0:
                count = int(seconds // size)
                return f"every {unit}" if count == 1 else f"every {count} {unit}s"
        return f"every {seconds:g} seconds"


def _parse_field(spec: Any, low: int, high: int, names: tuple[str, ...] = (),
                 name_base: int = 0, what: str = "") -> frozenset[int]:
    """Celery's crontab field syntax: ``*``, ``*/15``, ``1-5``, ``1-10/2``, ``mon-fri``,
    ``1,15``, an int, or a collection of ints."""
    if isinstance(spec, bool):
        raise ConfigError(f"crontab {what}: {spec!r} is not a valid value")
    if isinstance(spec, int):
        values = {spec}
    elif isinstance(spec, str):
        values = set()
        for part in spec.replace(" ", "").lower().split(","):
            values |= _parse_part(part, low, high, names, name_base, what)
    elif isinstance(spec, Iterable):
        values = set()
        for item in spec:
            values |= _parse_field(item, low, high, names, name_base, what)
    else:
        raise ConfigError(f"crontab {what}: {spec!r} is not a valid value")
    bad = [v for v in values if not low <= v <= high]
    if bad or not values:
        raise ConfigError(f"crontab {what}: {spec!r} is outside {low}-{high}")
    return frozenset(values)


def _parse_part(part: str, low: int, high: int, names: tuple[str, ...], name_base: int,
                what: str) -> set[int]:
    def number(text: str) -> int:
        if text in names:
            return names.index(text) + name_base
        if text[:3] in names and len(text) > 3:  # "monday", "january"
            return names.index(text[:3]) + name_base
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"crontab {what}: {part!r} is not a number or a name") from None

    body, _, step_text = part.partition("/")
    step = number(step_text) if step_text else 1
    if step <= 0:
        raise ConfigError(f"crontab {what}: step {step_text!r} must be positive")
    if body in ("*", ""):
        start, stop = low, high
    elif "-" in body:
        first, _, last = body.partition("-")
        start, stop = number(first), number(last)
        if stop < start:  # Celery wraps ranges such as fri-mon
            return set(range(start, high + 1, step)) | set(range(low, stop + 1, step))
    else:
        start = number(body)
        stop = high if step_text else start
    return set(range(start, stop + 1, step))


@dataclass(frozen=True)
class crontab:  # noqa: N801 - Celery's name
    """Celery's crontab: runs at each minute whose fields all match, on the wall clock of
    ``tz`` (the app's timezone once the beat binds it; UTC until then)."""

    minute: frozenset[int]
    hour: frozenset[int]
    day_of_week: frozenset[int]
    day_of_month: frozenset[int]
    month_of_year: frozenset[int]
    tz: tzinfo = field(default=UTC, compare=False)

    def __init__(self, minute: Any = "*", hour: Any = "*", day_of_week: Any = "*",
                 day_of_month: Any = "*", month_of_year: Any = "*", tz: tzinfo = UTC) -> None:
        set_ = object.__setattr__
        set_(self, "minute", _parse_field(minute, 0, 59, what="minute"))
        set_(self, "hour", _parse_field(hour, 0, 23, what="hour"))
        days = _parse_field(day_of_week, 0, 7, _DAY_NAMES, 0, what="day_of_week")
        set_(self, "day_of_week", frozenset(d % 7 for d in days))  # 7 is Sunday too
        set_(self, "day_of_month", _parse_field(day_of_month, 1, 31, what="day_of_month"))
        set_(self, "month_of_year", _parse_field(month_of_year, 1, 12, _MONTH_NAMES, 1,
                                                 what="month_of_year"))
        set_(self, "tz", tz)

    def in_zone(self, tz: tzinfo) -> crontab:
        """The same fields read on ``tz``'s wall clock."""
        return crontab(self.minute, self.hour, self.day_of_week, self.day_of_month,
                       self.month_of_year, tz=tz)

    def _day_matches(self, day: datetime) -> bool:
        return (day.month in self.month_of_year and day.day in self.day_of_month
                and day.isoweekday() % 7 in self.day_of_week)

    def _wall_times(self, start: datetime) -> Iterator[datetime]:
        """Matching naive wall-clock minutes from ``start`` (naive, on a minute) onwards."""
        day = start.replace(hour=0, minute=0)
        first = True
        for _ in range(366 * 28):  # every calendar pattern repeats within 28 years
            if self._day_matches(day):
                for hour in sorted(self.hour):
                    for minute in sorted(self.minute):
                        wall = day.replace(hour=hour, minute=minute)
                        if not first or wall >= start:
                            yield wall
            day += timedelta(days=1)
            first = False
        raise ConfigError(f"crontab {self.describe()!r} never matches a date")

    def next_after(self, when: datetime) -> datetime:
        local = when.astimezone(self.tz).replace(tzinfo=None)
        start = local.replace(second=0, microsecond=0) + timedelta(minutes=1)
        for wall in self._wall_times(start):
            # A wall time repeated when clocks go back is taken at its first occurrence; one
            # skipped when they go forward falls after the jump (zoneinfo's fold=0).
            instant = wall.replace(tzinfo=self.tz).astimezone(UTC)
            if instant > when:
                return instant
        raise AssertionError("unreachable: _wall_times raises when it runs out")

    def describe(self) -> str:
        return " ".join(part for part in (self._describe_time(), self._describe_days()) if part)

    def _describe_time(self) -> str:
        minutes, hours = sorted(self.minute), sorted(self.hour)
        all_hours = len(hours) == 24
        if len(minutes) == 60 and all_hours:
            return "every minute"
        step = _even_step(minutes, 60)
        if step and all_hours:
            return f"every {step} minutes"
        if len(minutes) == 1 and all_hours:
            return f"every hour at minute {minutes[0]}"
        hour_step = _even_step(hours, 24)
        if hour_step and minutes == [0]:
            return f"every {hour_step} hours"
        if len(minutes) * len(hours) <= 4:
            return "at " + ", ".join(f"{h:02d}:{m:02d}" for h in hours for m in minutes)
        hours_text = "every hour" if all_hours else f"in hours {_join(hours)}"
        return f"at minute{'s' if len(minutes) > 1 else ''} {_join(minutes)} {hours_text}"

    def _describe_days(self) -> str:
        parts = []
        if len(self.day_of_week) < 7:
            parts.append("on " + _join([_DAY_WORDS[d] for d in sorted(self.day_of_week)]))
        if len(self.day_of_month) < 31:
            days = sorted(self.day_of_month)
            parts.append(f"on day{'s' if len(days) > 1 else ''} {_join(days)} of the month")
        if len(self.month_of_year) < 12:
            parts.append("in " + _join([_MONTH_WORDS[m - 1] for m in sorted(self.month_of_year)]))
        return " ".join(parts)


def _even_step(values: list[int], size: int) -> int | None:
    """``s`` when ``values`` are 0, s, 2s, ... covering ``size`` (``*/s`` with 1 < s)."""
    if len(values) < 2 or values[0] != 0 or size % (values[1] - values[0]):
        return None
    step = values[1]
    return step if values == list(range(0, size, step)) else None


def _join(items: Iterable[Any]) -> str:
    words = [str(i) for i in items]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def as_schedule(value: Any, tz: tzinfo, where: str) -> Schedule:
    """A beat entry's ``schedule`` as a :class:`Schedule` on ``tz``: seconds, a timedelta, a
    ``schedule``/``crontab`` of qtui or of Celery, or a table of crontab fields (TOML)."""
    if isinstance(value, crontab):
        return value.in_zone(tz)
    if isinstance(value, schedule):
        return value
    if isinstance(value, (int, float, timedelta)) and not isinstance(value, bool):
        return schedule(value)
    if isinstance(value, dict):
        unknown = set(value) - {"minute", "hour", "day_of_week", "day_of_month", "month_of_year"}
        if unknown:
            raise ConfigError(f"{where}: crontab fields are minute, hour, day_of_week, "
                              f"day_of_month and month_of_year, not {', '.join(sorted(unknown))}")
        try:
            return crontab(**value, tz=tz)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    kind = _celery_kind(value)
    if kind == "crontab":
        return crontab(value.minute, value.hour, value.day_of_week, value.day_of_month,
                       value.month_of_year, tz=tz)
    if kind == "schedule":
        return schedule(value.run_every)
    raise ConfigError(f"{where}: schedule must be seconds, a timedelta, a crontab or a table "
                      f"of crontab fields, got {type(value).__name__} {value!r:.60}")


def _celery_kind(value: Any) -> str | None:
    """'crontab' or 'schedule' for Celery's schedule objects (celery stays unimported)."""
    for cls in type(value).__mro__:
        if cls.__module__ == "celery.schedules" and cls.__name__ in ("crontab", "schedule"):
            return cls.__name__
    return None
