"""The worker connection's frames (qtui.core.brokers.amqp.frames, the transport's buffered
frames and acks): the same frames, values and errors as py-amqp's, in fewer steps."""

from __future__ import annotations

import random
from datetime import datetime
from decimal import Decimal
from typing import Any

import amqp
import pytest
from amqp import spec
from amqp.basic_message import Message
from amqp.exceptions import FrameSyntaxError, RecoverableConnectionError, UnexpectedFrame
from amqp.method_framing import frame_handler as amqp_frame_handler
from amqp.method_framing import frame_writer
from amqp.serialization import decode_properties_basic, dumps

from qtui.core.brokers.amqp import frames
from qtui.core.brokers.amqp.transport import (
    BufferedConnection,
    BufferedTCPTransport,
    WorkerChannel,
)


def task_headers(rng: random.Random) -> dict[str, Any]:
    """Celery protocol v2 headers with values of every type a table can carry."""
    task_id = f"{rng.getrandbits(128):032x}"
    return {"lang": "py", "task": "tasks.add", "id": task_id, "shadow": None, "eta": None,
            "expires": "2026-12-01T00:00:00+00:00", "group": None, "group_index": None,
            "retries": rng.randint(0, 5), "timelimit": [None, rng.random() * 10],
            "root_id": task_id, "parent_id": None, "argsrepr": "(1, 'é')", "kwargsrepr": "{}",
            "origin": "gen1@host", "ignore_result": rng.random() < 0.5,
            "replaced_task_nesting": 0, "stamped_headers": ["a", "b"],
            "stamps": {"a": [1, 2**40, -(2**40)], "b": {"deep": [True, None, 1.5]}},
            "x-big": 2**33, "x-neg": -7, "x-decimal": Decimal("1.25"),
            "x-when": datetime(2026, 11, 30, 20, 0, 0), "x-bytes-key": b"raw",
            "x-latin1": b"caf\xe9", b"\xff-key": "not utf-8 key"}


def properties(headers: dict[str, Any], **more: Any) -> bytes:
    return Message(b"", application_headers=headers, **more)._serialize_properties()


def test_properties_decode_as_py_amqp_decodes_them():
    rng = random.Random(19)
    for _ in range(200):
        raw = properties(task_headers(rng), content_type="application/json",
                         content_encoding="utf-8", delivery_mode=2, priority=rng.randint(0, 9),
                         correlation_id="c" * rng.randint(1, 60), reply_to="r",
                         expiration="1000", message_id="m", timestamp=1_800_000_000,
                         type="t", user_id="guest", app_id="qtui", cluster_id="x")
        assert frames.decode_properties(raw, 0) == decode_properties_basic(raw, 0)


def test_every_subset_of_properties_decodes_as_py_amqp_decodes_it():
    everything = {"content_type": "a", "content_encoding": "b", "application_headers": {"k": 1},
                  "delivery_mode": 1, "priority": 3, "correlation_id": "c", "reply_to": "d",
                  "expiration": "5", "message_id": "e", "timestamp": 7, "type": "f",
                  "user_id": "g", "app_id": "h", "cluster_id": "i"}
    rng = random.Random(4)
    for _ in range(300):
        chosen = {k: v for k, v in everything.items() if rng.random() < 0.5}
        raw = Message(b"", **chosen)._serialize_properties()
        assert frames.decode_properties(raw, 0) == decode_properties_basic(raw, 0)


def test_headers_of_types_py_amqp_reads_apart_decode_as_it_does():
    """'s', 'b', 'B', 'U', 'u', 'i', 'l', 'f', 'x' (written by other clients than py-amqp)."""
    table = b"".join(bytes([len(key)]) + key + value for key, value in [
        (b"s", b"s\xff\xfe"), (b"b", b"b\x80"), (b"B", b"B\xff"), (b"U", b"U\x80\x00"),
        (b"u", b"u\xff\xff"), (b"i", b"i\xff\xff\xff\xff"), (b"l", b"l" + b"\xff" * 8),
        (b"f", b"f\x3f\xc0\x00\x00"), (b"x", b"x\x00\x00\x00\x02ab")])
    raw = b"\x20\x00" + len(table).to_bytes(4, "big") + table
    assert frames.decode_properties(raw, 0) == decode_properties_basic(raw, 0)


def test_an_unknown_header_type_is_refused_as_py_amqp_refuses_it():
    raw = b"\x20\x00\x00\x00\x00\x03\x01kZ"
    with pytest.raises(FrameSyntaxError):
        decode_properties_basic(raw, 0)
    with pytest.raises(FrameSyntaxError):
        frames.decode_properties(raw, 0)


