"""The worker's task-event path alone: N tasks' task-received, task-started and task-succeeded
through the worker's :class:`~qtui.workers.events.Events` to a broker, batched as a worker
batches them, without a pool or a fetch. It measures what task events cost the worker's main
process (a drain hides it among the broker's work). It uses only what a worker calls, so it runs
the same in another checkout (its own venv) for an A/B; under callgrind (``--callgrind``) it counts
the loop's instructions alone:

    python -m bench.bench_events --tasks 20000 --redis redis://127.0.0.1:6391/0
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/cg \
        python -m bench.bench_events --tasks 2000 --callgrind --redis redis://127.0.0.1:6391/0
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from types import SimpleNamespace
from typing import Any

from kombu.clocks import LamportClock

from qtui.core import App
from qtui.core.protocol import TaskMessage
from qtui.workers.events import Events
from qtui.workers.execution import Outcome
from qtui.workers.job import Job

#: Tasks sent before the measure starts.
WARM_UP = 200


class NoTimer:
    """The worker's timer, never firing: batches go out at the batch limit (as in a drain, where
    the limit comes long before the flush interval)."""

    def call_later(self, delay: float, callback: Any) -> Any:
        return SimpleNamespace(cancel=lambda: None)


def run(events: Events, jobs: list[Job], outcomes: list[Outcome]) -> None:
    """What a worker's main process sends for these tasks, each run and succeeded."""
    for job, outcome in zip(jobs, outcomes, strict=True):
        events.on_task_received(job)
        events.on_task_started(job, None)
        events.on_task_succeeded(job, outcome)
    events.flush()


def instrument(state: str) -> None:
    """Switch callgrind's instrumentation of this process on or off."""
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True,
                   capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6391/0")
    parser.add_argument("--callgrind", action="store_true",
                        help="run under valgrind --tool=callgrind --instr-atstart=no: count the "
                             "task events only (the loop, not the start-up)")
    args = parser.parse_args(argv)
    n = args.tasks
    app = App("bench-events", broker=args.redis, backend=None)
    worker = SimpleNamespace(app=app, hostname="bench-events@host", clock=LamportClock(),
                             timer=NoTimer(), send_events=True, heartbeat=False,
                             pool_name="prefork", stopping=False)
    events = Events(worker)  # type: ignore[arg-type]
    jobs = [Job(TaskMessage(id=f"bench-events-{i:012d}", task="bench_events.noop",
                            argsrepr="()", kwargsrepr="{}", root_id=f"bench-events-{i:012d}"),
                None, "bench")  # type: ignore[arg-type]
            for i in range(n)]
    outcomes = [Outcome(job.id, "SUCCESS", 0.000123, result="None") for job in jobs]
    run(events, jobs[:WARM_UP], outcomes[:WARM_UP])  # the connection made, kombu's imports done
    if args.callgrind:
        instrument("on")
    start = time.perf_counter()
    run(events, jobs, outcomes)
    seconds = time.perf_counter() - start
    if args.callgrind:
        instrument("off")
    print(f"task events alone: {n / seconds:,.0f} tasks/s, {1e6 * seconds / n:.1f} us/task "
          f"(3 events a task), {events.dropped} dropped")
    app.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
