"""kombu's virtual-transport envelope, built in one pass: what a Redis or SQLite broker stores for
each message.

kombu's ``Producer.publish`` serializes the body, wraps it in a dict, and the virtual ``Channel``
then base64-encodes the body, adds the delivery tag and routing, and serializes the whole dict
again; each step copies and rebuilds. :func:`encode` does the same steps, in kombu's order and
with kombu's own serializer, codec and JSON encoder, straight to the stored text, so kombu's and
Celery's consumers read what qtui stores as their own (a test compares the two byte for byte).
A channel that stores envelopes (:class:`EnvelopeChannel`: qtui's Redis and SQLite channels)
takes a batch of them in one round trip or one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from json import JSONEncoder
from typing import Any, Protocol

from kombu.exceptions import EncodeError
from kombu.serialization import _reraise_errors, registry
from kombu.serialization import dumps as serialize
from kombu.utils.json import dumps as json_dumps

from ..protocol import new_id

#: The ``delivery_mode`` of a persistent message, as qtui sends every task.
PERSISTENT = 2


#: kombu's JSON codec as kombu registers it (a program may register its own instead).
_KOMBU_JSON = registry._encoders.get("json")
#: ``json.dumps``'s own default encoder, without its per-call argument checks.
_plain_json = JSONEncoder().encode


def _json(value: Any) -> str:
    """kombu's JSON text of ``value``: the standard library's shared encoder when ``value``
    holds only JSON's own types (the same text: kombu's encoder only adds types), else
    kombu's, which raises kombu's ``EncodeError`` for what it cannot encode either."""
    try:
        return _plain_json(value)
    except (TypeError, ValueError):
        with _reraise_errors(EncodeError):
            text: str = json_dumps(value)
        return text


@dataclass(frozen=True, slots=True)
class Body:
    """A message body serialized once, as kombu's serializer registry returns it."""

    content_type: str
    content_encoding: str
    data: bytes | str

    @classmethod
    def serialize(cls, body: Any, serializer: str) -> Body:
        """Raises kombu's ``EncodeError`` when ``body`` cannot be serialized, as ``publish``
        does."""
        if serializer == "json" and registry._encoders.get("json") == _KOMBU_JSON:
            return cls("application/json", "utf-8", _json(body))
        return cls(*serialize(body, serializer=serializer))


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message ready for a broker that stores kombu's envelope."""

    task_id: str
    exchange: str
    routing_key: str
    priority: int
    """The message's priority property (0 when unset), as kombu's channel reads it."""
    headers: Mapping[str, Any]
    payload: str
    """The stored text: the JSON envelope with the body base64-encoded."""


class EnvelopeChannel(Protocol):
    """A kombu channel that stores envelopes built by :func:`encode` (qtui's Redis and SQLite
    channels)."""

    body_encoding: str
    default_priority: int

    def encode_body(self, body: Any, encoding: str | None = None) -> tuple[Any, str | None]: ...

    def accepts_envelopes(self, exchange: str, routing_key: str) -> bool:
        """Whether :meth:`put_envelopes` routes a message for ``exchange`` and ``routing_key``
        exactly as kombu's ``basic_publish`` would (otherwise the caller goes through kombu)."""
        ...

    def put_envelopes(self, envelopes: Sequence[Envelope]) -> None:
        """Store every envelope, all or none: one round trip, or one transaction."""
        ...


def encode(channel: EnvelopeChannel, task_id: str, body: Body, headers: dict[str, Any],
           properties: Mapping[str, Any], exchange: str, routing_key: str) -> Envelope:
    """The envelope kombu would store for ``Producer.publish(body, headers=headers,
    delivery_mode=2, **properties)`` to ``exchange`` with ``routing_key``."""
    priority = properties.get("priority") or channel.default_priority
    encoded, body_encoding = channel.encode_body(body.data, channel.body_encoding)
    props = {key: value for key, value in properties.items() if key != "priority"}
    props["delivery_mode"] = PERSISTENT
    props["delivery_info"] = {"exchange": exchange, "routing_key": routing_key}
    props["priority"] = priority
    props["body_encoding"] = body_encoding
    props["delivery_tag"] = new_id()  # what kombu's channel tags with: a uuid4
    payload = _json({"body": encoded, "content-encoding": body.content_encoding,
                          "content-type": body.content_type, "headers": headers,
                          "properties": props})
    return Envelope(task_id, exchange, routing_key, priority, headers, payload)