def deliver_frames(headers: dict[str, Any], body: bytes) -> list[tuple[int, int, bytes]]:
    method = spec.Basic.Deliver
    args = dumps("sLbss", ["ctag", 7, False, "ex", "rk"])
    header = (spec.Basic.CLASS_ID.to_bytes(2, "big") + b"\x00\x00"
              + len(body).to_bytes(8, "big") + properties(headers, content_type="x/y"))
    return [(1, 1, method[0].to_bytes(2, "big") + method[1].to_bytes(2, "big") + args),
            (2, 1, header), (8, 0, b""), (3, 1, body[:5]), (3, 1, body[5:])]


def handled(handler: Any, frame_list: list[tuple[int, int, bytes]]) -> list[Any]:
    delivered: list[Any] = []

    class FakeConnection:
        bytes_recv = 0

    on_frame = handler(FakeConnection(), lambda *args: delivered.append(args))
    for each in frame_list:
        on_frame(each)
    return [(channel, sig, args) if msg is None else (channel, sig, args, msg.properties, msg.body)
            for channel, sig, args, msg in delivered]


def test_the_frame_handler_delivers_what_py_amqp_handler_delivers():
    rng = random.Random(7)
    qos_ok = spec.Basic.QosOk[0].to_bytes(2, "big") + spec.Basic.QosOk[1].to_bytes(2, "big")
    frame_list = [*deliver_frames(task_headers(rng), b"0123456789"),
                  *deliver_frames({}, b"")[:2], (1, 1, qos_ok)]
    assert handled(frames.frame_handler, frame_list) \
        == handled(amqp_frame_handler, frame_list)
    assert len(handled(frames.frame_handler, frame_list)) == 3


def test_a_frame_out_of_order_is_refused_as_py_amqp_refuses_it():
    frame_list = deliver_frames({}, b"body")
    for handler in (frames.frame_handler, amqp_frame_handler):
        with pytest.raises(UnexpectedFrame):
            handled(handler, [frame_list[0], frame_list[3]])


def test_the_worker_connection_reads_with_the_fast_frame_handler():
    assert BufferedConnection(host="127.0.0.1:1").frame_handler_cls is frames.frame_handler


def delivered_through(dispatch: Any, args: list[Any], body: bytes, **props: Any) -> Any:
    """What a consumer of a WorkerChannel receives of one ``basic.deliver`` dispatched by
    ``dispatch`` (the channel's method, or py-amqp's applied to it): its delivery info, body,
    properties, and the tags the channel then holds."""
    channel = WorkerChannel(BufferedConnection(host="127.0.0.1:1"), 1)
    got: list[Any] = []
    channel.callbacks[args[0]] = got.append
    payload = b"".join(part.to_bytes(2, "big") for part in spec.Basic.Deliver) \
        + dumps("sLbss", args)
    message = Message(body, **props)
    dispatch(channel, spec.Basic.Deliver, payload, message)
    (received,) = got
    return received.delivery_info, received.body, received.properties, channel.unsettled


@pytest.mark.parametrize("args", [["ctag", 7, False, "ex", "rk"],
                                  ["tâche-é", 2**63 + 5, True, "", "célery.x"]])
@pytest.mark.parametrize("props", [{}, {"content_encoding": "utf-8"},
                                   {"content_encoding": "no-such-codec"}])
def test_a_delivery_reaches_the_consumer_as_py_amqp_dispatch_hands_it_over(args, props):
    ours = delivered_through(WorkerChannel.dispatch_method, args, "é".encode(), **props)
    theirs = delivered_through(amqp.Channel.dispatch_method, args, "é".encode(), **props)
    assert ours == theirs
    assert ours[0]["delivery_tag"] == args[1] and ours[0]["redelivered"] is args[2]


def test_a_delivery_is_read_without_py_amqp_argument_decoder(monkeypatch):
    def refuse(*args: Any) -> None:
        raise AssertionError("py-amqp's general argument decoder was used")

    monkeypatch.setattr("amqp.abstract_channel.loads", refuse)
    info, body, _, held = delivered_through(WorkerChannel.dispatch_method,
                                            ["ctag", 9, True, "ex", "rk"], b"{}")
    assert (info["delivery_tag"], info["redelivered"], body, held) == (9, True, b"{}", {9})


# buffered frames -----------------------------------------------------------------------------
def buffered(wire: bytes) -> BufferedTCPTransport:
    transport = BufferedTCPTransport("127.0.0.1:1")
    transport._read_buffer = wire
    return transport


