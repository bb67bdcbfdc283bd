"""A worker's life on Redis, vouched for by a helper process the worker's GIL cannot starve.

A task that holds the GIL (a long C call, a tight loop in an extension) stops every thread of
its worker, so a lease renewed by a thread lapses while the worker still runs the task, and
another worker starts it again. The helper is a tiny process of its own: while its parent lives
it refreshes the owner's ``alive`` key (TTL: the visibility timeout) and re-stamps the owner's
deliveries in kombu's ``unacked_index`` (so Celery workers sharing the database, which restore
by age, leave them alone). When the parent dies (or closes the helper's stdin on shutdown) it
deletes the ``alive`` key at once, so other workers give the deliveries back without waiting
for the TTL; if the helper dies with its parent, the TTL does it.

Run as ``python -m qtui.workers.liveness OWNER TTL PARENT_PID``; the broker URL arrives on
stdin (never in argv, which every user of the machine can read).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import redis

# An owner's (a worker's) keys on Redis: here, so that the helper imports nothing but redis-py.
OWNERS_KEY = "qtui.owners"
"""Every live or not yet restored owner, by id."""
ALIVE_KEY = "qtui.alive.{owner}"
"""Exists while the owner lives (a key with a TTL its liveness helper refreshes)."""
OWNED_KEY = "qtui.owned.{owner}"
"""The delivery tags the owner holds (also in kombu's ``unacked``)."""
PROCESSING_KEY = "qtui.processing.{owner}/{queue}"
"""Where the owner's idle wait moves a message of ``queue`` before it is recorded."""
PROCESSING_QUEUES_KEY = "qtui.processing.{owner}"
"""The queues the owner has a processing list for."""

#: How often the helper checks that its parent lives (seconds).
PARENT_CHECK = 0.2

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

    def __init__(self, url: str, owner: str, ttl: float, unacked_index_key: str) -> None:
        self.url, self.owner, self.ttl = url, owner, ttl
        self.unacked_index_key = unacked_index_key
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "qtui.workers.liveness", self.owner, str(self.ttl),
             str(os.getpid()), self.unacked_index_key], stdin=subprocess.PIPE)
        assert self._process.stdin is not None
        self._process.stdin.write(self.url.encode() + b"\n")
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


def run(url: str, owner: str, ttl: float, parent: int, unacked_index_key: str) -> None:
    client = redis.Redis.from_url(url)
    refresh = client.register_script(_REFRESH)
    alive = ALIVE_KEY.format(owner=owner)
    keys = [alive, OWNED_KEY.format(owner=owner), OWNERS_KEY, unacked_index_key]
    interval = max(0.1, min(ttl / 4, 5.0))
    next_refresh = 0.0
    while os.getppid() == parent:
        if time.monotonic() >= next_refresh:
            try:
                refresh(keys=keys, args=[int(ttl * 1000), time.time(), owner])
                next_refresh = time.monotonic() + interval
            except redis.RedisError:  # Redis is down: the worker reconnects, so do we
                next_refresh = time.monotonic() + PARENT_CHECK
        readable, _, _ = select.select([sys.stdin], [], [], PARENT_CHECK)
        if readable and not os.read(sys.stdin.fileno(), 1):
            break  # stdin closed: the worker is shutting down
    try:
        client.delete(alive)
    except redis.RedisError:  # the TTL does it then
        pass


def main() -> None:
    # Ctrl-C and the worker's SIGTERM reach the whole process group; the helper must outlive a
    # warm shutdown's running tasks, and ends when its parent does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    owner, ttl, parent, unacked_index_key = sys.argv[1:5]
    url = sys.stdin.buffer.readline().decode().strip()
    run(url, owner, float(ttl), int(parent), unacked_index_key)


if __name__ == "__main__":
    main()
