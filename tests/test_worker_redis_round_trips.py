"""How many commands a worker sends Redis per task on a drain: counted with MONITOR on a Redis of
the test's own (other tests' commands never mix in), never timed.

A solo worker starts one task at a time, and each start is recorded in the cluster ledger before
the task runs: that record, the acks of the finished deliveries and the fetch of the next ones
ride one script call, so a drain costs about one command a task. Before, the start record was a
pipeline of three commands of its own on a second connection (about 3.5 commands a task). Every
start is a script call that carries the finished tasks' acks and takes what the window has room
for (a plain ZADD of the start alone left the acks for the next fetch, and a worker lost in the
task ran the finished one again). Replies are read after the task runs, so no start waits a
round trip (a busy solo worker reads each one after it sent the next call, so it does not wait
for Redis's script either); and a busy fetch pops a processing list only while an idle wait,
which moves messages there, is under way. An idle worker runs what its wait moved straight from
the wait's reply: the call that records it as unacked is read afterwards, as the start record
is, so no round trip separates the wake-up from the run (a fetch script took it from the
processing list first, and the task waited for it).
"""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Consumer, Producer, Queue

from qtui.core import App
from qtui.core.brokers.redis import channel as redis_broker
from qtui.core.brokers.redis import worker_channel
from qtui.core.brokers.redis.worker_channel import (
    ALIVE_KEY,
    OWNED_KEY,
    OWNERS_KEY,
    PROCESSING_KEY,
)
from qtui.core.ledger import StartRecord
from qtui.workers.worker import Worker

from .redis_server import redis_server, spare_port
from .tcp_proxy import Interceptor
from .worker_helpers import make_setup, owned_channel, wait_for

TASKS = 300
#: Commands a task may cost on average: one script call, plus a share of the events, the
#: heartbeats and the restore checks, which run on a clock (1.2 measured; 3.6 before the start
#: record rode the fetch; generous for a loaded machine, where the clock's share grows).
MAX_PER_TASK = 2.0
#: Script calls a task may cost on average: one, the call before each task that acks the
#: finished ones with the start record (a start without them was a plain ZADD, 0.5 a task
#: measured, but a worker lost in that task then ran the finished one again); the fetch rides it.
MAX_SCRIPT_CALLS_PER_TASK = 1.1
#: Pops of the worker's processing lists a task may cost, run inside its scripts: only the fetch
#: that takes what an idle wait moved, and busy fetches while a wait is under way, pop them (a
#: few a drain); every fetch popped them before (0.5 a task on solo).
MAX_PROCESSING_POPS_PER_TASK = 0.1
#: Pops of the queue's lists a task may cost, run inside its scripts: the solo worker's call
#: before each task takes what the window has room for, one message (one ``RPOP`` a task).
MAX_QUEUE_POPS_PER_TASK = 1.1
#: Longest a proxy holds script replies back (seconds): what a worker that waits for one waits.
HOLD_LIMIT = 5.0
_MONITOR_LINE = re.compile(r'^[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"')


def _stage(client: redis.Redis, queue: str, count: int) -> None:
    """Put ``count`` copies of the queue's one message, with fresh ids, on a list of their own."""
    template = json.loads(client.rpop(queue))
    pipe = client.pipeline(transaction=False)
    for _ in range(count):
        task_id = str(uuid.uuid4())
        template["headers"]["id"] = template["headers"]["root_id"] = task_id
        template["properties"]["correlation_id"] = task_id
        template["properties"]["delivery_tag"] = str(uuid.uuid4())
        pipe.lpush(f"{queue}.staged", json.dumps(template))
    pipe.execute()


def _processing_pops(log: Path) -> int:
    """``RPOP``s of a processing list run by scripts, in a MONITOR log."""
    return sum(1 for line in log.read_text().splitlines()
               if '[0 lua] "RPOP" "qtui.processing.' in line)


def _queue_pops(log: Path, queue: str) -> int:
    """``RPOP``s of ``queue``'s lists (its priority sublists included) run by scripts."""
    return sum(1 for line in log.read_text().splitlines()
               if f'[0 lua] "RPOP" "{queue}' in line)


