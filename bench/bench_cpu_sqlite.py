"""CPU per task of a qtui worker draining its embedded SQLite broker (the broker runs inside the
worker, so the worker's CPU is all of it): steadier than drain rates on a shared machine.

The worker starts on an empty queue of a fresh broker file and waits idle; the no-op tasks are
staged as rows of a queue of their own and moved onto the worker's queue in one ``UPDATE``; from
then until the queue has no row left the bench counts the CPU time of the worker's process tree
(``/proc`` utime + stime, children included). ``--callgrind`` runs the worker under
valgrind's callgrind, instrumented only during the drain, as :mod:`bench.bench_cpu` does for
Redis: instruction counts repeat from run to run whatever the machine's load.

    python -m bench.bench_cpu_sqlite solo --tasks 3000
    python -m bench.bench_cpu_sqlite threads -c 8 --tasks 3000
    python -m bench.bench_cpu_sqlite solo --tasks 1000 --callgrind /tmp/cg-sqlite

Only stable interfaces are used (``App.send_task``, ``qtui.workers.cli``, the ``messages``
table), so another checkout's venv can run this file to compare commits.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.bench_cpu import (
    QUEUE,
    callgrind,
    own_cpu,
    print_worker_details,
    tree_cpu,
    worker_command,
    worker_options,
)
from bench.bench_drain import stop


def stage(url: str, count: int) -> None:
    """Put ``count`` no-op task rows in the file under the queue ``staging``: one message sent
    with qtui's client, its row copied with fresh task ids."""
    from qtui.core import App

    app = App("filler", broker=url, backend=None, task_default_queue="staging")
    app.send_task("benchtasks.noop", ignore_result=True)
    app.close()
    db = sqlite3.connect(url.removeprefix("sqlite://"), timeout=30)
    try:
        priority, payload, visible_at, created_at = db.execute(
            "SELECT priority, payload, visible_at, created_at FROM messages "
            "WHERE queue = 'staging'").fetchone()
        template = json.loads(payload)
        rows = []
        for _ in range(count):
            task_id = str(uuid.uuid4())
            template["headers"]["id"] = template["headers"]["root_id"] = task_id
            template["properties"]["correlation_id"] = task_id
            rows.append(("staging", priority, json.dumps(template), visible_at, created_at))
        with db:
            db.execute("DELETE FROM messages WHERE queue = 'staging'")
            db.executemany("INSERT INTO messages (queue, priority, payload, visible_at, "
                           "created_at) VALUES (?, ?, ?, ?, ?)", rows)
    finally:
        db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    worker_options(parser)
    parser.add_argument("--cprofile", metavar="FILE",
                        help="run the worker under cProfile (start to exit), its stats saved in "
                             "FILE")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qtui-bench-cpu-sqlite-") as tmp:
        path = Path(tmp, "broker.sqlite")
        url = f"sqlite://{path}"
        stage(url, args.tasks)
        profile = ("-m", "cProfile", "-o", args.cprofile) if args.cprofile else ()
        command = worker_command(args, url, tmp, profile)
        log_path = Path(tmp, "worker.log")
        with log_path.open("w") as log:
            worker = subprocess.Popen(command, cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
                                      env={**os.environ, "PYTHONPATH": tmp},
                                      start_new_session=True)
        db = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            deadline = time.monotonic() + 600
            while " ready." not in log_path.read_text():
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(log_path.read_text()[-3000:])
                time.sleep(0.05)
            time.sleep(1.0)
            if args.callgrind:
                callgrind("-i", "on", str(worker.pid))
            worker_before, parent_before = tree_cpu(worker.pid), own_cpu(worker.pid)
            start = time.perf_counter()
            db.execute("UPDATE messages SET queue = ? WHERE queue = 'staging'", (QUEUE,))
            while db.execute("SELECT EXISTS (SELECT 1 FROM messages WHERE queue = ?)",
                             (QUEUE,)).fetchone()[0]:
                time.sleep(0.01)
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(log_path.read_text()[-3000:])
            seconds = time.perf_counter() - start
            worker_cpu = tree_cpu(worker.pid) - worker_before
            parent_cpu = own_cpu(worker.pid) - parent_before
            if args.callgrind:
                callgrind("--dump=drain", str(worker.pid))
        finally:
            db.close()
            stop(worker, 60)
    n = args.tasks
    label = args.pool + (f" -c {args.concurrency}" if args.concurrency else "")
    print(f"{label}: worker {1e6 * worker_cpu / n:.0f} us/task, drain {n / seconds:,.0f}/s, "
          f"load {os.getloadavg()[0]:.1f}")
    print_worker_details(args, parent_cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
