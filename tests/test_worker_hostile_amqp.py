"""Hostile AMQP content headers (hand-built by a publisher that is not py-amqp): the worker
dead-letters what it cannot read, runs what it can, and never dies or stalls on either."""

from __future__ import annotations

import json
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


class RawMessage(Message):  # type: ignore[misc]
    """A message whose content header goes out as given."""

    def __init__(self, body: bytes, raw: bytes) -> None:
        super().__init__(body)
        self.raw_properties = raw

    def _serialize_properties(self) -> bytes:
        return self.raw_properties


def publish_raw(queue: str, raw: bytes, args: list[Any]) -> None:
    body = json.dumps([args, {}, {"callbacks": None, "errbacks": None, "chain": None,
                                  "chord": None}]).encode()
    conn = amqp.Connection(f"{AMQP_HOST}:{AMQP_PORT}", userid="guest", password="guest")
    conn.connect()
    try:
        conn.channel().basic_publish(RawMessage(body, raw), exchange="", routing_key=queue)
    finally:
        conn.close()


UNREADABLE = {
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
