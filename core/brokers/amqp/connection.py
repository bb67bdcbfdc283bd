"""RabbitMQ (AMQP) connections: publisher confirms on by default, and the broker's
``connection.blocked`` notices tracked, so a send under a memory or disk alarm fails within
``broker_publish_timeout`` with an error that says so instead of reporting a false success.
A batch is published with one wait for its confirms (:func:`publish_confirmed`)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from amqp import spec
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


@dataclass(frozen=True, slots=True)
class Publication:
    """One message of a batch, its body serialized already."""

    exchange: str
    routing_key: str
    body: bytes | str
    content_type: str
    content_encoding: str
    headers: Mapping[str, Any]
    priority: int | None
    properties: Mapping[str, Any]
    """The other message properties (delivery_mode, correlation_id, reply_to)."""


def confirms(connection: Connection) -> bool:
    """Whether ``connection`` (open) has publisher confirms on (:func:`transport_options`)."""
    return bool(getattr(connection.connection, "confirm_publish", False))


def publish_confirmed(connection: Connection, batch: Sequence[Publication], timeout: float,
                      confirmed: dict[int, bool] | None = None) -> list[int]:
    """Publish every message of ``batch``, then wait once for the broker to confirm them all;
    returns the positions of the messages it refused (nacked). A channel of its own numbers
    the confirms from 1, which is how each confirm is matched to its message. Raises
    ``TimeoutError`` when the confirms take longer than ``timeout`` seconds (the broker may
    still take the unconfirmed ones). ``confirmed`` (position -> acked, else nacked) is filled
    as confirms arrive: after a failure it tells which messages the broker has."""
    channel = connection.channel()
    if confirmed is None:
        confirmed = {}
    try:
        floor = [1]  # the first tag no ``multiple`` confirm has covered

        def confirm(tag: int, multiple: bool, acked: bool) -> None:
            if multiple:  # every tag up to this one not confirmed yet
                for earlier in range(floor[0], tag + 1):
                    confirmed.setdefault(earlier - 1, acked)
                floor[0] = max(floor[0], tag + 1)
            else:
                confirmed.setdefault(tag - 1, acked)

        channel.events["basic_ack"].add(lambda tag, multiple: confirm(tag, multiple, True))
        channel.events["basic_nack"].add(lambda tag, multiple: confirm(tag, multiple, False))
        channel.confirm_select()
        for item in batch:
            channel._basic_publish(
                channel.prepare_message(item.body, item.priority,
                                        item.content_type, item.content_encoding,
                                        dict(item.headers), dict(item.properties)),
                exchange=item.exchange, routing_key=item.routing_key)
        deadline = time.monotonic() + timeout
        while len(confirmed) < len(batch):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(batch) - len(confirmed)} of {len(batch)} messages "
                                   f"not confirmed within {timeout:g}s")
            channel.wait([spec.Basic.Ack, spec.Basic.Nack], timeout=remaining)
        return sorted(position for position, acked in confirmed.items() if not acked)
    finally:
        channel.close()
