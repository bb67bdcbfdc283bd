"""Task metrics: what the event stream says, rolled up per minute, task name and queue.

Each rollup counts the task events of its minute (sent, received, started, succeeded, failed,
retried, revoked) and keeps two histograms of seconds: runtime (from task-succeeded's
``runtime``, or started to failed) and wait (sent, else received, to started). The histograms
have fixed bucket bounds (:data:`BOUNDS`, shared with anything that exports them), so rollups
add up over any range and percentiles are read from the merged buckets, correct within one
bucket. Pure Python, no I/O: the console's history stores the rollups
(:mod:`qtui.tui.history`).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

#: Upper bounds (seconds, inclusive) of the histogram buckets; one more bucket holds what is
#: above the last. Steps of about 2-2.5x from a millisecond to an hour.
BOUNDS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                             2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
BUCKETS = len(BOUNDS) + 1
#: The events counted, as each rollup names its counts.
COUNTED = ("sent", "received", "started", "succeeded", "failed", "retried", "revoked")
_COUNT_OF_EVENT = {f"task-{name}": i for i, name in enumerate(COUNTED)}
#: Seconds of one rollup.
MINUTE = 60

RollupKey = tuple[int, str, str]
"""(start of the minute in epoch seconds, task name, queue); '' where the events did not say."""


def bucket_of(seconds: float) -> int:
    """The bucket a value falls in: the first whose bound is at or above it."""
    return bisect_left(BOUNDS, seconds)


@dataclass(slots=True)
class Histogram:
    """Counts of values per bucket of :data:`BOUNDS`, and their sum (for a mean)."""

    counts: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    total: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    def add(self, seconds: float) -> None:
        self.counts[bucket_of(seconds)] += 1
        self.total += seconds

    def merge(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total

    def percentile(self, q: float) -> float | None:
        """The ``q`` quantile (0.95 for p95), interpolated within its bucket, so it lies in the
        bucket of the true value; the last bound when it is above it; None with no values."""
        count = self.count
        if not count:
            return None
        rank = q * count
        seen = 0
        for i, n in enumerate(self.counts):
            if n and seen + n >= rank:
                if i == len(BOUNDS):
                    return BOUNDS[-1]
                lower = BOUNDS[i - 1] if i else 0.0
                return lower + (BOUNDS[i] - lower) * max(0.0, rank - seen) / n
            seen += n
        return BOUNDS[-1]


@dataclass(slots=True)
class Rollup:
    """One minute of one task name on one queue."""

    counts: list[int] = field(default_factory=lambda: [0] * len(COUNTED))
    """Events of each kind of :data:`COUNTED`, in that order."""
    runtime: Histogram = field(default_factory=Histogram)
    wait: Histogram = field(default_factory=Histogram)

    def count(self, name: str) -> int:
        return self.counts[COUNTED.index(name)]

    def merge(self, other: Rollup) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.runtime.merge(other.runtime)
        self.wait.merge(other.wait)


class Recorder:
    """Rollups of the events recorded since the last :meth:`take`: what a writer adds to the
    stored ones. Memory holds only what has not been taken yet."""

    def __init__(self) -> None:
        self._pending: dict[RollupKey, Rollup] = {}

    def record(self, event_type: str, when: float, name: str, queue: str,
               runtime: float | None = None, wait: float | None = None) -> None:
        """Count one task event (other types are left out) that happened at ``when``, with the
        task's runtime or wait in seconds when this event tells it."""
        index = _COUNT_OF_EVENT.get(event_type)
        if index is None:
            return
        key = (int(when // MINUTE) * MINUTE, name, queue)
        rollup = self._pending.get(key)
        if rollup is None:
            rollup = self._pending[key] = Rollup()
        rollup.counts[index] += 1
        if runtime is not None:
            rollup.runtime.add(max(0.0, runtime))
        if wait is not None:
            rollup.wait.add(max(0.0, wait))

    def take(self) -> dict[RollupKey, Rollup]:
        """The rollups recorded since the last call; the recorder starts empty again."""
        taken, self._pending = self._pending, {}
        return taken
