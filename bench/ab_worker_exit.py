"""A solo worker on Redis started, ready, TERMed and waited for, interleaved: ``python -m
qtui.tui.cli`` (its exit freezes the objects first, qtui.core.exit) against ``main()`` called
with a plain ``sys.exit`` (the exit before). Medians of wall and the worker's CPU per cycle.

    python -m bench.ab_worker_exit [ROUNDS]
"""

from __future__ import annotations

import os
import resource
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.processes import running
from tests.worker_helpers import make_setup

PLAIN_EXIT = "import sys; from qtui.tui.cli import main; sys.exit(main())"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(rounds: int) -> None:
    setup = make_setup(Path(tempfile.mkdtemp(prefix="ab-worker-exit-")),
                       f"abx-{uuid.uuid4().hex[:8]}", "redis://127.0.0.1:6379/0",
                       "redis://127.0.0.1:6379/0")
    args = ["-A", "tasks", "run-worker", "-n", f"w-{setup.queue}", "-l", "INFO", "-P", "solo"]
    sides = {"gc.freeze": [sys.executable, "-m", "qtui.tui.cli", *args],
             "plain": [sys.executable, "-c", PLAIN_EXIT, *args]}
    figures: dict[str, dict[str, list[float]]] = {
        side: {"start to exit": [], "TERM to exit": [], "CPU": []} for side in sides}
    with setup:
        for i in range(rounds):
            for side in sorted(sides, reverse=bool(i % 2)):
                cpu, started = children_cpu(), time.monotonic()
                with running(sides[side], setup.directory, ready="ready.", env=setup.env) as proc:
                    termed = time.monotonic()
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(20)
                    done = time.monotonic()
                figures[side]["start to exit"].append(done - started)
                figures[side]["TERM to exit"].append(done - termed)
                figures[side]["CPU"].append(children_cpu() - cpu)
    for side, kinds in figures.items():
        print(side, "  ".join(f"{kind} {statistics.median(values):.3f} s"
                              for kind, values in kinds.items()))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 12)
