"""The fault suite: qtui's worker under kills, broker restarts, bad input, long ETAs, lock
contention, a full disk, a Celery worker on the same Redis and tasks that hold the GIL, with
counts. What ``make faults`` runs.

Every scenario sends numbered tasks (``faults.record(i)``); each run of a task adds ``i`` to a
set and counts one run in Redis (database 11, apart from the brokers), so the suite knows what
was lost (sent, never run) and what ran twice (runs minus distinct). The workers are real
``qtui run-worker`` processes. Redis is a ``redis-server`` the run starts for itself on a spare
port (databases 10 broker, 11 records, 12 events; ``--redis URL`` names another server), so
concurrent runs never flush each other's broker; RabbitMQ is the machine's, plus a
``redis-server --appendonly yes`` of the suite's own for the Redis restart, a RabbitMQ node of
its own (``tests/rabbit_node.py``) for every scenario that restarts, alarms or times out a node,
and small tmpfs mounts for the full disk. Each scenario has a time budget: one
that hangs or breaks is reported failed and the suite goes on. A full run replaces the "Fault
suite" section of ``bench/RESULTS.md`` (keeping its "### Notes"); ``--quick`` (small counts) and
``--only`` do not.

    python -m bench.faults [--quick] [--only kill-parent,malformed,...] [--redis URL]
"""

from __future__ import annotations

import argparse
import base64
import bz2
import errno
import itertools
import json
import os
import pickle
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from celery import Celery
from kombu import Connection, Exchange, Producer
from rich.console import Console
from rich.table import Table

from bench.run import Broker, SQLiteBroker, machine
from qtui.core import App
from qtui.core.delayed import DELAY_QUEUE, DUE_QUEUE, DUE_TTL, LADDER
from qtui.core.events import EventReceiver
from qtui.workers.deadletter import DEAD_REASON_HEADER, dead_letter_queue_name
from tests.beat_helpers import beats as beat_processes
from tests.beat_helpers import kill, leader, sent_ticks, store_of, write_config
from tests.processes import running, write_module
from tests.rabbit_node import rabbit_node
from tests.redis_server import redis_server, spare_port

REPO = Path(__file__).resolve().parent.parent
AMQP = "amqp://guest:guest@127.0.0.1:5672//"
#: The kill scenarios' pool: two prefork children, qtui's default prefetch multiplier (4).
CONCURRENCY = 2
PREFETCH = 4


@dataclass(frozen=True)
class Databases:
    """The Redis databases a run's scenarios use on one server: the broker (db 10, which the
    kill, malformed and ETA scenarios flush), the records of task runs (db 11) and the event
    feed's (db 12: events ride PUBLISH, which only a database number keeps apart)."""

    server: str
    """``redis://host:port``, no database."""

    @property
    def broker(self) -> str:
        return f"{self.server}/10"

    @property
    def records(self) -> str:
        return f"{self.server}/11"

    @property
    def events(self) -> str:
        return f"{self.server}/12"


_databases: Databases | None = None


def databases() -> Databases:
    """Where the running scenarios keep their Redis data (set by :func:`on_redis`)."""
    if _databases is None:
        raise RuntimeError("no Redis for the fault scenarios: run them inside "
                           "bench.faults.on_redis(...), as main() does")
    return _databases


@contextmanager
def on_redis(work: Path, url: str | None = None) -> Iterator[Databases]:
    """Run the scenarios inside the block against the Redis server at ``url``, or by default a
    ``redis-server`` of their own on a spare port (nothing on disk, data in ``work``), shut
    down at the end: concurrent runs, and tests beside them, then share no database."""
    global _databases
    with ExitStack() as stack:
        if url is None:
            port = spare_port()
            stack.enter_context(redis_server(work, port, durable=False))
            url = f"redis://127.0.0.1:{port}"
        parts = urlsplit(url)
        previous, _databases = _databases, Databases(f"{parts.scheme}://{parts.netloc}")
        try:
            yield _databases
        finally:
            _databases = previous

TASKS = """
import json, os, time
import redis
from qtui.core import App

app = App("faulttasks", broker=os.environ["FAULTS_BROKER"], backend=None,
          task_default_queue=os.environ["FAULTS_QUEUE"])
app.conf.update(json.loads(os.environ.get("FAULTS_CONF") or "{}"))
_records = redis.Redis.from_url(os.environ["FAULTS_RECORDS"])
_key = os.environ["FAULTS_QUEUE"]

@app.task(name="faults.record", ignore_result=True)
def record(i, seconds=0.0):
    if seconds:
        time.sleep(seconds)
    pipe = _records.pipeline()
    pipe.incr(_key + ":runs")
    pipe.sadd(_key + ":done", i)
    pipe.execute()

@app.task(name="faults.hold_gil", ignore_result=True)
def hold_gil(i, seconds):
    import ctypes
    ctypes.PyDLL(None).sleep(int(seconds))  # a C call that keeps the GIL the whole time
    record(i)
@app.task(name="faults.answer")
def answer(i, seconds=0.0):
    record(i, seconds)
    return i
"""


@dataclass
class Trial:
    """One run of a fault scenario: what was sent and ran, whether it held, and its figures."""

    name: str
    sent: int = 0
    distinct: int = 0
    runs: int = 0
    passed: bool = False
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    key: str = ""
    """The scenario's name on the command line (``--only``)."""
    details: list[str] = field(default_factory=list)
    """Markdown written under the results table (a breakdown too wide for one cell)."""

    @property
    def lost(self) -> int:
        return self.sent - self.distinct

    @property
    def duplicates(self) -> int:
        return self.runs - self.distinct


class World:
    """One scenario's queue, broker, tasks module, records and worker processes."""

    def __init__(self, workdir: Path, broker: str, **conf: Any) -> None:
        self.queue = f"faults-{uuid.uuid4().hex[:8]}"
        self.dir = workdir / self.queue
        self.dir.mkdir(parents=True)
        write_module(self.dir, "faulttasks", TASKS)
        self.broker = broker
        self.conf = conf
        self.records_url = databases().records
        self.records = redis.Redis.from_url(self.records_url)

    @property
    def env(self) -> dict[str, str]:
        return {"FAULTS_BROKER": self.broker, "FAULTS_QUEUE": self.queue,
                "FAULTS_RECORDS": self.records_url, "FAULTS_CONF": json.dumps(self.conf)}

    @contextmanager
    def worker(self, *options: str, name: str = "w") -> Iterator[subprocess.Popen[str]]:
        hostname = f"{name}-{self.queue}"
        argv = [sys.executable, "-m", "qtui.tui.cli", "-A", "faulttasks", "run-worker",
                "-n", hostname, "-l", "INFO", *options]
        ready = f"qtui worker {hostname}@{socket.gethostname()} ready."
        with running(argv, self.dir, ready=ready, timeout=60, env=self.env) as proc:
            yield proc

    def app(self) -> App:
        return App("faults-client", broker=self.broker, backend=None,
                   task_default_queue=self.queue, **self.conf)

    def send(self, numbers: range, seconds: float = 0.0, **options: Any) -> int:
        app = self.app()
        try:
            for i in numbers:
                app.send_task("faults.record", args=[i, seconds], ignore_result=True, **options)
        finally:
            app.close()
        return len(numbers)

    def done(self) -> int:
        return self.records.scard(f"{self.queue}:done")

    def runs(self) -> int:
        return int(self.records.get(f"{self.queue}:runs") or 0)

    def settle(self, outcome: Trial, expected: int, timeout: float) -> bool:
        """Wait until ``expected`` distinct tasks ran, then a moment more for late duplicates."""
        finished = wait_for(lambda: self.done() >= expected, timeout)
        time.sleep(1.0)
        outcome.distinct, outcome.runs = self.done(), self.runs()
        return finished

    def cleanup(self) -> None:
        for key in self.records.scan_iter(f"{self.queue}*"):
            self.records.delete(key)


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


# scenarios ----------------------------------------------------------------------------------------
def kill_parent(work: Path, n: int, kills: int) -> Trial:
    """SIGKILL the worker's parent process (its prefork children die with it) again and again
    while it drains ``n`` tasks with late acks; a last worker finishes. In flight at a kill: the
    broker's delivered, unacked messages this worker fetched (at most prefetch x concurrency)."""
    redis.Redis.from_url(databases().broker).flushdb()
    # A short visibility timeout, so the next worker restores a killed one's messages in
    # seconds instead of qtui's default minute; late acks are qtui's default.
    world = World(work, databases().broker, broker_transport_options={"visibility_timeout": 4})
    outcome = Trial("SIGKILL the worker parent, repeatedly (Redis, prefork -c 2)")
    broker = redis.Redis.from_url(databases().broker)
    try:
        outcome.sent = world.send(range(n), seconds=0.002)
        in_flight, orphans = [], 0
        for k in range(kills):
            goal = world.done() + n // (kills + 2)
            started = time.time()
            with world.worker("-P", "prefork", "-c", str(CONCURRENCY), name=f"k{k}") as proc:
                wait_for(lambda g=goal: world.done() >= g, 120)
                children = child_pids(proc.pid)
                in_flight.append(broker.zcount("unacked_index", started, "+inf"))
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
                wait_for(lambda c=children: not any(alive(pid) for pid in c), 5)
                orphans += sum(1 for pid in children if alive(pid))
        with world.worker("-P", "prefork", "-c", str(CONCURRENCY), name="last"):
            finished = world.settle(outcome, n, 300)
        window = PREFETCH * CONCURRENCY
        outcome.figures.update(kills=kills, in_flight_seen=max(in_flight), window=window,
                               duplicate_bound=kills * window, orphaned_children=orphans)
        outcome.notes.append(f"in flight at each kill {in_flight}")
        outcome.passed = (finished and outcome.lost == 0 and orphans == 0
                          and outcome.duplicates <= kills * window)
        return outcome
    finally:
        world.cleanup()
        redis.Redis.from_url(databases().broker).flushdb()