def _sent_by_others(log: Path, own: str) -> Counter[str]:
    """Commands in a MONITOR log sent over the network by clients other than ``own``."""
    sent: Counter[str] = Counter()
    for line in log.read_text().splitlines():
        match = _MONITOR_LINE.match(line)
        if match and match.group(1) not in ("lua", own):
            sent[match.group(2).lower()] += 1
    return sent


@pytest.mark.timeout(120)
def test_a_solo_worker_draining_redis_sends_about_one_command_and_one_script_call_per_task(
        tmp_path, unique):
    port = spare_port()
    data = tmp_path / "redis-data"
    data.mkdir()
    with redis_server(data, port):
        url = f"redis://127.0.0.1:{port}/0"
        setup = make_setup(tmp_path, f"qw-{unique}", url, None)
        client = redis.Redis.from_url(url)
        app = setup.app()
        app.send_task("tasks.noop")
        app.close()
        _stage(client, setup.queue, TASKS)
        own = client.client_info()["addr"]
        log = tmp_path / "monitor.log"
        with setup.worker("-P", "solo") as worker:
            with log.open("w") as out:
                monitor = subprocess.Popen(["redis-cli", "-p", str(port), "monitor"], stdout=out)
            try:
                assert wait_for(lambda: log.read_text().startswith("OK"), 10)
                client.rename(f"{setup.queue}.staged", setup.queue)
                assert wait_for(lambda: not client.llen(setup.queue)
                                and not client.hlen("unacked"), 90), \
                    worker.log_path.read_text()[-3000:]
            finally:
                monitor.terminate()
                monitor.wait(10)
        sent = _sent_by_others(log, own)
        assert sum(sent.values()) <= MAX_PER_TASK * TASKS, sent
        assert sent["evalsha"] + sent["eval"] <= MAX_SCRIPT_CALLS_PER_TASK * TASKS, sent
        assert _processing_pops(log) <= MAX_PROCESSING_POPS_PER_TASK * TASKS
        assert _queue_pops(log, setup.queue) <= MAX_QUEUE_POPS_PER_TASK * TASKS


def test_the_fetch_script_call_goes_out_as_redis_py_would_pack_it(redis_url, unique):
    """The worker encodes the fetch call's unchanging arguments once per queue order: the
    bytes it sends are redis-py's, whatever changes from one call to the next."""
    with redis_broker.connection(redis_url, transport=worker_channel.Transport) as conn:
        channel = conn.channel()
        wire = channel.client.connection_pool.get_connection()
        try:
            keys = ["unacked_index", "unacked", f"owned-{unique}", "ledger", "processing",
                    f"a-{unique}", f"b-{unique}"]
            for acks, started, stamp in (([], [], 1.5), (["t1", "t2"], [9e9, "k1"], 1.25)):
                args = [2, stamp, 1, "tags.1", len(acks), len(started) // 2, 0, "", "1",
                        *acks, *started, f"a-{unique}", f"b-{unique}"]
                pending = worker_channel._PendingFetch(wire, [f"a-{unique}", f"b-{unique}"],
                                                        acks, keys, args)
                sha = channel._script("fetch", worker_channel._FETCH).sha
                expected = wire.pack_command("EVALSHA", sha, len(keys), *keys, *args)
                assert channel._pack_fetch(wire, pending) == b"".join(expected)
        finally:
            channel.client.connection_pool.release(wire)


class _Owner:
    """A worker channel owning deliveries as a test's own owner, its messages received into
    :attr:`received`; the owner's keys, the ledger's and the queue's are deleted at the end."""

    def __init__(self, url: str, unique: str, **transport_options: Any) -> None:
        self.url, self.queue, self.owner = url, f"rt-{unique}", f"rt-{unique}"
        self.ledger = f"rt-ledger-{unique}"
        self.client = redis.Redis.from_url(url)
        self.received: list[Any] = []
        self.transport_options = transport_options

    def __enter__(self) -> worker_channel.Channel:
        self._conn = redis_broker.connection(self.url, transport=worker_channel.Transport,
                                             transport_options=self.transport_options)
        channel = self._conn.channel()
        channel.own(self.owner, ttl=60)
        Consumer(channel, [Queue(self.queue)], auto_declare=False,
                 callbacks=[lambda body, message: self.received.append(message)]).consume()
        return channel

    def __exit__(self, *exc: object) -> None:
        self._conn.release()
        tags = [message.delivery_tag for message in self.received]
        if tags:
            self.client.hdel("unacked", *tags)
            self.client.zrem("unacked_index", *tags)
        self.client.delete(self.queue, self.ledger, OWNED_KEY.format(owner=self.owner),
                           ALIVE_KEY.format(owner=self.owner))
        self.client.srem(OWNERS_KEY, self.owner)

    def publish(self, count: int = 1) -> None:
        with redis_broker.connection(self.url) as conn:
            producer = conn.Producer()
            for n in range(1, count + 1):
                producer.publish({"n": n}, routing_key=self.queue)


