"""Celery's task message protocol v2: the one place that builds and parses task messages.

Everything else in qtui handles :class:`TaskMessage`; raw header dicts stop here. Parsing
validates every field it reads and raises :class:`~qtui.core.exceptions.ProtocolError` naming
the field, so nothing downstream ever sees an unvalidated message. Protocol v1 messages (the
whole task in the body, as Celery 3 sent them) are read too and turned into the same object.

Beyond Celery's headers, qtui's client adds one: ``x-qtui-sent-at`` (:data:`SENT_AT_HEADER`),
the publish time in seconds since the epoch, stamped by :func:`build` each time a message is
published (a retry is a new publish). Celery's workers pass unknown headers through and ignore
them. It dates a queue's oldest waiting message exactly on brokers that can read a queue's head
without taking it (Redis); a message without it (a Celery client's) is dated by its ``task-sent``
event when one was seen, else its age is unknown.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import reprlib
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from kombu import compression as kombu_compression
from kombu.exceptions import ContentDisallowed as KombuContentDisallowed
from kombu.exceptions import DecodeError
from kombu.serialization import loads, prepare_accept_content, registry
from kombu.utils.json import loads as kombu_json_loads
from kombu.utils.json import object_hook as kombu_object_hook

from .exceptions import ContentDisallowed, ProtocolError

if TYPE_CHECKING:
    from .plans import Call

ARGSREPR_MAXSIZE = 1024
KWARGSREPR_MAXSIZE = 1024
#: The content type of a JSON body.
JSON = "application/json"

#: Header keys of protocol v2 that map to TaskMessage fields; any other header is a user header.
_PROTOCOL_HEADERS = frozenset({
    "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
    "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result",
    "replaced_task_nesting", "stamped_headers", "stamps",
})

#: qtui's publish time (seconds since the epoch), a header Celery ignores; see the module docstring.
SENT_AT_HEADER = "x-qtui-sent-at"
#: The body's compression, as kombu's ``Producer.publish(compression=...)`` sets it: the content
#: type of kombu's compression registry (``application/x-gzip`` for zlib). kombu decompresses a
#: received body before anything reads it, so a parsed message leaves it out of its headers.
COMPRESSION_HEADER = "compression"


def compression_type(name: str) -> str:
    """The content type kombu's compression registry has for ``name`` (``zlib``, ``bzip2``,
    ``lzma``, ... or the content type itself); ValueError for one it does not know."""
    try:
        _, content_type = kombu_compression.get_encoder(name)
    except KeyError:
        known = ", ".join(sorted(kombu_compression._aliases))
        raise ValueError(f"unknown compression {name!r}: kombu knows {known}") from None
    return str(content_type)


@dataclass
class TaskMessage:
    """One task invocation as it travels: what to run, with what, and under which limits."""

    id: str
    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    eta: datetime | None = None
    expires: datetime | None = None
    expiration: float | None = None
    """Seconds the broker may hold the message, as a client sends it (Celery's AMQP
    ``expiration`` property, from ``expires`` at send time); None for a received one."""
    retries: int = 0
    time_limit: float | None = None
    soft_time_limit: float | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    shadow: str | None = None
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    origin: str | None = None
    ignore_result: bool = False
    reply_to: str | None = None
    priority: int | None = None
    callbacks: list[Any] | None = None
    errbacks: list[Any] | None = None
    chain: list[Any] | None = None
    chord: Any = None
    replaced_task_nesting: int = 0
    stamped_headers: list[str] | None = None
    stamps: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, Any] = field(default_factory=dict)
    """User headers: everything in the message headers that is not part of the protocol."""
    sent_at: float | None = field(default=None, compare=False)
    """When a qtui client published the message (its ``x-qtui-sent-at`` header); None for a
    message from another client, or one not published yet. Not part of what the message is:
    each publish stamps a new time."""

    def __post_init__(self) -> None:
        if self.argsrepr is None:
            self.argsrepr = saferepr(self.args, ARGSREPR_MAXSIZE)
        if self.kwargsrepr is None:
            self.kwargsrepr = saferepr(self.kwargs, KWARGSREPR_MAXSIZE)
        if self.root_id is None:
            self.root_id = self.id
        if self.origin is None:
            self.origin = default_origin()

    def for_call(self, call: Call) -> TaskMessage:
        """This message (a send plan's prototype) for one call (a :class:`~qtui.core.plans.Call`:
        its id, arguments, their reprs and own fields, taken as they are). The same message
        the constructor makes from all the fields, without its work per field."""
        message = object.__new__(TaskMessage)
        message.__dict__ = {
            **self.__dict__, "id": call.id, "args": call.args, "kwargs": call.kwargs,
            "argsrepr": call.argsrepr, "kwargsrepr": call.kwargsrepr, "root_id": call.root_id,
            "parent_id": call.parent_id, "group": call.group, "group_index": call.group_index,
            "eta": call.eta, "expires": call.expires, "expiration": call.expiration,
            "priority": call.priority,
            "origin": default_origin(), "headers": dict(self.headers),
            "stamps": dict(self.stamps) if self.stamps else {}}
        return message

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires is not None and (now or utcnow()) >= self.expires

    def seconds_until_eta(self, now: datetime | None = None) -> float:
        """Seconds until the task may run: 0 when it has no ETA or the ETA has passed."""
        if self.eta is None:
            return 0.0
        return max(0.0, (self.eta - (now or utcnow())).total_seconds())


@dataclass
class WireMessage:
    """What goes to kombu's ``Producer.publish``: body, headers and message properties."""

    body: tuple[Any, ...]
    headers: dict[str, Any]
    properties: dict[str, Any]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


