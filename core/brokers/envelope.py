"""kombu's virtual-transport envelope, built in one pass: what a Redis or SQLite broker stores for
each message.

kombu's ``Producer.publish`` serializes the body, wraps it in a dict, and the virtual ``Channel``
then base64-encodes the body, adds the delivery tag and routing, and serializes the whole dict
again; each step copies and rebuilds. :func:`encode` does the same steps, in kombu's order and
with kombu's own serializer, codec and JSON encoder, straight to the stored text, so kombu's and
Celery's consumers read what qtui stores as their own (a test compares the two byte for byte).
A channel that stores envelopes (:class:`EnvelopeChannel`: qtui's Redis and SQLite channels)
takes a batch of them in one round trip or one transaction. Most messages are not encoded at all
but filled into a :class:`Template`, the text :func:`encode` stores for their kind of message
with the values that change from send to send left open.
"""

from __future__ import annotations

import math
import operator
import re
import time
from binascii import a2b_base64, b2a_base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from json import JSONEncoder
from json.encoder import c_make_encoder  # type: ignore[attr-defined]
from json.encoder import encode_basestring_ascii as _json_string
from typing import TYPE_CHECKING, Any, Protocol

from kombu import compression
from kombu.exceptions import EncodeError
from kombu.serialization import _reraise_errors, registry
from kombu.serialization import dumps as serialize
from kombu.utils.json import dumps as json_dumps

from ..protocol import (
    DEAD_QUEUE_HEADER,
    DEAD_REASON_HEADER,
    PER_SEND,
    TaskMessage,
    build_open,
    call_body,
    dead_letter_queue_name,
    default_origin,
    json_body,
    json_loads,
    new_id,
    per_send,
    template_key,
)

if TYPE_CHECKING:
    from ..plans import Call

#: The ``delivery_mode`` of a persistent message, as qtui sends every task.
PERSISTENT = 2


#: kombu's JSON codec as kombu registers it (a program may register its own instead).
_KOMBU_JSON = registry._encoders.get("json")


def _json_encoder() -> Callable[[Any], str]:
    """``json.dumps``'s default encoding (the same text), with its C encoder made once rather
    than per call. Without circular-reference markers it keeps no state between calls (a
    circular value recurses until RecursionError instead)."""
    if c_make_encoder is not None:
        try:
            encoder = c_make_encoder(None, JSONEncoder().default, _json_string, None, ": ",
                                     ", ", False, False, True)
        except TypeError:  # an older C encoder's signature: the standard library's path
            pass
        else:
            join = "".join
            return lambda value: join(encoder(value, 0))
    return JSONEncoder(check_circular=False).encode


_plain_json = _json_encoder()


def plain_json() -> Callable[[Any], str] | None:
    """While kombu's JSON codec is the registered one, the writer of its text for values of
    JSON's own types (raising TypeError, ValueError or RecursionError for others, which
    :func:`_json` hands to kombu's encoder); else None."""
    return _plain_json if registry._encoders.get("json") == _KOMBU_JSON else None


def _json(value: Any) -> str:
    """kombu's JSON text of ``value``: the standard library's encoder when ``value`` holds
    only JSON's own types (the same text: kombu's encoder only adds types), else kombu's,
    which raises kombu's ``EncodeError`` for what it cannot encode either."""
    try:
        return _plain_json(value)
    except (TypeError, ValueError, RecursionError):
        with _reraise_errors(EncodeError):
            text: str = json_dumps(value)
        return text


@dataclass(slots=True)
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

    def compressed(self, content_type: str) -> Body:
        """This body compressed with kombu's registry, as ``Producer.publish`` compresses."""
        data, _ = compression.compress(self.data, content_type)
        return Body(self.content_type, self.content_encoding, data)

    @classmethod
    def json_of_call(cls, args: tuple[Any, ...], kwargs: dict[str, Any],
                     embed: Mapping[str, Any]) -> Body:
        """``serialize(call_body(args, kwargs, embed), "json")``, the body's text written by
        :func:`~qtui.core.protocol.json_body` while kombu's JSON codec is the registered one."""
        if registry._encoders.get("json") == _KOMBU_JSON:
            return cls("application/json", "utf-8", json_body(args, kwargs, embed, _json))
        return cls.serialize(call_body(args, kwargs, embed), "json")


