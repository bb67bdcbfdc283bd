"""Peek and dead letters on Redis (issue 16 targets): the first page of a peek at a
1,000,000-message queue within 0.5 s, and 10,000 dead letters requeued within 5 s.

The queue is filled with copies of one real task message (sent once by qtui's client, then
pushed again with a fresh id each, pipelined), so the messages are what a worker would take.
Each peek figure opens a new connection (what ``qtui peek`` and the console pay), then reads
the first page of 50; the summary reads the first 10,000. The dead letters carry the headers a
worker writes (reason, origin queue, deliveries); requeueing reads them all and moves each back
with one script call, 1,000 to a pipelined round trip. The database is flushed before and after:
give it one nothing else uses.

    python -m bench.bench_peek                                  # redis://127.0.0.1:6379/2
    python -m bench.bench_peek --messages 100000 --dead 1000    # a quick run
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid

import redis

from qtui.core import App
from qtui.core import deadletters as dead
from qtui.core.protocol import DEAD_QUEUE_HEADER, DEAD_REASON_HEADER, DELIVERIES_HEADER
from qtui.core.queues import inspector_for

QUEUE = "peekbench"
BATCH = 10_000


def options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/2",
                        help="a Redis database the bench may flush")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--dead", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    return parser.parse_args(argv)


def template(url: str) -> dict:
    """A real envelope of ``tasks.add(2, 2)`` as qtui's client puts it on Redis."""
    app = App("bench", broker=url, task_default_queue=QUEUE)
    app.send_task("tasks.add", args=[2, 2])
    app.close()
    raw = redis.Redis.from_url(url).rpop(QUEUE)
    return json.loads(raw)


def fill(client: redis.Redis, key: str, envelope: dict, count: int, headers: dict) -> None:
    for start in range(0, count, BATCH):
        with client.pipeline(transaction=False) as pipe:
            items = []
            for _ in range(min(BATCH, count - start)):
                task_id = str(uuid.uuid4())
                envelope["headers"] = {**envelope["headers"], "id": task_id, **headers}
                envelope["properties"]["correlation_id"] = task_id
                items.append(json.dumps(envelope))
            pipe.lpush(key, *items)
            pipe.execute()


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run(args: argparse.Namespace) -> dict[str, float]:
    client = redis.Redis.from_url(args.redis)
    client.flushdb()
    try:
        envelope = template(args.redis)
        fill(client, QUEUE, envelope, args.messages, {})
        app = App("bench", broker=args.redis)

        def first_page() -> None:
            with inspector_for(app) as inspector:
                assert len(inspector.peek(QUEUE).messages) == 50

        def summary() -> None:
            with inspector_for(app) as inspector:
                assert inspector.summary(QUEUE).sampled == min(10_000, args.messages)

        pages = [timed(first_page) for _ in range(args.repeat)]
        summaries = [timed(summary) for _ in range(args.repeat)]
        requeues = []
        for _ in range(args.repeat):
            client.delete(f"{QUEUE}.dead", "origin")
            fill(client, f"{QUEUE}.dead", envelope, args.dead, {
                DEAD_REASON_HEADER: "failed: ValueError('bench')",
                DEAD_QUEUE_HEADER: "origin", DELIVERIES_HEADER: 1})

            def requeue() -> None:
                with inspector_for(app) as inspector:
                    letters = dead.read(inspector, f"{QUEUE}.dead")
                    assert dead.requeue(inspector, f"{QUEUE}.dead", letters) == args.dead

            requeues.append(timed(requeue))
            assert client.llen("origin") == args.dead
        app.close()
        return {"first_page": statistics.median(pages), "first_page_max": max(pages),
                "summary": statistics.median(summaries), "requeue": statistics.median(requeues),
                "requeue_max": max(requeues)}
    finally:
        client.flushdb()


def main(argv: list[str] | None = None) -> int:
    args = options(argv)
    figures = run(args)
    print(f"peek first page (50) of {args.messages:,} messages: median "
          f"{figures['first_page'] * 1000:.1f} ms, max {figures['first_page_max'] * 1000:.1f} ms")
    print(f"summary over the first 10,000: median {figures['summary'] * 1000:.0f} ms")
    print(f"requeue {args.dead:,} dead letters: median {figures['requeue']:.2f} s, "
          f"max {figures['requeue_max']:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
