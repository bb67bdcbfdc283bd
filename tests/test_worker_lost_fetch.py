"""A fetch whose reply is lost on Redis: the worker's fetch script records the messages it pops as
unacked, atomically, and the reply carrying them never arrives (Redis shut down or the connection
broke in between). The worker must put them back when it reconnects, not leave them for the
visibility timeout.

Each test runs its worker against a redis-server of its own (kombu's unacked index is per
database): these tests once shared database 3 and flushed it, and under ``pytest -n 2`` (or
another checkout running the same file) one test's flush wiped the queue, bindings and unacked
records of another test's worker, which then "lost" a task that had been deleted."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
import redis

from qtui.core import App
from qtui.core.brokers.redis import worker_channel
from qtui.core.pauses import Pause
from qtui.core.queues import inspector_for

from .redis_server import redis_server, spare_port
from .tcp_proxy import Interceptor, split_resp
from .worker_helpers import Setup, make_setup, wait_for

TASKS = 300
VISIBILITY_TIMEOUT = 40
#: Long enough that the worker's periodic reclaim of what it owns and does not hold (every
#: quarter of it) cannot be what brings a message back within the tests' waits.
SLOW_RECLAIM_TIMEOUT = 120
#: What an adoption's request carries (its script, sent as EVAL), as the cutter compares it.
ADOPT_MARKER = worker_channel._ADOPT.strip().splitlines()[0].upper().encode()
#: What a start record's request carries: the command ZADD (the adoption's script names it too).
ZADD_MARKER = b"$4\r\nZADD\r\n"
#: What a client's push of task messages to one queue carries: the command LPUSH.
LPUSH_MARKER = b"$5\r\nLPUSH\r\n"


@pytest.fixture
def private_redis(tmp_path) -> Iterator[int]:
    """The port of a redis-server only this test uses (nothing kept on disk)."""
    port = spare_port()
    with redis_server(tmp_path, port, durable=False):
        yield port


class ReplyCutter(Interceptor):
    """A TCP proxy to Redis that, once armed, drops the first reply carrying messages (a script's
    list, or a ``BLMOVE``'s message, to a request carrying ``marker``; for ``ZADD`` and
    adoptions, the integer they answer) and closes that connection, as a Redis shutting down
    after running the command would; ``request_too``: drops the request itself instead, as a
    connection that broke before Redis read it would.

    Each reply is matched to its request by their order on the connection (Redis answers in the
    order it was asked), not taken as the answer to the last request seen: the worker sends its
    next call before it reads a start record's or an adoption's reply, and on a loaded machine
    that call can pass the proxy before the reply does, which then went through uncut."""

    def __init__(self, port: int, marker: bytes = b"EVALSHA", empty_too: bool = False,
                 on_cut: Callable[[], None] | None = None, request_too: bool = False) -> None:
        self.marker, self.empty_too = marker.upper(), empty_too
        """Cut the reply to a request that carries ``marker``; ``empty_too``: even one that
        carries no message."""
        self.request_too = request_too
        self.on_cut = on_cut
        """Called once the reply is held back, before the connection closes: what happens to
        Redis between the lost reply and the worker's reconnection."""
        self.armed = threading.Event()
        self.cut = threading.Event()
        super().__init__(port)

    def _up(self, client: socket.socket, server: socket.socket, state: dict) -> None:
        # whether each request not answered yet carries the marker, in the order sent
        marked: deque[bool] = state.setdefault("marked", deque())
        rest = b""
        while data := self._recv(client):
            requests, rest = split_resp(rest + data)
            for index, request in enumerate(requests):
                carries = self.marker in request.upper()
                if carries and self.request_too and self._armed_and_uncut():
                    server.sendall(b"".join(requests[:index]))
                    self._drop(client, server)
                    return
                marked.append(carries)
            if requests:  # noted before they go: a reply cannot overtake its request's note
                server.sendall(b"".join(requests))

    def _down(self, server: socket.socket, client: socket.socket, state: dict) -> None:
        marked: deque[bool] = state.setdefault("marked", deque())
        rest = b""
        while data := self._recv(server):
            replies, rest = split_resp(rest + data)
            for index, reply in enumerate(replies):
                # a subscription's messages answer no request: none is marked
                answers_marked = bool(marked) and marked.popleft()
                if answers_marked and self._carries_messages(reply) and self._armed_and_uncut():
                    client.sendall(b"".join(replies[:index]))
                    self._drop(client, server)
                    return
            if replies:
                client.sendall(b"".join(replies))

    def _carries_messages(self, reply: bytes) -> bool:
        """Whether ``reply`` (to a marked request) is one this cutter drops."""
        if self.marker == b"BLMOVE":  # a bulk string: the message moved, not nil
            return reply.startswith(b"$") and b'"body"' in reply
        if self.marker in (ZADD_MARKER, ADOPT_MARKER, LPUSH_MARKER):  # an integer: records
            # added, or the queue's length
            return reply.startswith(b":")
        return reply.startswith(b"*") and (  # a script's list
            self.empty_too or not reply.startswith(b"*0\r\n"))

    def _armed_and_uncut(self) -> bool:
        """Armed, and nothing cut yet: the next marked reply that qualifies is cut."""
        return self.armed.is_set() and not self.cut.is_set()

    def _drop(self, *sockets: socket.socket) -> None:
        if self.on_cut is not None:
            self.on_cut()
        self.cut.set()
        for sock in sockets:
            self._shut(sock)


