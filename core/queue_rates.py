"""Tasks into and out of each queue per second, counted from the event stream.

In: ``task-sent`` events, which name the queue (qtui's client and Celery's send them when
``task_send_sent_event`` is on). A queue no ``task-sent`` has named since listening began has
an unknown in-rate: its clients may not send them.
Out: ``task-received`` events. qtui's worker names the queue it took the task from (exact);
Celery's does not, so its tasks count under the queue their ``task-sent`` named (inferred). A
worker's receptions that neither places make the out-rate of every queue it consumes unknown.
Both are counted per whole second of arrival (this machine's clock) over the last
:data:`WINDOW` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

#: Seconds the rates are counted over.
WINDOW = 15
#: Queues (and workers) counted; past it, new ones are not, and read as unknown.
MAX_KEYS = 1_000


@dataclass(frozen=True)
class Rate:
    """Tasks per second. ``exact``: every task counted named the queue itself; False: some
    were placed by their ``task-sent`` event (inferred)."""

    per_second: float
    exact: bool


class _Window:
    """Events per whole second over the last ``slots`` seconds: a ring of counts, each slot
    tagged with the second it holds."""

    __slots__ = ("counts", "seconds")

    def __init__(self, slots: int) -> None:
        self.counts = [0] * slots
        self.seconds = [-1] * slots

    def add(self, at: float) -> None:
        second = int(at)
        slot = second % len(self.counts)
        if self.seconds[slot] != second:
            self.seconds[slot], self.counts[slot] = second, 0
        self.counts[slot] += 1

    def total(self, now: float) -> int:
        last = int(now)
        first = last - len(self.counts) + 1
        return sum(count for count, second in zip(self.counts, self.seconds, strict=True)
                   if first <= second <= last)


class QueueRates:
    """In and out of each queue, fed by :class:`~qtui.core.state.State` as it merges events
    (so a Celery worker's task-received finds the queue of the task's task-sent)."""

    def __init__(self, window: int = WINDOW, max_keys: int = MAX_KEYS,
                 since: float | None = None) -> None:
        self.window = window
        self.max_keys = max_keys
        self.since = time.time() if since is None else since
        """When counting began: a younger window is divided by the time it covers."""
        self._sent: dict[str, _Window] = {}
        self._taken: dict[str, _Window] = {}
        """Receptions whose event named the queue."""
        self._placed: dict[str, _Window] = {}
        """Receptions placed by the task's task-sent."""
        self._unplaced: dict[str, _Window] = {}
        """Receptions no event placed, by worker."""
        self.full = False
        """Whether a key was left uncounted for the bound: unseen queues are then unknown."""

    def sent(self, queue: str, at: float) -> None:
        self._add(self._sent, queue, at)

    def received(self, hostname: str, at: float, queue: str | None, exact: bool) -> None:
        """A worker received a task: from ``queue`` as its event said (``exact``) or as its
        task-sent said; None: nothing said."""
        if queue is None:
            self._add(self._unplaced, hostname, at)
        else:
            self._add(self._taken if exact else self._placed, queue, at)

    def inflow(self, queue: str, now: float) -> Rate | None:
        """Tasks sent to ``queue`` per second; None when no task-sent named it."""
        window = self._sent.get(queue)
        return None if window is None else Rate(window.total(now) / self._span(now), True)

    def outflow(self, queue: str, consumers: Iterable[str], now: float) -> Rate | None:
        """Tasks taken from ``queue`` per second by its ``consumers`` (worker hostnames); None
        when one of them received tasks no event placed."""
        if any(self._total(self._unplaced, host, now) for host in consumers):
            return None
        if self.full and queue not in self._taken and queue not in self._placed:
            return None
        placed = self._total(self._placed, queue, now)
        taken = self._total(self._taken, queue, now) + placed
        return Rate(taken / self._span(now), exact=placed == 0)

    def _add(self, table: dict[str, _Window], key: str, at: float) -> None:
        window = table.get(key)
        if window is None:
            if len(table) >= self.max_keys:
                self.full = True
                return
            window = table[key] = _Window(self.window)
        window.add(at)

    @staticmethod
    def _total(table: dict[str, _Window], key: str, now: float) -> int:
        window = table.get(key)
        return 0 if window is None else window.total(now)

    def _span(self, now: float) -> float:
        """Seconds the counts cover: the window, or the time since counting began if
        shorter; at least one."""
        return max(1.0, min(float(self.window), now - self.since))
