"""Looking inside a queue: its waiting messages from the head (the next to be delivered), read
for people, and what a dead letter says about why it died.

Each broker family's queue inspector (:class:`~qtui.core.queues.QueueInspector`) fetches the
messages its own way (README "Peek and dead letters"); this module turns what it
fetched into :class:`WaitingMessage` objects and counts them by task name. Bodies are decoded
as JSON only, whatever the task serializer: a console never unpickles what a queue holds.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .compression import CODEC_ERRORS, DEFAULT_MAX_BODY_SIZE, decompress
from .exceptions import QtuiError
from .protocol import (
    COMPRESSION_HEADER,
    DEAD_QUEUE_HEADER,
    DEAD_REASON_HEADER,
    DELIVERIES_HEADER,
    SENT_AT_HEADER,
    TaskMessage,
    decode,
    masks,
    parse,
)

#: Messages a peek shows at once.
PAGE = 50
#: Messages the summary by task name counts, from the head: a sample of a longer queue.
SUMMARY_SAMPLE = 10_000


class PeekError(QtuiError):
    """A queue cannot be looked into or changed this way; the message says why and what to do."""


@dataclass(frozen=True)
class WaitingMessage:
    """One message waiting in a queue, as the broker holds it."""

    position: int
    """0 for the next to be delivered."""
    handle: Any
    """What the broker needs to find this exact message again (a Redis list and the exact
    envelope, an SQLite row id and payload, a task id and body on RabbitMQ)."""
    body: bytes
    content_type: str | None
    content_encoding: str | None
    headers: Mapping[str, Any] = field(default_factory=dict)
    properties: Mapping[str, Any] = field(default_factory=dict)
    enqueued_at: float | None = None
    """When the broker took it (epoch seconds) where it records that."""

    @classmethod
    def from_envelope(cls, position: int, handle: Any, envelope: Mapping[str, Any],
                      enqueued_at: float | None = None) -> WaitingMessage:
        """From kombu's virtual-transport envelope (Redis lists, SQLite rows): the body is
        base64 when ``properties.body_encoding`` says so."""
        properties = envelope.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        raw = envelope.get("body", "")
        body = raw.encode() if isinstance(raw, str) else bytes(raw or b"")
        if properties.get("body_encoding") == "base64":
            body = base64.b64decode(body)
        headers = envelope.get("headers")
        return cls(position, handle, body, envelope.get("content-type"),
                   envelope.get("content-encoding"),
                   headers if isinstance(headers, Mapping) else {}, properties, enqueued_at)

    @cached_property
    def _read(self) -> tuple[TaskMessage | None, str | None]:
        body = self.body
        compression = self.headers.get(COMPRESSION_HEADER)
        try:
            if compression:
                body = decompress(body, str(compression), DEFAULT_MAX_BODY_SIZE)
            return parse(decode(body, self.content_type, self.content_encoding,
                                ["json"]), self.headers, self.properties), None
        except QtuiError as exc:  # ProtocolError, ContentDisallowed, BodyTooLarge: shown
            return None, str(exc)
        except KeyError:
            return None, f"unknown compression {compression!r}: the body cannot be decompressed"
        except CODEC_ERRORS as exc:
            return None, f"cannot decompress the body as {compression!r}: {exc}"

    @property
    def task(self) -> TaskMessage | None:
        """The task it carries; None when it is not a task message JSON can read (see
        :attr:`problem`)."""
        return self._read[0]

    @property
    def problem(self) -> str | None:
        """Why the task cannot be read, or None."""
        return self._read[1]

    @property
    def task_id(self) -> str:
        if self.task is not None:
            return self.task.id
        found = self.headers.get("id") or self.properties.get("correlation_id")
        return found if isinstance(found, str) else ""

    @property
    def name(self) -> str:
        found = self.headers.get("task")  # protocol v2: no need to decode the body
        if isinstance(found, str):
            return found
        return self.task.task if self.task is not None else ""

    @property
    def reason(self) -> str | None:
        """Why a dead letter died, as the worker wrote it."""
        found = self.headers.get(DEAD_REASON_HEADER)
        return None if found is None else str(found)

    @property
    def origin_queue(self) -> str | None:
        """The queue a dead letter came from, as the worker wrote it."""
        found = self.headers.get(DEAD_QUEUE_HEADER)
        return found if isinstance(found, str) and found else None

    @property
    def deliveries(self) -> int:
        """Deliveries counted before the message died (or before this one waits)."""
        try:
            return max(0, int(self.headers.get(DELIVERIES_HEADER) or 0))
        except (TypeError, ValueError):
            return 0

    @property
    def published_at(self) -> float | None:
        """When it was sent: the AMQP ``timestamp`` property where the sender set one, else
        when the broker took it (None: neither is known)."""
        stamp = self.properties.get("timestamp")
        if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
            return float(stamp)
        return self.enqueued_at

    @property
    def shown_arguments(self) -> tuple[str, str]:
        """The args and kwargs as monitors may show them: the sender's ``argsrepr`` and
        ``kwargsrepr`` where they mask the arguments (a secret stays out of the console and
        its filter), else the arguments' own reprs."""
        task = self.task
        if task is None:
            return "", ""
        if masks(task.args, task.kwargs, task.argsrepr, task.kwargsrepr):
            return task.argsrepr or "", task.kwargsrepr or ""
        return repr(task.args), repr(task.kwargs)

    def filter_values(self) -> dict[str, str]:
        """What the console's filter language matches (:mod:`qtui.tui.query`): ``id``,
        ``name``, ``args`` (args and kwargs as shown) and, for a dead letter, ``result`` (its
        reason)."""
        args = " ".join(self.shown_arguments) if self.task is not None else ""
        return {"id": self.task_id, "name": self.name, "args": args,
                "state": "DEAD" if self.reason is not None else "WAITING",
                "result": self.reason or ""}

    def to_json(self) -> dict[str, Any]:
        task = self.task
        return {
            "position": self.position, "id": self.task_id, "name": self.name,
            "args": _jsonable(list(task.args)) if task else None,
            "kwargs": _jsonable(task.kwargs) if task else None,
            "eta": task.eta.isoformat() if task and task.eta else None,
            "retries": task.retries if task else None,
            "priority": self.properties.get("priority"),
            "published_at": self.published_at,
            "headers": _jsonable(dict(self.headers)),
            "reason": self.reason, "origin_queue": self.origin_queue,
            "deliveries": self.deliveries, "problem": self.problem,
        }


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr))


