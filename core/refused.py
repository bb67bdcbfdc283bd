"""Waiting out a refusal: one retry loop for a write that a broker or a result backend refuses
for a while (Redis's ``READONLY``, ``OOM``, ...: :mod:`qtui.core.brokers.redis.refusals`), used
by the result write and by the worker's canvas sends, so neither gives up at the first refusal.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: Pauses (seconds) between the tries of a refused write; the last one repeats.
PAUSES = (0.1, 0.2, 0.5, 1.0, 2.0)


def wait_out(action: Callable[[], T], refusal: Callable[[BaseException], str | None], *,
             warn: Callable[[str], None], max_retries: float = math.inf,
             stop: threading.Event | None = None) -> T:
    """``action()``, run again after a pause each time it raises an error that ``refusal``
    names, ``max_retries`` times at most and not once ``stop`` is set; ``warn`` gets the
    refusal at the first. Any other error, and the last refused one, propagate."""
    retries = 0
    while True:
        try:
            return action()
        except Exception as exc:
            refused = refusal(exc)
            if refused is None or retries >= max_retries or (stop is not None and stop.is_set()):
                raise
            if retries == 0:
                warn(refused)
            pause = PAUSES[min(retries, len(PAUSES) - 1)]
            if stop is None:
                time.sleep(pause)
            else:
                stop.wait(pause)
            retries += 1