def child_pids(pid: int) -> list[int]:
    """The children of ``pid`` (``pgrep -P``)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def kill_child(work: Path, n: int, kills: int) -> Trial:
    """SIGKILL one prefork child at a time while the worker drains; the worker redelivers the
    task the child held (one in flight per kill: a child runs one task at a time)."""
    redis.Redis.from_url(databases().broker).flushdb()
    world = World(work, databases().broker)
    outcome = Trial("SIGKILL a prefork child, repeatedly (Redis, prefork -c 2)")
    try:
        outcome.sent = world.send(range(n), seconds=0.002)
        done_kills = 0
        with world.worker("-P", "prefork", "-c", str(CONCURRENCY)) as proc:
            rng = random.Random(7)
            for k in range(kills):
                wait_for(lambda g=(k + 1) * n // (kills + 2): world.done() >= g, 120)
                children = child_pids(proc.pid)
                if children:
                    os.kill(rng.choice(children), signal.SIGKILL)
                    done_kills += 1
            finished = world.settle(outcome, n, 300)
            parent_alive = proc.poll() is None
        dead = redis.Redis.from_url(databases().broker).llen(
            dead_letter_queue_name(world.queue))
        outcome.figures.update(kills=done_kills, window=1,
                               duplicate_bound=done_kills, parent_alive=parent_alive,
                               dead_lettered=dead)
        outcome.passed = (finished and parent_alive and outcome.lost == 0
                          and outcome.duplicates <= done_kills)
        return outcome
    finally:
        world.cleanup()
        redis.Redis.from_url(databases().broker).flushdb()


def broker_restart(work: Path, n: int, kind: str) -> Trial:
    """Restart the broker while the worker drains; count what is lost and how long consumption
    took to resume (from the broker being back to the next task run). Either broker is the
    scenario's own: a ``redis-server --appendonly yes`` or a RabbitMQ node
    (``tests/rabbit_node.py``), never the shared one other runs use."""
    data = work / f"redis-{uuid.uuid4().hex[:6]}"
    data.mkdir()
    port = spare_port()
    broker = "Redis (own, appendonly)" if kind == "redis" else "RabbitMQ (own node)"
    outcome = Trial(f"restart {broker} mid-run (prefork -c 2)")
    with ExitStack() as stack:
        server = redis_server(data, port) if kind == "redis" else None
        node = stack.enter_context(rabbit_node()) if kind == "rabbitmq" else None
        url = f"redis://127.0.0.1:{port}/0" if node is None else node.url
        world = World(work, url)
        try:
            if server is not None:
                server.__enter__()
            # rabbitmqctl takes seconds to start (an Erlang VM of its own, slower under load):
            # tasks long enough that work is left for the node to serve once it is back.
            outcome.sent = world.send(range(n), seconds=0.005 if node is None else 0.02)
            with world.worker("-P", "prefork", "-c", "2") as proc:
                wait_for(lambda: world.done() >= n // 5, 120)
                stopped = time.monotonic()
                if server is not None:
                    server.__exit__(None, None, None)  # SIGTERM: Redis writes its AOF and exits
                    time.sleep(2)
                    server = redis_server(data, port)
                    server.__enter__()
                else:
                    assert node is not None
                    node.ctl("stop_app")
                    time.sleep(2)
                    node.ctl("start_app")
                    wait_for(lambda: amqp_up(url), 60)
                back, before = time.monotonic(), world.done()
                outcome.figures["down_s"] = round(back - stopped, 1)
                resumed = wait_for(lambda: world.done() > before, 60, interval=0.01)
                outcome.figures["resume_s"] = round(time.monotonic() - back, 2) \
                    if resumed else None
                finished = wait_for(lambda: world.done() >= n, 300)
                outcome.figures["all_ran_s"] = round(time.monotonic() - back, 1)
                world.settle(outcome, n, 0)
                log = proc.log_path.read_text()  # type: ignore[attr-defined]
            outcome.figures["reconnected"] = "Reconnected" in log
            outcome.passed = (finished and outcome.lost == 0 and resumed
                              and outcome.figures["resume_s"] <= 10)
            return outcome
        finally:
            if server is not None:
                server.__exit__(None, None, None)
            world.cleanup()
            shutil.rmtree(data, ignore_errors=True)


def amqp_up(url: str) -> bool:
    try:
        with Connection(url, connect_timeout=1) as conn:
            conn.connect()
        return True
    except Exception:
        return False


def delete_amqp_queues(*names: str) -> None:
    with Connection(AMQP) as conn:
        for name in names:
            try:
                conn.default_channel.queue_delete(name)
            except Exception:
                conn.close()
                conn.connect()


#: The ways a message can be wrong; each must end in the dead-letter queue with its reason.
BAD_KINDS = ("not-json", "truncated-json", "random-bytes", "random-bytes-as-json",
             "pickle-not-accepted", "text-plain", "no-task-header", "no-id-header",
             "task-not-a-string", "unknown-task", "body-not-a-triple", "args-not-a-list",
             "kwargs-not-a-mapping", "embed-not-a-mapping", "bad-eta", "bad-retries",
             "bad-timelimit", "typed-value-kombu-cannot-build")


KIND_HEADER = "x-faults-kind"


#: kombu's typed JSON values its decoder fails on with a TypeError, an AttributeError, a decimal
#: error, ... (not only ValueError).
CRAFTED_TYPED = [{"__type__": [], "__value__": None}, {"__type__": "bytes", "__value__": 1},
                 {"__type__": "decimal", "__value__": "x"}, {"__type__": "uuid", "__value__": "a"},
                 {"__type__": "datetime", "__value__": []}, {"__type__": "nope", "__value__": 1}]


def bad_message(rng: random.Random, queue: str) -> tuple[str, bytes, str, str, dict[str, Any]]:
    """One malformed message: (kind, body, content type, content encoding, headers)."""
    task_id = str(uuid.uuid4())
    headers = {"lang": "py", "task": "faults.record", "id": task_id, "root_id": task_id,
               "parent_id": None, "group": None, "retries": 0, "eta": None,
               "expires": None, "timelimit": [None, None], "argsrepr": "()",
               "kwargsrepr": "{}", "origin": "faults"}
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    good = json.dumps([[1], {}, embed]).encode()
    kind = rng.choice(BAD_KINDS)
    body, content_type, encoding = good, "application/json", "utf-8"
    if kind == "not-json":
        body = b"{this is not json"
    elif kind == "truncated-json":
        body = good[: rng.randint(1, len(good) - 1)]
    elif kind == "random-bytes":
        body, content_type, encoding = (rng.randbytes(rng.randint(1, 200)),
                                        "application/octet-stream", "binary")
    elif kind == "random-bytes-as-json":
        body = rng.randbytes(rng.randint(1, 200))
    elif kind == "pickle-not-accepted":
        body, content_type, encoding = (pickle.dumps([[1], {}, {}]),
                                        "application/x-python-serialize", "binary")
    elif kind == "text-plain":
        content_type = "text/plain"
    elif kind == "no-task-header":
        headers = {"id": task_id}
    elif kind == "no-id-header":
        del headers["id"]
    elif kind == "task-not-a-string":
        headers["task"] = 42
    elif kind == "unknown-task":
        headers["task"] = f"no.such.{queue}"
    elif kind == "body-not-a-triple":
        body = json.dumps({"args": [1]}).encode()
    elif kind == "args-not-a-list":
        body = json.dumps([{"i": 1}, {}, embed]).encode()
    elif kind == "kwargs-not-a-mapping":
        body = json.dumps([[1], [2], embed]).encode()
    elif kind == "embed-not-a-mapping":
        body = json.dumps([[1], {}, "callbacks"]).encode()
    elif kind == "bad-eta":
        headers["eta"] = "tomorrow"
    elif kind == "bad-retries":
        headers["retries"] = "x"
    elif kind == "bad-timelimit":
        headers["timelimit"] = "soon"
    elif kind == "typed-value-kombu-cannot-build":
        body = json.dumps([[rng.choice(CRAFTED_TYPED)], {}, embed]).encode()
    headers[KIND_HEADER] = kind  # kept in the dead letter: what was sent meets what came out
    return kind, body, content_type, encoding, headers


def malformed(work: Path, bad: int, good: int) -> Trial:
    """``bad`` malformed messages interleaved with ``good`` valid tasks on Redis: the worker stays
    up, every valid one runs, every invalid one is dead-lettered with a reason."""
    redis.Redis.from_url(databases().broker).flushdb()
    world = World(work, databases().broker)
    outcome = Trial(f"{bad:,} malformed messages among {good:,} valid (Redis, threads -c 8)")
    rng = random.Random(2481)
    kinds: Counter[str] = Counter()
    try:
        app = world.app()
        order = ["bad"] * bad + ["good"] * good
        rng.shuffle(order)
        with Connection(databases().broker) as conn:
            producer = Producer(conn.default_channel, exchange=Exchange(""))
            i = 0
            for what in order:
                if what == "good":
                    app.send_task("faults.record", args=[i, 0.0], ignore_result=True)
                    i += 1
                    continue
                kind, body, content_type, encoding, headers = bad_message(rng, world.queue)
                kinds[kind] += 1
                producer.publish(body, routing_key=world.queue, content_type=content_type,
                                 content_encoding=encoding, headers=headers)
        app.close()
        outcome.sent = good
        dead_queue = dead_letter_queue_name(world.queue)
        client = redis.Redis.from_url(databases().broker)
        with world.worker("-P", "threads", "-c", "8") as proc:
            finished = wait_for(lambda: world.done() >= good and client.llen(dead_queue) >= bad,
                                300)
            time.sleep(1.0)
            alive = proc.poll() is None
        outcome.distinct, outcome.runs = world.done(), world.runs()
        dead_kinds: Counter[str] = Counter()
        reasons: dict[str, str] = {}
        without_reason = 0
        for raw in client.lrange(dead_queue, 0, -1):
            headers = json.loads(raw).get("headers") or {}
            kind, reason = headers.get(KIND_HEADER, "?"), headers.get(DEAD_REASON_HEADER)
            dead_kinds[kind] += 1
            if not reason:
                without_reason += 1
            reasons.setdefault(kind, UUID.sub("<id>", str(reason))[:110].replace("|", "/"))
        dead = client.llen(dead_queue)
        outcome.figures.update(valid_succeeded=outcome.distinct, invalid_sent=bad,
                               dead_lettered=dead, without_reason=without_reason,
                               worker_restarts=0 if alive else 1)
        outcome.details = [
            f"Malformed messages by kind ({bad:,} sent among {good:,} valid, "
            "`random.Random(2481)`):", "",
            "| kind | sent | dead-lettered | reason recorded (the first of its kind) |",
            "| --- | ---: | ---: | --- |",
            *(f"| {k} | {kinds[k]:,} | {dead_kinds[k]:,} | {reasons.get(k, '')} |"
              for k in sorted(kinds))]
        outcome.passed = (finished and alive and outcome.lost == 0 and dead == bad
                          and dead_kinds == kinds and without_reason == 0
                          and outcome.duplicates == 0)
        return outcome
    finally:
        world.cleanup()
        redis.Redis.from_url(databases().broker).flushdb()


#: Lying ``compression`` headers: a known type that does not match the (plain JSON) body, and
#: types kombu does not know.
COMPRESSION_KINDS = ("application/x-gzip", "application/x-bz2", "application/x-bogus", "br")


def compression(work: Path, bad: int, good: int) -> Trial:
    """``bad`` messages whose ``compression`` header is wrong or unknown among ``good`` valid
    tasks, on Redis and on the embedded broker (threads -c 4 on each): the worker neither dies
    nor reconnects, every valid task runs, every bad message is dead-lettered with a reason."""
    outcome = Trial(f"{bad:,} bad compression headers among {good:,} valid, per broker "
                      "(Redis and SQLite, threads -c 4)")
    rng = random.Random(14)
    checks = []
    outcome.details = ["| broker | valid run | bad sent | dead-lettered | without reason | "
                       "connection losses | worker died |", "| --- | ---: | ---: | ---: | ---: | "
                       "---: | --- |"]
    for name, url in (("redis", databases().broker),
                      ("sqlite", f"sqlite://{work}/compression.sqlite")):
        world = World(work, url)
        try:
            kinds: Counter[str] = Counter()
            app = world.app()
            order = ["bad"] * bad + ["good"] * good
            rng.shuffle(order)
            with Connection(url) as conn:
                producer = Producer(conn.default_channel, exchange=Exchange(""))
                i = 0
                for what in order:
                    if what == "good":
                        app.send_task("faults.record", args=[i, 0.0], ignore_result=True)
                        i += 1
                        continue
                    kind = rng.choice(COMPRESSION_KINDS)
                    kinds[kind] += 1
                    task_id = str(uuid.uuid4())
                    headers = {"lang": "py", "task": "faults.record", "id": task_id,
                               "root_id": task_id, "retries": 0, "timelimit": [None, None],
                               "compression": kind, KIND_HEADER: kind}
                    producer.publish(json.dumps([[-1], {}, {}]), routing_key=world.queue,
                                     content_type="application/json", content_encoding="utf-8",
                                     headers=headers)
            app.close()
            dead: list[dict[str, Any]] = []
            with world.worker("-P", "threads", "-c", "4") as proc, Connection(url) as conn:
                channel = conn.default_channel
                dead_queue = dead_letter_queue_name(world.queue)

                def collect() -> bool:
                    while (message := channel.basic_get(dead_queue, no_ack=True)) is not None:
                        dead.append(message.headers or {})
                    return world.done() >= good and len(dead) >= bad
                finished = wait_for(collect, 300, interval=0.2)
                time.sleep(1.0)
                collect()
                alive = proc.poll() is None
                losses = proc.log_path.read_text().count("Broker connection lost")
            ran, runs = world.done(), world.runs()
            without_reason = sum(1 for h in dead if not h.get(DEAD_REASON_HEADER))
            outcome.sent += good
            outcome.distinct += ran
            outcome.runs += runs
            outcome.figures[f"{name}_dead_lettered"] = len(dead)
            outcome.details.append(f"| {name} | {ran:,} | {bad:,} | {len(dead):,} | "
                                   f"{without_reason} | {losses} | {'no' if alive else 'yes'} |")
            checks.append(finished and alive and ran == good and runs == good
                          and len(dead) == bad and without_reason == 0 and losses == 0
                          and Counter(h.get(KIND_HEADER) for h in dead) == kinds)
        finally:
            world.cleanup()
            # --redis may name a shared server: delete only this queue's keys
            broker_db = redis.Redis.from_url(databases().broker)
            for pattern in (f"{world.queue}*", f"_kombu.binding.{world.queue}*"):
                for key in broker_db.scan_iter(pattern):
                    broker_db.delete(key)
    outcome.figures["dead_lettered"] = sum(v for k, v in outcome.figures.items()
                                           if k.endswith("_dead_lettered"))
    outcome.passed = len(checks) == 2 and all(checks)
    return outcome


def bomb(work: Path, streams: int, good: int) -> Trial:
    """A bzip2 message of ``streams`` concatenated streams of 100 MB of zeros each (about 1 KB
    sent) among ``good`` valid tasks on Redis, a solo worker at the default
    ``worker_max_body_size``: it inflates the bomb in steps up to the cap only, dead-letters the
    compressed bytes with the reason, runs every valid task, and stays up with its peak memory
    bounded by the cap."""
    payload = bz2.compress(b"\0" * (100 << 20), 9) * streams
    outcome = Trial(f"a {len(payload):,}-byte bzip2 bomb ({streams * 100:,} MB inflated) among "
                    f"{good:,} valid tasks (Redis, solo, default cap)")
    url = databases().broker
    world = World(work, url)
    try:
        half = good // 2
        outcome.sent = world.send(range(half))
        task_id = str(uuid.uuid4())
        with Connection(url) as conn:
            Producer(conn.default_channel, exchange=Exchange("")).publish(
                payload, routing_key=world.queue, content_type="application/json",
                content_encoding="utf-8", headers={
                    "lang": "py", "task": "faults.record", "id": task_id, "root_id": task_id,
                    "retries": 0, "timelimit": [None, None], "compression": "application/x-bz2"})
        outcome.sent += world.send(range(half, good))
        dead_queue = dead_letter_queue_name(world.queue)
        broker_db = redis.Redis.from_url(url)
        with world.worker("-P", "solo") as proc:
            finished = world.settle(outcome, good, 120) and \
                wait_for(lambda: broker_db.llen(dead_queue) >= 1, 60)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak_mb = int(status.split("VmHWM:")[1].split()[0]) // 1024
            alive = proc.poll() is None
            log = proc.log_path.read_text()
            began = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            stop_s = time.monotonic() - began
        letters = [json.loads(item) for item in broker_db.lrange(dead_queue, 0, -1)]
        kept = [base64.b64decode(e["body"]) == payload for e in letters]
        reasons = [e["headers"].get(DEAD_REASON_HEADER) or "" for e in letters]
        outcome.figures.update({"peak_rss_mb": peak_mb, "dead_lettered": len(letters),
                                "sigterm_s": round(stop_s, 1),
                                "reconnects": log.count("Broker connection lost")})
        outcome.notes.append(f"reason: {reasons[0] if reasons else '-'}")
        outcome.passed = bool(finished and alive and outcome.lost == 0
                              and outcome.duplicates == 0 and kept == [True]
                              and reasons[0].startswith("decompressed body exceeds")
                              and peak_mb < 512 and "Broker connection lost" not in log)
    finally:
        world.cleanup()
        broker_db = redis.Redis.from_url(url)
        for pattern in (f"{world.queue}*", f"_kombu.binding.{world.queue}*"):
            for key in broker_db.scan_iter(pattern):
                broker_db.delete(key)
    return outcome


def long_eta(work: Path, n: int, kind: str) -> Trial:
    """ETA tasks due 3-8 s ahead with a 2 s visibility timeout: each runs exactly once."""
    if kind == "redis":
        redis.Redis.from_url(databases().broker).flushdb()
        broker = databases().broker
    else:
        broker = f"sqlite://{work}/eta-{uuid.uuid4().hex[:6]}.sqlite"
    world = World(work, broker, broker_transport_options={"visibility_timeout": 2})
    outcome = Trial(f"ETA past the visibility timeout (2 s), {kind}, two workers")
    try:
        with world.worker("-P", "threads", "-c", "4", name="a"), \
                world.worker("-P", "threads", "-c", "4", name="b"):
            rng = random.Random(3)
            app = world.app()
            for i in range(n):
                app.send_task("faults.record", args=[i, 0.0], ignore_result=True,
                              countdown=rng.uniform(3, 8))
            app.close()
            outcome.sent = n
            finished = world.settle(outcome, n, 60)
            time.sleep(4)  # past another visibility timeout: nothing runs again
            outcome.runs = world.runs()
        outcome.figures.update(countdown_s="3-8", visibility_timeout_s=2, workers=2)
        outcome.passed = finished and outcome.lost == 0 and outcome.duplicates == 0
        return outcome
    finally:
        world.cleanup()
        if kind == "redis":
            redis.Redis.from_url(databases().broker).flushdb()


# Redis ownership (issue 12): idle kills, raw malformed items, mixed clusters, the GIL ------------
def idle_kill(work: Path, kills: int) -> Trial:
    """SIGSTOP an idle worker inside its blocking wait, send a task (Redis moves it at once),
    SIGKILL the worker; again and again with new workers, then a last one: every task runs."""
    world = World(work, databases().broker, broker_transport_options={"visibility_timeout": 4})
    outcome = Trial(f"worker SIGKILLed in its idle blocking wait, {kills} times (Redis, solo)")
    client = redis.Redis.from_url(databases().broker)
    app = world.app()
    taken = attempts = 0
    try:
        for k in range(kills):
            with world.worker("-P", "solo", name=f"i{k}") as proc:
                while True:
                    attempts += 1
                    time.sleep(0.1)
                    os.kill(proc.pid, signal.SIGSTOP)
                    app.send_task("faults.record", args=[outcome.sent, 0.0], ignore_result=True)
                    outcome.sent += 1
                    if wait_for(lambda: client.llen(world.queue) == 0, 1.0):
                        taken += 1  # moved by the stopped worker's pending wait
                        break
                    os.kill(proc.pid, signal.SIGCONT)
                    wait_for(lambda: client.llen(world.queue) == 0, 10)
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        with world.worker("-P", "solo", name="last"):
            finished = world.settle(outcome, outcome.sent, 60)
        outcome.figures.update(kills=kills, taken_while_stopped=taken, attempts=attempts)
        outcome.passed = (finished and taken == kills and outcome.lost == 0
                          and outcome.duplicates == 0)
        return outcome
    finally:
        app.close()
        world.cleanup()
        for key in client.scan_iter(f"{world.queue}*"):
            client.delete(key)


@contextmanager
def refusing(client: redis.Redis, kind: str) -> Iterator[None]:
    """Redis refusing writes while the block runs: ``READONLY`` (a replica of a master that is
    not there, as after a failover: its data stays) or ``OOM`` (``maxmemory`` under
    ``noeviction``)."""
    if kind == "READONLY":
        client.execute_command("REPLICAOF", "127.0.0.1", str(spare_port()))
    else:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", 1)
    try:
        yield
    finally:
        if kind == "READONLY":
            client.execute_command("REPLICAOF", "NO", "ONE")
        else:
            client.config_set("maxmemory", 0)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time ``pid`` has used (``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def refused_writes(work: Path, n: int, seconds: float) -> Trial:
    """Redis refuses writes for ``seconds`` twice while a worker drains ``n`` tasks that store
    results on it: ``READONLY``, then ``OOM``. Every task runs once, every result is stored,
    the worker stays up, warns, and does not spin meanwhile. The broker and results are a
    ``redis-server`` of the scenario's own (the records stay on the suite's)."""
    data = work / f"redis-{uuid.uuid4().hex[:6]}"
    data.mkdir()
    port = spare_port()
    url = f"redis://127.0.0.1:{port}"
    outcome = Trial(f"Redis refuses writes (READONLY, then OOM) for {seconds:.0f} s each "
                    f"(threads -c 4, results on Redis)")
    with redis_server(data, port, durable=False):
        world = World(work, f"{url}/0", result_backend=f"{url}/1")
        client = redis.Redis.from_url(f"{url}/0")
        try:
            outcome.sent = n
            app = world.app()
            try:
                for i in range(n):
                    app.send_task("faults.answer", args=[i, 0.02])
            finally:
                app.close()
            with world.worker("-P", "threads", "-c", "4") as proc:
                ran, cpu = {}, {}
                for step, kind in enumerate(("READONLY", "OOM"), 1):
                    wait_for(lambda s=step: world.done() >= s * n // 3, 120)
                    before, used = world.done(), cpu_seconds(proc.pid)
                    with refusing(client, kind):
                        time.sleep(seconds)
                    ran[kind], cpu[kind] = world.done() - before, cpu_seconds(proc.pid) - used
                finished = world.settle(outcome, n, 300)
                time.sleep(1.0)  # the last results
                log = proc.log_path.read_text()  # type: ignore[attr-defined]
                alive = proc.poll() is None
            results = redis.Redis.from_url(f"{url}/1")
            stored = sum(1 for key in results.scan_iter("celery-task-meta-*", count=1000)
                         if b'"SUCCESS"' in (results.get(key) or b""))
            dead = client.llen(f"{world.queue}.dead")
            left = client.llen(world.queue) + client.hlen("unacked")
            warned = {kind: f"Redis refused writes ({kind}" in log for kind in ("READONLY", "OOM")}
            outcome.figures.update(
                refused_s=seconds, ran_while_readonly=ran["READONLY"], ran_while_oom=ran["OOM"],
                worker_cpu_s_while_readonly=round(cpu["READONLY"], 2),
                worker_cpu_s_while_oom=round(cpu["OOM"], 2), results_stored=stored,
                results_lost=n - stored, dead_lettered=dead, left_on_redis=left,
                warned=all(warned.values()), results_lost_logged=log.count("cannot store its"),
                tracebacks=log.count("Traceback"), worker_alive=alive)
            # Not spinning: a worker waiting out a refusal uses a small part of one core.
            outcome.passed = (finished and alive and outcome.lost == 0
                              and outcome.duplicates == 0 and stored == n and dead == 0
                              and left == 0 and all(warned.values())
                              and "Traceback" not in log
                              and max(cpu.values()) < 0.5 * seconds)
            return outcome
        finally:
            world.cleanup()
            shutil.rmtree(data, ignore_errors=True)


#: JSON that Redis's Lua (cjson, nesting up to 1,000) decodes and Python refuses: more digits
#: than Python converts to an int (4,300), arrays nested deeper than its recursion limit.
UNDECODABLE = {"integer of 5,000 digits": "1" * 5000,
               "arrays nested 990 deep": "[" * 990 + "]" * 990}


def raw_malformed(rng: random.Random) -> tuple[str, bytes]:
    """One item pushed to a queue list that is not a kombu envelope: (kind, bytes)."""
    kind = rng.choice(["plain text", "binary", "empty", "JSON array", "JSON number",
                       "JSON without body", "JSON without properties", "no delivery tag",
                       "body not base64", "typed value kombu cannot build",
                       "integer of 5,000 digits", "arrays nested 990 deep"])
    envelope = {"body": "e30=", "content-type": "application/json", "content-encoding": "utf-8",
                "headers": {}, "properties": {"body_encoding": "base64",
                                              "delivery_tag": str(uuid.uuid4()),
                                              "delivery_info": {"exchange": "",
                                                                "routing_key": "x"}}}
    if kind == "plain text":
        return kind, b"hello, not JSON"
    if kind == "binary":
        return kind, bytes(rng.randrange(256) for _ in range(32))
    if kind == "empty":
        return kind, b""
    if kind == "JSON array":
        return kind, json.dumps([envelope]).encode()
    if kind == "JSON number":
        return kind, b"42"
    if kind == "JSON without body":
        del envelope["body"]
    elif kind == "JSON without properties":
        del envelope["properties"]
    elif kind == "no delivery tag":
        del envelope["properties"]["delivery_tag"]
    elif kind == "typed value kombu cannot build":
        envelope["headers"]["x"] = rng.choice(CRAFTED_TYPED)
    elif kind in UNDECODABLE:  # Lua's JSON reads them, Python's refuses them
        envelope["headers"]["x"] = "UNDECODABLE"
        return kind, json.dumps(envelope).replace('"UNDECODABLE"', UNDECODABLE[kind]).encode()
    else:
        envelope["body"] = "not*base64!"
    return kind, json.dumps(envelope).encode()


def malformed_redis(work: Path, bad: int, good: int) -> Trial:
    """Items that are not kombu envelopes at all, pushed straight onto a Redis queue among valid
    tasks, half before the worker starts (its busy fetch) and half while it idles (its blocking
    wait): each reaches ``<queue>.dead`` with its reason, every valid task runs."""
    world = World(work, databases().broker)
    outcome = Trial(f"{bad:,} raw non-envelopes among {good:,} valid (Redis, threads -c 4)")
    rng = random.Random(12)
    kinds: Counter[str] = Counter()
    client = redis.Redis.from_url(databases().broker)
    dead_queue = dead_letter_queue_name(world.queue)
    app = world.app()

    def push(bad_count: int, numbers: range) -> None:
        order = ["bad"] * bad_count + list(numbers)
        rng.shuffle(order)
        for what in order:
            if what == "bad":
                kind, item = raw_malformed(rng)
                kinds[kind] += 1
                client.lpush(world.queue, item)
            else:
                app.send_task("faults.record", args=[what, 0.0], ignore_result=True)

    try:
        push(bad // 2, range(good // 2))
        with world.worker("-P", "threads", "-c", "4") as proc:
            wait_for(lambda: world.done() >= good // 2, 60)
            push(bad - bad // 2, range(good // 2, good))
            finished = wait_for(lambda: world.done() >= good and client.llen(dead_queue) >= bad,
                                120)
            time.sleep(1.0)
            alive = proc.poll() is None
        outcome.sent = good
        outcome.distinct, outcome.runs = world.done(), world.runs()
        reasons: Counter[str] = Counter()
        without_reason = 0
        for raw in client.lrange(dead_queue, 0, -1):
            reason = (json.loads(raw).get("headers") or {}).get(DEAD_REASON_HEADER)
            if reason:
                reasons[reason] += 1
            else:
                without_reason += 1
        dead = client.llen(dead_queue)
        outcome.figures.update(invalid_sent=bad, dead_lettered=dead, without_reason=without_reason)
        outcome.details = [
            f"Raw non-envelopes on Redis by kind ({bad:,} among {good:,} valid, "
            "`random.Random(12)`): " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())),
            "", "| reason recorded | dead-lettered |", "| --- | ---: |",
            *(f"| {r} | {n:,} |" for r, n in sorted(reasons.items()))]
        outcome.passed = (finished and alive and outcome.lost == 0 and dead == bad
                          and without_reason == 0 and outcome.duplicates == 0)
        return outcome
    finally:
        app.close()
        world.cleanup()
        for key in client.scan_iter(f"{world.queue}*"):
            client.delete(key)


def hostile_published(rng: random.Random) -> tuple[str, str]:
    """One message for an event or control exchange that no kombu client would publish:
    (kind, its text), from the list the tests use."""
    from tests.hostile_shapes import NOT_ENVELOPES
    kind = rng.choice(sorted(NOT_ENVELOPES))
    return kind, NOT_ENVELOPES[kind]


def hostile_broadcast(work: Path, bad: int, good: int) -> Trial:
    """``bad`` messages no kombu client would send, published on Redis to the remote-control
    and event exchanges while a worker (threads -c 4) runs ``good`` tasks: the worker stays up,
    runs every task once and still answers ``inspect ping``; an event receiver reading the same
    stream hears the worker's events after the flood."""
    world = World(work, databases().broker)
    outcome = Trial(f"{bad:,} hostile broadcasts among {good:,} valid (Redis, threads -c 4)")
    rng = random.Random(13)
    kinds: Counter[str] = Counter()
    client = redis.Redis.from_url(databases().broker)
    db = client.connection_pool.connection_kwargs["db"]
    app = world.app()
    try:
        with world.worker("-P", "threads", "-c", "4") as proc, \
                EventReceiver(app, wakeup=False) as receiver:
            hostname = f"w-{world.queue}@{socket.gethostname()}"
            order = ["bad"] * bad + list(range(good))
            rng.shuffle(order)
            for what in order:
                if what == "bad":
                    kind, text = hostile_published(rng)
                    kinds[kind] += 1
                    channel = rng.choice([f"/{db}.celery.pidbox", f"/{db}.celeryev/task.multi"])
                    client.publish(channel, text)
                else:
                    app.send_task("faults.record", args=[what, 0.0], ignore_result=True)
            finished = world.settle(outcome, good, 120)
            answered = app.control.ping(destination=[hostname], timeout=10)
            heard = any(event.get("hostname") == hostname
                        for event in receiver.events(timeout=10, limit=200))
            alive = proc.poll() is None
        outcome.sent = good
        outcome.figures.update(hostile_sent=bad, ping_answered=bool(answered),
                               events_heard_after=heard)
        outcome.details = [f"Hostile broadcasts by kind ({bad:,}, `random.Random(13)`): "
                           + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))]
        outcome.passed = (finished and alive and bool(answered) and heard
                          and outcome.lost == 0 and outcome.duplicates == 0)
        return outcome
    finally:
        app.close()
        world.cleanup()
        _delete_queue_keys(world)