_origin = ""


def default_origin() -> str:
    """Celery's ``anon_nodename``: ``gen<pid>@<host>``, so a monitor can tell who sent a task
    (worked out once per process, forgotten in a forked child: every message asks)."""
    global _origin
    if not _origin:
        _origin = f"gen{os.getpid()}@{socket.gethostname()}"
    return _origin


def _forget_origin() -> None:
    global _origin
    _origin = ""


os.register_at_fork(after_in_child=_forget_origin)


_ready_ids: deque[str] = deque()
os.register_at_fork(after_in_child=_ready_ids.clear)  # a child must not reuse its parent's


#: Ids made per ``os.urandom`` call.
_IDS_PER_READ = 256
_HEX = b"0123456789abcdef"
#: A byte's high and low hex digit, and the digit of the variant's byte (RFC 4122: 10xx).
_HIGH_DIGIT = bytes(_HEX[byte >> 4] for byte in range(256))
_LOW_DIGIT = bytes(_HEX[byte & 0x0F] for byte in range(256))
_VARIANT_DIGIT = bytes(_HEX[byte >> 4 & 0x3 | 0x8] for byte in range(256))
#: Where each of an id's 32 hex digits goes in its 36 characters (the rest are dashes), with
#: the byte it is read from and whether it is the byte's high digit. The version digit (14)
#: and the variant digit (19) are written apart.
_DIGITS = tuple((at, digit // 2, digit % 2 == 0) for digit, at in enumerate(
    at for at in range(36) if at not in (8, 13, 18, 23)) if at not in (14, 19))


def new_id() -> str:
    """A random (version 4) UUID as text, what task ids and delivery tags are: the same
    randomness as ``uuid.uuid4()`` (``os.urandom``), read 256 ids at a time rather than one
    system call each, and written as text all at once (each digit by a byte table, a slice
    per position): an id costs a slice and a pop (a deque's append and pop are
    thread-safe)."""
    try:
        return _ready_ids.popleft()
    except IndexError:
        pass
    count = _IDS_PER_READ
    data = os.urandom(16 * count)
    high, low = data.translate(_HIGH_DIGIT), data.translate(_LOW_DIGIT)
    out = bytearray(b"-" * (36 * count))
    for at, byte, is_high in _DIGITS:
        out[at::36] = (high if is_high else low)[byte::16]
    out[14::36] = b"4" * count  # version 4
    out[19::36] = data[8::16].translate(_VARIANT_DIGIT)
    text = out.decode("ascii")
    ids = [text[at:at + 36] for at in range(0, 36 * count, 36)]
    _ready_ids.extend(ids[1:])
    return ids[0]


class _CallRepr(reprlib.Repr):
    """reprlib's bounded repr with a dict's items in insertion order, as Celery's saferepr
    shows them (reprlib sorts the keys): a kwargsrepr reads as the call was written."""

    def repr1(self, x: Any, level: int) -> str:
        """reprlib's text of ``x``; a value whose builtin repr is that text (a number, flag or
        string; a flat container of them above the depth limit) skips reprlib's lookup of a
        method by type name and its per-item join (a ``chunks`` part is a list of tuples)."""
        kind = type(x)
        if kind is tuple or kind is list or kind is dict:
            if level > 0 and _plain(x):
                return repr(x)
        elif kind is int:
            if -_SHORT < x < _SHORT:
                return repr(x)
        elif kind is str:
            if len(x) <= self.maxstring:
                text = repr(x)
                if len(text) <= self.maxstring:
                    return text
        elif kind in _PLAIN:
            return repr(x)
        return super().repr1(x, level)

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        pieces = [f"{self.repr1(key, level - 1)}: {self.repr1(value, level - 1)}"
                  for key, value in itertools.islice(x.items(), self.maxdict)]
        if len(x) > self.maxdict:
            pieces.append("...")
        return "{" + ", ".join(pieces) + "}"