def test_a_start_record_is_in_redis_at_once_and_its_reply_read_with_the_next_fetch(
        redis_url, unique):
    """A start with nothing to fetch sends one ZADD and does not wait for its reply: the record
    is in Redis before the task runs, and the next fetch on the connection reads that reply
    before its own (the worker waited a round trip for every such start before)."""
    owner = _Owner(redis_url, unique)
    with owner as channel:
        record = StartRecord(owner.ledger, {"task-1:0:0": time.time() + 60}, [], None)
        assert channel.send_fetch([owner.queue], 0, [], record)
        assert channel.read_fetch() == 0
        wire = channel._fetch_conn
        assert wire is not None and wire.can_read(timeout=5)  # its reply, not read yet
        assert owner.client.zscore(owner.ledger, "task-1:0:0") is not None
        owner.publish()
        assert channel.fetch_many([owner.queue], 1) == 1
        assert channel._fetch_conn is wire and not wire.can_read(timeout=0.2)
        assert [message.payload for message in owner.received] == [{"n": 1}]


def test_a_start_record_redis_refuses_is_logged_and_the_next_fetch_still_delivers(
        redis_url, unique, caplog):
    """The ledger's key holding another type: the ZADD's error reply, read with the next
    fetch's, is logged as a record that could not be written, and the fetch goes on."""
    owner = _Owner(redis_url, unique)
    with owner as channel:
        owner.client.set(owner.ledger, "not a sorted set")
        record = StartRecord(owner.ledger, {"task-1:0:0": time.time() + 60}, [], None)
        assert channel.send_fetch([owner.queue], 0, [], record)
        assert channel.read_fetch() == 0
        owner.publish()
        with caplog.at_level(logging.WARNING, logger="qtui.worker"):
            assert channel.fetch_many([owner.queue], 1) == 1
        assert "Cannot record started tasks" in caplog.text and "WRONGTYPE" in caplog.text
        assert len(owner.received) == 1


def test_a_busy_fetch_connection_outlives_redis_pys_health_check_interval(redis_url, unique):
    """Fetches sent one after another, each before the last one's reply is read (a busy solo
    worker), for longer than redis-py's health check interval (kombu's is 25 s; 1 s here):
    every message comes, in order, on one connection. A channel that read its replies from the
    socket itself left redis-py's check clock where the connection's handshake set it, and the
    check's PING, sent with a fetch's reply still unread, took that reply for its answer and
    failed the connection (the busy worker reconnected every 25 s)."""
    owner = _Owner(redis_url, unique, health_check_interval=1)
    with owner as channel:
        owner.publish(40)
        assert channel.send_fetch([owner.queue], 1)
        fetch_conn = channel._fetch_conn
        for _ in range(39):
            time.sleep(0.06)  # 2.3 s at least in all: past the interval, whatever the load
            assert channel.send_fetch([owner.queue], 1)
            assert channel.read_fetch() == 1
        assert channel.read_fetch() == 1
        assert channel._fetch_conn is fetch_conn
        assert [message.payload["n"] for message in owner.received] == list(range(1, 41))


