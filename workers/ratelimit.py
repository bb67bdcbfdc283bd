"""Rate limits per task type: a token bucket each, and a queue of jobs waiting for a token.

A job whose type has no token waits in its type's own queue while other types go on, and its
message stays unacknowledged (it is not lost if the worker dies); the worker widens its prefetch
window for waiting jobs so they never starve other task types of deliveries.
Rates: ``"10/s"``, ``"10/m"``, ``"10/h"`` or a number per second, from the task decorator,
``task_annotations`` or ``task_default_rate_limit``; the ``rate_limit`` remote-control command
overrides them at run time (:meth:`RateLimiter.set_rate`).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .hooks import Observer
from .job import WAITING, Job

if TYPE_CHECKING:
    from qtui.core.app import App

    from .timer import Entry, Timer

logger = logging.getLogger("qtui.worker")

_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*")
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_rate(value: Any) -> float | None:
    """Tokens per second; None (or 0) means no limit."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"rate limit {value!r} is not a number of tasks per second >= 0")
        return float(value) or None
    match = _RATE.fullmatch(str(value))
    if match is None:
        raise ValueError(f'rate limit {value!r} is not a rate such as "10/s", "10/m" or "10/h"')
    return float(match.group(1)) / _PER[match.group(2)] or None


class TokenBucket:
    """``fill_rate`` tokens per second, holding at most ``capacity``."""

    def __init__(self, fill_rate: float, capacity: float = 1.0) -> None:
        self.fill_rate = fill_rate
        self.capacity = capacity
        self._tokens = capacity
        self._stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.fill_rate)
        self._stamp = now

    def can_consume(self) -> bool:
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def expected_time(self) -> float:
        """Seconds until a token is there."""
        self._refill()
        return max(0.0, (1.0 - self._tokens) / self.fill_rate)


class RateLimiter(Observer):
    """Admits jobs at each task type's rate; ``release`` gets the jobs whose turn came. The
    worker's ``throttle_task`` gate."""

    def __init__(self, app: App, timer: Timer, release: Callable[[Job], None]) -> None:
        self.app = app
        self.timer = timer
        self.release = release
        self._buckets: dict[str, tuple[float, TokenBucket]] = {}
        self._waiting: dict[str, deque[Job]] = {}
        self._wakeups: dict[str, Entry] = {}
        self._overrides: dict[str, Any] = {}
        self._configured: dict[str, tuple[int, Any]] = {}
        """Each task type's own rate limit, with the configuration version it was read at."""
        self._invalid: set[str] = set()
        """Task types whose configured rate limit is not a rate (reported once)."""
        self._unlimited: dict[str, int] = {}
        """Task types found without a rate limit, with the configuration version then: their
        tasks pass without a look at the task, its rate or a bucket (one lookup a task)."""

    def rate_of(self, name: str) -> Any:
        """The rate limit in force for a task type, as it was given ("10/m", 5, None). The
        task's own is read again whenever the configuration changes, as the worker reads its
        other options (a lookup through annotations and config on every message otherwise)."""
        if name in self._overrides:
            return self._overrides[name]
        version = self.app.conf.version
        known = self._configured.get(name)
        if known is None or known[0] != version:
            task = self.app.tasks.get(name)
            rate = task.rate_limit if task else self.app.conf.task_default_rate_limit
            known = self._configured[name] = (version, rate)
        return known[1]

    def set_rate(self, name: str, rate: Any) -> None:
        """Use ``rate`` for this task type from now on (None or 0: no limit); jobs already
        waiting get their turn at the new rate."""
        parse_rate(rate)  # a bad rate raises before anything changes
        self._overrides[name] = rate
        self._unlimited.pop(name, None)
        wakeup = self._wakeups.pop(name, None)
        if wakeup is not None:
            wakeup.cancel()
        self._wake(name)

    def _bucket(self, name: str) -> TokenBucket | None:
        try:
            rate = parse_rate(self.rate_of(name))
        except (ValueError, TypeError) as exc:  # from the decorator or config, never checked
            if name not in self._invalid:
                self._invalid.add(name)
                logger.error("Task %s: %s; running it without a rate limit", name, exc)
            rate = None
        if rate is None:
            self._buckets.pop(name, None)
            return None
        known = self._buckets.get(name)
        if known is None or known[0] != rate:
            known = self._buckets[name] = (rate, TokenBucket(rate))
        return known[1]

    def admit(self, job: Job) -> bool:
        """True: run now. False: the job waits here and goes to ``release`` in its turn."""
        bucket = self._bucket(job.name)
        if bucket is None:
            self._unlimited[job.name] = self.app.conf.version
            return True
        waiting = self._waiting.setdefault(job.name, deque())
        if not waiting and bucket.can_consume():
            return True
        job.stage = WAITING
        waiting.append(job)
        self._schedule(job.name, bucket)
        return False

    def throttle_task(self, job: Job) -> bool:
        if self._unlimited.get(job.message.task) == self.app.conf.version:
            return False
        return not self.admit(job)

    def _schedule(self, name: str, bucket: TokenBucket) -> None:
        if name not in self._wakeups:
            self._wakeups[name] = self.timer.call_later(bucket.expected_time(),
                                                        lambda: self._wake(name))

    def _wake(self, name: str) -> None:
        self._wakeups.pop(name, None)
        waiting = self._waiting.get(name)
        bucket = self._bucket(name)
        while waiting and (bucket is None or bucket.can_consume()):
            self.release(waiting.popleft())
        if waiting and bucket is not None:
            self._schedule(name, bucket)

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    def jobs(self) -> list[Job]:
        """The jobs waiting for a token, oldest first per task type."""
        return [job for q in self._waiting.values() for job in q]

    def take_all(self) -> list[Job]:
        """Every waiting job, removed (for shutdown and connection loss)."""
        jobs = self.jobs()
        self._waiting.clear()
        for entry in self._wakeups.values():
            entry.cancel()
        self._wakeups.clear()
        return jobs
