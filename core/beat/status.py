"""What ``qtui schedule list`` and the console's Schedules view show: each entry with its
schedule in words, next and last run and whether it is paused, and the beat processes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigError
from .entries import Entry, entries
from .store import BeatStore, Node, Run

if TYPE_CHECKING:
    from ..app import App


@dataclass(frozen=True)
class EntryStatus:
    entry: Entry
    words: str
    next_run: float | None
    """Unix seconds; None while paused."""
    last_run: Run | None
    paused: bool

    def to_json(self) -> dict[str, Any]:
        last = self.last_run
        return {"name": self.entry.name, "task": self.entry.task, "schedule": self.words,
                "next_run": self.next_run, "paused": self.paused,
                "last_run": None if last is None else {
                    "sent": last.sent, "scheduled": last.scheduled or None,
                    "task_id": last.task_id, "by": last.by, "manual": last.manual}}


@dataclass(frozen=True)
class ScheduleStatus:
    entries: list[EntryStatus]
    beats: list[Node]
    checked: float

    def to_json(self) -> dict[str, Any]:
        return {"entries": [e.to_json() for e in self.entries],
                "beats": [{"name": n.name, "leader": n.leader, "seen": n.seen,
                           "age": round(self.checked - n.seen, 3)} for n in self.beats]}


def status(app: App, store: BeatStore) -> ScheduleStatus:
    now = datetime.now(timezone.utc)
    paused = store.paused()
    found = []
    for entry in entries(app):
        runs = store.runs(entry.name, limit=1)
        is_paused = entry.name in paused
        found.append(EntryStatus(
            entry, entry.schedule.describe(),
            None if is_paused else entry.schedule.next_after(now).timestamp(),
            runs[0] if runs else None, is_paused))
    return ScheduleStatus(found, store.nodes(), time.time())


def find_entry(app: App, name: str) -> Entry:
    """The entry called ``name``, or a ConfigError that lists the names there are."""
    known = entries(app)
    for entry in known:
        if entry.name == name:
            return entry
    names = ", ".join(e.name for e in known) or "none: beat_schedule is empty"
    raise ConfigError(f"no entry {name!r} in beat_schedule (entries: {names})")
