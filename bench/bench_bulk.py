"""Bulk enqueue: tasks sent per second by ``app.send_many``, ``group(...).apply_async()`` and
``chunks``, against ``delay()`` one at a time, on Redis, the embedded SQLite broker and RabbitMQ;
and the one run (:func:`measure`) that this, :mod:`bench.ab_bulk` and ``bench.run``'s ``bulk``
section make of each case, for qtui, Celery and Dramatiq alike.

Each case sends ``--tasks`` no-op task messages into a fresh queue from one client process,
after an untimed warm-up send of 200 the same way (it opens the connection and builds what a
send keeps); the queue is then checked to hold exactly what was sent: the count and, on Redis
and SQLite, every message's id read back and none twice, so a case that lost or doubled a
message fails instead of printing a rate. ``chunks`` sends its parts (``--chunk`` calls each),
so it has a rate of calls and one of messages. Cases run round-robin, ``--repeat`` rounds;
figures are the median and (min-max). Redis is a private redis-server on a spare port
(nothing on disk), so other work on the machine's Redis does not skew it.

    python -m bench.bench_bulk [--tasks 20000] [--repeat 3] [--brokers redis,sqlite,rabbitmq]
    python -m bench.bench_bulk --child FRAMEWORK WAY URL [--tasks N] [--chunk 10]   # one run
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import redis
from kombu import Connection

from bench.bench_cpu import redis_cpu
from bench.bench_queues import private_redis
from qtui.core import App
from qtui.core.canvas import chunks, group

WAYS = ("delay", "send_many", "group", "chunks")
FRAMEWORK_WAYS = {"qtui": WAYS, "celery": ("delay", "group", "chunks"),
                  "dramatiq": ("delay", "group")}
"""The ways each framework has: Celery has no ``send_many``; Dramatiq has neither
``send_many`` nor ``chunks`` (its ``pipeline`` is a chain: it enqueues the first message)."""
WARM_UP = 200
REDIS_PRIORITIES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
"""kombu's priority sublists of a Redis queue (the queue's own name for priority 0)."""


def tasks_app(url: str, queue: str) -> tuple[App, Any]:
    app = App("benchbulk", broker=url, backend=None, task_default_queue=queue)

    @app.task(name="benchbulk.noop", ignore_result=True)
    def noop(i: int) -> None:
        """Never run: the bench only sends."""

    return app, noop


def send(way: str, noop: Any, count: int, chunk: int) -> int:
    """Send ``count`` calls ``way`` with qtui; returns how many messages that makes."""
    app = noop.app
    if way == "delay":
        for i in range(count):
            noop.delay(i)
        return count
    if way == "send_many":
        app.send_many(noop.s(i) for i in range(count))
        return count
    if way == "group":
        group(noop.s(i) for i in range(count)).apply_async()
        return count
    chunks(noop.s(), [(i,) for i in range(count)], chunk).apply_async()
    return -(-count // chunk)


class Client:
    """One framework's client and no-op task, sending into ``queue`` on ``url``."""

    def __init__(self, url: str, queue: str) -> None:
        self.url, self.queue = url, queue

    def send(self, way: str, count: int, chunk: int) -> int:
        """Send ``count`` calls ``way``; returns how many messages that makes."""
        raise NotImplementedError

    def close(self) -> None:
        """Delete the queue and close the connections."""
        raise NotImplementedError


class AppClient(Client):
    """A client whose app (qtui's or Celery's) sends through kombu."""

    app: Any

    def close(self) -> None:
        with self.app.connection_for_write() as conn:
            delete_queue(conn, self.queue)
        self.app.close()


class QtuiClient(AppClient):
    def __init__(self, url: str, queue: str) -> None:
        super().__init__(url, queue)
        self.app, self.noop = tasks_app(url, queue)

    def send(self, way: str, count: int, chunk: int) -> int:
        return send(way, self.noop, count, chunk)