@contextmanager
def behind(cutter: ReplyCutter, tmp_path: Path, queue: str,
           visibility_timeout: float = VISIBILITY_TIMEOUT) -> Iterator[Setup]:
    """A test's world on the private Redis behind ``cutter``; as the block ends, the cutter is
    closed and the world cleaned up."""
    with make_setup(tmp_path, queue, f"redis://127.0.0.1:{cutter.port}/0", None,
                    broker_transport_options={"visibility_timeout": visibility_timeout}) as setup, \
            closing(cutter):
        yield setup


@pytest.mark.timeout(90)
def test_what_a_fetch_took_when_its_reply_was_lost_comes_back_at_once(tmp_path, unique,
                                                                       redis_url, private_redis):
    client = redis.Redis(port=private_redis)
    cutter = ReplyCutter(private_redis)
    with behind(cutter, tmp_path, f"qw-{unique}") as setup:
        setup.send_slow(TASKS, 0.02)
        with setup.worker("-P", "threads", "-c", "4") as worker:
            assert wait_for(lambda: len(setup.records("done")) >= 40, 20)
            cutter.armed.set()
            assert cutter.cut.wait(10), "no fetch reply carrying messages was cut"
            cut_at = time.monotonic()
            ran = wait_for(lambda: len({r["tag"] for r in setup.records("done")}) >= TASKS,
                           VISIBILITY_TIMEOUT / 2)
            log = worker.log_path.read_text()
        done = {r["tag"] for r in setup.records("done")}
        assert ran, (f"{TASKS - len(done)} of {TASKS} still not run "
                     f"{time.monotonic() - cut_at:.0f} s after the cut; "
                     f"{client.zcard('unacked_index')} unacked in Redis\n{log[-3000:]}")
        assert done == set(range(TASKS))
        assert "Put back" in log, log[-3000:]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("lost", ["reply", "request"])
