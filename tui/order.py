"""The tasks view's order: the tasks its tab and filter let through, sorted, kept sorted as
snapshots change some of them.

Under a stream of events a redraw used to sort every task held (100,000) to find the page the
selected task was pushed onto, 50-100 ms on the UI thread each second that a key could wait
for. Kept here, a redraw places only the tasks changed since the last one (a few thousand, by
bisection, the rest copied in slices) and finds a task's page by bisection too.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .rows import TaskRow

Entry = tuple[Any, int, str]
"""(sort value, tie, task id), ascending. The tie keeps tasks of equal value in the order the
model holds them (least recently changed first) whichever way the view sorts, as a stable sort
of the model did."""


class TaskOrder:
    """``tasks`` in the order of ``key`` (descending when ``reverse``), only those ``wanted``."""

    def __init__(self, tasks: Mapping[str, TaskRow], key: Callable[[TaskRow], Any],
                 reverse: bool, wanted: Callable[[TaskRow], bool]) -> None:
        self._key, self._reverse, self._wanted = key, reverse, wanted
        self._count = 0
        self._entry_of: dict[str, Entry] = {}
        for task in tasks.values():
            self._place(task)
        self._entries = sorted(self._entry_of.values())

    def _place(self, task: TaskRow) -> Entry | None:
        """Give ``task`` its entry, or none when the view does not want it."""
        self._count += 1
        if not self._wanted(task):
            return None
        entry = (self._key(task), -self._count if self._reverse else self._count, task.id)
        self._entry_of[task.id] = entry
        return entry

    def update(self, tasks: Mapping[str, TaskRow], changed: Iterable[str]) -> None:
        """Take in the tasks with these ids (in the order they changed: added, changed, or
        gone from ``tasks``)."""
        # Each task once, where it changed last (its place among tasks of equal value).
        last = list(dict.fromkeys(reversed(list(changed))))
        dropped: list[Entry] = []
        added: list[Entry] = []
        for task_id in reversed(last):
            old = self._entry_of.pop(task_id, None)
            if old is not None:
                dropped.append(old)
            task = tasks.get(task_id)
            if task is not None and (new := self._place(task)) is not None:
                added.append(new)
        if dropped or added:
            self._entries = _splice(self._entries, dropped, added)

    def __len__(self) -> int:
        return len(self._entries)

    def position(self, task_id: str) -> int | None:
        """Where ``task_id`` is in the view's order (0 first), None when it is not there."""
        entry = self._entry_of.get(task_id)
        if entry is None:
            return None
        at = bisect_left(self._entries, entry)
        return len(self._entries) - 1 - at if self._reverse else at

    def ids(self, start: int, stop: int) -> list[str]:
        """The ids from ``start`` to ``stop`` in the view's order."""
        count = len(self._entries)
        start, stop = max(0, min(start, count)), max(0, min(stop, count))
        if self._reverse:
            chosen = self._entries[count - stop:count - start]
            chosen.reverse()
        else:
            chosen = self._entries[start:stop]
        return [entry[2] for entry in chosen]


def _splice(entries: list[Entry], dropped: list[Entry], added: list[Entry]) -> list[Entry]:
    """``entries`` without ``dropped`` (each one of them) and with ``added``, still sorted: the
    places found by bisection, the runs between them copied as slices."""
    cuts = sorted([(bisect_left(entries, e), 1, e) for e in dropped]
                  + [(bisect_left(entries, e), 0, e) for e in added])
    spliced: list[Entry] = []
    at = 0
    for index, drop, entry in cuts:
        spliced += entries[at:index]
        if drop:
            at = index + 1
        else:
            spliced.append(entry)
            at = index
    spliced += entries[at:]
    return spliced