class ScriptReplyHolder(Interceptor):
    """A TCP proxy to Redis that follows one task (:meth:`follow`): once an idle wait's reply
    (``BLMOVE``) hands it to a worker, the replies to the script calls that record deliveries
    (their keys name ``unacked_index``; not the timers' scripts, an ETA poll say) are held back
    until the task's result is written, or for :data:`HOLD_LIMIT` seconds. A worker that waits
    for one of them before it runs the task writes the result only after they went. A result
    written before any reply recording the task went to the worker (the reply to the call
    carrying its adoption, which the proxy may even forward after the result: two connections,
    two threads) counts as written while held.

    A script's reply that carries the task means a fetch took it: from the queue, or from the
    processing list the wait had moved it to. Such a fetch was sent before the worker read the
    wait's reply (an idle turn whose drain timed out just before it came), however its request
    and the wait's reply were ordered here: the worker delivers from the fetch's reply and drops
    the wait's, so the task did not come from the wait (:attr:`via_wait` False, nothing held)."""

    def __init__(self, port: int) -> None:
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._released.set()
        self._held = 0
        self._recording: set[int] = set()
        """Connections (their states' ids) whose call recording the followed task awaits its
        reply."""
        self._record_passed = False
        """Whether a reply recording the followed task went to the worker."""
        self._task_id = b""
        self.waiting = threading.Event()
        """Set while an idle wait is under way at Redis (sent, not answered yet)."""
        self.via_wait: bool | None = None
        """True: an idle wait's reply carried the task, and no script's reply did; False: a
        script's (a fetch) did."""
        self.written_while_held: bool | None = None
        """Whether the task's result was written while script replies were held back."""
        super().__init__(port)

    def follow(self, task_id: str) -> None:
        with self._lock:
            self._task_id, self.via_wait, self.written_while_held = task_id.encode(), None, None
            self._recording.clear()
            self._record_passed = False

    def _release(self, task_id: bytes) -> None:
        """The hold's time is up (for the task it was for, not a later one)."""
        with self._lock:
            if task_id == self._task_id:
                self._released.set()

    def _up(self, client: socket.socket, server: socket.socket, state: dict) -> None:
        while data := self._recv(client):
            upper = data.upper()
            if data.startswith(b"*"):  # a new request (a long one may come in several reads)
                records = b"EVAL" in upper and b"UNACKED_INDEX" in upper  # EVALSHA too
                # a wait's write starts with the poll that rides it: its replies are the wait's
                state["command"] = b"BLMOVE" if b"BLMOVE" in upper \
                    else b"EVALSHA" if records else b""
                if records and self._task_id and self._task_id in data:
                    with self._lock:
                        self._recording.add(id(state))
                if state["command"] == b"BLMOVE":
                    self.waiting.set()
            with self._lock:
                if self.via_wait and b"$3\r\nSET\r\n" in upper \
                        and b"celery-task-meta-" + self._task_id in data:
                    self.written_while_held = self._held > 0 or not self._record_passed
                    self._released.set()
            server.sendall(data)

    def _down(self, server: socket.socket, client: socket.socket, state: dict) -> None:
        while data := self._recv(server):
            with self._lock:
                command = state.get("command")
                if command == b"BLMOVE":  # cleared before the worker can send the next wait
                    self.waiting.clear()
                # the message itself, not a subscription's reply naming the task's result
                carries = bool(self._task_id) and self._task_id in data and b'"body"' in data
                if carries and self.via_wait is None:
                    self.via_wait = command == b"BLMOVE"
                    if self.via_wait:
                        self._released.clear()
                        threading.Timer(HOLD_LIMIT, self._release, (self._task_id,)).start()
                elif carries and command == b"EVALSHA":  # a fetch took what the wait moved
                    self.via_wait = False
                    self._released.set()
                hold = command == b"EVALSHA" and not self._released.is_set()
                self._held += hold
            if hold:
                self._released.wait()
                with self._lock:
                    self._held -= 1
            try:
                client.sendall(data)
            except OSError:
                return
            with self._lock:
                if id(state) in self._recording:
                    self._record_passed = True
                self._recording.discard(id(state))

    def close(self) -> None:
        self._released.set()
        super().close()