def test_what_an_idle_wait_delivered_runs_once_when_its_adoption_is_lost(
        tmp_path, unique, redis_url, private_redis, lost):
    """An idle wait's message runs straight from the wait's reply, and the call that records it
    as unacked (its adoption) is read later: whether that call's reply is lost (Redis ran it) or
    the call itself (the message is still in the worker's processing list), the task runs once
    and nothing is left behind: at reconnection the worker adopts what it holds rather than
    put it back."""
    client = redis.Redis(port=private_redis)
    cutter = ReplyCutter(private_redis, marker=ADOPT_MARKER, request_too=lost == "request")
    with behind(cutter, tmp_path, f"qw-{unique}") as setup:
        with setup.worker("-P", "solo") as worker:
            cutter.armed.set()
            app = setup.app()
            sent = 0
            while not cutter.cut.is_set() and sent < 20:
                # a task that arrives while the worker is between waits is fetched by its
                # turn's script instead: send another until a wait moves one
                app.send_task("tasks.mark", args=[sent])
                sent += 1
                cutter.cut.wait(2)
            app.close()
            assert cutter.cut.is_set(), "no adoption was cut"
            assert wait_for(lambda: len(setup.records("mark")) >= sent
                            and not client.zcard("unacked_index"), VISIBILITY_TIMEOUT / 2), \
                f"{client.zcard('unacked_index')} unacked\n{worker.log_path.read_text()[-3000:]}"
            time.sleep(1)  # a second run would show by now
            log = worker.log_path.read_text()
        processing = [key for key in client.scan_iter("qtui.processing.*")
                      if client.type(key) == b"list" and client.llen(key)]
        assert sorted(r["tag"] for r in setup.records("mark")) == list(range(sent)), log[-3000:]
        assert not processing and not client.llen(setup.queue), log[-3000:]
        assert "Reconnected" in log, log[-3000:]


def _marks_run_once_through_a_cut(tmp_path, queue: str, cutter: ReplyCutter,
                                  count: int, pool: tuple[str, ...] = ("-P", "solo")) -> str:
    """Send ``count`` marks to a solo worker behind ``cutter`` once it is armed; each must run
    once, the cut reply notwithstanding. Returns the worker's log."""
    with behind(cutter, tmp_path, queue) as setup:
        with setup.worker(*pool) as worker:
            cutter.armed.set()
            app = setup.app()
            # In one round trip: the worker's idle wait takes the first, its next fetch finds
            # the others waiting and fills its prefetch, and a batch started with no room to
            # fetch records its start alone (the ZADD a test cuts). Sent one by one, a loaded
            # machine let them trickle in, the prefetch never filled, and no ZADD went out.
            app.send_many({"task": "tasks.mark", "args": [i]} for i in range(count))
            app.close()
            assert cutter.cut.wait(10), "no reply was cut"
            assert wait_for(lambda: len(setup.records("mark")) >= count,
                            VISIBILITY_TIMEOUT / 2), worker.log_path.read_text()[-3000:]
            time.sleep(1)  # a task run twice would show by now
            log = worker.log_path.read_text()
        assert sorted(r["tag"] for r in setup.records("mark")) == list(range(count)), log[-3000:]
        assert not setup.dead_letters(expected=1, timeout=0.5)
        return log


@pytest.mark.timeout(60)
def test_a_lost_reply_to_the_fetch_that_records_starts_loses_no_task(tmp_path, unique,
                                                                      redis_url, private_redis):
    """The start record of a batch rides the fetch script: when its reply is lost, the batch
    still runs (once), as when a record cannot be sent, and the connection comes back."""
    log = _marks_run_once_through_a_cut(tmp_path, f"qw-{unique}", ReplyCutter(
        private_redis, marker=b"qtui.ledger.started", empty_too=True), 5)
    assert "Cannot record started tasks" in log and "Reconnected" in log, log[-3000:]


@pytest.mark.timeout(60)
def test_a_start_record_whose_reply_went_with_a_broken_connection_is_reported(
        tmp_path, unique, redis_url, private_redis):
    """A batch with nothing to fetch sends its start record alone (``ZADD``), its reply read
    with the next call's: when the connection breaks first, the record may not have reached
    Redis, and the worker says so, as for a record Redis refused; every task runs once. (A pool
    of threads: the solo pool's start records always ride the fetch script, never alone.)"""
    log = _marks_run_once_through_a_cut(tmp_path, f"qw-{unique}",
                                        ReplyCutter(private_redis, marker=ZADD_MARKER), 6,
                                        ("-P", "threads", "-c", "1"))
    # The records sent alone and unconfirmed when it broke (the next send's failure is
    # reported apart, as "Cannot record started tasks in redis").
    assert re.search(r"before Redis confirmed [1-9]\d* record\(s\)", log), log[-3000:]