_repr = _CallRepr()
_repr.maxstring = ARGSREPR_MAXSIZE
_repr.maxother = ARGSREPR_MAXSIZE
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 64
_repr.maxlevel = 4


#: Types whose builtin repr is reprlib's too (with :data:`_SHORT` ints and strings).
_PLAIN = frozenset({float, bool, type(None)})
_SHORT = 10 ** 30  # reprlib shortens ints of more than 40 digits


def saferepr(value: Any, maxsize: int) -> str:
    """A repr bounded in size and effort (deep or huge arguments never cost much), like Celery's."""
    # A plain value's repr is reprlib's (dict items in insertion order either way), without
    # its per-item dispatch; reprlib also copes with a __repr__ that raises.
    if not value and (type(value) is tuple or type(value) is dict):
        return repr(value)  # no arguments (of this kind): the commonest call
    text = repr(value) if _plain(value) else _repr.repr(value)
    if len(text) > maxsize:
        text = text[: max(0, maxsize - 3)] + "..."
    return text


def masks(args: Sequence[Any], kwargs: Mapping[str, Any], argsrepr: str | None,
          kwargsrepr: str | None) -> bool:
    """Whether ``argsrepr``/``kwargsrepr`` hide ``args``/``kwargs``: they are not the reprs a
    qtui or Celery client writes of them (a tuple's or a list's), so the sender gave its own
    (Celery's way to keep a secret argument out of monitors). A repr not given (None) hides
    nothing; an empty one hides whatever it stands for."""
    args_masked = argsrepr is not None and argsrepr not in (
        saferepr(tuple(args), ARGSREPR_MAXSIZE), saferepr(list(args), ARGSREPR_MAXSIZE))
    kwargs_masked = kwargsrepr is not None and \
        kwargsrepr != saferepr(dict(kwargs), KWARGSREPR_MAXSIZE)
    return args_masked or kwargs_masked


def _plain(value: Any) -> bool:
    """A flat tuple, list or dict of at most 64 numbers, flags and short strings (keys too):
    the arguments of most calls."""
    kind = type(value)
    if kind is tuple or kind is list:
        items: Any = value
    elif kind is dict:
        items = (*value, *value.values())
    else:
        return False
    if len(value) > 64:
        return False
    for item in items:
        kind = type(item)
        if kind is int:
            if not -_SHORT < item < _SHORT:
                return False
        elif kind is str:
            if len(item) > 256:
                return False
        elif kind not in _PLAIN:
            return False
    return True


def expiration_text(seconds: float) -> str:
    """The ``expiration`` property for ``seconds``: milliseconds as text, as kombu's
    ``Producer.publish(expiration=seconds)`` writes it."""
    return str(int(seconds * 1000))


def expiration_left(headers: Mapping[str, Any] | None, now: datetime | None = None
                    ) -> float | None:
    """The ``expiration`` a received message is published again with, in kombu's seconds: the
    time left until its ``expires`` header, as a broker's own requeue keeps it. None without a
    readable date, or once it is past: the worker that receives the copy then records the task
    as expired, where the broker would drop it unseen."""
    try:
        expires = _date((headers or {}).get("expires"), "headers.expires", "")
    except ProtocolError:
        return None
    if expires is None:
        return None
    left = (expires - (now or utcnow())).total_seconds()
    return left if left > 0 else None