#: Appended to the worker's tasks module: the idle turns race the wait for the tasks that come
#: while ``{racing}`` or fewer ran. Each turn's drain only starts the wait (or reads a reply there
#: already), then sleeps its timeout out: a message that comes meanwhile is moved by the wait
#: and taken from the processing list by the next turn's fetch, sent before that turn reads the
#: wait's reply. A loaded machine does that whenever a drain times out just before the reply.
_IDLE_TURNS_RACE_THE_WAIT = """
import time

import qtui.workers.worker as _worker

_drain = _worker.Worker._drain


def _racing_drain(self, timeout):
    if self.processed > {racing}:
        return _drain(self, timeout)
    _drain(self, 0)
    time.sleep(timeout)


_worker.Worker._drain = _racing_drain
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("racing", [0, 2], ids=["turns-as-they-come", "turns-racing-the-wait"])
def test_an_idle_worker_runs_what_its_wait_took_without_waiting_for_a_script_reply(
        tmp_path, racing):
    """The idle wait's reply carries the message: the solo worker runs the task and writes its
    result while the replies to its script calls (the record of the delivery as unacked, the
    start record) are still held back. It took a fetch script's reply before: one round trip
    between the wake-up and the run. Each try sends the task while the worker's wait is under
    way; a try whose message a fetch took first (an idle turn racing the wait: the first
    ``racing`` tries are made to) does not count."""
    port = spare_port()
    with redis_server(tmp_path, port, durable=False):
        holder = ScriptReplyHolder(port)
        url = f"redis://127.0.0.1:{holder.port}/0"
        setup = make_setup(tmp_path, "qw-held", url, url)
        if racing:
            with (tmp_path / "tasks.py").open("a") as module:
                module.write(_IDLE_TURNS_RACE_THE_WAIT.format(racing=racing))
        tries: list[bool | None] = []
        try:
            with setup.worker("-P", "solo"):
                app = setup.app()
                assert app.send_task("tasks.add", args=[1, 1]).get(timeout=30) == 2
                for attempt in range(10):  # until the worker's wait, not a turn's fetch, takes it
                    assert holder.waiting.wait(30), "the worker's idle wait never started"
                    task_id = str(uuid.uuid4())
                    holder.follow(task_id)
                    assert app.send_task("tasks.add", args=[attempt, 2], task_id=task_id
                                         ).get(timeout=30) == attempt + 2
                    tries.append(holder.via_wait)
                    if holder.via_wait:
                        break
                app.close()
            assert holder.via_wait, \
                f"no task ran from an idle wait's reply (False: a fetch's did): {tries}"
            assert holder.written_while_held
        finally:
            holder.close()


@pytest.mark.timeout(60)
def test_what_an_idle_wait_delivered_is_recorded_by_the_write_of_the_next_call(tmp_path):
    """The record of what an idle wait delivered (its adoption) costs no write of its own: it
    goes out with the next call on the fetch connection (the fetch a worker sends before it
    runs the task), or before anything settles the delivery. Until then the message waits in
    the owner's processing list, given back should the worker be lost. It went out at once in
    a write of its own before (a syscall and a wake-up of Redis on every idle task's path)."""
    port = spare_port()
    with redis_server(tmp_path, port, durable=False):
        url, queue, owner = f"redis://127.0.0.1:{port}/0", "qw-adopt", "adopting"
        client = redis.Redis(port=port)
        processing = PROCESSING_KEY.format(owner=owner, queue=queue)
        owned = OWNED_KEY.format(owner=owner)
        with owned_channel(url, owner, queue) as (conn, channel, received):
            for settle_first in (False, True):
                Producer(conn.channel()).publish({"n": 1}, routing_key=queue)
                conn.drain_events(timeout=5)  # the idle wait delivers it
                tag = received[-1].delivery_tag
                time.sleep(0.2)
                assert client.llen(processing) == 1 and not client.hexists("unacked", tag)
                if not settle_first:
                    assert channel.fetch_many([queue], 1) == 0
                    assert not client.llen(processing) and client.hexists("unacked", tag)
                    assert client.sismember(owned, tag)
                received[-1].ack()
                assert not client.llen(processing) and not client.hexists("unacked", tag)
                assert not client.sismember(owned, tag)


def _resp_end(buf: bytes, at: int) -> int | None:
    """Where the RESP value starting at ``at`` in ``buf`` ends; None: not all of it is here."""
    line = buf.find(b"\r\n", at)
    if line < 0:
        return None
    kind, head = buf[at:at + 1], buf[at + 1:line]
    if kind == b"$" or kind == b"=" or kind == b"!":  # bulk strings (verbatim, blob errors)
        size = int(head)
        end = line + 2 + (size + 2 if size >= 0 else 0)
        return end if len(buf) >= end else None
    if kind in (b"*", b"~", b">", b"%"):  # aggregates (a map holds pairs)
        end = line + 2
        for _ in range(max(int(head), 0) * (2 if kind == b"%" else 1)):
            found = _resp_end(buf, end)
            if found is None:
                return None
            end = found
        return end
    return line + 2  # one line: simple string, error, integer, null, boolean, double


class FetchReplyHolder(Interceptor):
    """A TCP proxy to Redis that holds back the reply to every :attr:`every`-th fetch script
    call (an ``EVALSHA`` naming ``unacked_index`` and ``queue``) of a connection, and every
    reply behind it there, until the next fetch call arrives on that connection or
    :data:`HOLD_LIMIT` seconds passed; counts the fetch calls that arrived while a reply was
    held."""

    def __init__(self, port: int, queue: str, every: int) -> None:
        self.queue, self.every = queue.encode(), every
        self._lock = threading.Lock()
        self._released = threading.Event()
        self.holds = 0
        """Replies held back so far."""
        self.sent_while_held = 0
        super().__init__(port)

    def _up(self, client: socket.socket, server: socket.socket, state: dict) -> None:
        buf, requests = b"", state.setdefault("requests", [])
        while data := self._recv(client):
            buf += data
            while (end := _resp_end(buf, 0)) is not None:
                request, buf = buf[:end], buf[end:]
                upper = request.upper()
                fetch = b"EVALSHA" in upper and b"UNACKED_INDEX" in upper and self.queue in request
                if fetch:
                    state["fetches"] = state.get("fetches", 0) + 1
                    with self._lock:
                        if state.get("held"):
                            self.sent_while_held += 1
                            self._released.set()
                requests.append(fetch and state["fetches"] % self.every == 0)
            server.sendall(data)

    def _down(self, server: socket.socket, client: socket.socket, state: dict) -> None:
        buf, replies = b"", 0
        while data := self._recv(server):
            buf += data
            while (end := _resp_end(buf, 0)) is not None:
                with self._lock:
                    held = state["requests"][replies]
                    if held:
                        state["held"] = True
                        self.holds += 1
                        self._released.clear()
                if held:
                    self._released.wait(HOLD_LIMIT)
                    state["held"] = False
                reply, buf = buf[:end], buf[end:]
                replies += 1
                try:
                    client.sendall(reply)
                except OSError:
                    return


@pytest.mark.timeout(120)
def test_a_busy_solo_worker_runs_the_next_task_before_it_reads_the_last_fetch_reply(
        tmp_path, unique):
    """A solo worker with tasks reserved sends the call that starts the next task (the acks,
    its start record, the fetch) and runs it before it reads the reply to the call before:
    Redis answered that one while the last task ran, so the worker does not wait for it. It
    read each reply right after its task before, waiting for Redis's script on every task.
    (A turn with a timer due reads at once: several replies are held, one of them is enough.)"""
    port = spare_port()
    with redis_server(tmp_path, port, durable=False):
        queue = f"qw-{unique}"
        holder = FetchReplyHolder(port, queue, every=6)
        url = f"redis://127.0.0.1:{holder.port}/0"
        setup = make_setup(tmp_path, queue, url, None)
        try:
            app = setup.app()
            for n in range(40):
                app.send_task("tasks.mark", args=[n])
            app.close()
            with setup.worker("-P", "solo", "--without-events", "--without-heartbeat") as worker:
                assert wait_for(lambda: len(setup.records("mark")) == 40, 60), \
                    worker.log_path.read_text()[-3000:]
            assert holder.holds >= 3
            assert holder.sent_while_held >= 1, \
                "no fetch call sent while the reply to the one before was held back"
        finally:
            holder.close()
            setup.cleanup()


#: Appended to the worker's tasks module: each turn runs the worker's restore timer
#: (``_restore_expired``) whenever a fetch reply is unread at the timers' point of the turn,
#: as a timer that falls due between the turn's check of the timers and ``timer.run_due()``
#: makes it run on a busy solo worker (a GC pause or a loaded CPU there).
_RESTORE_AT_EVERY_UNREAD_REPLY = """
import qtui.workers.worker as _worker

_init = _worker.Worker.__init__


def _forcing_init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    run_due = self.timer.run_due

    def restore_first():
        if self._unread_fetches and self.consumer.leases is not None:
            self._restore_expired()
        return run_due()
    self.timer.run_due = restore_first


_worker.Worker.__init__ = _forcing_init
"""


@pytest.mark.timeout(120)
def test_a_busy_solo_worker_restore_timer_puts_back_nothing_an_unread_fetch_took(
        tmp_path, unique):
    """The restore timer puts back what the worker owns and does not hold. A busy solo worker
    leaves a fetch reply unread across a turn: the restore reads it first, so what that call
    took is held, runs here once and is never put back. It was put back before, and ran twice
    with no worker lost (no result backend says it ran already)."""
    port = spare_port()
    with redis_server(tmp_path, port, durable=False):
        url, tasks = f"redis://127.0.0.1:{port}/0", 60
        setup = make_setup(tmp_path, f"qw-{unique}", url, None)
        with (tmp_path / "tasks.py").open("a") as module:
            module.write(_RESTORE_AT_EVERY_UNREAD_REPLY)
        try:
            app = setup.app()
            for n in range(tasks):
                app.send_task("tasks.mark", args=[n])
            app.close()
            with setup.worker("-P", "solo", "--without-events", "--without-heartbeat") as worker:
                assert wait_for(lambda: len({r["tag"] for r in setup.records("mark")}) == tasks,
                                60), worker.log_path.read_text()[-3000:]
                wait_for(lambda: not redis.Redis(port=port).llen(setup.queue), 10)
                log = worker.log_path.read_text()
            runs = Counter(record["tag"] for record in setup.records("mark"))
            assert [tag for tag, count in runs.items() if count > 1] == [], log[-3000:]
            # a copy put back and not run yet would run twice too
            assert not redis.Redis(port=port).llen(setup.queue)
            assert "owned but never received" not in log
        finally:
            setup.cleanup()


@pytest.mark.timeout(60)
def test_an_unread_fetch_reply_the_restore_timer_cannot_read_goes_to_the_reconnection(
        tmp_path, unique):
    """The restore timer finds a fetch reply unread and reading it fails (the connection is
    lost): the error leaves the turn for the main loop's reconnection, nothing is put back
    first, and after the reconnection each task runs once. Before, the restore read nothing
    (so nothing failed) and put back what the unread call took."""
    port = spare_port()
    with redis_server(tmp_path, port, durable=False):
        url, queue = f"redis://127.0.0.1:{port}/0", f"qw-{unique}"
        client = redis.Redis(port=port)
        ran: list[int] = []
        app = App("restore", broker=url, backend=None, task_default_queue=queue)

        @app.task(name="note", ignore_result=True)
        def note(n: int) -> None:
            ran.append(n)

        for n in range(20):
            app.send_task("note", args=[n])
        worker = Worker(app, pool="solo", heartbeat=False, send_events=False)
        worker.consumer.connect(worker.prefetch_target())
        worker._on_connected()
        try:
            deadline = time.monotonic() + 20
            while not worker._unread_fetches and time.monotonic() < deadline:
                worker._turn()
            assert worker._unread_fetches, "no turn left a fetch reply unread"
            waiting = client.llen(queue)

            def lost() -> int:
                raise ConnectionError("connection lost by the test")

            worker.consumer.read_fetch = lost  # type: ignore[method-assign]
            with pytest.raises(worker.consumer.errors) as failed:
                worker._restore_expired()
            assert client.llen(queue) == waiting  # nothing put back before the read
            del worker.consumer.read_fetch
            worker._on_connection_lost(failed.value)
            while len(set(ran)) < 20 and time.monotonic() < deadline:
                worker._turn()
            assert sorted(ran) == list(range(20))
        finally:
            worker.consumer.stop()
            app.close()


class _IdleCalls:
    """Counts, on a worker's Redis channel, the fetch script calls it sends on their own (a
    round trip each), the idle waits (``BLMOVE``) it starts and the polls that ride them."""

    def __init__(self, channel: Any) -> None:
        self.fetches = self.waits = self.polls = 0
        send, start = channel._send_pending, channel._brpop_start

        def counted_send(pending: Any) -> None:
            self.fetches += pending.script
            send(pending)

        def counted_start(*args: Any, **kwargs: Any) -> None:
            start(*args, **kwargs)
            self.waits += channel._waiting_on is not None
            self.polls += getattr(channel, "_wait_poll", None) is not None

        channel._send_pending, channel._brpop_start = counted_send, counted_start


@pytest.fixture
def idle_worker(tmp_path, unique, monkeypatch):
    """A solo worker on a Redis of the test's own, nothing waiting in its queue, turned by the
    test; an idle turn drains for 0.05 s, so that each of its 0.25 s waits spans several turns
    (as heartbeats, timers and control commands make it do)."""
    monkeypatch.setattr("qtui.workers.worker.IDLE_WAIT", 0.05)
    port = spare_port()
    with redis_server(tmp_path, port, durable=False):
        app = App("idle", broker=f"redis://127.0.0.1:{port}/0", backend=None,
                  task_default_queue=f"qw-{unique}")
        ran: list[int] = []

        @app.task(name="note", ignore_result=True)
        def note(n: int) -> None:
            ran.append(n)

        worker = Worker(app, pool="solo", heartbeat=False, send_events=False)
        worker.consumer.connect(worker.prefetch_target())
        worker._on_connected()
        try:
            yield worker, app, ran
        finally:
            worker.consumer.stop()
            app.close()


@pytest.mark.timeout(60)
def test_an_idle_worker_sends_no_fetch_of_its_own_while_it_waits(idle_worker):
    """An idle worker's lists are polled by the fetch script in the write of each wait it
    starts (the wait watches one list: not the other queues, not the priority sublists), and
    a turn sends no fetch while the last one found nothing: over 30 idle turns, the first
    turn's fetch is a round trip of its own, and at most one more at each wait's end (a turn
    that falls between a wait's reply and the next wait, as on a loaded machine), not one a
    turn. Every turn sent one before (30 here, against a wait each five turns or so)."""
    worker, _, _ = idle_worker
    calls = _IdleCalls(worker.consumer.channel)
    for _ in range(30):
        worker._turn()
    assert calls.fetches <= calls.waits and calls.polls == calls.waits > 0, vars(calls)


@pytest.mark.timeout(60)
def test_an_idle_worker_polls_at_each_turn_while_its_waits_are_longer_than_a_turn(idle_worker):
    """Before Redis 6 a wait lasts kombu's whole second (the channel's ``brpop_timeout``), so
    the poll that rides each wait would leave a message of another priority or queue waiting up
    to a second: the turns poll as well, each with its fetch."""
    worker, _, _ = idle_worker
    channel = worker.consumer.channel
    channel.brpop_timeout = 1  # what a Redis 5 server leaves it at
    calls = _IdleCalls(channel)
    for _ in range(30):
        worker._turn()
    assert calls.fetches == 30 and calls.polls == calls.waits > 0, vars(calls)


@pytest.mark.timeout(60)
def test_a_channel_closed_with_its_poll_unread_on_a_lost_connection_lets_go_of_everything(
        idle_worker):
    """A wait's connection lost while the poll riding it is unread: closing the channel gives
    its fetch connection back and closes it all the same (the wait is lost as any lost wait)."""
    worker, _, _ = idle_worker
    channel = worker.consumer.channel
    for _ in range(10):
        worker._turn()
    channel.finish_pending_read()
    channel.idle = False
    channel.fetch_many([worker.consumer.queues[0].name], 1)  # holds a fetch connection
    channel.idle = True
    channel._brpop_start()
    assert channel._wait_poll is not None and channel._fetch_conn is not None
    where = channel.client.connection_pool.connection_kwargs
    admin = redis.Redis(host=where["host"], port=where["port"])
    try:
        for client in admin.client_list():
            if client["cmd"] in ("blmove", "brpoplpush"):
                admin.client_kill_filter(_id=client["id"])
    finally:
        admin.close()
    channel.close()
    assert channel.closed and channel._fetch_conn is None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("priority", [0, 5])
def test_an_idle_worker_takes_a_message_of_any_priority_within_a_wait(idle_worker, priority):
    """The wait takes a message of the default priority; one of another priority (a list the
    wait does not watch) is taken by the poll that rides the next wait: an idle worker runs
    either within two waits, and never leaves one behind."""
    worker, app, ran = idle_worker
    calls = _IdleCalls(worker.consumer.channel)
    for _ in range(10):
        worker._turn()
    app.send_task("note", args=[priority], priority=priority)
    waits = calls.waits
    while not ran and calls.waits < waits + 3:
        worker._turn()
    assert ran == [priority], vars(calls)
