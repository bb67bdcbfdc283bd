"""Timers of the worker's main loop: ETAs, rate-limit wake-ups, pollers. Main thread only."""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("qtui.worker")


@dataclass(order=True)
class Entry:
    when: float
    seq: int
    callback: Callable[[], Any] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class Timer:
    def __init__(self) -> None:
        self._heap: list[Entry] = []
        self._seq = itertools.count()

    def call_at(self, when: float, callback: Callable[[], Any]) -> Entry:
        """Call ``callback`` at ``when`` (a ``time.monotonic()`` value)."""
        entry = Entry(when, next(self._seq), callback)
        heapq.heappush(self._heap, entry)
        return entry

    def call_later(self, delay: float, callback: Callable[[], Any]) -> Entry:
        return self.call_at(time.monotonic() + max(0.0, delay), callback)

    def call_repeatedly(self, interval: float, callback: Callable[[], Any]) -> None:
        def tick() -> None:
            try:
                callback()
            finally:
                self.call_later(interval, tick)
        self.call_later(interval, tick)

    def next_due(self) -> float | None:
        """When the first entry is due (a cancelled one may answer earlier); None: none."""
        return self._heap[0].when if self._heap else None

    def run_due(self) -> float | None:
        """Run what is due; return the seconds until the next entry (None: nothing scheduled)."""
        while self._heap:
            entry = self._heap[0]
            if entry.cancelled:
                heapq.heappop(self._heap)
                continue
            delay = entry.when - time.monotonic()
            if delay > 0:
                return delay
            heapq.heappop(self._heap)
            entry.callback()
        return None
