"""Redis refusing commands for a while: the error replies of a reachable server that cannot take
a write (or any command) now, told apart from every other error reply, in one place.

Redis answers ``-READONLY`` after a failover made it a replica, ``-OOM`` at ``maxmemory`` under
``noeviction``, ``-MISCONF`` after a failed RDB save with ``stop-writes-on-bgsave-error``,
``-BUSY`` while a long script runs, ``-LOADING`` while it loads its dataset, ``-MASTERDOWN``
from a replica that lost its master: the connection stays up, so none of these is a kombu
connection error. The worker waits them out as it waits out a lost connection; the result
backend writes a refused result again (:func:`qtui.core.refused.wait_out`).
"""

from __future__ import annotations

import redis

#: Each transient refusal by its error code: what it refuses, and why.
TRANSIENT: dict[str, tuple[str, str]] = {
    "READONLY": ("writes", "the server is a read-only replica, as after a failover"),
    "OOM": ("writes", "maxmemory is reached and the eviction policy is noeviction"),
    "MISCONF": ("writes", "its last RDB save failed and stop-writes-on-bgsave-error is on"),
    "NOREPLICAS": ("writes", "fewer replicas than min-replicas-to-write are connected"),
    "BUSY": ("commands", "a script or function has run past busy-reply-threshold"),
    "LOADING": ("commands", "it is loading its dataset"),
    "MASTERDOWN": ("commands", "the replica lost its master"),
    "UNBLOCKED": ("commands", "the server changed role while a blocking wait was under way"),
}

#: redis-py's classes for codes whose prefix it strips from the message (before 6.0, which
#: keeps the code in ``status_code``).
_CLASSES: tuple[tuple[type[BaseException], str], ...] = (
    (redis.exceptions.ReadOnlyError, "READONLY"), (redis.exceptions.OutOfMemoryError, "OOM"),
    (redis.exceptions.BusyLoadingError, "LOADING"), (redis.exceptions.MasterDownError,
                                                      "MASTERDOWN"))
_PIPELINE = " of pipeline caused error: "


def refusal_code(exc: BaseException) -> str | None:
    """The error code of a transient refusal (``READONLY``, ``OOM``, ...), also where kombu
    raised it as the cause of its own error; None for anything else (a ``WRONGTYPE``, a script
    error, a lost connection)."""
    while not isinstance(exc, redis.RedisError):
        if exc.__cause__ is None:
            return None
        exc = exc.__cause__
    code = getattr(exc, "status_code", None)
    if code is None:
        code = next((name for cls, name in _CLASSES if isinstance(exc, cls)), None)
    if code is None and isinstance(exc, redis.ResponseError) and exc.args:
        text = str(exc.args[0])
        code = text.partition(_PIPELINE)[2].split(" ", 1)[0] if _PIPELINE in text \
            else text.split(" ", 1)[0]
    return code if code in TRANSIENT else None


def describe(exc: BaseException) -> str | None:
    """``Redis refused writes (READONLY: ...)`` for a transient refusal, None otherwise."""
    code = refusal_code(exc)
    if code is None:
        return None
    what, why = TRANSIENT[code]
    return f"Redis refused {what} ({code}: {why})"