@dataclass(slots=True)
class Envelope:
    """One message ready for a broker that stores kombu's envelope."""

    task_id: str
    exchange: str
    routing_key: str
    priority: int
    """The message's priority property (0 when unset), as kombu's channel reads it."""
    user_headers: Mapping[str, Any]
    """The message's headers beyond the protocol's (where a broker looks for its own)."""
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

    def put_envelopes(self, envelopes: Sequence[Envelope], deadline: float | None = None
                      ) -> None:
        """Store every envelope, all or none: one round trip, or one transaction. A channel
        that can bounds the wait for the broker's reply by ``deadline`` (``time.monotonic()``),
        raising TimeoutError past it, and raises :class:`ReplyLost` for a reply lost after
        the command went out."""
        ...


class ReplyLost(ConnectionError):
    """The broker's connection failed after a store command was sent, before its reply: the
    messages may or may not be stored."""


def encode(channel: EnvelopeChannel, task_id: str, body: Body, headers: dict[str, Any],
           properties: Mapping[str, Any], exchange: str, routing_key: str,
           user_headers: Mapping[str, Any]) -> Envelope:
    """The envelope kombu would store for ``Producer.publish(body, headers=headers,
    delivery_mode=2, **properties)`` to ``exchange`` with ``routing_key``."""
    encoded, body_encoding = channel.encode_body(body.data, channel.body_encoding)
    priority, envelope = _envelope(channel, encoded, body_encoding, body, headers, properties,
                                   exchange, routing_key, new_id())
    return Envelope(task_id, exchange, routing_key, priority, user_headers, _json(envelope))


def _envelope(channel: EnvelopeChannel, encoded: Any, body_encoding: str | None, body: Body,
              headers: dict[str, Any], properties: Mapping[str, Any], exchange: str,
              routing_key: str, delivery_tag: str) -> tuple[int, dict[str, Any]]:
    """The message priority and the envelope as kombu's channel builds it, in its key order."""
    priority = properties.get("priority") or channel.default_priority
    props = {key: value for key, value in properties.items()
             if key != "priority" and key != "expiration"}
    props["delivery_mode"] = PERSISTENT
    if "expiration" in properties:  # where kombu's publish puts it
        props["expiration"] = properties["expiration"]
    props["delivery_info"] = {"exchange": exchange, "routing_key": routing_key}
    props["priority"] = priority
    props["body_encoding"] = body_encoding
    props["delivery_tag"] = delivery_tag  # kombu's channel tags with a uuid4
    return priority, {"body": encoded, "content-encoding": body.content_encoding,
                      "content-type": body.content_type, "headers": headers,
                      "properties": props}


#: Stands for a value a template leaves open: no JSON text a message holds contains it.
_SLOT = "\x00qtui-slot:{}\x00"
#: What fills a template's slots, in :data:`PER_SEND` order, then the delivery tag and body.
_SLOTS = (*PER_SEND, "delivery_tag", "body")
#: Templates kept at most (kinds of message: a few per task in practice); past it they are
#: cut again as they are used.
_TEMPLATE_SIZE = 1024
#: Templates a send plan keeps (its calls' priorities and routes: one or a few in practice).
_PLAN_TEMPLATES = 64


def publish_time() -> str:
    """The JSON text of the time now, a message's ``x-qtui-sent-at``: written once for the
    messages of a batch (stored by one command or transaction, the same moment), as the
    float's repr is the dearest value of a message to write."""
    return repr(time.time())