class CeleryClient(AppClient):
    def __init__(self, url: str, queue: str) -> None:
        from celery import Celery

        super().__init__(url, queue)
        self.app = Celery("benchbulk", broker=url, backend=None)
        self.app.conf.task_default_queue = queue

        @self.app.task(name="benchbulk.noop", ignore_result=True)
        def noop(i: int) -> None:
            """Never run: the bench only sends."""

        self.noop = noop

    def send(self, way: str, count: int, chunk: int) -> int:
        from celery import group as celery_group

        if way == "delay":
            for i in range(count):
                self.noop.delay(i)
            return count
        if way == "group":
            celery_group(self.noop.s(i) for i in range(count)).apply_async()
            return count
        self.noop.chunks([(i,) for i in range(count)], chunk).apply_async()
        return -(-count // chunk)


class DramatiqClient(Client):
    def __init__(self, url: str, queue: str) -> None:
        import dramatiq
        from dramatiq.brokers.redis import RedisBroker

        super().__init__(url, queue)
        self.broker = RedisBroker(url=url)
        dramatiq.set_broker(self.broker)

        @dramatiq.actor(actor_name="benchbulk_noop", queue_name=queue, max_retries=0)
        def noop(i: int) -> None:
            """Never run: the bench only sends."""

        self.noop = noop

    def send(self, way: str, count: int, chunk: int) -> int:
        import dramatiq

        if way == "delay":
            for i in range(count):
                self.noop.send(i)
        else:
            dramatiq.group(self.noop.message(i) for i in range(count)).run()
        return count

    def close(self) -> None:
        self.broker.flush(self.queue)  # its Lua call marks this broker alive: unmarked here
        self.broker.client.zrem(f"{self.broker.namespace}:__heartbeats__", self.broker.broker_id)
        self.broker.close()


def delete_queue(conn: Connection, queue: str) -> None:
    """Purge, then delete ``queue``: on Redis kombu deletes a queue's lists only where this
    connection declared its bindings, while a purge needs none."""
    conn.default_channel.queue_purge(queue)
    conn.default_channel.queue_delete(queue)


CLIENTS: dict[str, type[Client]] = {"qtui": QtuiClient, "celery": CeleryClient,
                                    "dramatiq": DramatiqClient}


def queued_ids(framework: str, url: str, queue: str) -> list[str] | None:
    """The task id of every message ``queue`` holds, read back from the broker; None on
    RabbitMQ, where reading them means taking them (only the count is checked there)."""
    if url.startswith("sqlite://"):
        db = sqlite3.connect(url.removeprefix("sqlite://"), timeout=30)
        try:
            rows = db.execute("SELECT payload FROM messages WHERE queue = ?", (queue,))
            return [json.loads(payload)["headers"]["id"] for payload, in rows]
        finally:
            db.close()
    if not url.startswith("redis://"):
        return None
    client = redis.Redis.from_url(url)
    try:
        if framework == "dramatiq":
            # The list holds Dramatiq's per-enqueue ids; the messages, keyed by them, a hash.
            listed = client.llen(f"dramatiq:{queue}")
            ids = [json.loads(m)["message_id"] for m in client.hvals(f"dramatiq:{queue}.msgs")]
            if listed != len(ids):
                raise RuntimeError(f"dramatiq: {listed} messages listed, {len(ids)} stored")
            return ids
        return [json.loads(envelope)["headers"]["id"] for suffix in REDIS_PRIORITIES
                for envelope in client.lrange(queue + suffix, 0, -1)]
    finally:
        client.close()


def queued(url: str, queue: str) -> int:
    with Connection(url) as conn:
        return int(conn.default_channel.queue_declare(queue, passive=True).message_count)


def check(framework: str, way: str, url: str, queue: str, expected: int) -> None:
    """Raises unless ``queue`` holds exactly ``expected`` messages, no id twice."""
    ids = queued_ids(framework, url, queue)
    if ids is None:
        deadline = time.monotonic() + 30  # RabbitMQ counts what it routed a moment late
        while (found := queued(url, queue)) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        found = len(ids)
        if len(set(ids)) != found:
            raise RuntimeError(f"{framework} {way}: {found - len(set(ids))} ids twice in the "
                               "queue")
    if found != expected:
        raise RuntimeError(f"{framework} {way}: {found} messages in the queue, expected "
                           f"{expected}")


def measure(framework: str, way: str, url: str, count: int, chunk: int) -> dict[str, Any]:
    """One case, in this process: its rates (messages and calls per second), the client's CPU
    per call (``time.process_time()``, steadier than the rate on a loaded machine), the
    broker's CPU seconds during the send (Redis: ``INFO cpu``; None elsewhere) and the cyclic
    garbage collector's passes. Raises if the queue does not hold exactly what was sent. The
    timed send runs inside ``functools.reduce``, which ``bench.ab_bulk --instructions``
    counts."""
    queue = f"bench-bulk-{uuid.uuid4().hex[:8]}"
    client = CLIENTS[framework](url, queue)
    passes = [0]

    def count_passes(phase: str, _info: dict[str, int]) -> None:
        passes[0] += phase == "start"

    broker = redis.Redis.from_url(url) if url.startswith("redis://") else None
    try:
        expected = client.send(way, WARM_UP, chunk)
        gc.callbacks.append(count_passes)
        broker_cpu = redis_cpu(broker) if broker else None
        cpu, start = time.process_time(), time.perf_counter()
        messages = functools.reduce(lambda _, __: client.send(way, count, chunk), [0, 0])
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        if broker and broker_cpu is not None:
            broker_cpu = redis_cpu(broker) - broker_cpu
        gc.callbacks.remove(count_passes)
        check(framework, way, url, queue, expected + messages)
        return {"rate": messages / seconds, "calls_rate": count / seconds, "messages": messages,
                "cpu_us": 1e6 * cpu / count, "broker_cpu": broker_cpu, "gc": passes[0]}
    finally:
        if count_passes in gc.callbacks:
            gc.callbacks.remove(count_passes)
        if broker:
            broker.close()
        client.close()


def child_argv(framework: str, way: str, url: str, count: int, chunk: int) -> list[str]:
    """The command line of one case in a process of its own (it prints :func:`measure`'s
    figures as one JSON line)."""
    return [sys.executable, "-m", "bench.bench_bulk", "--child", framework, way, url,
            "--tasks", str(count), "--chunk", str(chunk)]


@contextmanager
def broker_url(name: str, amqp: str, workdir: Path) -> Iterator[str]:
    if name == "redis":
        with private_redis() as port:
            yield f"redis://127.0.0.1:{port}/0"
    elif name == "sqlite":
        yield f"sqlite://{workdir / 'bulk.sqlite'}"
    else:
        with nullcontext():
            yield amqp


def spread(values: list[float]) -> str:
    middle = f"{statistics.median(values):,.0f}"
    return middle if len(values) == 1 else f"{middle} ({min(values):,.0f}-{max(values):,.0f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=10, help="calls per part of chunks")
    parser.add_argument("--brokers", default="redis,sqlite,rabbitmq")
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--child", nargs=3, metavar=("FRAMEWORK", "WAY", "URL"),
                        help="one case in this process: its figures as one JSON line")
    args = parser.parse_args(argv)
    if args.child:
        framework, way, url = args.child
        if way not in FRAMEWORK_WAYS.get(framework, ()):
            parser.error(f"{framework} has no bulk way {way!r}; it has "
                         f"{', '.join(FRAMEWORK_WAYS.get(framework, ())) or 'none'}")
        print(json.dumps(measure(framework, way, url, args.tasks, args.chunk)), flush=True)
        return 0
    ways = [w for w in args.ways.split(",") if w]
    print(f"load average at start {', '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="qtui-bench-bulk-") as tmp:
        for name in [b for b in args.brokers.split(",") if b]:
            with broker_url(name, args.amqp, Path(tmp)) as url:
                rates: dict[str, list[float]] = {way: [] for way in ways}
                for _ in range(args.repeat):
                    for way in ways:
                        rate = measure("qtui", way, url, args.tasks, args.chunk)["rate"]
                        rates[way].append(rate)
                        print(f"{name:<9} {way:<10} {rate:10,.0f} messages/s", flush=True)
                base = statistics.median(rates["delay"]) if rates.get("delay") else None
                for way in ways:
                    ratio = f"{statistics.median(rates[way]) / base:.1f}x" if base else "-"
                    rows.append(f"| {name} | {way} | {spread(rates[way])} | {ratio} |")
    print(f"\n| broker, {args.tasks:,} calls | how | messages/s | vs delay() |")
    print("| --- | --- | ---: | ---: |")
    print("\n".join(rows))
    print(f"\nload average at the end {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