def stamped_header_names(value: Any) -> list[str] | None:
    """``stamped_headers`` as a message carries it: None stays None; one name is a list of it
    (Celery's ``maybe_list``); each name once, in its first place (Celery's stamping merges them
    as a set); a name that is not text is left out: stamps travel as a JSON mapping, whose keys
    are text, so it could never name one (Celery's client fails on both with a KeyError)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return list(dict.fromkeys(name for name in value if isinstance(name, str)))


#: Headers that describe one delivery (RabbitMQ's dead-lettering record), not the task: never
#: copied when a received message is published again.
DELIVERY_HEADERS = frozenset({"x-death", "x-first-death-exchange", "x-first-death-queue",
                              "x-first-death-reason", "x-last-death-exchange",
                              "x-last-death-queue", "x-last-death-reason"})
#: Properties a re-sent copy keeps as received. ``expiration`` is not one (its text is
#: milliseconds, where kombu's publish takes seconds; a copy's is the time left), and neither is
#: ``user_id`` unless the sender asks (:func:`resent_properties`).
_RESENT_PROPERTIES = ("correlation_id", "reply_to", "priority", "message_id", "type", "app_id",
                      "timestamp")


def resent_properties(properties: Mapping[str, Any], headers: Mapping[str, Any] | None, *,
                      keep_user_id: bool, expiring: bool = True) -> dict[str, Any]:
    """The properties, as ``Producer.publish`` keywords, of a received message published again:
    those it came with, and while ``expiring`` an ``expiration`` of the time left until its
    ``expires`` header (:func:`expiration_left`).

    ``keep_user_id``: RabbitMQ refuses a publish (406 PRECONDITION_FAILED) whose ``user_id`` is
    not the connection's user. The worker keeps it (the sender RabbitMQ vouched for), which
    holds while it connects as the tasks' senders do; the console, whose user may be anyone's,
    does not: its move would fail on the first message another user sent."""
    kept = {k: properties[k] for k in _RESENT_PROPERTIES if properties.get(k) is not None}
    if keep_user_id and properties.get("user_id") is not None:
        kept["user_id"] = properties["user_id"]
    if expiring and (left := expiration_left(headers)) is not None:
        kept["expiration"] = left
    return kept


def build(message: TaskMessage) -> WireMessage:
    """Turn a TaskMessage into protocol-v2 body, headers and properties, exactly as Celery sends
    them."""
    headers: dict[str, Any] = dict(message.headers)
    headers.update({
        "lang": "py",
        "task": message.task,
        "id": message.id,
        "shadow": message.shadow,
        "eta": message.eta.isoformat() if message.eta else None,
        "expires": message.expires.isoformat() if message.expires else None,
        "group": message.group,
        "group_index": message.group_index,
        "retries": message.retries,
        "timelimit": [message.time_limit, message.soft_time_limit],
        "root_id": message.root_id,
        "parent_id": message.parent_id,
        "argsrepr": message.argsrepr,
        "kwargsrepr": message.kwargsrepr,
        "origin": message.origin,
        "ignore_result": message.ignore_result,
        "replaced_task_nesting": message.replaced_task_nesting,
        "stamped_headers": message.stamped_headers,
        "stamps": message.stamps,
        SENT_AT_HEADER: time.time(),
    })
    properties: dict[str, Any] = {"correlation_id": message.id, "reply_to": message.reply_to or ""}
    if message.expiration is not None:
        properties["expiration"] = expiration_text(message.expiration)
    if message.priority is not None:
        properties["priority"] = message.priority
    return WireMessage(body=body_of(message), headers=headers, properties=properties)


#: The third part of the body of a message with no canvas fields (most messages): one mapping
#: shared by all of them and told apart by identity, so read-only (a change would reach every
#: later message).
NO_EMBED: Mapping[str, Any] = MappingProxyType(
    {"callbacks": None, "errbacks": None, "chain": None, "chord": None})


#: The JSON text of :data:`NO_EMBED`, as ``json.dumps`` writes it.
NO_EMBED_JSON = json.dumps(dict(NO_EMBED))


def call_body(args: Any, kwargs: Any, embed: Mapping[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """The protocol-v2 body ``[args, kwargs, embed]`` of one call, for any serializer (the embed
    a dict of its own: serializers take dicts)."""
    return args, kwargs, dict(embed)


def json_body(args: Any, kwargs: Any, embed: Mapping[str, Any],
              encode: Callable[[Any], str]) -> str:
    """``encode(call_body(args, kwargs, embed))`` for an ``encode`` that writes ``json.dumps``'s
    text. With no canvas fields (``embed`` is :data:`NO_EMBED`, most messages) only the
    arguments are encoded and the embed's text, the same every time, is appended: the same
    text, for less work."""
    if embed is NO_EMBED:
        return f"{encode((args, kwargs))[:-1]}, {NO_EMBED_JSON}]"
    return encode(call_body(args, kwargs, embed))


def body_of(message: TaskMessage, copy: bool = True) -> tuple[Any, ...]:
    """The protocol-v2 body: ``[args, kwargs, embed]``; without ``copy`` the message's own
    args tuple and kwargs dict (the same JSON text)."""
    embed = {"callbacks": message.callbacks, "errbacks": message.errbacks,
             "chain": message.chain, "chord": message.chord}
    if not copy:
        return message.args, message.kwargs, embed
    return list(message.args), dict(message.kwargs), embed


#: The fields that differ between sends of one task, in the order :func:`per_send` gives them
#: (the publish time last: the sender gives it, once for a batch stored at once): a message
#: template (:class:`~qtui.core.brokers.envelope.Template`) leaves them open.
PER_SEND = ("id", "root_id", "parent_id", "group", "group_index", "eta", "expires", "argsrepr",
            "kwargsrepr", SENT_AT_HEADER)


def template_key(message: TaskMessage) -> tuple[Any, ...] | None:
    """What the headers and properties of ``message`` share with every message built from one
    template (everything but :data:`PER_SEND`), or None when it carries what a template leaves
    to :func:`build` (user headers, stamps, an expiration, a canvas embed). Values that are
    equal but written differently (``1`` and ``1.0``, ``0.0`` and ``-0.0``,
    ``Decimal("1.5")`` and ``Decimal("1.50")``) make different keys: a plain int or None is
    keyed by itself, anything else by its type and ``repr``."""
    if (message.headers or message.stamps or message.stamped_headers is not None
            or message.expiration is not None
            or message.callbacks is not None or message.errbacks is not None
            or message.chain is not None or message.chord is not None):
        return None
    numbers = (message.retries, message.time_limit, message.soft_time_limit,
               message.ignore_result, message.replaced_task_nesting, message.priority)
    kinds = tuple(map(type, numbers))
    if _WRITTEN_ALIKE.issuperset(kinds):  # the commonest: no float, Decimal, ...
        return (message.task, message.shadow, message.origin, message.reply_to, numbers, kinds)
    return (message.task, message.shadow, message.origin, message.reply_to,
            tuple(n if n is None or type(n) is int else (type(n), repr(n)) for n in numbers))


#: Types whose equal values of one type are written alike (unlike ``0.0`` and ``-0.0``).
_WRITTEN_ALIKE = frozenset({type(None), int, bool})


def per_send(message: TaskMessage | Call) -> tuple[Any, ...]:
    """The header values of :data:`PER_SEND` but the publish time of a message, or of a call
    whose message is not built, as :func:`build` writes them."""
    eta, expires = message.eta, message.expires
    return (message.id, message.root_id, message.parent_id, message.group,
            message.group_index, eta.isoformat() if eta else None,
            expires.isoformat() if expires else None, message.argsrepr, message.kwargsrepr)


def build_open(message: TaskMessage, slot: Callable[[str], str]) -> WireMessage:
    """``build(message)`` with ``slot(name)`` standing for each value of :data:`PER_SEND`
    (and for the correlation id, which is the id): the headers and properties a template
    is cut from."""
    marked = replace(message, id=slot("id"), root_id=slot("root_id"),
                     parent_id=slot("parent_id"), group=slot("group"),
                     argsrepr=slot("argsrepr"), kwargsrepr=slot("kwargsrepr"))
    wire = build(marked)
    wire.headers.update({name: slot(name) for name in
                         ("group_index", "eta", "expires", SENT_AT_HEADER)})
    return wire


def json_loads(text: bytes | str) -> Any:
    """kombu's JSON decode (an object ``{"__type__": ..., "__value__": ...}`` becomes the value
    kombu encoded so), without kombu's hook on every object where ``text`` cannot hold one: no
    ``__type__``, and no ``\\u`` escape that could spell it. A typed value kombu cannot build
    (an unknown or unhashable ``__type__``, a ``__value__`` of the wrong kind) is a ValueError
    naming it, as text that is not JSON is, where kombu's hook raises anything."""
    if not may_hold_typed_value(text):
        # bytes as kombu reads them: UTF-8, whatever they hold
        return _plain_json(text.decode() if isinstance(text, bytes) else text)
    return kombu_json_loads(text, object_hook=_typed_value)


