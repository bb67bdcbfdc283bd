"""Keeping what the worker holds, and giving back what a dead worker held.

On Redis the worker owns each delivery from the moment it leaves its queue (its own ``owned``
set beside kombu's ``unacked`` records) and a helper process vouches for the worker's life
(:mod:`qtui.core.brokers.redis.worker_channel`, :mod:`qtui.workers.liveness`): a worker gives
back only what dead owners held, never another client's deliveries by their age, and a task
that holds the GIL cannot make its worker look dead. The visibility timeout (qtui's default
60 s) is the TTL of a worker's life when its helper dies with it; a worker that dies alone is
seen at once. The main loop runs that restore regularly (kombu only does it when a connection
idles).

The embedded SQLite broker finds dead holders itself (by pid, on the same host), so its
visibility timeout stays long (3600 s by default); a lease thread renews what the worker
holds there and what its channel claimed and has not delivered yet (a solo worker's fetch is
read after the task it rode with), so neither a task that runs longer than the timeout, nor an
ETA held in memory, nor a message claimed ahead is delivered twice, whatever the timeout is
set to.

Which broker does what is its family's answer (:mod:`qtui.core.brokers.family`): delivery tags
that outlive the connection (Redis, SQLite) are settled through the next one with the
channel's ``settle``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger("qtui.worker")


class Leases:
    """Renews the visibility lease of the messages ``held()`` returns, from its own thread
    (the embedded SQLite broker), and restores what dead holders held (every broker)."""

    def __init__(self, channel: Any, held: Callable[[], Iterable[str]]) -> None:
        self.channel = channel
        self.held = held
        self.interval = max(0.5, float(channel.visibility_timeout) / 4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qtui-lease-renewal", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.renew()
            except Exception as exc:  # the broker may be down: the main loop reconnects
                logger.debug("lease renewal failed: %s", exc)

    def renew(self) -> None:
        """Renew what the worker holds, and what the channel claimed for it and has not
        delivered yet (called even when the worker holds nothing)."""
        self.channel.renew(list(self.held()))

    def restore_expired(self) -> None:
        """Put back the messages of dead holders (Redis: dead owners only, see
        :meth:`~qtui.core.brokers.redis.worker_channel.QoS.restore_visible`). The SQLite
        transport does this itself whenever it claims."""
        restore = getattr(self.channel.qos, "restore_visible", None)
        if restore is not None:
            restore(num=1000, interval=1)


def settle(channel: Any, tags: Iterable[str], requeue: bool) -> None:
    """Ack (or requeue) deliveries made on a connection that was lost since, on a broker whose
    family keeps deliveries across connections (its channel's ``settle``)."""
    channel.settle(list(tags), requeue)