@dataclass(frozen=True)
class Peek:
    """A page of a queue's waiting messages and how they were read."""

    queue: str
    messages: list[WaitingMessage]
    method: str
    """What the broker did to show them, in words (README "Peek and dead
    letters")."""


@dataclass(frozen=True)
class Summary:
    """Waiting messages counted by task name over the first :attr:`sampled` of the queue."""

    counts: list[tuple[str, int]]
    sampled: int
    sample: int
    """The most a summary reads: fewer than this sampled means the whole queue was read."""

    @property
    def whole(self) -> bool:
        return self.sampled < self.sample

    def words(self) -> str:
        scope = (f"all {self.sampled} waiting" if self.whole
                 else f"sample: the first {self.sampled} waiting")
        names = ", ".join(f"{name or '(not a task)'} {count}" for name, count in self.counts)
        return f"By task name ({scope}): {names or 'none'}"


def summarize(messages: Iterable[WaitingMessage], sample: int = SUMMARY_SAMPLE) -> Summary:
    counts: Counter[str] = Counter()
    sampled = 0
    for message in messages:
        counts[message.name] += 1
        sampled += 1
    return Summary(counts.most_common(), sampled, sample)


def rerouted(envelope: str | bytes, to: str, without_headers: set[str]) -> str:
    """A kombu virtual-transport envelope as if published to queue ``to`` now (by the default
    exchange, with a new delivery tag and publish time), without ``without_headers``: what a
    move writes. Its age in the queue starts at the move, as for any publish."""
    found = json.loads(envelope)
    headers = found.get("headers") or {}
    found["headers"] = {k: v for k, v in headers.items() if k not in without_headers}
    found["headers"][SENT_AT_HEADER] = time.time()
    properties = found.setdefault("properties", {})
    properties["delivery_tag"] = str(uuid.uuid4())
    properties["delivery_info"] = {"exchange": "", "routing_key": to}
    return json.dumps(found)
