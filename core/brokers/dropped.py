"""The warning for messages a receiver drops because no kombu client could have sent them: one
line for the first, then at most one every :data:`INTERVAL` seconds for each logger and place,
counting those dropped unlogged meanwhile, so a flood of hostile messages does not flood the
log."""

from __future__ import annotations

import logging
import math
import time

#: Seconds between two warnings for one place.
INTERVAL = 10.0
#: Places remembered at most (event queues are named afresh by each receiver).
_PLACES = 1024

_last: dict[tuple[str, str], tuple[float, int]] = {}
"""By logger and place: when its last warning was logged, and how many were dropped unlogged
since."""


def warn_dropped(logger: logging.Logger, place: str, text: str) -> None:
    """Log ``text``, what became of a message of ``place`` (an exchange, a queue) and why,
    unless ``logger`` logged one for ``place`` within :data:`INTERVAL` seconds."""
    now = time.monotonic()
    key = (logger.name, place)
    logged_at, unlogged = _last.get(key, (-math.inf, 0))
    if now - logged_at < INTERVAL:
        _last[key] = (logged_at, unlogged + 1)
        return
    if len(_last) >= _PLACES:
        _last.clear()
    _last[key] = (now, 0)
    more = f" ({unlogged} more dropped since the last warning)" if unlogged else ""
    logger.warning("%s%s", text, more)
