"""Enqueue and drain rates of kombu transports: qtui's SQLite broker, kombu's filesystem transport
and kombu's Redis transport (db 15, one queue of its own, deleted afterwards).

Run from the repository root: ``python -m bench.bench_transports [-n MESSAGES]``. Prints a table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.message import Message

from qtui.core import brokers

REDIS_URL = "redis://127.0.0.1:6379/15"


@dataclass
class Result:
    transport: str
    messages: int
    enqueue_per_s: float
    drain_per_s: float


def measure(name: str, connection: Connection, messages: int) -> Result:
    """Publish ``messages`` to a fresh queue, then consume and ack them all with one consumer."""
    queue_name = f"qtui-bench-{uuid.uuid4().hex[:8]}"
    queue = Queue(queue_name, Exchange(queue_name, type="direct"), routing_key=queue_name)
    with connection:
        channel = connection.channel()
        bound = queue(channel)
        bound.declare()
        producer = Producer(channel, exchange=queue.exchange, routing_key=queue_name,
                            serializer="json")
        start = time.perf_counter()
        for i in range(messages):
            producer.publish({"i": i, "task": "bench.noop"})
        enqueue = messages / (time.perf_counter() - start)

        received = 0

        def on_message(body: Any, message: Message) -> None:
            nonlocal received
            received += 1
            message.ack()

        start = time.perf_counter()
        with Consumer(channel, [queue], callbacks=[on_message], accept=["json"]):
            while received < messages:
                connection.drain_events(timeout=10)
        drain = messages / (time.perf_counter() - start)
        bound.delete()
        channel.close()
    return Result(name, messages, enqueue, drain)


@contextmanager
def sqlite_connection(options: dict[str, Any]) -> Iterator[Connection]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Connection(f"sqlite://{Path(tmp) / 'broker.sqlite'}", transport_options=options)


@contextmanager
def filesystem_connection() -> Iterator[Connection]:
    with tempfile.TemporaryDirectory() as tmp:
        folders = {key: Path(tmp) / key for key in ("data", "control", "processed")}
        for folder in folders.values():
            folder.mkdir()
        yield Connection("filesystem://", transport_options={
            "data_folder_in": str(folders["data"]), "data_folder_out": str(folders["data"]),
            "control_folder": str(folders["control"]),
            "processed_folder": str(folders["processed"])})


@contextmanager
def redis_connection() -> Iterator[Connection]:
    yield Connection(REDIS_URL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--messages", type=int, default=5_000)
    args = parser.parse_args()
    brokers.register()
    cases: list[tuple[str, Callable[[], AbstractContextManager[Connection]]]] = [
        ("sqlite (qtui)", lambda: sqlite_connection({})),
        ("sqlite (qtui, fetch_batch=1)", lambda: sqlite_connection({"fetch_batch": 1})),
        ("filesystem (kombu)", filesystem_connection),
        ("redis (kombu)", redis_connection),
    ]
    print(f"{'transport':<30} {'messages':>9} {'enqueue msg/s':>14} {'drain msg/s':>12}")
    for name, connect in cases:
        with connect() as connection:
            result = measure(name, connection, args.messages)
        print(f"{result.transport:<30} {result.messages:>9} {result.enqueue_per_s:>14,.0f} "
              f"{result.drain_per_s:>12,.0f}", flush=True)


if __name__ == "__main__":
    main()
