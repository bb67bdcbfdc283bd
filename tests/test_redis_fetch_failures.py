"""A failure while the worker handles one item of a Redis fetch reply (a callback that raises,
an item nothing decodes) leaves the pipelined fetch state as it was meant to be: the other items
are delivered or given back, the call sent meanwhile is still read, and nothing asserts later."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from kombu import Consumer, Queue

from qtui.core.brokers.redis import channel as redis_broker
from qtui.core.brokers.redis import wire, worker_channel
from qtui.core.brokers.redis.worker_channel import ALIVE_KEY, OWNED_KEY, OWNERS_KEY, PROCESSING_KEY
from qtui.workers.worker import SentFetch, Worker

from .worker_helpers import wait_for


class Refused(Exception):
    """What the test's callback raises for the message it refuses."""


@pytest.fixture
def owner(redis_url: str, unique: str) -> Iterator[tuple[Any, str, list[Any]]]:
    """A worker channel owning deliveries of the queue ``fail-<unique>``, whose callback
    refuses the message ``{"n": 2}``: the channel, the queue and what was delivered."""
    queue, name = f"fail-{unique}", f"fail-{unique}"
    client = redis.Redis.from_url(redis_url)
    received: list[Any] = []

    def deliver(body: Any, message: Any) -> None:
        if body == {"n": 2}:
            raise Refused(body)
        received.append(message)

    with redis_broker.connection(redis_url, transport=worker_channel.Transport) as conn:
        channel = conn.channel()
        channel.own(name, ttl=60)
        Consumer(channel, [Queue(queue)], auto_declare=False, callbacks=[deliver]).consume()
        with redis_broker.connection(redis_url) as producing:
            for n in (1, 2, 3, 4):
                producing.Producer().publish({"n": n}, routing_key=queue)
        yield channel, queue, received
    for tag in client.smembers(OWNED_KEY.format(owner=name)):
        client.hdel("unacked", tag)
        client.zrem("unacked_index", tag)
    client.delete(queue, f"{queue}.dead", OWNED_KEY.format(owner=name),
                  ALIVE_KEY.format(owner=name))
    client.srem(OWNERS_KEY, name)


def test_a_failing_item_gives_back_the_rest_of_its_fetch_and_the_call_sent_after_is_read(
        owner: tuple[Any, str, list[Any]], redis_url: str):
    """The callback refuses the second of four messages while a second fetch call is pending:
    the first is delivered, the third and fourth go back to the queue (owned and unacked no
    more: they stayed recorded for a worker that never held them), the pending call is read,
    and a next fetch takes them."""
    channel, queue, received = owner
    client = redis.Redis.from_url(redis_url)
    assert channel.send_fetch([queue], 4)
    assert channel.send_fetch([queue], 4)  # pending while the first reply is handled
    with pytest.raises(Refused):
        channel.read_fetch()
    assert [m.payload for m in received] == [{"n": 1}]
    assert client.llen(queue) == 2
    owned = {t.decode() for t in client.smembers(channel.owned_key)}
    assert len(owned) == 2  # the delivered one and the refused one
    assert set(client.hkeys("unacked")) >= {t.encode() for t in owned}
    assert channel.read_fetch() == 0  # the second call ran before they were given back
    assert channel.fetch_many([queue], 4) == 2
    assert sorted(m.payload["n"] for m in received) == [1, 3, 4]


def test_what_a_failing_item_gives_back_is_taken_again_in_its_order(
        owner: tuple[Any, str, list[Any]]):
    """The third and fourth messages come back to the queue in their order: they were pushed
    one by one to its consuming end, the fourth ahead of the third."""
    channel, queue, received = owner
    with pytest.raises(Refused):
        channel.fetch_many([queue], 4)
    assert channel.fetch_many([queue], 1) == 1
    assert [m.payload["n"] for m in received] == [1, 3]


