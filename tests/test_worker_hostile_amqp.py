"""Hostile AMQP content headers (hand-built by a publisher that is not py-amqp): the worker
dead-letters what it cannot read, runs what it can, and never dies or stalls on either."""

from __future__ import annotations

import json
import random
import struct
import uuid
from typing import Any

import amqp
import pytest
from amqp.basic_message import Message

from .services import AMQP_HOST, AMQP_PORT
from .test_worker_rabbitmq import _marks, amqp_world, take_all  # noqa: F401 (a fixture)
from .worker_helpers import wait_for


def short(raw: bytes) -> bytes:
    return bytes([len(raw)]) + raw


def long_string(raw: bytes) -> bytes:
    return b"S" + struct.pack(">I", len(raw)) + raw


def content_header(task_id: str, content_type: bytes = b"application/json",
                   correlation_id: bytes | None = None,
                   extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """The properties of a protocol v2 task message, written by hand."""
    entries = [(b"lang", long_string(b"py")), (b"task", long_string(b"tasks.mark")),
               (b"id", long_string(task_id.encode())), *extra]
    table = b"".join(short(key) + value for key, value in entries)
    flags = 0x8000 | 0x4000 | 0x2000 | 0x1000
    out = short(content_type) + short(b"utf-8") + struct.pack(">I", len(table)) + table + b"\x02"
    if correlation_id is not None:
        flags |= 0x0400
        out += short(correlation_id)
    return struct.pack(">H", flags) + out


def nested_table(depth: int) -> bytes:
    """A field table value nested ``depth`` tables deep, written by hand (py-amqp's encoder
    recurses, and runs out of stack before RabbitMQ refuses such a table: it does not)."""
    value = b"V"
    for _ in range(depth):
        entry = short(b"a") + value
        value = b"F" + struct.pack(">I", len(entry)) + entry
    return value


#: Headers nested deeper than Python's recursion limit lets a recursive reader go.
DEEP_HEADERS = ((b"x-deep", nested_table(3000)),)


class RawMessage(Message):  # type: ignore[misc]
    """A message whose content header goes out as given."""

    def __init__(self, body: bytes, raw: bytes) -> None:
        super().__init__(body)
        self.raw_properties = raw

    def _serialize_properties(self) -> bytes:
        return self.raw_properties


def publish_raw(queue: str, raw: bytes, args: list[Any], routing_key: bytes | None = None
                ) -> None:
    """Publish a task message with the content header ``raw``; with a ``routing_key`` (any
    bytes), through a fanout exchange of the test's own bound to ``queue`` (deleted with it)."""
    body = json.dumps([args, {}, {"callbacks": None, "errbacks": None, "chain": None,
                                  "chord": None}]).encode()
    conn = amqp.Connection(f"{AMQP_HOST}:{AMQP_PORT}", userid="guest", password="guest")
    conn.connect()
    try:
        channel = conn.channel()
        if routing_key is None:
            channel.basic_publish(RawMessage(body, raw), exchange="", routing_key=queue)
            return
        channel.exchange_declare(f"{queue}.fanout", "fanout", auto_delete=True)
        channel.queue_bind(queue, f"{queue}.fanout")
        channel.basic_publish(RawMessage(body, raw), exchange=f"{queue}.fanout",
                              routing_key=routing_key)
    finally:
        conn.close()


UNREADABLE = {
    "headers_nested_3000_deep": dict(extra=DEEP_HEADERS),
    "content_type_not_utf8": dict(content_type=b"\xff\xfeapplication/json"),
    "correlation_id_not_utf8": dict(correlation_id=b"\xff\xfe"),
    "header_name_not_utf8": dict(extra=((b"\xff\xfe", long_string(b"v")),)),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_a_message_the_worker_cannot_read_is_dead_lettered_and_the_worker_goes_on(
        amqp_world, case):
    with amqp_world.worker("-P", "solo") as worker:
        publish_raw(amqp_world.queue, content_header(str(uuid.uuid4()), **UNREADABLE[case]),
                    ["hostile"])
        dead = take_all(amqp_world.broker, f"{amqp_world.queue}.dead", 1)
        log = worker.log_path.read_text()
        assert len(dead) == 1, log[-3000:]
        assert "Rejected a message" in log, log[-3000:]
        _marks(amqp_world, 1, worker.log_path)
        assert worker.poll() is None


@pytest.mark.timeout(90)
@pytest.mark.parametrize("seconds", [2**63 - 1, 2**40])
def test_a_timestamp_header_out_of_range_does_not_stop_the_task(amqp_world, seconds):
    timestamp = (b"x-when", b"T" + struct.pack(">Q", seconds))
    with amqp_world.worker("-P", "solo") as worker:
        publish_raw(amqp_world.queue, content_header(str(uuid.uuid4()), extra=(timestamp,)),
                    ["hostile"])
        assert wait_for(lambda: len(amqp_world.records("mark")) == 1, 30), \
            worker.log_path.read_text()[-3000:]
        assert worker.poll() is None
        assert "Broker connection lost" not in worker.log_path.read_text()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("routing_key", [b"\xff\xfe", b"task.\xc3(", b"\xff" * 255],
                         ids=["bad-start", "cut-sequence", "longest"])
def test_a_delivery_whose_routing_key_is_not_utf8_is_dead_lettered_and_the_worker_goes_on(
        amqp_world, routing_key):
    """RabbitMQ routes a message whose routing key is any bytes (through a fanout exchange, a
    topic one bound with ``#``): the worker used to die reading its ``basic.deliver``, and the
    message, given back, killed every worker that took it next."""
    with amqp_world.worker("-P", "solo") as worker:
        publish_raw(amqp_world.queue, content_header(str(uuid.uuid4())), ["hostile"],
                    routing_key=routing_key)
        dead = take_all(amqp_world.broker, f"{amqp_world.queue}.dead", 1)
        log = worker.log_path.read_text()
        assert len(dead) == 1, log[-3000:]
        reason = dead[0].headers["x-qtui-dead-reason"]
        assert reason.startswith("the routing key is not UTF-8: b'"), reason
        assert dead[0].headers["task"] == "tasks.mark"  # the rest of the message, as it came
        _marks(amqp_world, 1, worker.log_path)
        assert worker.poll() is None
        assert "Broker connection lost" not in worker.log_path.read_text()


#: The protocol v2 headers a qtui worker reads, and headers it only carries along.
READ_HEADERS = (b"lang", b"task", b"id", b"shadow", b"eta", b"expires", b"group", b"root_id",
                b"parent_id", b"argsrepr", b"kwargsrepr", b"origin", b"retries", b"timelimit",
                b"x-qtui-deliveries", b"x-qtui-sent-at", b"compression", b"x-other")


@pytest.mark.timeout(120)
def test_header_values_that_are_not_utf8_never_stop_the_worker_or_lose_the_message(amqp_world):
    """A header's long string that is not UTF-8 stays bytes (py-amqp's rule), in every header
    the worker reads and in any other, alone or nested in an array or a table: each message
    runs or is dead-lettered, none is lost, and the worker never dies or reconnects."""
    rng = random.Random(12)
    sent: dict[str, bytes] = {}
    for n, name in enumerate(READ_HEADERS * 3):
        junk = bytes([0xFF]) + rng.randbytes(rng.randint(0, 12))
        value = [long_string(junk),
                 b"A" + struct.pack(">I", 5 + len(junk)) + long_string(junk),
                 b"F" + struct.pack(">I", 7 + len(junk)) + short(b"k") + long_string(junk)
                 ][n // len(READ_HEADERS)]
        task_id = str(uuid.uuid4())
        base = content_header(task_id, extra=((name, value),))
        sent[task_id] = base
    with amqp_world.worker("-P", "solo") as worker:
        for task_id, raw in sent.items():
            publish_raw(amqp_world.queue, raw, [task_id])
        ran: set[str] = set()
        dead: list[Any] = []

        def settled() -> bool:
            ran.update(r["tag"] for r in amqp_world.records("mark"))
            dead.extend(take_all(amqp_world.broker, f"{amqp_world.queue}.dead", 1, 0.2))
            return len(ran) + len(dead) >= len(sent)

        if not wait_for(settled, 60):
            log = worker.log_path.read_text()
            with amqp.Connection(f"{AMQP_HOST}:{AMQP_PORT}", userid="guest",
                                 password="guest") as conn:
                waiting = conn.channel().queue_declare(amqp_world.queue, passive=True)
            unseen = [READ_HEADERS[n % len(READ_HEADERS)] for n, task_id in enumerate(sent)
                      if task_id not in log and task_id not in ran]
            raise AssertionError(
                f"{len(sent)} sent: {len(ran)} ran, {len(dead)} dead-lettered; the queue holds "
                f"{waiting.message_count} ready; ids the worker never logged (headers): "
                f"{unseen}; the worker logged {log.count('Message moved to')} moved, "
                f"{log.count(' received')} received")
        assert len(ran) + len(dead) == len(sent), worker.log_path.read_text()[-3000:]
        app = amqp_world.app()
        app.send_task("tasks.mark", args=["after"])
        app.close()
        assert wait_for(lambda: any(r["tag"] == "after" for r in amqp_world.records("mark")),
                        30), worker.log_path.read_text()[-3000:]
        assert worker.poll() is None
        assert "Broker connection lost" not in worker.log_path.read_text()