def test_frames_held_whole_are_taken_in_order_and_a_partial_one_is_left():
    first = bytes([1, 0, 1, 0, 0, 0, 3]) + b"abc\xce"
    second = bytes([3, 0, 2, 0, 0, 0, 0]) + b"\xce"
    partial = bytes([3, 0, 2, 0, 0, 0, 9]) + b"abc"
    transport = buffered(first + second + partial)
    assert transport.buffered_frame() == (1, 1, b"abc")
    assert transport.buffered_frame() == (3, 2, b"")
    assert transport.buffered_frame() is None
    assert transport._read_buffer == partial


def test_a_buffered_frame_with_a_wrong_end_octet_is_refused_as_py_amqp_refuses_it():
    transport = buffered(bytes([1, 0, 1, 0, 0, 0, 1]) + b"a\x00")
    with pytest.raises(UnexpectedFrame):
        transport.buffered_frame()


def test_a_buffered_frame_is_read_without_touching_the_socket():
    connection = BufferedConnection(host="127.0.0.1:1")
    connection.transport = buffered(bytes([8, 0, 0, 0, 0, 0, 0, 0xCE]))
    connection.transport.sock = None  # any socket call (timeouts included) would fail
    seen: list[Any] = []
    connection.on_inbound_frame = seen.append
    connection.blocking_read(timeout=1)
    assert seen == [(8, 0, b"")]


# acks ----------------------------------------------------------------------------------------
class Capture:
    """A transport that keeps what is written."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))


def test_an_ack_writes_the_frame_py_amqp_writes_and_the_channel_forgets_its_tags():
    connection = BufferedConnection(host="127.0.0.1:1")
    amqp_wire, wire = Capture(), Capture()
    connection.frame_writer = frame_writer(connection, amqp_wire)
    connection.transport = wire
    channel = WorkerChannel(connection, 3)
    channel.unsettled = {1, 2, 3, 2**40}
    for tag, multiple in ((1, False), (2**40, False), (3, True), (0, True)):
        amqp.Channel.basic_ack(channel, tag, multiple)
        channel.basic_ack(tag, multiple)
        assert wire.written.pop() == amqp_wire.written.pop()
    assert channel.unsettled == set()


def test_an_ack_is_written_whole_without_py_amqp_frame_writer_and_counted():
    connection = BufferedConnection(host="127.0.0.1:1")
    connection.frame_writer = None  # py-amqp's writer, not to be called
    connection.transport = wire = Capture()
    channel = WorkerChannel(connection, 3)
    sent = connection.bytes_sent
    channel.basic_ack(5)
    assert len(wire.written) == 1 and len(wire.written[0]) == 21
    assert connection.bytes_sent == sent + 1  # the heartbeat check sees the connection busy


def test_an_ack_on_a_closed_channel_says_the_connection_is_closed():
    channel = WorkerChannel(BufferedConnection(host="127.0.0.1:1"), 3)
    channel.connection = None
    with pytest.raises(RecoverableConnectionError):
        channel.basic_ack(1)


def test_an_ack_on_a_connection_without_its_socket_says_it_is_closed_and_does_not_connect():
    connection = BufferedConnection(host="127.0.0.1:1")
    channel = WorkerChannel(connection, 3)
    connection.connect = None  # py-amqp's transport property would call it
    with pytest.raises(RecoverableConnectionError):
        channel.basic_ack(1)


def test_a_timestamp_header_decodes_as_py_amqp_decodes_it():
    raw = properties({"x-when": datetime(2026, 11, 30, 20, 0, 0)})
    assert frames.decode_properties(raw, 0) == decode_properties_basic(raw, 0)


@pytest.mark.parametrize("seconds", [2**63 - 1, 2**40])
def test_a_timestamp_header_out_of_range_stays_a_number(seconds):
    entry = b"\x06x-when" + b"T" + seconds.to_bytes(8, "big")
    raw = b"\x20\x00" + len(entry).to_bytes(4, "big") + entry
    assert frames.decode_properties(raw, 0)[0] == {"application_headers": {"x-when": seconds}}


def test_the_key_cache_keeps_text_only_and_stays_bounded(monkeypatch):
    monkeypatch.setattr(frames, "_KEYS", {})
    for n in range(frames.KEYS_KEPT * 2):
        key = f"k{n}"
        raw = properties({key: 1, b"\xff\xfe": 2})
        assert frames.decode_properties(raw, 0)[0]["application_headers"] == {
            key: 1, b"\xff\xfe": 2}
        assert len(frames._KEYS) <= frames.KEYS_KEPT
    assert b"\xff\xfe" not in frames._KEYS and "k2047" in frames._KEYS.values()


@pytest.mark.parametrize("header", [b"\x80\x00\x02\xff\xfe", b"\x04\x00\x02\xff\xfe",
                                   b"\x20\x00\x00\x00\x00\x09\x01kS\x00"])
def test_a_content_header_that_cannot_be_read_is_delivered_with_its_error(header):
    """content_type or correlation_id not UTF-8, a table cut short: the message is delivered,
    not the loop broken; the worker's channel makes it a kombu message that fails to decode."""
    frame_list = deliver_frames({}, b"0123456789")
    frame_list[1] = (2, 1, frame_list[1][2][:12] + header)
    (_, _, _, props, body), = handled(frames.frame_handler, frame_list)
    assert body == b"0123456789"
    assert "cannot read the message's content header" in str(props[frames.UNREADABLE])