class _PipelinedChannel:
    """A channel's side of pipelined fetches, as the worker sees it: each read takes the oldest
    pending call (whatever happens next), and a read with none pending is a bug."""

    def __init__(self, calls: int) -> None:
        self.pending = deque(range(calls))

    def read_fetch(self) -> int:
        assert self.pending, "read_fetch follows send_fetch"
        if self.pending.popleft() == 0:
            raise Refused("the first reply's handling")
        return 1


def test_a_read_fetch_that_raises_leaves_the_worker_one_unread_fetch_less():
    """The worker counted the reply still unread, and its next read (at shutdown) asked the
    channel for a reply it had no call for: ``AssertionError: read_fetch follows send_fetch``."""
    channel = _PipelinedChannel(2)
    worker = SimpleNamespace(
        consumer=SimpleNamespace(read_fetch=channel.read_fetch, errors=(ConnectionError,)),
        _unread_fetches=deque(SentFetch([], None, 4) for _ in range(2)))
    with pytest.raises(Refused):
        Worker.read_fetches(worker)  # type: ignore[arg-type]
    assert len(worker._unread_fetches) == 1
    assert Worker.read_fetches(worker) == 1  # type: ignore[arg-type]
    assert not worker._unread_fetches and not channel.pending


@pytest.mark.parametrize(("item", "exchange", "routing_key"), [
    (b'{"a": [1, 2], "b": "x,y"}', "", "celery"),
    (b"[" * 990 + b"]" * 990, "tasks", "a,b"),
    (b'{"n": ' + b"1" * 5000 + b"}", 'ex","', "q"),
])
def test_an_unacked_record_is_split_without_decoding_its_item(item: bytes, exchange: str,
                                                              routing_key: str):
    record = b"[%b,%b,%b]" % (item, json.dumps(exchange).encode(),
                               json.dumps(routing_key).encode())
    assert wire.split_record(record) == (item, exchange, routing_key)


def test_a_record_that_is_no_list_is_not_split():
    assert wire.split_record(b'{"a": 1}') is None
    assert wire.split_record(b"[1, 2, 3]") is None


def test_a_record_whose_queue_cannot_be_found_is_left_in_unacked_not_dropped(
        owner: tuple[Any, str, list[Any]], redis_url: str, unique: str):
    """Neither kombu's restore nor the dead letter can read it: it stays where it is (an error
    is logged) rather than raise in every restorer or be dropped."""
    channel, _, _ = owner
    client = redis.Redis.from_url(redis_url)
    tag = f"unsplittable-{unique}"
    client.hset("unacked", tag, b"[" * 990 + b"]" * 990)
    try:
        channel.qos.restore_by_tag(tag)
        assert client.hget("unacked", tag) == b"[" * 990 + b"]" * 990
    finally:
        client.hdel("unacked", tag)