_scan_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # set by __init__
"""The scanner ``json.loads`` runs (the C one where there is one) for a whole value."""


def _plain_json(text: str) -> Any:
    """``json.loads(text)``, with its scanner called directly for text that is one value from
    its first character to its last (every text a client sends): not through three Python
    calls and two whitespace matches, twice a task in the worker's main thread. Text after
    the value is read as ``json.loads`` reads it (whitespace, or its "Extra data" error)
    without the value being parsed again; anything else (whitespace before the value, text
    that is not JSON) goes to ``json.loads``, which reads it or raises its own error."""
    try:
        value, end = _scan_json(text, 0)
    except (StopIteration, ValueError):
        return json.loads(text)
    if end != len(text):
        end = _JSON_SPACE(text, end).end()
        if end != len(text):
            raise json.JSONDecodeError("Extra data", text, end)
    return value


_JSON_SPACE = json.decoder.WHITESPACE.match  # type: ignore[attr-defined]  # not in typeshed


def may_hold_typed_value(text: bytes | str) -> bool:
    """Whether JSON ``text`` may hold a typed value of kombu's: it spells ``__type__``, or has
    a ``\\u`` escape that could."""
    if isinstance(text, bytes):
        # find, not ``in``: on bytes, ``in`` first tries its operand as an integer (raising
        # and clearing a TypeError each time, a tenth of the check's cost and more)
        return text.find(b"__type__") >= 0 or text.find(b"\\u") >= 0
    return "__type__" in text or "\\u" in text


