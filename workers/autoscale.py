"""``--autoscale MAX,MIN``: the pool grows toward MAX while more tasks are held (running or
reserved) than it has slots, and shrinks back toward MIN once it had more slots than tasks for
``KEEPALIVE`` seconds since it last grew -- Celery's Autoscaler, on the worker's timer."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from qtui.core.exceptions import ConfigError

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger("qtui.worker")

INTERVAL = 1.0
"""Seconds between two looks at the pool (Celery's)."""
KEEPALIVE = 30.0
"""Seconds after the last growth before the pool may shrink (Celery's default)."""


def parse(text: str) -> tuple[int, int]:
    """``"10,3"`` -> (10, 3); ``"10"`` -> (10, 0), as Celery reads ``--autoscale``."""
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError:
        numbers = []
    if not 1 <= len(numbers) <= 2 or numbers[0] < 1 or min(numbers) < 0:
        raise ConfigError(f"--autoscale {text!r}: expected MAX,MIN (for example 10,3) with "
                          "MAX at least 1")
    most, least = numbers[0], numbers[1] if len(numbers) == 2 else 0
    return max(most, least), min(most, least)


class Autoscaler:
    """Resizes ``worker``'s pool between ``least`` and ``most`` slots (never below one)."""

    def __init__(self, worker: Worker, most: int, least: int,
                 keepalive: float = KEEPALIVE) -> None:
        self.worker = worker
        self.most, self.least = most, least
        self.keepalive = keepalive
        self._grown_at = time.monotonic()

    def update(self, most: int | None, least: int | None) -> None:
        """New bounds (the ``autoscale`` control command); the next look applies them."""
        self.most = most if most is not None else self.most
        self.least = least if least is not None else self.least
        self.most, self.least = max(self.most, self.least), min(self.most, self.least)

    def tick(self) -> None:
        worker = self.worker
        if worker.stopping:
            return
        slots = worker.pool.concurrency
        held = len(worker.active) + len(worker.reserved)
        wanted = max(1, self.least, min(held, self.most))
        if wanted > slots:
            logger.info("Autoscale: %d task(s) held, growing the pool to %d", held, wanted)
            worker.resize_pool(wanted - slots)
            self._grown_at = time.monotonic()
        elif wanted < slots and time.monotonic() - self._grown_at >= self.keepalive:
            logger.info("Autoscale: %d task(s) held, shrinking the pool to %d", held, wanted)
            worker.resize_pool(wanted - slots)
