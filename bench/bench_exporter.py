"""qtui exporter's own cost: task events counted per second, a scrape's time and size, memory.

Events are made in this process and handed to ``Exporter.ingest`` in batches of 100 (as the
event receiver hands them over), so the figure is the exporter's counting alone: the receiver
is the console's, whose rate ``bench_console`` measures. Each task has a task-received,
task-started and task-succeeded event (one in ten fails instead), over ``--names`` task names
and four workers; then ``/metrics`` is rendered as a scrape renders it.

    python -m bench.bench_exporter [--tasks 100000] [--names 50]
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Iterator
from typing import Any

from bench.bench_console import rss_mb

BATCH = 100


def task_events(tasks: int, names: int) -> Iterator[list[dict[str, Any]]]:
    """The events of ``tasks`` tasks, in batches (made as they go, so they take no memory)."""
    clock = itertools.count(1)
    batch: list[dict[str, Any]] = []
    for i in range(tasks):
        now = time.time()
        common = {"uuid": f"task-{i}", "hostname": f"w{i % 4}@bench", "timestamp": now,
                  "local_received": now, "pid": 1}
        end: dict[str, Any] = ({"type": "task-failed", "exception": "ValueError('x')"}
                               if i % 10 == 0 else
                               {"type": "task-succeeded", "runtime": (i % 1000) / 100})
        for fields in ({"type": "task-received", "name": f"bench.task{i % names}"},
                       {"type": "task-started"}, end):
            batch.append({**common, **fields, "clock": next(clock)})
            if len(batch) == BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--names", type=int, default=50)
    args = parser.parse_args()

    from prometheus_client import generate_latest

    from qtui.core import App
    from qtui.tui.exporter import Exporter

    exporter = Exporter(App("bench", broker="memory://"))
    before = rss_mb()
    elapsed = 0.0
    for batch in task_events(args.tasks, args.names):
        start = time.perf_counter()
        exporter.ingest(batch)
        elapsed += time.perf_counter() - start
    start = time.perf_counter()
    text = generate_latest(exporter.registry)
    scrape = time.perf_counter() - start
    events = args.tasks * 3
    print(f"{events:,} events counted in {elapsed:.2f} s: {events / elapsed:,.0f} events/s")
    lines = len(text.splitlines())
    print(f"scrape: {len(text):,} bytes, {lines:,} lines, {scrape * 1000:.0f} ms")
    print(f"memory: {rss_mb():.0f} MB resident, {rss_mb() - before:+.0f} MB for the events")


if __name__ == "__main__":
    main()
