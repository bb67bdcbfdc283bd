"""The console's alert rules: what they cost its event feed.

The events of ``--tasks`` tasks (bench_exporter's: received, started, then succeeded or, one in
ten, failed) go through ``Feed.ingest`` as the event thread hands them over, once with no rule
and once with one rule of each kind (failure_rate counts every task that finishes); then the
rules are evaluated as the feed does every second, with every task still kept.

    python -m bench.bench_alerts [--tasks 100000] [--names 50]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from bench.bench_exporter import task_events

RULES: list[dict[str, Any]] = [
    {"name": "failing", "kind": "failure_rate", "over": 0.05},
    {"name": "down", "kind": "worker_offline"},
    {"name": "backlog", "kind": "queue_depth", "queue": "*", "over": 1000},
    {"name": "stale", "kind": "queue_age", "queue": "*", "over": 300},
    {"name": "silence", "kind": "no_events", "over": 60},
]
EVALUATIONS = 50


def run(tasks: int, names: int, rules: list[dict[str, Any]]) -> tuple[float, float]:
    """(events per second through Feed.ingest, median milliseconds of one evaluation)."""
    from qtui.core import App
    from qtui.tui.feed import Feed

    feed = Feed(App("bench", broker="memory://", console_max_tasks=tasks, alerts=rules))
    events, elapsed = 0, 0.0
    for batch in task_events(tasks, names):
        start = time.perf_counter()
        with feed.lock:
            feed.ingest(batch)
        elapsed += time.perf_counter() - start
        events += len(batch)
    times = []
    for _ in range(EVALUATIONS):
        start = time.perf_counter()
        with feed.lock:
            feed.alerts.update(feed.observe(time.time()))
        times.append(time.perf_counter() - start)
    return events / elapsed, statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--names", type=int, default=50)
    args = parser.parse_args()
    for label, rules in (("no rule", []), ("one rule of each kind", RULES)):
        rate, evaluation = run(args.tasks, args.names, rules)
        print(f"{label}: {rate:,.0f} events/s through Feed.ingest; one evaluation "
              f"{evaluation:.3f} ms (median of {EVALUATIONS}) with {args.tasks:,} tasks kept")


if __name__ == "__main__":
    main()