@pytest.mark.timeout(60)
def test_a_lost_fetch_comes_back_at_reconnect_though_its_stamp_changed(tmp_path, unique,
                                                                      redis_url, private_redis):
    """The liveness helper re-stamps what the worker owns every few seconds: one that lands
    between the lost reply and the reconnection must not leave the message for the periodic
    reclaim (a quarter of the visibility timeout)."""
    client = redis.Redis(port=private_redis)

    def restamp() -> None:  # what the helper's refresh does: ZADD XX, a new score
        client.zadd("unacked_index", {tag: score + 1 for tag, score in
                                      client.zrange("unacked_index", 0, -1, withscores=True)},
                    xx=True)

    cutter = ReplyCutter(private_redis, on_cut=restamp)
    with behind(cutter, tmp_path, f"qw-{unique}", SLOW_RECLAIM_TIMEOUT) as setup:
        # Sent before the worker starts, so that its first turn's fetch takes it (an idle wait
        # would deliver it from its own reply, no fetch reply carrying it).
        app = setup.app()
        app.send_task("tasks.mark", args=["restamped"])
        app.close()
        cutter.armed.set()
        with setup.worker("-P", "solo") as worker:
            assert cutter.cut.wait(10), "no fetch reply carrying messages was cut"
            # well before the periodic reclaim (SLOW_RECLAIM_TIMEOUT / 4) could bring it back
            ran = wait_for(lambda: setup.records("mark"), SLOW_RECLAIM_TIMEOUT / 8)
            log = worker.log_path.read_text()
        assert ran, f"{client.zcard('unacked_index')} unacked in Redis\n{log[-3000:]}"
        assert [r["tag"] for r in setup.records("mark")] == ["restamped"]


@pytest.mark.timeout(60)
def test_what_an_idle_wait_moved_goes_back_to_its_queue_when_its_reply_is_lost(
        tmp_path, unique, redis_url, private_redis):
    """The idle wait's BLMOVE moves a message into the worker's processing list and its reply
    is lost: at reconnection the message goes back to its queue, here one the worker no longer
    consumes (paused meanwhile), instead of waiting unseen for the worker's death."""
    client = redis.Redis(port=private_redis)
    queue = f"qw-{unique}"

    def pause() -> None:
        with inspector_for(App("pauser", broker=f"redis://127.0.0.1:{private_redis}/0")) as found:
            found.pause(Pause(queue, time.time(), "test"))

    cutter = ReplyCutter(private_redis, marker=b"BLMOVE", on_cut=pause)
    with behind(cutter, tmp_path, queue, SLOW_RECLAIM_TIMEOUT) as setup:
        with setup.worker("-P", "solo") as worker:
            cutter.armed.set()
            app = setup.app()
            sent = 0
            while not cutter.cut.is_set() and sent < 20:
                # a task that arrives while the worker is between waits is fetched (and run)
                # by its turn's script instead: send another until a wait moves one
                app.send_task("tasks.mark", args=[sent])
                sent += 1
                cutter.cut.wait(2)
            app.close()
            assert cutter.cut.is_set(), "no BLMOVE reply carrying a message was cut"
            back = wait_for(lambda: client.llen(queue) == 1, SLOW_RECLAIM_TIMEOUT / 8)
        log = worker.log_path.read_text()  # once stopped: the line after a put-back is in
        processing = [key for key in client.scan_iter("qtui.processing.*")
                      if client.type(key) == b"list" and client.llen(key)]
        ran = len(setup.records("mark"))
        # The turn's fetch script takes the processing list first: it may deliver the moved
        # message before the wait's reply is read (and cut); then every task ran, once.
        assert back or ran == sent, f"in processing lists: {processing}\n{log[-3000:]}"
        assert not processing and ran == (sent - 1 if back else sent)
        # Only a message still in the processing list at reconnection is put back: when the
        # turn's script delivered it first, there is nothing to put back (and it ran, once),
        # unless the connection went before it started: then it was requeued unrun with the
        # prefetched tasks (1 run in 30 took that path at load 6-9).
        if back:
            moved = json.loads(client.lindex(queue, 0))["headers"]["id"]
            said = "Requeued 1 prefetched task" if f"[{moved}] received" in log \
                else "Put back 1 message"
            assert said in log, log[-3000:]