def _typed_value(found: dict[str, Any]) -> Any:
    """kombu's object hook, its every failure a ValueError naming the typed value."""
    try:
        return kombu_object_hook(found)
    except Exception as exc:
        raise ValueError(
            f"cannot decode the typed JSON value {{'__type__': {saferepr(found['__type__'], 80)}"
            f", '__value__': {saferepr(found['__value__'], 80)}}}: {exc}") from exc


def decode(raw: bytes | str, content_type: str | None, content_encoding: str | None,
           accept: Sequence[str]) -> Any:
    """Deserialize a raw body, refusing any content type not in ``accept``."""
    try:
        accepted = _accepted(accept)
        if (content_type == JSON and raw and JSON in accepted
                and registry._decoders.get(JSON) is kombu_json_loads):  # kombu's own JSON
            return json_loads(raw)
        return loads(raw, content_type, content_encoding or "utf-8", accept=accepted)
    except KombuContentDisallowed as exc:
        raise ContentDisallowed(
            f"refused a message of content type {content_type!r}: {exc}. "
            "Add it to accept_content only if you trust every sender (pickle runs code)."
        ) from exc
    except DecodeError as exc:
        raise ProtocolError(f"cannot decode the message body as {content_type!r}: {exc}") from exc
    # serializers raise anything on garbage (UnicodeDecodeError, ValueError)
    except Exception as exc:
        raise ProtocolError(f"cannot decode the message body as {content_type!r}: {exc}") from exc


def _accepted(accept: Sequence[str]) -> Any:
    """kombu's content types for ``accept`` (names or types), worked out once per setting and
    state of kombu's registry for those names (a name registered again, or unregistered,
    after the first message is read as kombu reads it then)."""
    try:
        key = (*accept, *map(registry.name_to_type.get, accept))
    except TypeError:  # not a list of names (None): kombu says what it makes of it
        return prepare_accept_content(accept)
    accepted = _ACCEPTED.get(key)
    if accepted is None:
        accepted = _ACCEPTED[key] = prepare_accept_content(accept)
    return accepted


_ACCEPTED: dict[tuple[str | None, ...], Any] = {}


def parse(body: Any, headers: Mapping[str, Any] | None,
          properties: Mapping[str, Any] | None = None) -> TaskMessage:
    """Validate a decoded message and return it as a TaskMessage.

    A message is protocol v2 when its headers carry ``task``; otherwise a body that is a mapping
    with ``task`` and ``id`` is protocol v1. Anything else raises ProtocolError.
    """
    headers = _mapping(headers if headers is not None else {}, "headers")
    properties = _mapping(properties if properties is not None else {}, "properties")
    if "task" in headers:
        return _parse_v2(body, headers, properties)
    if isinstance(body, Mapping) and "task" in body:
        return _parse_v1(body, properties)
    raise ProtocolError("not a task message: the headers carry no 'task' (protocol v2) "
                        "and the body is not a protocol v1 task")


