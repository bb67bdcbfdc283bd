"""What a Queues poll costs on Redis with many queues and messages: round trips, time, and the
console's queue rows built from it.

A private redis-server (no persistence) on a spare port is filled with ``--queues`` queues of
``--per-queue`` messages each: one real qtui message is sent to each queue (so each head carries
qtui's publish time), then copied with pipelined LPUSHes. Then:

- the first poll, which lists the queues kombu bound (SCAN of the binding keys), and a steady
  poll as the console and the exporter make it (``listing_reuse``): round trips counted on the
  Redis connection, times the median of ``--repeat`` polls;
- the console feed's whole queue poll (``Feed._poll_queues``: the poll, each queue's oldest
  age, the rows the Queues view draws) over the same queues;
- the Queues view drawing those rows (``refresh_view`` of a console run headless at 140x36).

    python -m bench.bench_queues [--queues 1000] [--per-queue 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
import redis.connection

from qtui.core import App
from qtui.core.queues import LISTING_REUSE, inspector_for
from qtui.tui.rows import QueueRow, Snapshot
from tests.redis_server import redis_server, spare_port


@contextmanager
def private_redis() -> Iterator[int]:
    """A redis-server that keeps nothing on disk, on a spare port; stopped on exit."""
    port = spare_port()
    with tempfile.TemporaryDirectory() as directory, \
            redis_server(Path(directory), port, durable=False):
        yield port


def fill(url: str, queues: int, per_queue: int) -> list[str]:
    """``queues`` queues of ``per_queue`` messages, each queue's first sent by qtui's client."""
    names = [f"bench-q{n:04d}" for n in range(queues)]
    app = App("bench", broker=url)
    try:
        for name in names:
            app.send_task("bench.noop", queue=name)
    finally:
        app.close()
    client = redis.Redis.from_url(url)
    for name in names:
        head = client.lindex(name, 0)
        pipe = client.pipeline(transaction=False)
        for _ in range(per_queue - 1):
            pipe.lpush(name, head)
        pipe.execute()
    return names


@contextmanager
def counted_round_trips() -> Iterator[list[int]]:
    """Counts what redis-py writes to the server (one write per command or pipeline)."""
    sent = [0]
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sent[0] += 1
        original(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        redis.connection.AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


def timed(call: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, default=1000)
    parser.add_argument("--per-queue", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with private_redis() as port:
        url = f"redis://127.0.0.1:{port}/0"
        start = time.perf_counter()
        names = fill(url, args.queues, args.per_queue)
        print(f"filled {len(names):,} queues x {args.per_queue:,} messages in "
              f"{time.perf_counter() - start:.1f} s")
        app = App("bench", broker=url)
        with inspector_for(app) as inspector:
            with counted_round_trips() as sent:
                first = time.perf_counter()
                poll = inspector.poll()
                first = time.perf_counter() - first
            print(f"first poll (lists the bound queues): {len(poll.queues):,} queues, "
                  f"{sum(q.messages or 0 for q in poll.queues):,} messages, "
                  f"{sent[0]} round trips, {first * 1000:.0f} ms")
            with counted_round_trips() as sent:
                inspector.poll(listing_reuse=LISTING_REUSE)
            steady = timed(lambda: inspector.poll(listing_reuse=LISTING_REUSE), args.repeat)
            print(f"steady poll (the console's, the exporter's): {sent[0]} round trip(s), "
                  f"{steady * 1000:.0f} ms (median of {args.repeat})")
        from qtui.tui.feed import Feed
        feed = Feed(app, history=None)
        feed_poll = timed(feed._poll_queues, args.repeat)
        dated = sum(1 for row in feed._queues if row.age is not None and row.age.exact)
        print(f"console feed queue poll: {len(feed._queues):,} rows ({dated:,} dated exactly), "
              f"{feed_poll * 1000:.0f} ms (median of {args.repeat})")
        redraw = asyncio.run(view_redraw(feed._queues, args.repeat))
        print(f"Queues view redraw of {len(feed._queues):,} rows: {redraw * 1000:.0f} ms "
              f"(median of {args.repeat})")
        app.close()


async def view_redraw(rows: tuple[QueueRow, ...], repeat: int) -> float:
    """Seconds the Queues view takes to redraw ``rows`` (the console headless, no feed)."""
    from tests.console_data import FixedConsole

    console = FixedConsole(snapshot=Snapshot(queues=rows, connected=True))
    async with console.run_test(size=(140, 36)) as pilot:
        await pilot.press("4")
        await pilot.pause()
        view: Any = console.screen
        return timed(view.refresh_view, repeat)


if __name__ == "__main__":
    main()
