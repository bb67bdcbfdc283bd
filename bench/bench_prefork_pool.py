"""The prefork pool alone, no broker: CPU per task of the parent (the worker's main process) and
of the children while ``apply`` and ``collect`` run N no-op tasks through ``-c`` children. It
measures the pipes between them (hand-off, outcomes), which the broker's work hides in a drain.
It uses only the pool's public methods, so it runs the same in another checkout (its own venv)
for an A/B:

    python -m bench.bench_prefork_pool --tasks 20000
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

from qtui.core import App
from qtui.core.protocol import TaskMessage
from qtui.workers.execution import Lost, Outcome, WorkItem
from qtui.workers.pools.prefork import PreforkPool

app = App("bench-prefork-pool", broker="memory://", backend=None)


@app.task(name="bench_prefork_pool.noop", ignore_result=True)
def noop() -> None:
    pass


def cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("-c", "--concurrency", type=int, default=2)
    args = parser.parse_args(argv)
    n = args.tasks
    done: list[Outcome | Lost] = []
    pool = PreforkPool(app, args.concurrency, done.append)
    pool.start()
    info = {"exchange": "", "routing_key": "bench", "queue": "bench", "priority": 0,
            "redelivered": False}
    items = [WorkItem(i, TaskMessage(id=f"bench-prefork-pool-{i:012d}",
                                     task="bench_prefork_pool.noop", ignore_result=True),
                      info, "bench@host") for i in range(n)]
    time.sleep(0.5)  # the children are up
    before, start, sent = cpu(resource.RUSAGE_SELF), time.perf_counter(), 0
    while len(done) < n:
        while sent < n and pool.apply(items[sent]):
            sent += 1
        pool.collect(0.05)
    seconds = time.perf_counter() - start
    parent = cpu(resource.RUSAGE_SELF) - before
    pool.stop()  # the children exit and are reaped: their CPU is counted from here
    children = cpu(resource.RUSAGE_CHILDREN)
    print(f"prefork pool alone, -c {args.concurrency}: {n / seconds:,.0f} tasks/s, parent "
          f"{1e6 * parent / n:.1f} us/task, children {1e6 * children / n:.1f} us/task")
    return 0


if __name__ == "__main__":
    sys.exit(main())
