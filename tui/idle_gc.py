"""Python's full garbage collections, made when nobody is typing.

Now and then Python's cyclic collector walks every object it tracks (a full collection). With
100,000 tasks in the console that takes 100-200 ms on a 2-core machine and, holding the GIL,
stops every thread: a key pressed meanwhile waits for it. While the console runs, the automatic
full collections are off and :class:`IdleCollector` makes them from a timer on the UI thread,
after a second without a key or a click, at most every ``interval`` seconds, and after
``force_after`` seconds whatever the input. Young collections (generations 0 and 1) stay
automatic, and reference counting frees everything without cycles as it always does, so only
cyclic garbage that outlived the young generations waits.

After each full collection the C allocator is asked to give its free memory back to the system
(glibc's ``malloc_trim``, where there is one): event batches and a backlog of them leave large
freed blocks that otherwise stay in the process's resident memory (about 13 MB at 100,000 tasks,
bench/RESULTS.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import time
from collections.abc import Callable

_NEVER = 2**31 - 1
"""A threshold for the oldest generation that automatic collection never reaches."""


def malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``: freed heap memory back to the system; None elsewhere."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):  # no C library found, or not glibc's
        return None
    return lambda: trim(0)


class IdleCollector:
    def __init__(self, idle_after: float = 1.0, interval: float = 30.0,
                 force_after: float = 120.0,
                 release: Callable[[], object] | None = malloc_trim()) -> None:  # noqa: B008
        self.release = release
        """Called after each full collection to hand freed memory back (None: nothing)."""
        self.idle_after = idle_after
        self.interval = interval
        self.force_after = force_after
        self.last_full = time.monotonic()
        self.collections = 0
        self._saved: tuple[int, int, int] | None = None

    def start(self) -> None:
        """Turn the automatic full collections off (until :meth:`stop`)."""
        if self._saved is None:
            self._saved = gc.get_threshold()
            gc.set_threshold(self._saved[0], self._saved[1], _NEVER)
        self.last_full = time.monotonic()

    def stop(self) -> None:
        """Give the collector its own thresholds back."""
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None

    def tick(self, last_input: float) -> bool:
        """Collect now if it is time and the user is idle (``last_input``: monotonic time of the
        latest key or click). Returns whether it collected."""
        now = time.monotonic()
        due = now - self.last_full
        if due < self.force_after and (due < self.interval or now - last_input < self.idle_after):
            return False
        gc.collect()
        if self.release is not None:
            self.release()
        self.last_full = time.monotonic()
        self.collections += 1
        return True
