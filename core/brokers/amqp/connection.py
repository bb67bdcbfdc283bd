"""RabbitMQ (AMQP) connections: publisher confirms on by default, and the broker's
``connection.blocked`` notices tracked, so a send under a memory or disk alarm fails within
``broker_publish_timeout`` with an error that says so instead of reporting a false success."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from kombu import Connection

AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")

#: What a send that failed under an alarm tells the user.
ALARM_HINT = ("RabbitMQ blocks publishers while a memory or disk alarm is on (connection.blocked); "
              "see `rabbitmqctl status` or the broker's log, free memory or disk, and send again")


class Blocked:
    """Whether the broker told one connection that it blocks its publishers."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def on_blocked(self, reason: str) -> None:
        self.reason = reason

    def on_unblocked(self) -> None:
        self.reason = None

    def on_open(self, _connection: Any) -> None:
        """A new connection (kombu reconnects with the same options) starts unblocked."""
        self.reason = None


def is_amqp(url: str) -> bool:
    return url.split("://", 1)[0].split("+", 1)[0] in AMQP_SCHEMES


def transport_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """py-amqp options for one connection: confirms unless ``options`` turn them off, and
    callbacks recording ``connection.blocked``/``unblocked`` (py-amqp calls them while it reads)."""
    blocked = Blocked()
    return {"confirm_publish": True, "on_blocked": blocked.on_blocked,
            "on_unblocked": blocked.on_unblocked, "on_open": blocked.on_open, **options}


def blocked_state(connection: Connection) -> Blocked | None:
    """The :class:`Blocked` record of a connection made with :func:`transport_options`."""
    callback = (connection.transport_options or {}).get("on_blocked")
    owner = getattr(callback, "__self__", None)
    return owner if isinstance(owner, Blocked) else None


def block_hint(connection: Connection) -> str:
    """:data:`ALARM_HINT` when the broker has blocked ``connection``, else nothing."""
    state = blocked_state(connection)
    return f"{ALARM_HINT}. " if state is not None and state.reason is not None else ""


def wait_unblocked(connection: Connection, timeout: float) -> str | None:
    """Wait up to ``timeout`` seconds for a blocked connection to be unblocked; return the block
    reason if it still holds (None: free to publish)."""
    state = blocked_state(connection)
    if state is None or state.reason is None:
        return None
    deadline = time.monotonic() + timeout
    while state.reason is not None and (remaining := deadline - time.monotonic()) > 0:
        try:
            connection.drain_events(timeout=remaining)
        except TimeoutError:  # nothing arrived in time: still blocked
            break
    return state.reason