@dataclass(frozen=True, slots=True)
class Template:
    """The stored text of one kind of message (one task, route and set of options) with the
    values that differ between sends (:data:`~qtui.core.protocol.PER_SEND`, the delivery tag,
    the body) left open: a send fills them in, and the headers and properties are neither
    built nor serialized again. The text is cut from what :func:`encode` stores, so the two
    are the same byte for byte (a test holds them to it)."""

    pieces: tuple[str, ...]
    """The stored text cut at its slots: one piece more than the slots."""
    assemble: Callable[[Sequence[str]], tuple[str, ...]]
    """The stored text's pieces and slot values in the order of the text, taken from the slot
    values (in :data:`_SLOTS` order) followed by :attr:`pieces`, to be joined."""
    exchange: str
    routing_key: str
    priority: int

    @classmethod
    def of(cls, channel: EnvelopeChannel, message: TaskMessage, body: Body, exchange: str,
           routing_key: str) -> Template | None:
        """The template for ``message`` with a body like ``body`` on ``channel`` (made once,
        then kept), or None when ``message`` carries what only :func:`encode` covers (see
        :func:`~qtui.core.protocol.template_key`) or the channel's body encoding is not
        kombu's default."""
        key = template_key(message)
        if key is None or channel.body_encoding != "base64":
            return None
        key = (*key, body.content_type, body.content_encoding, exchange, routing_key,
               channel.default_priority)
        template = _templates.get(key)
        if template is None:
            if len(_templates) >= _TEMPLATE_SIZE:
                _templates.clear()
            template = _templates[key] = cls._cut(channel, message, body, exchange,
                                                  routing_key)
        return template

    @classmethod
    def of_call(cls, channel: EnvelopeChannel, call: Call, body: Body, exchange: str,
                routing_key: str) -> Template | None:
        """:meth:`of` for the message of ``call``, kept on its send plan: a call's message
        differs from the plan's prototype only in what a template leaves open, its priority
        and its origin, so a call finds its template without its message being built."""
        key = (call.priority, exchange, routing_key, body.content_type, body.content_encoding,
               channel.body_encoding, channel.default_priority, default_origin())
        kept = call.plan.templates
        try:
            return kept[key]
        except KeyError:
            pass
        if len(kept) >= _PLAN_TEMPLATES:
            kept.clear()
        template = kept[key] = cls.of(channel, call.message(), body, exchange, routing_key)
        return template

    @classmethod
    def _cut(cls, channel: EnvelopeChannel, message: TaskMessage, body: Body, exchange: str,
             routing_key: str) -> Template:
        wire = build_open(message, _SLOT.format)
        priority, envelope = _envelope(channel, _SLOT.format("body"), "base64", body,
                                       wire.headers, wire.properties, exchange, routing_key,
                                       _SLOT.format("delivery_tag"))
        text = _json(envelope)
        marks = {_plain_json(_SLOT.format(name)): index for index, name in enumerate(_SLOTS)}
        cut = re.split("(" + "|".join(map(re.escape, marks)) + ")", text)
        pieces = tuple(cut[0::2])
        if any("qtui-slot:" in piece for piece in pieces):
            raise AssertionError(f"a message template kept a slot: {text}")
        first = len(_SLOTS)  # where the pieces follow the slot values
        order = [first]
        for at, mark in enumerate(cut[1::2], start=1):
            order += (marks[mark], first + at)
        return cls(pieces, operator.itemgetter(*order), exchange, routing_key, priority)

    def fill(self, message: TaskMessage | Call, body: Body, user_headers: Mapping[str, Any],
             sent_at: str) -> Envelope:
        """The envelope of ``message`` (or of a call whose message is not built) with its
        body serialized already (as the one this template was made for), published at
        ``sent_at`` (:func:`publish_time`)."""
        values = [_json_string(value) if type(value) is str
                  else "null" if value is None else repr(value) if type(value) is int
                  else _json_number(value)
                  for value in per_send(message)]
        data = body.data
        # kombu's base64 codec (the channel's, as Template.of checked), without its lookups
        encoded = b2a_base64(data.encode() if isinstance(data, str) else data, newline=False)
        # the delivery tag: hex digits and dashes, nothing to escape
        values += (sent_at, f'"{new_id()}"', f'"{encoded.decode()}"', *self.pieces)
        return Envelope(message.id, self.exchange, self.routing_key, self.priority,
                        user_headers, "".join(self.assemble(values)))


def _json_number(value: Any) -> str:
    """The JSON text of a header value that is neither a string nor None (a number, mostly)."""
    kind = type(value)
    if kind is int or (kind is float and math.isfinite(value)):
        return repr(value)
    return _json(value)


_templates: dict[tuple[Any, ...], Template] = {}
"""Templates by everything their text depends on (a message's :func:`template_key`, its
route, the channel's default priority): a change to a task's options or route reaches the
next send by making a new key, with nothing to invalidate."""


class NotAnEnvelope(ValueError):
    """Stored or published text that no kombu client wrote: not kombu's envelope."""


def read_envelope(text: bytes | str) -> tuple[dict[str, Any], bytes | None]:
    """The envelope ``text`` holds and its body decoded, checked by :func:`check_envelope`.
    Raises :class:`NotAnEnvelope` saying what is wrong."""
    try:
        envelope = json_loads(text)
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, too deep, a bad typed value
        raise NotAnEnvelope(f"not JSON Python can read: {exc}") from None
    return envelope, check_envelope(envelope)