def _parse_v2(body: Any, headers: Mapping[str, Any], properties: Mapping[str, Any]) -> TaskMessage:
    task = _text(headers.get("task"), "headers.task", required=True)
    task_id = _text(headers.get("id"), "headers.id", required=True)
    if not _ONLY_STR.issuperset(map(type, headers)):  # JSON's names are all str: one C pass
        names = [k for k in headers if not isinstance(k, str)]
        if names:
            raise ProtocolError(f"task {task} [{task_id}]: header names must be text: "
                                f"{saferepr(names, 120)}")
    if not isinstance(body, (list, tuple)) or len(body) != 3:
        raise ProtocolError(f"task {task} [{task_id}]: the body must be [args, kwargs, embed], "
                            f"got {saferepr(body, 120)}")
    args, kwargs, embed = body
    embed = {} if embed is None else _mapping(embed, "body embed", task_id)
    get, embedded = headers.get, embed.get
    # Each check below is called only for a value that is present: most messages leave most
    # of these fields out (None), and a call per field adds up in the worker's main thread.
    hard, soft = _timelimit(value, task_id) if (value := get("timelimit")) is not None \
        else (None, None)
    root_id, parent_id, group, shadow, argsrepr, kwargsrepr, origin = \
        _text_headers(headers, task_id)
    reply_to = properties.get("reply_to")
    priority = properties.get("priority")
    stamps = get("stamps")
    # The fields set as TaskMessage(...) sets them, without the keyword matching of a call
    # with every field named (the worker parses a message for every task).
    message = object.__new__(TaskMessage)
    message.__dict__ = {
        "id": task_id,
        "task": task,
        "args": tuple(args) if type(args) is list else _args(args, task_id),
        "kwargs": _kwargs(kwargs, task_id) if kwargs else {} if type(kwargs) is dict
        else _kwargs(kwargs, task_id),
        "eta": None if (value := get("eta")) is None else _date(value, "headers.eta", task_id),
        "expires": None if (value := get("expires")) is None
        else _date(value, "headers.expires", task_id),
        "expiration": None,
        "retries": 0 if (value := get("retries")) is None else value
        if type(value) is int and value >= 0 else _count(value, "headers.retries", task_id),
        "time_limit": hard,
        "soft_time_limit": soft,
        "root_id": root_id,
        "parent_id": parent_id,
        "group": group,
        "group_index": None if (value := get("group_index")) is None
        else _count(value, "headers.group_index", task_id),
        "shadow": shadow,
        "argsrepr": argsrepr,
        "kwargsrepr": kwargsrepr,
        "origin": origin,
        "ignore_result": bool(get("ignore_result") or False),
        "reply_to": None if reply_to is None
        else _text(reply_to, "properties.reply_to", task_id=task_id) or None,
        "priority": priority
        if priority is None or (type(priority) is int and 0 <= priority <= 255)
        else _priority(priority, task_id),
        "callbacks": None if (value := embedded("callbacks")) is None
        else _optional_list(value, "embed.callbacks", task_id),
        "errbacks": None if (value := embedded("errbacks")) is None
        else _optional_list(value, "embed.errbacks", task_id),
        "chain": None if (value := embedded("chain")) is None
        else _optional_list(value, "embed.chain", task_id),
        "chord": embedded("chord"),
        "replaced_task_nesting": 0 if (value := get("replaced_task_nesting")) is None else value
        if type(value) is int and value >= 0
        else _count(value, "headers.replaced_task_nesting", task_id),
        "stamped_headers": None if (value := get("stamped_headers")) is None
        else _optional_list(value, "headers.stamped_headers", task_id),
        "stamps": {} if stamps is None else dict(_mapping(stamps, "headers.stamps", task_id)),
        "headers": ({} if _KNOWN_HEADERS.issuperset(headers) else
                 {k: v for k, v in headers.items() if k not in _KNOWN_HEADERS}),
        "sent_at": None if (value := get(SENT_AT_HEADER)) is None else value
        if type(value) is float and math.isfinite(value) else sent_at_of(headers),
    }
    message.__post_init__()
    return message


def _text_headers(headers: Mapping[str, Any], task_id: str) -> list[Any]:
    """The values of :data:`_TEXT_HEADERS`, each a string or None (or ""), in that order."""
    values = [headers.get(name) for name in _TEXT_HEADERS]
    if not _TEXT_OR_NONE.issuperset(map(type, values)):  # the commonest, checked in one C pass
        for name, value in zip(_TEXT_HEADERS, values, strict=True):
            _text(value, f"headers.{name}", task_id=task_id)
    return values


#: The optional text headers of protocol v2, in the order :func:`_parse_v2` takes them.
_TEXT_HEADERS = ("root_id", "parent_id", "group", "shadow", "argsrepr", "kwargsrepr", "origin")
_TEXT_OR_NONE = frozenset({str, type(None)})
_ONLY_STR = frozenset({str})
#: Headers that are not a user's: the protocol's and qtui's publish time.
_KNOWN_HEADERS = _PROTOCOL_HEADERS | {SENT_AT_HEADER, COMPRESSION_HEADER}


def sent_at_of(headers: Mapping[str, Any]) -> float | None:
    """The publish time a qtui client stamped on a message; None when absent or not a finite
    number (the header only dates a message: a bad one never rejects the task)."""
    value = headers.get(SENT_AT_HEADER)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _parse_v1(body: Mapping[str, Any], properties: Mapping[str, Any]) -> TaskMessage:
    task = _text(body.get("task"), "body.task", required=True)
    task_id = _text(body.get("id"), "body.id", required=True)
    hard, soft = _timelimit(body.get("timelimit"), task_id)
    return TaskMessage(
        id=task_id,
        task=task,
        args=_args(body.get("args", ()), task_id),
        kwargs=_kwargs(body.get("kwargs", {}), task_id),
        eta=_date(body.get("eta"), "body.eta", task_id),
        expires=_date(body.get("expires"), "body.expires", task_id),
        retries=_count(body.get("retries"), "body.retries", task_id),
        time_limit=hard,
        soft_time_limit=soft,
        group=_text(body.get("taskset"), "body.taskset", task_id=task_id),
        reply_to=_text(properties.get("reply_to"), "properties.reply_to", task_id=task_id) or None,
        priority=_priority(properties.get("priority"), task_id),
        callbacks=_optional_list(body.get("callbacks"), "body.callbacks", task_id),
        errbacks=_optional_list(body.get("errbacks"), "body.errbacks", task_id),
        chord=body.get("chord"),
    )


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _where(task_id: str | None) -> str:
    return f"task {task_id}: " if task_id else ""


