"""A worker's life on Redis, vouched for by a helper process the worker's GIL cannot starve.

A task that holds the GIL (a long C call, a tight loop in an extension) stops every thread of
its worker, so a lease renewed by a thread lapses while the worker still runs the task, and
another worker starts it again. The helper is a tiny process of its own: while its parent lives
it refreshes the owner's ``alive`` key (TTL: the visibility timeout) and re-stamps the owner's
deliveries in kombu's ``unacked_index`` (so Celery workers sharing the database, which restore
by age, leave them alone). When the parent dies (or closes the helper's stdin on shutdown) it
deletes the ``alive`` key at once, so other workers give the deliveries back without waiting
for the TTL; if the helper dies with its parent, the TTL does it.

Run as ``python -m qtui.workers.liveness OWNER TTL PARENT_PID ALIVE_KEY OWNED_KEY OWNERS_KEY
UNACKED_INDEX_KEY`` (the owner's keys, which the worker's Redis channel names:
:meth:`qtui.core.brokers.redis.worker_channel.Channel.liveness_keys`, so that the helper imports
nothing but redis-py); the broker URL arrives on stdin (never in argv, which every user of the
machine can read), followed by the master's name for a ``sentinel://`` URL.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

#: How often the helper checks that its parent lives (seconds).
PARENT_CHECK = 0.2
#: How often, at most, the helper repeats that it cannot refresh the alive key (seconds).
WARN_EVERY = 60.0

_REFRESH = """
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
redis.call('SADD', KEYS[3], ARGV[3])
for _, tag in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  redis.call('ZADD', KEYS[4], 'XX', ARGV[2], tag)
end
return 1
"""


class Liveness:
    """The helper process of one owner (a worker), started and stopped by its consumer."""

    def __init__(self, url: str, owner: str, ttl: float, keys: Sequence[str],
                 master_name: str = "") -> None:
        """``keys``: the owner's alive key, its owned set, the set of owners and kombu's
        ``unacked_index``, in that order. ``master_name``: for a ``sentinel://`` URL, the
        master the sentinels name."""
        self.url, self.owner, self.ttl, self.master_name = url, owner, ttl, master_name
        self.keys = list(keys)
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "qtui.workers.liveness", self.owner, str(self.ttl),
             str(os.getpid()), *self.keys], stdin=subprocess.PIPE)
        assert self._process.stdin is not None
        self._process.stdin.write(f"{self.url}\n".encode())
        if _is_sentinel(self.url):
            self._process.stdin.write(f"{self.master_name}\n".encode())
        self._process.stdin.flush()

    def stop(self) -> None:
        """End the helper: it deletes the ``alive`` key, so what is still owned comes back."""
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run(url: str, owner: str, ttl: float, parent: int, keys: list[str],
        master_name: str = "") -> None:
    import redis  # the helper's: a worker imports this module for Liveness, on any broker

    client = _client(url, master_name)
    refresh = client.register_script(_REFRESH)
    alive = keys[0]
    interval = max(0.1, min(ttl / 4, 5.0))
    next_refresh = 0.0
    next_warning: float | None = None  # while refreshes fail: when to say so again
    while os.getppid() == parent:
        if time.monotonic() >= next_refresh:
            try:
                refresh(keys=keys, args=[int(ttl * 1000), time.time(), owner])
                next_refresh = time.monotonic() + interval
                if next_warning is not None:
                    _warn(f"refreshing {alive} again")
                next_warning = None
            except redis.RedisError as exc:  # Redis is down: the worker reconnects, so do we
                next_refresh = time.monotonic() + PARENT_CHECK
                if next_warning is None or time.monotonic() >= next_warning:
                    _warn(f"cannot refresh {alive} ({type(exc).__name__}: {exc}); while this "
                          f"lasts, other workers may run this worker's tasks again")
                    next_warning = time.monotonic() + WARN_EVERY
        readable, _, _ = select.select([sys.stdin], [], [], PARENT_CHECK)
        if readable and not os.read(sys.stdin.fileno(), 1):
            break  # stdin closed: the worker is shutting down
    try:
        client.delete(alive)
    except redis.RedisError:  # the TTL does it then
        pass


def _client(url: str, master_name: str) -> Any:
    """A redis-py client of ``url``; of a ``sentinel://`` URL (``;`` between sentinels), a
    client of the master the sentinels name, which follows a failover as the worker does."""
    import redis
    from redis.sentinel import Sentinel

    if not _is_sentinel(url):
        return redis.Redis.from_url(url)
    entries = [urllib.parse.urlsplit(entry.strip()) for entry in url.split(";") if entry.strip()]
    first = entries[0]
    sentinels = [(entry.hostname or "localhost", entry.port or 26379) for entry in entries]
    db = int(first.path.strip("/") or 0)
    return Sentinel(sentinels).master_for(master_name, username=first.username or None,
                                          password=first.password or None, db=db)


def _is_sentinel(url: str) -> bool:
    """Whether ``url`` names sentinels, whose master's name follows it on the helper's stdin."""
    return url.strip().lower().startswith("sentinel://")


def _warn(message: str) -> None:
    """One line on the worker's stderr (the helper has no logging set up: it imports little)."""
    print(f"qtui liveness helper: WARNING: {message}", file=sys.stderr, flush=True)


def main() -> None:
    # Ctrl-C, the worker's SIGTERM and a closed terminal's SIGHUP reach the whole process group;
    # the helper must outlive a warm shutdown's running tasks, and ends when its parent does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    owner, ttl, parent, *keys = sys.argv[1:]
    url = sys.stdin.buffer.readline().decode().strip()
    master_name = sys.stdin.buffer.readline().decode().strip() if _is_sentinel(url) else ""
    run(url, owner, float(ttl), int(parent), keys, master_name)


if __name__ == "__main__":
    main()
