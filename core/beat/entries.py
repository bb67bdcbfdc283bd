"""The entries of ``beat_schedule``: which task to send, with what, and when.

The setting has Celery's shape, ``{name: {"task", "schedule", "args", "kwargs", "options"}}``;
in TOML a crontab is a table of its fields (``schedule = { minute = "0", hour = "3" }``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigError
from ..schedules import Schedule, as_schedule

if TYPE_CHECKING:
    from ..app import App

#: Options of an entry that ``send_task`` takes (Celery's entry options that qtui sends with).
SEND_OPTIONS = frozenset({"queue", "exchange", "routing_key", "priority", "expires",
                          "countdown", "time_limit", "soft_time_limit", "ignore_result",
                          "serializer", "headers"})
_KEYS = frozenset({"task", "schedule", "args", "kwargs", "options"})


@dataclass(frozen=True)
class Entry:
    """One periodic task."""

    name: str
    task: str
    schedule: Schedule
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


def entries(app: App) -> list[Entry]:
    """The app's ``beat_schedule`` as entries on its timezone, sorted by name; a wrong entry
    raises ConfigError naming it."""
    schedule_conf = app.conf.beat_schedule or {}
    tz = app.timezone
    return [_entry(str(name), spec, tz) for name, spec in sorted(schedule_conf.items())]


def _entry(name: str, spec: Any, tz: tzinfo) -> Entry:
    where = f"beat_schedule.{name}"
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where} must be a table with task and schedule, got {spec!r:.60}")
    unknown = set(spec) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
                          f"(an entry has {', '.join(sorted(_KEYS))})")
    if not isinstance(spec.get("task"), str) or not spec["task"]:
        raise ConfigError(f"{where} needs task = \"module.task_name\"")
    if "schedule" not in spec:
        raise ConfigError(f"{where} needs a schedule (seconds or a crontab)")
    args = spec.get("args") or ()
    kwargs = spec.get("kwargs") or {}
    options = dict(spec.get("options") or {})
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, Mapping):
        raise ConfigError(f"{where}: args must be a list and kwargs a table")
    unsent = set(options) - SEND_OPTIONS
    if unsent:
        raise ConfigError(f"{where}: options {', '.join(sorted(unsent))} are not supported "
                          f"(qtui sends with {', '.join(sorted(SEND_OPTIONS))})")
    return Entry(name, spec["task"], as_schedule(spec["schedule"], tz, where), tuple(args),
                 dict(kwargs), options)