#: Content headers and routing keys another AMQP client can send that are not UTF-8 where
#: py-amqp's strict decode reads them (the routing key: RabbitMQ routes any bytes).
AMQP_BAD_KINDS = ("routing-key-not-utf8", "content-type-not-utf8", "correlation-id-not-utf8",
                  "header-name-not-utf8", "task-header-not-utf8", "id-header-not-utf8",
                  "headers-nested-deep")


def amqp_malformed(rng: random.Random) -> tuple[str, bytes, bytes | None]:
    """One hostile message: (kind, its content header, its routing key if not the queue's)."""
    from tests.test_worker_hostile_amqp import DEEP_HEADERS, content_header, long_string
    kind = rng.choice(AMQP_BAD_KINDS)
    junk = bytes([0xFF]) + rng.randbytes(rng.randint(0, 8))
    task_id = str(uuid.uuid4())
    if kind == "routing-key-not-utf8":
        return kind, content_header(task_id), junk
    if kind == "content-type-not-utf8":
        return kind, content_header(task_id, content_type=junk), None
    if kind == "correlation-id-not-utf8":
        return kind, content_header(task_id, correlation_id=junk), None
    if kind == "header-name-not-utf8":
        return kind, content_header(task_id, extra=((junk, long_string(b"v")),)), None
    if kind == "headers-nested-deep":  # RecursionError in a recursive table reader
        return kind, content_header(task_id, extra=DEEP_HEADERS), None
    header = b"task" if kind == "task-header-not-utf8" else b"id"
    # Written after the valid one: a table read into a dict keeps the last of a name.
    return kind, content_header(task_id, extra=((header, long_string(junk)),)), None


