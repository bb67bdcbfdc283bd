"""Bulk enqueue: tasks sent per second by ``app.send_many``, ``group(...).apply_async()`` and
``chunks``, against ``delay()`` one at a time, on Redis, the embedded SQLite broker and RabbitMQ.

Each case sends ``--tasks`` no-op task messages into a fresh queue from one client process
(this one), after one untimed send that opens the connection; the queue is then counted, so a
case that lost or doubled a message fails instead of printing a rate. ``chunks`` sends its
parts (``--chunk`` calls each), so its rate counts messages. Cases run round-robin,
``--repeat`` rounds; figures are the median and (min-max). Redis is a private redis-server on
a spare port (nothing on disk), so other work on the machine's Redis does not skew it.

    python -m bench.bench_bulk [--tasks 20000] [--repeat 3] [--brokers redis,sqlite,rabbitmq]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from kombu import Connection

from bench.bench_queues import private_redis
from qtui.core import App
from qtui.core.canvas import chunks, group

WAYS = ("delay", "send_many", "group", "chunks")


def tasks_app(url: str, queue: str) -> tuple[App, Any]:
    app = App("benchbulk", broker=url, backend=None, task_default_queue=queue)

    @app.task(name="benchbulk.noop", ignore_result=True)
    def noop(i: int) -> None:
        """Never run: the bench only sends."""

    return app, noop


def send(way: str, noop: Any, count: int, chunk: int) -> int:
    """Send ``count`` calls ``way``; returns how many messages that makes."""
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


def queued(url: str, queue: str) -> int:
    with Connection(url) as conn:
        return int(conn.default_channel.queue_declare(queue, passive=True).message_count)


def run_case(url: str, way: str, count: int, chunk: int) -> float:
    """Messages per second of one case; raises if the queue does not hold exactly them."""
    queue = f"bench-bulk-{uuid.uuid4().hex[:8]}"
    app, noop = tasks_app(url, queue)
    try:
        noop.delay(-1)  # connects and declares the queue, untimed
        start = time.perf_counter()
        messages = send(way, noop, count, chunk)
        seconds = time.perf_counter() - start
        deadline = time.monotonic() + 30  # RabbitMQ counts what it routed a moment late
        while (found := queued(url, queue)) < messages + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        if found != messages + 1:
            raise RuntimeError(f"{way}: {found} messages in the queue, expected {messages + 1}")
        return messages / seconds
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)
        app.close()


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
    args = parser.parse_args(argv)
    ways = [w for w in args.ways.split(",") if w]
    print(f"load average at start {', '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="qtui-bench-bulk-") as tmp:
        for name in [b for b in args.brokers.split(",") if b]:
            with broker_url(name, args.amqp, Path(tmp)) as url:
                rates: dict[str, list[float]] = {way: [] for way in ways}
                for _ in range(args.repeat):
                    for way in ways:
                        rate = run_case(url, way, args.tasks, args.chunk)
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