def check_envelope(envelope: Any, fetched: bool = False) -> bytes | None:
    """The body of the decoded ``envelope`` decoded (None for a body kombu does not decode),
    once ``envelope`` is checked to be what kombu's virtual ``Message`` is built from: built
    from anything else, it raises past every ``except`` of kombu's receive loop (a TypeError
    for a body that is no string, an AttributeError for headers that are no object or an
    unknown body encoding), and the loop ends. Raises :class:`NotAnEnvelope` saying what is
    wrong.

    ``fetched``: a task message the Redis worker's fetch took, held to the fetch script's
    rules too (a delivery tag string, a body string, headers absent or an object); the reasons
    are the script's."""
    if not isinstance(envelope, dict):
        raise NotAnEnvelope("not a JSON object")
    properties = envelope.get("properties")
    if not isinstance(properties, dict):
        raise NotAnEnvelope("no 'properties' object")
    tag = properties.get("delivery_tag")
    if fetched and not isinstance(tag, str):  # the key of its records: 7 and "7" would share one
        raise NotAnEnvelope("no 'properties.delivery_tag' string")
    if not isinstance(tag, (str, int)) or isinstance(tag, bool):  # kombu takes either
        raise NotAnEnvelope("'properties.delivery_tag' is neither a string nor an integer")
    if properties.get("delivery_info") and not isinstance(properties["delivery_info"], dict):
        raise NotAnEnvelope("'properties.delivery_info' is not an object")
    headers = envelope.get("headers")  # kombu takes any false value for none; the script
    # takes none (JSON null is no object to it, and kombu cannot restore such a message)
    if ("headers" in envelope if fetched else headers) and not isinstance(headers, dict):
        raise NotAnEnvelope("'headers' is not an object")
    for name in ("content-type", "content-encoding"):
        if not isinstance(envelope.get(name), (str, type(None))):
            raise NotAnEnvelope(f"'{name}' is not a string")
    body = envelope.get("body")
    if not isinstance(body, str) and (fetched or body):
        raise NotAnEnvelope("no 'body' string")
    encoding = properties.get("body_encoding")
    if not (body and encoding):
        return None
    if encoding != "base64":  # the only codec of kombu's virtual channels
        raise NotAnEnvelope(f"unknown 'properties.body_encoding' {encoding!r}")
    try:
        return a2b_base64(body.encode())  # as kombu's codec reads it, lenient
    except ValueError:  # binascii.Error, or a lone surrogate
        raise NotAnEnvelope("'body' is not base64") from None


class ReadsEnvelopes:
    """A kombu virtual channel that reads what it receives with :func:`read_envelope` (or
    checks it with :func:`check_envelope`) and hands kombu's ``Message``, built right after,
    the body decoded there: it is not decoded twice."""

    _decoded: tuple[str, bytes] | None = None
    """The last body :meth:`keep_decoded` kept: its text and its bytes."""

    def read_envelope(self, text: bytes | str) -> dict[str, Any]:
        envelope, decoded = read_envelope(text)
        self.keep_decoded(envelope, decoded)
        return envelope

    def keep_decoded(self, envelope: Mapping[str, Any], decoded: bytes | None) -> None:
        """Give kombu's next decode of ``envelope``'s body ``decoded`` (what
        :func:`check_envelope` returned for it)."""
        self._decoded = None if decoded is None else (envelope["body"], decoded)

    def decode_body(self, body: Any, encoding: str | None = None) -> Any:
        """kombu's decode of a message body, given back as decoded already for the body
        :meth:`keep_decoded` kept last (the very same text)."""
        decoded = self._decoded
        if decoded is not None and decoded[0] is body:
            self._decoded = None
            return decoded[1]
        return super().decode_body(body, encoding)  # type: ignore[misc]


def dead_letter_wrapping(item: bytes | str, queue: str, reason: str, tag: str) -> dict[str, Any]:
    """The envelope that carries what a broker took from ``queue`` but cannot deliver (not a
    kombu message) to its dead-letter queue: ``item`` kept whole as a binary body, with the
    reason, as the Redis fetch script wraps it; ``tag`` is the new delivery tag."""
    raw = item.encode() if isinstance(item, str) else item
    return {"body": b2a_base64(raw, newline=False).decode(), "content-encoding": "binary",
            "content-type": "application/octet-stream",
            "headers": {DEAD_REASON_HEADER: reason, DEAD_QUEUE_HEADER: queue},
            "properties": {"body_encoding": "base64", "delivery_mode": 2, "priority": 0,
                           "delivery_tag": tag,
                           "delivery_info": {"exchange": "",
                                             "routing_key": dead_letter_queue_name(queue)}}}