def malformed_amqp(work: Path, bad: int, good: int) -> Trial:
    """Messages that are not UTF-8 where py-amqp reads text (a routing key through a fanout
    exchange, a content type, a header name or value) or whose headers nest thousands of
    tables deep, hand-built and published among valid
    tasks, half before the worker starts and half while it runs: each reaches ``<queue>.dead``
    with its reason, every valid task runs once, and the worker neither dies nor reconnects."""
    import amqp as pyamqp

    from tests.test_worker_hostile_amqp import RawMessage
    world = World(work, AMQP)
    outcome = Trial(f"{bad:,} unreadable messages among {good:,} valid (RabbitMQ, threads -c 4)")
    rng = random.Random(12)
    kinds: Counter[str] = Counter()
    dead_queue = dead_letter_queue_name(world.queue)
    fanout = f"{world.queue}.fanout"
    app = world.app()
    conn = pyamqp.Connection("127.0.0.1:5672", userid="guest", password="guest")
    conn.connect()
    channel = conn.channel()
    body = json.dumps([["bad"], {}, {"callbacks": None, "errbacks": None, "chain": None,
                                     "chord": None}]).encode()

    def publish(bad_count: int, numbers: range) -> None:
        order = ["bad"] * bad_count + list(numbers)
        rng.shuffle(order)
        for what in order:
            if what == "bad":
                kind, raw, routing_key = amqp_malformed(rng)
                kinds[kind] += 1
                if routing_key is None:
                    channel.basic_publish(RawMessage(body, raw), exchange="",
                                          routing_key=world.queue)
                else:
                    channel.basic_publish(RawMessage(body, raw), exchange=fanout,
                                          routing_key=routing_key)
            else:
                app.send_task("faults.record", args=[what, 0.0], ignore_result=True)

    def dead_count() -> int:
        return int(channel.queue_declare(dead_queue, passive=True).message_count)

    try:
        for name in (world.queue, dead_queue):  # as the worker declares them
            channel.queue_declare(name, durable=True, auto_delete=False)
        channel.exchange_declare(fanout, "fanout", auto_delete=True)
        channel.queue_bind(world.queue, fanout)
        publish(bad // 2, range(good // 2))
        with world.worker("-P", "threads", "-c", "4") as proc:
            wait_for(lambda: world.done() >= good // 2, 60)
            publish(bad - bad // 2, range(good // 2, good))
            finished = wait_for(lambda: world.done() >= good and dead_count() >= bad, 120)
            time.sleep(1.0)
            alive = proc.poll() is None
            log = proc.log_path.read_text()  # type: ignore[attr-defined]
        outcome.sent = good
        outcome.distinct, outcome.runs = world.done(), world.runs()
        reasons: Counter[str] = Counter()
        without_reason = 0
        reader = conn.channel()
        while (letter := reader.basic_get(dead_queue, no_ack=True)) is not None:
            reason = (letter.headers or {}).get(DEAD_REASON_HEADER)
            if reason:
                reasons[re.sub(r"b['\"].*", "b'...", UUID.sub("<id>", reason))] += 1
            else:
                without_reason += 1
        dead = sum(reasons.values()) + without_reason
        reconnected = log.count("Broker connection lost")
        outcome.figures.update(invalid_sent=bad, dead_lettered=dead, without_reason=without_reason,
                               reconnections=reconnected, worker_up=alive)
        outcome.details = [
            f"Unreadable messages on RabbitMQ by kind ({bad:,} among {good:,} valid, "
            "`random.Random(12)`): " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())),
            "", "| reason recorded | dead-lettered |", "| --- | ---: |",
            *(f"| {r} | {n:,} |" for r, n in sorted(reasons.items()))]
        outcome.passed = (finished and alive and outcome.lost == 0 and dead == bad
                          and without_reason == 0 and outcome.duplicates == 0
                          and reconnected == 0)
        return outcome
    finally:
        app.close()
        conn.close()
        delete_amqp_queues(world.queue, dead_queue)
        world.cleanup()


CELERY_TASKS = """
import os, time
import redis
from celery import Celery

app = Celery("celerytasks", broker=os.environ["FAULTS_BROKER"])
_records = redis.Redis.from_url(os.environ["FAULTS_RECORDS"])
_key = os.environ["FAULTS_QUEUE"]

@app.task(name="faults.celery_record", ignore_result=True)
def celery_record(i, seconds=0.0):
    if seconds:
        time.sleep(seconds)
    pipe = _records.pipeline()
    pipe.incr(_key + ":runs")
    pipe.sadd(_key + ":done", i)
    pipe.execute()

@app.task(name="faults.record", ignore_result=True)
def record(i, seconds=0.0):
    celery_record(i, seconds)
"""


def mixed_celery(work: Path, each: int) -> Trial:
    """A Celery worker and a qtui worker (visibility timeout 2 s) on one Redis database: Celery
    ETA tasks (3-8 s ahead) and long tasks (3 s) on Celery's queue, long tasks on qtui's; every
    task runs exactly once (qtui gives back only what dead qtui workers held)."""
    world = World(work, databases().broker, broker_transport_options={"visibility_timeout": 2})
    write_module(world.dir, "celerytasks", CELERY_TASKS)
    celery_queue = f"{world.queue}-celery"
    outcome = Trial(f"a Celery and a qtui worker on one Redis DB, {3 * each} tasks "
                      "(Celery ETA 3-8 s and 3 s tasks, qtui 3 s tasks; qtui timeout 2 s)")
    celery_argv = [sys.executable, "-m", "celery", "-A", "celerytasks", "worker", "--pool",
                   "threads", "-c", "8", "-Q", celery_queue, "-n", f"celery-{world.queue}@%h",
                   "--loglevel", "INFO", "--without-mingle", "--without-gossip"]
    celery = Celery("faults-celery-client", broker=databases().broker)
    try:
        with world.worker("-P", "threads", "-c", "8"), \
                running(celery_argv, world.dir, "ready.", timeout=60, env=world.env):
            rng = random.Random(5)
            for i in range(each):
                celery.send_task("faults.celery_record", args=[i], queue=celery_queue,
                                 countdown=rng.uniform(3, 8))
                celery.send_task("faults.celery_record", args=[each + i, 3.0],
                                 queue=celery_queue)
            outcome.sent = 2 * each + world.send(range(2 * each, 3 * each), seconds=3.0)
            finished = world.settle(outcome, outcome.sent, 120)
            time.sleep(4)  # past another visibility timeout: nothing runs again
            outcome.runs = world.runs()
        outcome.figures.update(celery_eta=each, celery_long=each, qtui_long=each,
                               qtui_visibility_timeout_s=2)
        outcome.passed = finished and outcome.lost == 0 and outcome.duplicates == 0
        return outcome
    finally:
        celery.close()
        world.cleanup()
        client = redis.Redis.from_url(databases().broker)
        for key in client.scan_iter(f"{world.queue}*"):
            client.delete(key)


def eta_without_qtui(work: Path, n: int) -> Trial:
    """ETA tasks (due in 4 s) that a qtui worker stored on RabbitMQ and left there when it
    stopped: with no qtui worker to consume the due queue, its TTL (DUE_TTL) dead-letters them
    to their queue, where a Celery worker runs each once, no command needed."""
    world = World(work, AMQP, worker_eta_horizon=1.0)
    write_module(world.dir, "celerytasks", CELERY_TASKS)
    outcome = Trial(f"{n} ETA tasks left by a stopped qtui worker on RabbitMQ, run by a Celery "
                    f"worker once the due queue's TTL ({DUE_TTL} s) passes")
    celery_argv = [sys.executable, "-m", "celery", "-A", "celerytasks", "worker", "--pool",
                   "solo", "-Q", world.queue, "-n", f"celery-{world.queue}@%h", "--loglevel",
                   "INFO", "--without-mingle", "--without-gossip", "--without-heartbeat"]
    try:
        with world.worker("-P", "solo") as proc:
            outcome.sent = world.send(range(n), countdown=4)
            stored = wait_for(lambda: proc.log_path.read_text().count(  # type: ignore[attr-defined]
                "stored until its ETA") >= n, 30)
        held = world.done()  # none may run before a Celery worker is there
        with running(celery_argv, world.dir, "ready.", timeout=60, env=world.env):
            finished = world.settle(outcome, n, DUE_TTL + 60)
        outcome.figures.update(due_ttl_s=DUE_TTL, ran_before_celery=held)
        outcome.passed = stored and held == 0 and finished and outcome.lost == 0 \
            and outcome.duplicates == 0
        return outcome
    finally:
        world.cleanup()
        delete_amqp_queues(world.queue, DUE_QUEUE.format(queue=world.queue),
                           *(DELAY_QUEUE.format(queue=world.queue, seconds=s) for s in LADDER))


def gil_holder(work: Path, n: int) -> Trial:
    """Tasks that hold the GIL for 5 s (one C call) with a 2 s visibility timeout, two solo
    workers: the workers' lease threads cannot run, their liveness helpers can; each task runs
    once."""
    world = World(work, databases().broker, broker_transport_options={"visibility_timeout": 2})
    outcome = Trial(f"{n} tasks holding the GIL 5 s past a 2 s visibility timeout "
                      "(Redis, two solo workers)")
    app = world.app()
    try:
        with world.worker("-P", "solo", name="a"), world.worker("-P", "solo", name="b"):
            for i in range(n):
                app.send_task("faults.hold_gil", args=[i, 5], ignore_result=True)
            outcome.sent = n
            finished = world.settle(outcome, n, 30 + 6 * n)
            time.sleep(4)  # past another visibility timeout: nothing runs again
            outcome.runs = world.runs()
        outcome.figures.update(hold_s=5, visibility_timeout_s=2, workers=2)
        outcome.passed = finished and outcome.lost == 0 and outcome.duplicates == 0
        return outcome
    finally:
        app.close()
        world.cleanup()
        _delete_queue_keys(world)


#: The worker's ``sitecustomize`` in :func:`busy_solo`: a pause in each turn's pool
#: maintenance, as a GC pause or a loaded CPU makes, between the turn's check of its timers and
#: their run (its fetch reply unread); no logic changes.
MAINTENANCE_PAUSE = """
import time
from qtui.workers.pools.solo import SoloPool

_maintain = SoloPool.maintain


def maintain(self):
    time.sleep(0.002)
    return _maintain(self)


SoloPool.maintain = maintain
"""


def busy_solo(work: Path, n: int) -> Trial:
    """A busy solo worker drains ``n`` tasks (ignore_result, no result backend) with a 2 s
    visibility timeout: it reads each fetch reply after it sent the next call, and its restore
    timer runs every 0.5 s mid-drain, some of them in a turn whose reply is still unread (a
    2 ms pause in each turn's pool maintenance widens that window). No worker is lost, so each
    task runs once."""
    world = World(work, databases().broker, broker_transport_options={"visibility_timeout": 2})
    write_module(world.dir, "sitecustomize", MAINTENANCE_PAUSE)
    outcome = Trial("A busy solo worker drains, its restore timer every 0.5 s, a 2 ms pause a "
                    "turn (Redis, solo, visibility timeout 2 s)")
    try:
        outcome.sent = world.send(range(n), seconds=0.0005)
        with world.worker("-P", "solo") as proc:
            finished = world.settle(outcome, n, 300)
            log = proc.log_path.read_text()  # type: ignore[attr-defined]
        outcome.figures.update(visibility_timeout_s=2,
                               put_back_unheld=log.count("owned but never received"))
        outcome.passed = finished and outcome.lost == 0 and outcome.duplicates == 0
        return outcome
    finally:
        world.cleanup()
        _delete_queue_keys(world)


def busy_solo_kill(work: Path, n: int, kills: int) -> Trial:
    """SIGKILL a busy solo worker (late acks, a 2 s visibility timeout) mid-drain, again and
    again; a last worker finishes. In flight at a kill: the task it runs (the finished ones'
    acks go out with the call sent before the next task starts), so at most one duplicate a
    kill; the messages its calls took and it did not run come back unrun."""
    world = World(work, databases().broker, broker_transport_options={"visibility_timeout": 2})
    outcome = Trial("SIGKILL a busy solo worker, repeatedly (Redis, solo, visibility timeout 2 s)")
    try:
        outcome.sent = world.send(range(n), seconds=0.0005)
        for k in range(kills):
            goal = world.done() + n // (kills + 2)
            with world.worker("-P", "solo", name=f"k{k}") as proc:
                wait_for(lambda g=goal: world.done() >= g, 120)
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        with world.worker("-P", "solo", name="last"):
            finished = world.settle(outcome, n, 300)
        outcome.figures.update(kills=kills, duplicate_bound=kills)
        outcome.passed = finished and outcome.lost == 0 and outcome.duplicates <= kills
        return outcome
    finally:
        world.cleanup()
        _delete_queue_keys(world)


def _delete_queue_keys(world: World) -> None:
    client = redis.Redis.from_url(databases().broker)
    for key in client.scan_iter(f"{world.queue}*"):
        client.delete(key)


PRODUCER = """
import sys, time
from qtui.core import App
broker, queue, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
app = App("producer", broker=broker, backend=None, task_default_queue=queue)
for i in range(first, first + count):
    app.send_task("faults.record", args=[i, 0.0], ignore_result=True)
app.close()
"""


def sqlite_contention(work: Path, producers: int, each: int) -> Trial:
    """Several producer processes and a worker on one SQLite file at once."""
    broker = f"sqlite://{work}/contention-{uuid.uuid4().hex[:6]}.sqlite"
    world = World(work, broker)
    outcome = Trial(f"embedded broker: {producers} producer processes + a worker on one file")
    script = world.dir / "producer.py"
    script.write_text(PRODUCER)
    try:
        with world.worker("-P", "threads", "-c", "8") as proc:
            started = time.monotonic()
            procs = [subprocess.Popen([sys.executable, str(script), broker, world.queue,
                                       str(p * each), str(each)], cwd=world.dir,
                                      env={**os.environ, "PYTHONPATH": str(REPO)},
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                     for p in range(producers)]
            outputs = [p.communicate(timeout=300)[0] for p in procs]
            failed = sum(1 for p in procs if p.returncode != 0)
            outcome.sent = producers * each
            finished = world.settle(outcome, outcome.sent, 300)
            seconds = time.monotonic() - started
            log = proc.log_path.read_text()  # type: ignore[attr-defined]
        busy = sum(o.count("busy") for o in outputs) + log.count("busy")
        outcome.figures.update(producers_failed=failed, busy_retries_logged=busy,
                               tasks_per_s=round(outcome.sent / seconds))
        outcome.passed = (finished and failed == 0 and outcome.lost == 0
                          and outcome.duplicates == 0)
        return outcome
    finally:
        world.cleanup()


def sqlite_short_lease(work: Path, batches: int) -> Trial:
    """Solo, threads and prefork workers on one SQLite file with a 2 s visibility timeout,
    batches of 50 tasks of which one takes 3 s (past the timeout) arriving while they work: what
    a worker claimed and has not run yet (a solo worker's fetch, read after its task; rows held
    ahead; prefetched tasks) stays under its lease until settled. No worker is lost, so each task
    runs once."""
    broker = f"sqlite://{work}/short-lease-{uuid.uuid4().hex[:6]}.sqlite"
    world = World(work, broker, broker_transport_options={"visibility_timeout": 2})
    outcome = Trial("embedded broker, visibility timeout 2 s, 3 s tasks among quick ones "
                    "(2 solo, threads -c 2, prefork -c 2)")
    pools = [("-P", "solo"), ("-P", "solo"), ("-P", "threads", "-c", "2"),
             ("-P", "prefork", "-c", "2")]
    try:
        with ExitStack() as workers:
            for k, pool in enumerate(pools):
                workers.enter_context(world.worker(*pool, name=f"w{k}"))
            app = world.app()
            for b in range(batches):
                with app.sending_batch():  # stored at once: idle workers claim several
                    for i in range(b * 50, (b + 1) * 50):
                        app.send_task("faults.record", args=[i, 3.0 if i % 50 == 0 else 0.001],
                                      ignore_result=True)
                time.sleep(0.5)
            app.close()
            outcome.sent = batches * 50
            finished = world.settle(outcome, outcome.sent, 300)
        outcome.figures.update(visibility_timeout_s=2, long_tasks=batches, long_task_s=3)
        outcome.passed = finished and outcome.lost == 0 and outcome.duplicates == 0
        return outcome
    finally:
        world.cleanup()


def disk_full(work: Path, batch: int) -> Trial:
    """The embedded broker's file on a 16 MB tmpfs that fills up: sending fails with a clear
    error; once space returns, everything that was accepted runs, and sending works again."""
    mount = work / "tmpfs"
    mount.mkdir()
    outcome = Trial("embedded broker on a full disk (16 MB tmpfs)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        outcome.notes.append(f"not run: mount refused ({mounted.stderr.strip()})")
        return outcome
    world = World(work, f"sqlite://{mount}/broker.sqlite")
    try:
        app = world.app()
        accepted, error = 0, None
        app.send_task("faults.record", args=[0, 0.0], ignore_result=True)  # creates the file
        accepted = 1
        filler = fill(mount, leave=64 * 1024)  # room for a few messages more
        for i in range(1, 100_000):
            try:
                app.send_task("faults.record", args=[i, 0.0], ignore_result=True)
                accepted += 1
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                break
        app.close()
        filler.unlink()  # space returns
        app = world.app()
        for i in range(100_000, 100_000 + batch):
            app.send_task("faults.record", args=[i, 0.0], ignore_result=True)
        app.close()
        outcome.sent = accepted + batch
        with world.worker("-P", "threads", "-c", "4"):
            finished = world.settle(outcome, outcome.sent, 120)
        outcome.figures.update(accepted_before_full=accepted, sent_after_space=batch)
        outcome.notes.append(f"the error at the call site: {error}")
        outcome.passed = (error is not None and finished and outcome.lost == 0
                          and outcome.duplicates == 0)
        return outcome
    finally:
        world.cleanup()
        subprocess.run(["umount", "--lazy", str(mount)], capture_output=True)


def disk_full_consuming(work: Path, n: int) -> Trial:
    """The disk under the embedded broker fills while a worker consumes (its acks fail) and
    frees 5 s later: every task runs, and nothing stays held by the live worker."""
    mount = work / "tmpfs-consuming"
    mount.mkdir()
    outcome = Trial("embedded broker: the disk fills under a consuming worker for 5 s "
                      "(16 MB tmpfs, threads -c 4)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        outcome.notes.append(f"not run: mount refused ({mounted.stderr.strip()})")
        return outcome
    path = mount / "broker.sqlite"
    world = World(work, f"sqlite://{path}")
    try:
        outcome.sent = world.send(range(n), seconds=0.02)
        with world.worker("-P", "threads", "-c", "4") as proc:
            wait_for(lambda: world.done() >= n // 6, 60)
            filler = fill(mount)
            full_at = world.done()
            time.sleep(5)
            ran_while_full = world.done() - full_at
            filler.unlink()
            finished = world.settle(outcome, n, 60)
            held = queue_rows(path, world.queue)[1]
            log = proc.log_path.read_text()  # type: ignore[attr-defined]
        outcome.figures.update(ran_while_full=ran_while_full, held_by_the_live_worker=held,
                               left_after_it_stopped=queue_rows(path, world.queue)[0],
                               reconnects_logged=log.count("Reconnected"))
        outcome.passed = finished and outcome.lost == 0
        return outcome
    finally:
        world.cleanup()
        subprocess.run(["umount", "--lazy", str(mount)], capture_output=True)


def fill(mount: Path, leave: int = 0) -> Path:
    """Fill the file system at ``mount`` up to ``leave`` free bytes; return the filler file."""
    filler = mount / "filler"
    with filler.open("wb", buffering=0) as f:
        chunk = 1 << 20
        while chunk >= 4096:
            if shutil.disk_usage(mount).free - chunk < leave:
                chunk //= 2
                continue
            try:
                f.write(b"\0" * chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk //= 2
    return filler


def queue_rows(path: Path, queue: str) -> tuple[int, int]:
    """(messages, of which held by a consumer) of ``queue`` in an embedded broker's file."""
    db = sqlite3.connect(path, timeout=5)
    try:
        return db.execute("SELECT count(*), count(holder) FROM messages WHERE queue = ?",
                          (queue,)).fetchone()
    finally:
        db.close()


# the embedded broker's locks and ETA rows, prefork grandchildren ------------------------------

@contextmanager
def lock_storm(path: Path, hold: float, gap: float, first_hold: float | None = None
               ) -> Iterator[list[int]]:
    """Another connection takes ``path``'s write lock for ``hold`` s (the first time for
    ``first_hold`` s, when given), lets go for ``gap`` s, again and again until the block ends;
    yields [times it took the lock]."""
    stop = threading.Event()
    held = [0]

    def storm() -> None:
        locker = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            while not stop.is_set():
                locker.execute("BEGIN IMMEDIATE")
                held[0] += 1
                stop.wait(first_hold if first_hold is not None and held[0] == 1 else hold)
                locker.execute("ROLLBACK")
                stop.wait(gap)
        finally:
            locker.close()

    thread = threading.Thread(target=storm, name="lock-storm", daemon=True)
    thread.start()
    try:
        yield held
    finally:
        stop.set()
        thread.join(30)


def sqlite_lock_storm(work: Path, n: int, seconds: float) -> Trial:
    """Four workers on one SQLite file while another connection keeps taking its write lock for
    longer than a worker's retries last (busy_timeout 0.1 s): workers reconnect, and no task is
    given back, and started again, while it runs."""
    path = work / f"storm-{uuid.uuid4().hex[:6]}.sqlite"
    world = World(work, f"sqlite://{path}", broker_transport_options={"busy_timeout": 0.1})
    outcome = Trial("embedded broker: 4 workers on one file under a lock storm (1.6 s held, "
                      "0.3 s free)")
    try:
        with ExitStack() as stack:
            procs = [stack.enter_context(world.worker("-P", "threads", "-c", "2", name=f"w{i}"))
                     for i in range(4)]
            outcome.sent = world.send(range(n), seconds=seconds)
            with lock_storm(path, hold=1.6, gap=0.3) as held:
                finished = world.settle(outcome, n, 300)
            logs = "".join(p.log_path.read_text() for p in procs)  # type: ignore[attr-defined]
        outcome.figures.update(workers=4, task_s=seconds, storm_locks=held[0],
                               reconnects=logs.count("Broker connection lost"),
                               busy_retries_logged=logs.count(" busy ("))
        # No worker dies here: any duplicate is a running task started again.
        outcome.passed = finished and outcome.lost == 0 and outcome.duplicates == 0
        return outcome
    finally:
        world.cleanup()


def drain_seconds(work: Path, n: int, future_rows: int) -> tuple[float, Trial]:
    """Seconds a worker takes to run ``n`` queued tasks when their queue also holds
    ``future_rows`` ETA rows due in an hour (inserted first: the lowest ids)."""
    path = work / f"eta-rows-{uuid.uuid4().hex[:6]}.sqlite"
    world = World(work, f"sqlite://{path}")
    outcome = Trial("")
    try:
        world.send(range(1))  # one real envelope, copied into every ETA row
        db = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            payload, = db.execute("SELECT payload FROM messages WHERE queue = ?",
                                  (world.queue,)).fetchone()
            db.execute("DELETE FROM messages WHERE queue = ?", (world.queue,))
            later, now = time.time() + 3600, time.time()
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO messages (queue, priority, payload, visible_at, "
                           "created_at) VALUES (?, 0, ?, ?, ?)",
                           ((world.queue, payload, later, now) for _ in range(future_rows)))
            db.execute("COMMIT")
            # Into the database file now, not at the worker's first write during the drain.
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
        outcome.sent = world.send(range(n))
        with world.worker("-P", "prefork", "-c", str(CONCURRENCY)):
            started = time.monotonic()
            world.settle(outcome, n, 300)
            seconds = time.monotonic() - started - 1.0  # settle waits a second for duplicates
        return seconds, outcome
    finally:
        world.cleanup()


def eta_rows(work: Path, n: int, future_rows: int) -> Trial:
    """The same drain of ``n`` ready tasks with and without ``future_rows`` future ETA rows in
    their queue: the fetch reads ready rows only, so the drain takes about as long."""
    without, _ = drain_seconds(work, n, 0)
    seconds, outcome = drain_seconds(work, n, future_rows)
    outcome.name = (f"embedded broker: drain {n:,} tasks beside {future_rows:,} future ETA rows "
                    "(prefork -c 2)")
    ratio = seconds / without
    outcome.figures.update(drain_s=round(seconds, 1), without_eta_rows_s=round(without, 1),
                           ratio=round(ratio, 2))
    outcome.passed = outcome.lost == 0 and outcome.duplicates == 0 and ratio <= 1.5
    return outcome


FORKING_TASK = """

@app.task(name="faults.fork_grandchild", ignore_result=True)
def fork_grandchild(k, seconds):
    pid = os.fork()
    if pid == 0:  # the grandchild keeps every fd the pool child had, and sleeps
        try:
            time.sleep(seconds)
        finally:
            os._exit(0)
    _records.rpush(_key + ":forked", json.dumps([k, time.time(), pid]))
    time.sleep(seconds)
"""


def fork_grandchild(work: Path, forks: int, n: int) -> Trial:
    """Tasks that fork a sleeping grandchild and overrun a 2 s hard time limit, one after
    another in one prefork slot, then ``n`` ordinary tasks: each forking task is killed on time
    and the slot is back at once (the next task starts within a second of the limit)."""
    limit, sleep = 2.0, 60.0
    world = World(work, f"sqlite://{work}/fork-{uuid.uuid4().hex[:6]}.sqlite")
    write_module(world.dir, "faulttasks", TASKS + FORKING_TASK)
    outcome = Trial(f"prefork: {forks} tasks forking a grandchild past a {limit:.0f} s hard "
                      "time limit (-c 1)")
    grandchildren: list[int] = []
    try:
        with world.worker("-P", "prefork", "-c", "1"):
            app = world.app()
            for k in range(forks):
                app.send_task("faults.fork_grandchild", args=[k, sleep], time_limit=limit,
                              ignore_result=True)
            app.close()
            outcome.sent = world.send(range(n))
            finished = world.settle(outcome, n, forks * (limit + 5) + 60)
            forked = [json.loads(r) for r in world.records.lrange(f"{world.queue}:forked", 0, -1)]
        grandchildren = [pid for _, _, pid in forked]
        starts = [t for _, t, _ in sorted(forked)]
        slot_back = [later - (earlier + limit) for earlier, later in itertools.pairwise(starts)]
        outcome.figures.update(forked=len(forked), time_limit_s=limit,
                               slot_back_max_s=round(max(slot_back), 2) if slot_back else None)
        outcome.passed = (finished and len(forked) == forks and outcome.lost == 0
                          and outcome.duplicates == 0 and bool(slot_back)
                          and max(slot_back) < 1.0)
        return outcome
    finally:
        for pid in grandchildren:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        world.cleanup()
# requeue accounting and durable revokes (issue 12 items 7, 8, 13) ---------------------------------
def accounting_broker(work: Path, kind: str) -> tuple[str, dict[str, Any]]:
    """(broker URL, settings) for ``redis`` (db 10, 1 s visibility timeout), ``sqlite`` (a file
    of its own) or ``rabbitmq`` (Redis results in db 11: the cluster ledger lives there)."""
    if kind == "redis":
        return databases().broker, {"broker_transport_options": {"visibility_timeout": 1}}
    if kind == "sqlite":
        return f"sqlite://{work}/accounting-{uuid.uuid4().hex[:6]}.sqlite", {}
    return AMQP, {"result_backend": databases().records}


def drain_count(broker: str, queue: str) -> int:
    """Take every message from ``queue`` (a dead-letter queue) and count them."""
    count = 0
    with Connection(broker) as conn:
        simple = conn.SimpleQueue(queue, serializer="json")
        try:
            while True:
                try:
                    simple.get(block=False).ack()
                except simple.Empty:
                    return count
                count += 1
        finally:
            simple.close()


def requeue_accounting(work: Path, n: int, kills: int) -> Trial:
    """With task_max_redeliveries = 1, per broker: ``n`` tasks held by the worker for their ETA
    while it is SIGKILLed ``kills`` times, and a 4 s task given back by ``kills`` warm
    shutdowns (``worker_shutdown_timeout`` 0.5 s). None started-and-lost, so none may be
    dead-lettered; each runs once."""
    outcome = Trial(f"requeue accounting: {n} prefetched tasks x {kills} SIGKILLs and a long "
                      f"task x {kills} warm shutdowns, task_max_redeliveries 1")
    dead_total, per_broker = 0, []
    for kind in ("redis", "sqlite", "rabbitmq"):
        broker, conf = accounting_broker(work, kind)
        world = World(work, broker, task_max_redeliveries=1, worker_shutdown_timeout=0.5,
                      worker_eta_horizon=600, **conf)
        try:
            countdown = 8 + 5 * kills
            sent = world.send(range(n), countdown=countdown)
            for k in range(kills):
                with world.worker("-P", "prefork", "-c", str(CONCURRENCY), name=f"kill{k}") \
                        as proc:
                    wait_for(lambda: proc.log_path.read_text().count("] received") >= n, 60)
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
            with world.worker("-P", "prefork", "-c", str(CONCURRENCY), name="last"):
                wait_for(lambda: world.done() >= n, countdown + 60)
            sent += world.send(range(n, n + 1), seconds=4.0)
            for k in range(kills):
                with world.worker("-P", "prefork", "-c", "1", name=f"term{k}") as proc:
                    wait_for(lambda: "] received" in proc.log_path.read_text(), 30)
                    time.sleep(1.0)  # running now
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(30)
            with world.worker("-P", "prefork", "-c", "1", name="final"):
                wait_for(lambda: world.done() >= n + 1, 60)
                time.sleep(1.0)
            dead = drain_count(broker, dead_letter_queue_name(world.queue))
            outcome.sent += sent
            outcome.distinct += world.done()
            outcome.runs += world.runs()
            dead_total += dead
            per_broker.append(f"{kind}: ran {world.done()}/{sent}, dead-lettered {dead}")
        finally:
            world.cleanup()
            if kind == "rabbitmq":
                delete_amqp_queues(world.queue, dead_letter_queue_name(world.queue))
    outcome.figures.update(kills=3 * kills, dead_lettered=dead_total)
    outcome.notes.append("; ".join(per_broker))
    outcome.passed = outcome.lost == 0 and outcome.duplicates == 0 and dead_total == 0
    return outcome


def durable_revoke(work: Path, n: int) -> Trial:
    """Per broker: ``n`` task ids revoked while no worker runs, then those tasks and ``n``
    others sent, then a worker started (no ``--statedb``): the others run, the revoked never."""
    outcome = Trial(f"durable revokes: {n} ids revoked before any worker started, "
                      f"{n} others sent beside them")
    ran_revoked, per_broker = 0, []
    for kind in ("redis", "sqlite", "rabbitmq"):
        broker, conf = accounting_broker(work, kind)
        world = World(work, broker, **conf)
        try:
            revoked = [str(uuid.uuid4()) for _ in range(n)]
            app = world.app()
            try:
                app.control.revoke(revoked)
                for i, task_id in enumerate(revoked):
                    app.send_task("faults.record", args=[-1 - i, 0.0], ignore_result=True,
                                  task_id=task_id)
            finally:
                app.close()
            world.send(range(n))
            with world.worker("-P", "threads", "-c", "4") as proc:
                wait_for(lambda: world.done() >= n, 60)
                wait_for(lambda: proc.log_path.read_text().count("Discarding revoked") >= n, 30)
                time.sleep(1.0)
            members = {int(m) for m in world.records.smembers(f"{world.queue}:done")}
            bad = sum(1 for m in members if m < 0)
            ran_revoked += bad
            outcome.sent += n
            outcome.distinct += len(members) - bad
            outcome.runs += world.runs() - bad
            per_broker.append(f"{kind}: others ran {len(members) - bad}/{n}, revoked ran {bad}")
        finally:
            world.cleanup()
            if kind == "rabbitmq":
                delete_amqp_queues(world.queue)
    outcome.figures.update(revoked_sent=3 * n, revoked_ran=ran_revoked)
    outcome.notes.append("; ".join(per_broker))
    outcome.passed = outcome.lost == 0 and outcome.duplicates == 0 and ran_revoked == 0
    return outcome


def consumer_timeout(work: Path, n_long: int, n_short: int) -> Trial:
    """On a RabbitMQ node of its own with consumer_timeout 3 s, tasks of 8 s (each outliving the
    timeout twice) among quick ones: each runs once and the worker stays up."""
    outcome = Trial("RabbitMQ consumer_timeout 3 s, tasks of 8 s (own node, threads -c 4)")
    with rabbit_node(consumer_timeout_ms=3000) as node:
        world = World(work, node.url)
        try:
            with world.worker("-P", "threads", "-c", "4") as proc:
                outcome.sent = world.send(range(n_long), seconds=8.0)
                outcome.sent += world.send(range(n_long, n_long + n_short))
                finished = world.settle(outcome, outcome.sent, 120 + 4 * n_long)
                up = proc.poll() is None
                log = proc.log_path.read_text()  # type: ignore[attr-defined]
            outcome.figures["channel_closes"] = log.count("longer than the consumer timeout")
            outcome.figures["worker_up"] = up
            outcome.passed = (finished and up and outcome.lost == 0
                              and outcome.duplicates == 0 and outcome.figures["channel_closes"] > 0)
            return outcome
        finally:
            world.cleanup()


def quorum(work: Path, n: int) -> Trial:
    """A quorum queue (task_queues queue_type) drained by a prefork worker on the shared node:
    nothing lost, nothing run twice, no global-QoS refusal."""
    world = World(work, AMQP)
    world.conf["task_queues"] = {world.queue: {"queue_type": "quorum"}}
    outcome = Trial("quorum queue drained (RabbitMQ, prefork -c 2)")
    try:
        outcome.sent = world.send(range(n))
        start = time.monotonic()
        with world.worker("-P", "prefork", "-c", "2") as proc:
            finished = world.settle(outcome, n, 300)
            log = proc.log_path.read_text()  # type: ignore[attr-defined]
        outcome.figures["drain_s"] = round(time.monotonic() - start, 1)
        outcome.figures["refused"] = "global qos" in log.lower()
        outcome.passed = finished and outcome.lost == 0 and outcome.duplicates == 0 \
            and not outcome.figures["refused"]
        return outcome
    finally:
        delete_amqp_queues(world.queue, dead_letter_queue_name(world.queue))
        world.cleanup()


def memory_alarm(work: Path, n: int, alarm_s: float) -> Trial:
    """Send ``n`` tasks to a RabbitMQ node of the scenario's own while a memory alarm blocks
    publishers for ``alarm_s`` seconds: no send may report a success the broker did not confirm,
    each refused send must raise BrokerBlocked within broker_publish_timeout (plus a margin), and
    every confirmed task must be in the queue once the alarm clears."""
    from qtui.core.exceptions import BrokerBlocked
    timeout = 2.0
    queue = f"faults-alarm-{uuid.uuid4().hex[:8]}"
    outcome = Trial(f"publish {n} tasks through a {alarm_s:g} s RabbitMQ memory alarm "
                      f"(own node, broker_publish_timeout {timeout:g} s)")
    with rabbit_node() as node:
        app = App("faults-alarm", broker=node.url, backend=None, task_default_queue=queue,
                  task_ignore_result=True, broker_publish_timeout=timeout)
        confirmed: set[str] = set()
        refused, slowest_refusal = 0, 0.0
        alarm_at, cleared_at = n // 4, None
        for i in range(n):
            if i == alarm_at:
                node.alarm()
                alarm_on = time.monotonic()
            if cleared_at is None and i > alarm_at and time.monotonic() - alarm_on >= alarm_s:
                node.clear_alarm()
                cleared_at = i
            started = time.monotonic()
            try:
                confirmed.add(app.send_task("faults.record", args=[i]).id)
            except BrokerBlocked as exc:
                refused += 1
                slowest_refusal = max(slowest_refusal, time.monotonic() - started)
                if "alarm" not in str(exc):
                    outcome.notes.append(f"a refusal did not name the alarm: {exc}")
            time.sleep(0.005)
        if cleared_at is None:
            node.clear_alarm()
        closing = time.monotonic()
        app.close()
        outcome.figures["close_s"] = round(time.monotonic() - closing, 2)
        queued: set[str] = set()
        with Connection(node.url) as conn:
            channel = conn.default_channel
            while (message := channel.basic_get(queue, no_ack=True)) is not None:
                queued.add(message.headers["id"])
    outcome.sent = len(confirmed)
    outcome.distinct = outcome.runs = len(confirmed & queued)
    outcome.figures.update({
        "confirmed": len(confirmed), "refused": refused,
        "false_success": len(confirmed - queued),
        "refused_but_queued": len(queued - confirmed),
        "slowest_refusal_s": round(slowest_refusal, 2)})
    outcome.passed = (refused > 0 and not confirmed - queued and not outcome.notes
                      and slowest_refusal <= timeout + 5)
    return outcome


def rpc_restart(work: Path, n: int) -> Trial:
    """Restart a RabbitMQ node of the scenario's own under an rpc:// client waiting for ``n``
    results of a worker: every result must come back or fail with a clear error (no raw
    connection error, no hang)."""
    from qtui.core.exceptions import TimeoutError as ResultTimeout
    outcome = Trial(f"restart RabbitMQ (own node) under an rpc:// client, {n} results")
    with rabbit_node() as node:
        world = World(work, node.url, result_backend="rpc://")
        client = App("faults-rpc", broker=node.url, backend="rpc://",
                     task_default_queue=world.queue)
        got = lost_clearly = other = 0
        try:
            with world.worker("-P", "threads", "-c", "4"):
                # Half before the restart (some still queued or running when it comes), half
                # after it; the client reads results on both sides of it.
                results = [client.send_task("faults.answer", args=[i, 0.05])
                           for i in range(n // 2)]
                for i, result in enumerate(results):
                    if i == n // 8:
                        node.restart()
                        results += [client.send_task("faults.answer", args=[j, 0.05])
                                    for j in range(n // 2, n)]
                    try:
                        got += result.get(timeout=30) == i
                    except ResultTimeout as exc:
                        lost_clearly += "may be lost" in str(exc)
                        other += "may be lost" not in str(exc)
                    except Exception as exc:  # noqa: BLE001 - counted: what the issue found
                        other += 1
                        outcome.notes.append(f"{type(exc).__name__}: {exc}"[:200])
                outcome.sent = len(results)
                world.settle(outcome, n, 60)
        finally:
            client.close()
            world.cleanup()
    outcome.figures.update({"results": got, "lost_with_clear_error": lost_clearly,
                            "other_errors": other})
    outcome.passed = got + lost_clearly == n and other == 0 and outcome.lost == 0
    return outcome


# running ----------------------------------------------------------------------------------------
def rss_mb() -> float:
    """This process's resident memory now (``VmRSS``), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def event_flood(work: Path, fakes: int, big: int) -> Trial:
    """The console's event feed (and its history file) under what anyone on the broker can
    send: ``fakes`` heartbeats of made-up workers in one burst (lists of 1,000 per message),
    ``big`` task events with 2 MB args and a 2 MB traceback each, and malformed events. It must
    keep up, keep running, and stay bounded: workers kept, field sizes, memory, history."""
    import threading

    from qtui.core.events import event_exchange
    from qtui.tui.feed import Feed
    from qtui.tui.history import History

    tag = uuid.uuid4().hex[:8]
    app = App("faults-console", broker=databases().events, backend=None)
    path = work / f"history-{tag}.sqlite"
    feed = Feed(app, history=History(path, cluster="faults", max_field=app.conf.console_max_field))
    thread = threading.Thread(target=feed.run, args=(lambda snapshot: None, 0.25), daemon=True)
    outcome = Trial(f"{fakes:,} made-up workers' heartbeats, {big} task events with 4 MB of "
                      "fields, malformed events (Redis; the console's feed)")

    def seen(task_id: str) -> bool:
        with feed.lock:
            return feed.state.task(task_id) is not None

    try:
        thread.start()
        if not wait_for(lambda: feed.connected, 30):
            outcome.notes.append("the feed never connected")
            return outcome
        before = rss_mb()
        with Connection(databases().events) as conn:
            producer = Producer(conn.default_channel)
            exchange = event_exchange(conn)
            now = time.time()

            def publish(body: Any, key: str) -> None:
                producer.publish(body, exchange=exchange.name, routing_key=key,
                                 declare=[exchange], serializer="json")
            started = time.monotonic()
            for first in range(0, fakes, 1_000):  # lists, as task.multi: the receiver takes them
                publish([{"type": "worker-heartbeat", "hostname": f"fake-{tag}-{n}",
                          "timestamp": now, "freq": 2.0, "active": 0, "processed": n}
                         for n in range(first, min(fakes, first + 1_000))], "task.multi")
            burst = time.monotonic() - started
            flooded = wait_for(lambda: feed.state.event_count >= fakes, 120)
            outcome.figures["ingest_s"] = f"{time.monotonic() - started:.1f}"
            field_value = "x" * 2_000_000
            for n in range(big):  # one at a time: Redis drops a subscriber 32 MB behind
                publish([{"type": "task-failed", "uuid": f"big-{tag}-{n}", "hostname": "w",
                          "timestamp": now, "args": field_value, "traceback": field_value}],
                         "task.multi")
                wait_for(lambda: seen(f"big-{tag}-{n}"), 30)
            for bad in ({"type": "task-received", "uuid": [1, 2], "hostname": "w"},
                        {"type": "task-failed", "uuid": f"late-{tag}", "timestamp": 1e300}):
                publish([bad], "task.multi")
            published = time.monotonic()
            publish([{"type": "task-received", "uuid": f"last-{tag}", "hostname": "w",
                      "timestamp": now}], "task.multi")
            caught_up = wait_for(lambda: seen(f"last-{tag}"), 120)
        with feed.lock:
            workers = len(feed.state.workers)
            longest = max((len(t.args or "") for t in feed.state.tasks()), default=0)
            bad_events = feed.state.bad_events
            big_kept = sum(1 for n in range(big) if feed.state.task(f"big-{tag}-{n}"))
        history_mb = sum(f.stat().st_size for f in work.glob(f"history-{tag}.sqlite*")) / 1e6
        outcome.figures.update(
            burst_s=f"{burst:.1f}", workers_kept=f"{workers:,}",
            big_events_kept=big_kept, longest_field=f"{longest:,}", bad_events=bad_events,
            catch_up_s=f"{time.monotonic() - published:.1f}",
            rss_growth_mb=f"{rss_mb() - before:.0f}", history_mb=f"{history_mb:.1f}",
            feed_failures=feed.failures)
        outcome.passed = (flooded and caught_up and thread.is_alive() and feed.failures == 0
                          and workers <= app.conf.console_max_workers and big_kept == big
                          and longest <= app.conf.console_max_field + 30 and bad_events >= 2)
        return outcome
    finally:
        feed.stop()
        thread.join(10)
        app.close()


def beat_takeover(work: Path, kind: str, beats: int, seconds: float, kill_at: float) -> Trial:
    """``beats`` ``qtui beat`` processes on one store (``redis``: db 10; ``sqlite``: a broker
    file), an entry every second for ``seconds`` s, the leader SIGKILLed at ``kill_at`` s: every
    scheduled second between the first and the last tick is sent exactly once (counted by the
    ``beat_scheduled`` header of the messages in the entry's queue)."""
    name = f"beat-{uuid.uuid4().hex[:8]}"
    directory = work / name
    directory.mkdir(parents=True)
    broker = (databases().broker if kind == "redis"
              else f"sqlite://{directory / 'broker.sqlite'}")
    config = write_config(directory, broker, prefix=name, queue=name)
    outcome = Trial(f"{beats} x qtui beat ({kind}), every second for {seconds:.0f} s, leader "
                      f"SIGKILLed at {kill_at:.0f} s")
    store = store_of(config)
    try:
        with beat_processes(config, [f"{name}-{i}" for i in range(beats)]) as procs:
            started = time.monotonic()
            first = leader(store)
            time.sleep(max(0.0, kill_at - (time.monotonic() - started)))
            killed = time.monotonic()
            kill(procs[first])
            leader(store, other_than=first)
            outcome.figures["new leader after s"] = round(time.monotonic() - killed, 1)
            time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        counts = sent_ticks(broker, name)
    finally:
        store.close()
    if counts:
        span = range(int(min(counts)), int(max(counts)) + 1)
        outcome.sent = len(span)
        outcome.distinct = sum(1 for second in span if counts.get(float(second)))
        outcome.runs = sum(counts.values())
    outcome.figures.update({"beats": beats, "kills": 1, "lease s": 3.0})
    outcome.passed = outcome.sent >= seconds - 5 and outcome.lost == 0 \
        and outcome.duplicates == 0
    return outcome


#: name: (run it at full or --quick counts, its time budget in seconds at full counts).
SCENARIOS: dict[str, tuple[Callable[[Path, bool], Trial], float]] = {
    "kill-parent": (lambda w, q: kill_parent(w, 2_000 if q else 10_000, 3 if q else 8), 900),
    "kill-child": (lambda w, q: kill_child(w, 2_000 if q else 10_000, 5 if q else 20), 600),
    "restart-redis": (lambda w, q: broker_restart(w, 600 if q else 3_000, "redis"), 600),
    "restart-rabbitmq": (lambda w, q: broker_restart(w, 600 if q else 3_000, "rabbitmq"), 600),
    "malformed": (lambda w, q: malformed(w, 1_000 if q else 10_000, 500 if q else 2_000), 600),
    "compression": (lambda w, q: compression(w, 200 if q else 1_000, 200 if q else 1_000), 600),
    "bomb": (lambda w, q: bomb(w, 10, 200 if q else 1_000), 300),
    "eta-redis": (lambda w, q: long_eta(w, 50 if q else 200, "redis"), 300),
    "eta-sqlite": (lambda w, q: long_eta(w, 50 if q else 200, "sqlite"), 300),
    "sqlite-contention": (lambda w, q: sqlite_contention(w, 4, 500 if q else 2_500), 600),
    "sqlite-short-lease": (lambda w, q: sqlite_short_lease(w, 8 if q else 40), 600),
    "disk-full": (lambda w, q: disk_full(w, 100 if q else 500), 300),
    "disk-full-consuming": (lambda w, q: disk_full_consuming(w, 200 if q else 400), 300),
    "sqlite-lock-storm": (lambda w, q: sqlite_lock_storm(w, 40 if q else 200, 1.0), 600),
    "eta-rows": (lambda w, q: eta_rows(w, 3_000, 100_000), 600),
    "fork-grandchild": (lambda w, q: fork_grandchild(w, 3 if q else 10, 50 if q else 200), 300),
    "idle-brpop-kill": (lambda w, q: idle_kill(w, 3 if q else 10), 300),
    "redis-refuses-writes": (lambda w, q: refused_writes(w, 300 if q else 2_000,
                                                        3.0 if q else 6.0), 300),
    "malformed-redis": (lambda w, q: malformed_redis(w, 200 if q else 2_000, 200 if q else 1_000),
                        300),
    "hostile-broadcast": (lambda w, q: hostile_broadcast(w, 200 if q else 2_000,
                                                         200 if q else 1_000), 300),
    "malformed-amqp": (lambda w, q: malformed_amqp(w, 200 if q else 2_000, 200 if q else 1_000),
                       300),
    "mixed-celery": (lambda w, q: mixed_celery(w, 10 if q else 40), 300),
    "eta-without-qtui": (lambda w, q: eta_without_qtui(w, 5 if q else 20), 300),
    "gil-holder": (lambda w, q: gil_holder(w, 4 if q else 10), 300),
    "busy-solo": (lambda w, q: busy_solo(w, 3_000 if q else 10_000), 600),
    "busy-solo-kill": (lambda w, q: busy_solo_kill(w, 2_000 if q else 10_000, 3 if q else 8),
                       600),
    "event-flood": (lambda w, q: event_flood(w, 10_000 if q else 30_000, 10 if q else 50), 300),
    "requeue-accounting": (lambda w, q: requeue_accounting(w, 20 if q else 50, 2 if q else 4),
                           900),
    "durable-revoke": (lambda w, q: durable_revoke(w, 20 if q else 100), 300),
    "consumer-timeout": (lambda w, q: consumer_timeout(w, 4 if q else 8, 100 if q else 500),
                         300),
    "quorum": (lambda w, q: quorum(w, 500 if q else 3_000), 600),
    "memory-alarm": (lambda w, q: memory_alarm(w, 300 if q else 3_000, 8.0 if q else 20.0), 600),
    "rpc-restart": (lambda w, q: rpc_restart(w, 300 if q else 2_000), 600),
    "beat-redis-2": (lambda w, q: beat_takeover(w, "redis", 2, *((20, 7) if q else (60, 20))),
                     300),
    "beat-redis-3": (lambda w, q: beat_takeover(w, "redis", 3, *((20, 7) if q else (60, 20))),
                     300),
    "beat-sqlite-2": (lambda w, q: beat_takeover(w, "sqlite", 2, *((20, 7) if q else (60, 20))),
                      300),
    "beat-sqlite-3": (lambda w, q: beat_takeover(w, "sqlite", 3, *((20, 7) if q else (60, 20))),
                      300),
}


class ScenarioTimeout(Exception):
    """A scenario ran past its time budget (raised from SIGALRM; its cleanup still runs)."""


def _timed_out(signum: int, frame: Any) -> None:
    raise ScenarioTimeout


def run_scenario(name: str, work: Path, quick: bool) -> Trial:
    """Run one scenario within its time budget; an error or a timeout is a failed outcome."""
    scenario, budget = SCENARIOS[name]
    previous = signal.signal(signal.SIGALRM, _timed_out)
    signal.alarm(int(budget))
    try:
        outcome = scenario(work, quick)
    except ScenarioTimeout:
        outcome = Trial(name, notes=[f"timed out after {budget:.0f} s"])
    except Exception as exc:  # a scenario that breaks is a failed scenario, not the end
        where = traceback.extract_tb(exc.__traceback__)[-1]
        outcome = Trial(name, notes=[f"scenario error: {type(exc).__name__}: {exc} "
                                       f"(at {Path(where.filename).name}:{where.lineno})"])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    outcome.key = name
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts; RESULTS.md untouched")
    parser.add_argument("--only", help="comma-separated: " + ", ".join(SCENARIOS))
    parser.add_argument("--redis", metavar="URL",
                        help="the Redis server for the scenarios' broker and records "
                             "(redis://host:port; databases 10-12, db 10 flushed); default: a "
                             "redis-server of the run's own on a spare port")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    console = Console(width=None if sys.stdout.isatty() else 160)
    outcomes = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qtui-faults-") as tmp, \
            on_redis(Path(tmp), args.redis) as dbs:
        console.print(f"Redis: {dbs.server}"
                      + (" (given)" if args.redis else " (a redis-server of this run's own)"),
                      markup=False)
        setting = versions()
        for name in names:
            console.print(f"[bold]{name}[/bold] ...")
            began = time.monotonic()
            outcome = run_scenario(name, Path(tmp), args.quick)
            outcome.seconds = time.monotonic() - began
            outcomes.append(outcome)
            console.print(f"  {'PASS' if outcome.passed else 'FAIL'} in {outcome.seconds:.0f} s: "
                          f"sent {outcome.sent:,} ran {outcome.distinct:,} lost {outcome.lost:,} "
                          f"duplicates {outcome.duplicates:,}; {describe(outcome)}", markup=False)
            for line in outcome.details:
                console.print(f"    {line}", markup=False)
    seconds = time.monotonic() - started
    console.print(table(outcomes))
    console.print(f"whole run {seconds:.0f} s")
    if not args.quick and not args.only:
        write_results(outcomes, seconds, setting)
    return 0 if all(o.passed for o in outcomes) else 1


#: Figures with a column of their own in the table.
COLUMNS = {"kills": "kills", "window": "max in flight per kill", "resume_s": "resume (s)"}


def table(outcomes: list[Trial]) -> Table:
    result = Table(title="fault suite")
    for title in ("scenario", "sent", "ran", "lost", "duplicates", *COLUMNS.values(),
                  "other figures", "s", "result"):
        result.add_column(title, overflow="fold")
    for o in outcomes:
        result.add_row(o.key, f"{o.sent:,}", f"{o.distinct:,}", f"{o.lost:,}",
                       f"{o.duplicates:,}", *(column(o, key) for key in COLUMNS),
                       describe(o, notes=False), f"{o.seconds:.0f}",
                       "PASS" if o.passed else "FAIL")
    return result


def column(o: Trial, key: str) -> str:
    value = o.figures.get(key)
    return "" if value is None else str(value)


def describe(o: Trial, notes: bool = True) -> str:
    parts = [f"{k.replace('_', ' ')} {v}" for k, v in o.figures.items() if k not in COLUMNS]
    return "; ".join(parts + (o.notes if notes else []))


def versions() -> str:
    """The machine and what ran on it, as ``make bench`` writes them."""
    with Connection(AMQP) as conn:
        conn.connect()
        rabbit = conn.connection.server_properties.get("version", "?")
    rabbit = rabbit.decode() if isinstance(rabbit, bytes) else rabbit
    redis_version = redis.Redis.from_url(databases().server).info("server")["redis_version"]

    class Named(Broker):
        def __init__(self, name: str) -> None:
            self.name = name

    return machine([Named(f"Redis {redis_version}"), Named(f"RabbitMQ {rabbit}"),
                    SQLiteBroker(REPO)])


def write_results(outcomes: list[Trial], seconds: float, setting: str) -> None:
    """Replace the "Fault suite" section of bench/RESULTS.md, keeping its "### Notes"."""
    path = REPO / "bench" / "RESULTS.md"
    text = path.read_text()
    marker, notes_marker = "## Fault suite", "### Notes"
    head, tail, notes = text, "", ""
    if marker in text:
        head, _, rest = text.partition(marker)
        end = rest.find("\n## ")
        section, tail = (rest, "") if end < 0 else (rest[:end], rest[end:])
        if notes_marker in section:
            notes = notes_marker + section.partition(notes_marker)[2]
    lines = [
        marker, "",
        "Command, from the repository root: `make faults` (that is, `python -m bench.faults`; "
        "`--quick` for small counts, `--only NAME,...` for some scenarios: neither writes here).",
        "",
        f"- Machine: {setting}; whole run {seconds:.0f} s.",
        "- Every task adds its number to a Redis set and counts its run (db 11 of a "
        "redis-server the run starts for itself, whose db 10 is the Redis broker). Sent: "
        "tasks published. Ran: distinct tasks that ran. Lost: sent and never run. Duplicates: "
        "runs beyond the first (at-least-once: a task killed after its work and before its ack "
        "runs again); for kills, at most kills x the messages in flight per kill (prefetch 4 x "
        "concurrency 2 for the parent, the one running task for a child). Resume: from the "
        "broker accepting connections again to the next task run.",
        "", "| scenario | sent | ran | lost | duplicates | " + " | ".join(COLUMNS.values())
        + " | other figures | s | result |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for o in outcomes:
        cells = [o.name, f"{o.sent:,}", f"{o.distinct:,}", f"**{o.lost:,}**",
                 f"{o.duplicates:,}", *(column(o, key) for key in COLUMNS),
                 describe(o).replace("|", "/"), f"{o.seconds:.0f}",
                 "pass" if o.passed else "**FAIL**"]
        lines.append("| " + " | ".join(cells) + " |")
    for o in outcomes:
        if o.details:
            lines += ["", *o.details]
    section = "\n".join(lines) + "\n" + ("\n" + notes.rstrip() + "\n" if notes else "")
    path.write_text(head.rstrip() + "\n\n" + section + tail)


if __name__ == "__main__":
    sys.exit(main())