@pytest.mark.parametrize(("position", "what"), [(0, "consumer tag"), (3, "exchange"),
                                                (4, "routing key")])
def test_a_delivery_whose_short_string_is_not_utf8_reaches_the_consumer_with_its_error(
        position, what):
    """RabbitMQ passes a routing key's bytes as a client sent them: py-amqp's strict decode
    raised out of the worker's read loop (the worker died; the message, given back, killed
    the next worker). The message is delivered with the error, to be dead-lettered."""
    args: list[Any] = ["ctag", 7, False, "ex", "rk"]
    args[position] = b"\xff\xfe-" + args[position].encode()
    channel = WorkerChannel(BufferedConnection(host="127.0.0.1:1"), 1)
    got: list[Any] = []
    channel.callbacks["ctag"] = got.append
    payload = b"".join(part.to_bytes(2, "big") for part in spec.Basic.Deliver) \
        + dumps("sLbss", args)
    rejected: list[Any] = []
    channel.basic_reject = lambda tag, requeue: rejected.append((tag, requeue))
    channel.dispatch_method(spec.Basic.Deliver, payload, Message(b"{}", content_type="x/y"))
    if what == "consumer tag":  # none of this channel's: given back, as py-amqp gives it back
        assert (got, rejected) == ([], [(7, True)])
        return
    (received,) = got
    assert received.delivery_info[["consumer_tag", "", "", "exchange", "routing_key"][position]] \
        == "\udcff\udcfe-" + ["ctag", "", "", "ex", "rk"][position]
    assert received.properties["content_type"] == "x/y"
    error = received.properties[frames.UNREADABLE]
    assert f"the {what} is not UTF-8: b'\\xff\\xfe-" in str(error)
    assert channel.unsettled == {7}


def got_through(dispatch: Any, args: list[Any], body: bytes, **props: Any) -> Any:
    """What ``basic_get`` returns for one ``basic.get-ok`` dispatched by ``dispatch`` (the
    channel's method, or py-amqp's applied to it)."""
    channel = WorkerChannel(BufferedConnection(host="127.0.0.1:1"), 1)
    payload = b"".join(part.to_bytes(2, "big") for part in spec.Basic.GetOk) \
        + dumps("Lbssl", args)

    def answer(*_: Any, **__: Any) -> None:
        dispatch(channel, spec.Basic.GetOk, payload, Message(body, **props))

    channel.connection.drain_events = answer
    channel.send_method = lambda *a, wait=None, returns_tuple=False: channel.wait(
        wait, returns_tuple=returns_tuple)
    got = channel.basic_get("q")
    return got.delivery_info, got.body, got.properties, channel.unsettled


@pytest.mark.parametrize("args", [[7, False, "ex", "rk", 3], [2**63 + 5, True, "", "célery", 0]])
@pytest.mark.parametrize("props", [{}, {"content_encoding": "utf-8"}])
def test_a_get_ok_reaches_basic_get_as_py_amqp_dispatch_hands_it_over(args, props):
    ours = got_through(WorkerChannel.dispatch_method, args, "é".encode(), **props)
    theirs = got_through(amqp.Channel.dispatch_method, args, "é".encode(), **props)
    assert ours == theirs
    assert ours[0]["message_count"] == args[4] and ours[3] == {args[0]}


def test_a_get_ok_whose_routing_key_is_not_utf8_is_got_with_its_error():
    """A peek reads a queue by ``basic.get``: py-amqp's decode raised there as in a delivery."""
    info, body, props, _ = got_through(WorkerChannel.dispatch_method,
                                       [7, False, "ex", b"\xff\xfe", 3], b"{}")
    assert (info["routing_key"], info["message_count"], body) == ("\udcff\udcfe", 3, b"{}")
    assert "the routing key is not UTF-8: b'\\xff\\xfe'" in str(props[frames.UNREADABLE])