class _ReadOnlyOnce(redis.Redis):
    """A client whose first transaction fails as one does right after a Sentinel failover."""

    failed = False

    def transaction(self, *args: Any, **kwargs: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise redis.exceptions.ReadOnlyError("You can't write against a read only replica.")
        return super().transaction(*args, **kwargs)


def test_a_restore_redis_refuses_is_raised_and_the_delivery_restored_at_the_next_try(
        owner: tuple[Any, str, list[Any]], redis_url: str):
    """READONLY (like OOM, MISCONF, BUSY) is not the record's fault: the restore raises and
    leaves the delivery recorded; the next try gives it back to its queue. The restore took the
    error for a record it could not decode and moved a valid task to the dead-letter queue."""
    channel, queue, _ = owner
    client = redis.Redis.from_url(redis_url)
    tag = json.loads(client.lindex(queue, -1))["properties"]["delivery_tag"]
    channel.send_fetch([queue], 1)  # recorded as unacked and owned, its reply never read
    assert wait_for(lambda: client.hexists("unacked", tag), 5)
    refusing = _ReadOnlyOnce.from_url(redis_url)
    with pytest.raises(redis.exceptions.ReadOnlyError):
        channel.qos.restore_by_tag(tag, refusing)
    assert client.hexists("unacked", tag)
    assert client.llen(f"{queue}.dead") == 0
    channel.qos.restore_by_tag(tag, refusing)
    assert not client.hexists("unacked", tag)
    assert json.loads(client.lindex(queue, -1))["properties"]["delivery_tag"] == tag
    assert client.llen(queue) == 4


def test_two_restorers_of_one_undecodable_record_dead_letter_it_once(
        owner: tuple[Any, str, list[Any]], redis_url: str, unique: str,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    """A second restorer dead-letters the record while the first is between its read of the
    record and its write: the first writes nothing, and logs nothing. Both dead-lettered it (a
    read, then a transaction that watched nothing)."""
    channel, queue, _ = owner
    client = redis.Redis.from_url(redis_url)
    tag = f"deep-{unique}"
    item = b'{"body": "e30=", "headers": {"x": %b}, "properties": {"body_encoding": "base64", ' \
           b'"delivery_tag": "%b", "delivery_info": {"exchange": "", "routing_key": "%b"}}}' % (
               b"[" * 990 + b"]" * 990, tag.encode(), queue.encode())
    client.hset("unacked", tag, b'[%b,"","%b"]' % (item, queue.encode()))
    client.zadd("unacked_index", {tag: 1})
    split = wire.split_record
    with redis_broker.connection(redis_url, transport=worker_channel.Transport) as conn:
        other = conn.channel()

        def split_while_the_other_restores(record: bytes) -> Any:
            monkeypatch.setattr(wire, "split_record", split)
            other.qos.restore_by_tag(tag)
            return split(record)

        monkeypatch.setattr(wire, "split_record", split_while_the_other_restores)
        try:
            channel.qos.restore_by_tag(tag)
        finally:
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)
    assert client.llen(f"{queue}.dead") == 1
    assert sum(r.getMessage().startswith(f"Message moved to {queue}.dead: ")
               for r in caplog.records) == 1


def test_a_message_put_back_after_a_failure_is_not_delivered_by_the_wait_that_moved_it(
        redis_url: str, unique: str):
    """An idle wait moved M into the processing list; a fetch sent meanwhile took a refused
    message, then M, and put M back to its queue. Reading the wait's reply (as a cancel does)
    delivered M all the same: it ran here and waited in its queue, with no worker lost."""
    client = redis.Redis.from_url(redis_url)
    first, second, name = f"wa-{unique}", f"wb-{unique}", f"wait-{unique}"
    received: list[Any] = []

    def deliver(body: Any, message: Any) -> None:
        if body == "refused":
            raise Refused(body)
        received.append(body)

    try:
        with redis_broker.connection(redis_url, transport=worker_channel.Transport) as conn:
            channel = conn.channel()
            channel.own(name, ttl=60)
            Consumer(channel, [Queue(first), Queue(second)], auto_declare=False,
                     callbacks=[deliver]).consume()
            with redis_broker.connection(redis_url) as producing:
                producing.Producer().publish("M", routing_key=second)
            channel._queue_cycle.items[:] = [second, first]
            conn.transport.cycle._register_BRPOP(channel)  # the idle wait, on the second queue
            processing = PROCESSING_KEY.format(owner=name, queue=second)
            assert wait_for(lambda: client.llen(processing) == 1, 5)
            with redis_broker.connection(redis_url) as producing:
                producing.Producer().publish("refused", routing_key=first)
            channel._queue_cycle.items[:] = [first, second]
            assert channel.send_fetch([first, second], 4)  # takes the refused one, then M
            with pytest.raises(Refused):
                channel.read_fetch()
            assert client.llen(second) == 1
            channel.finish_pending_read()  # the wait's reply
            assert received == []
            assert channel.fetch_many([first, second], 4) == 1
            assert received == ["M"]
    finally:
        for tag in client.smembers(OWNED_KEY.format(owner=name)):
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)
        client.delete(first, second, OWNED_KEY.format(owner=name), ALIVE_KEY.format(owner=name),
                      PROCESSING_KEY.format(owner=name, queue=second),
                      worker_channel.PROCESSING_QUEUES_KEY.format(owner=name))
        client.srem(OWNERS_KEY, name)