def _mapping(value: Any, name: str, task_id: str | None = None) -> Mapping[str, Any]:
    if type(value) is not dict and not isinstance(value, Mapping):  # a dict: no ABC check
        raise ProtocolError(f"{_where(task_id)}{name} must be a mapping, "
                            f"got {type(value).__name__}")
    return value


def _text(value: Any, name: str, required: bool = False, task_id: str | None = None) -> Any:
    if value is None or value == "":
        if required:
            raise ProtocolError(f"{_where(task_id)}{name} is missing")
        return value
    if not isinstance(value, str):
        raise ProtocolError(f"{_where(task_id)}{name} must be a string, "
                            f"got {type(value).__name__}: {saferepr(value, 80)}")
    return value


def _args(value: Any, task_id: str) -> tuple[Any, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise ProtocolError(f"task {task_id}: args must be a list, got {type(value).__name__}")
    return tuple(value)


def _kwargs(value: Any, task_id: str) -> dict[str, Any]:
    if value is None:
        return {}
    kwargs = _mapping(value, "kwargs", task_id)
    bad = [k for k in kwargs if not isinstance(k, str)]
    if bad:
        raise ProtocolError(f"task {task_id}: kwargs keys must be strings, got {bad[0]!r}")
    return dict(kwargs)


def _count(value: Any, name: str, task_id: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"task {task_id}: {name} must be a whole number >= 0, "
                            f"got {saferepr(value, 80)}")
    return value


def _optional_count(value: Any, name: str, task_id: str) -> int | None:
    return None if value is None else _count(value, name, task_id)


def _priority(value: Any, task_id: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise ProtocolError(f"task {task_id}: properties.priority must be a whole number "
                            f"from 0 to 255, got {saferepr(value, 80)}")
    return value


def _optional_list(value: Any, name: str, task_id: str) -> list[Any] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise ProtocolError(f"task {task_id}: {name} must be a list, got {type(value).__name__}")
    return list(value)


def _seconds(value: Any, name: str, task_id: str) -> float | None:
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value
            or value < 0):
        raise ProtocolError(f"task {task_id}: {name} must be a number of seconds >= 0, "
                            f"got {saferepr(value, 80)}")
    return float(value)


def _timelimit(value: Any, task_id: str) -> tuple[float | None, float | None]:
    """Celery sends ``[hard, soft]`` (its protocol document says otherwise; the code wins)."""
    if value is None:
        return None, None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ProtocolError(f"task {task_id}: headers.timelimit must be [hard, soft], "
                            f"got {saferepr(value, 80)}")
    return (_seconds(value[0], "the hard time limit", task_id),
            _seconds(value[1], "the soft time limit", task_id))


def _date(value: Any, name: str, task_id: str) -> datetime | None:
    """An ISO 8601 date; a date without a zone is taken as UTC (Celery's enable_utc default)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"task {task_id}: {name} must be an ISO 8601 date string, "
                            f"got {type(value).__name__}")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ProtocolError(f"task {task_id}: {name} is not an ISO 8601 date: "
                            f"{saferepr(value, 80)}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


# The dead-letter queue ``<queue>.dead`` (:mod:`qtui.workers.deadletter`), named here because the
# worker's Redis channel dead-letters too, inside its fetch script.
DEAD_SUFFIX = ".dead"
DEAD_REASON_HEADER = "x-qtui-dead-reason"
DEAD_QUEUE_HEADER = "x-qtui-dead-queue"
# Deliveries lost before this one (:mod:`qtui.workers.redelivery` counts them; a dead letter
# requeued by hand starts again without it).
DELIVERIES_HEADER = "x-qtui-deliveries"


def dead_letter_queue_name(queue: str) -> str:
    """Where a worker dead-letters the messages of ``queue`` (one of ``reports.dead`` goes to
    ``reports.dead.dead``: never back into the queue it died in)."""
    return f"{queue}{DEAD_SUFFIX}"


def is_dead_letter_queue(name: str) -> bool:
    """``<queue>.dead``; a queue named just ``.dead`` is an ordinary queue (it dead-letters
    nothing's messages)."""
    return name.endswith(DEAD_SUFFIX) and len(name) > len(DEAD_SUFFIX)


def dead_queue_of(name: str) -> str:
    """``reports`` or ``reports.dead``, as a user names either: the dead-letter queue
    ``reports.dead``."""
    return name if is_dead_letter_queue(name) else dead_letter_queue_name(name)
