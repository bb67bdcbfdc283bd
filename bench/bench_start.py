"""What a worker's start costs: wall time and CPU from its start to its ready line, and the
modules it had loaded, for two or more source trees, interleaved (A, B, A, B, ...) so that the
machine's load falls on each alike.

Each tree is a folder holding ``core/``, ``workers/`` and ``tui/`` (a checkout, or a
``git archive`` of one); the bench links it as ``qtui/`` under a folder of its own that goes
first on ``PYTHONPATH``, ahead of the editable install. The worker is a solo worker of a
one-task module on ``--broker`` with results in ``--backend``; its CPU is its process's
utime + stime when the ready line appears; it is then stopped (SIGTERM) and writes how many
modules it had loaded, and how many of them were redis-py's, as it exits. ``--callgrind``
runs each tree once more under callgrind, start to ready and warm shutdown, and prints the
instructions of the worker's process (its children, such as the Redis liveness helper, are
not traced): they repeat from run to run whatever the load.

    git archive main core workers tui | tar -x -C /tmp/main-src
    python -m bench.bench_start --tree main=/tmp/main-src --tree branch=. \\
        --broker sqlite:///tmp/start.sqlite --backend rpc:// --pairs 5 --callgrind
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_cpu import own_cpu

TASKS = """
from qtui.core import App

app = App("start_tasks", broker={broker!r}, backend={backend!r})


@app.task
def add(x, y):
    return x + y
"""

#: ``python -c`` code that runs ``qtui`` with the arguments after it and, as it exits, writes
#: how many modules it had loaded (``sys.modules``: what ``importlib`` loaded too).
RUNS_QTUI = ("import atexit, runpy, sys\n"
             "atexit.register(lambda: sys.stderr.write('\\nmodules: %d redis: %d\\n' % (\n"
             "    len(sys.modules), sum(m.split('.')[0] == 'redis' for m in sys.modules))))\n"
             "runpy.run_module('qtui.tui.cli', run_name='__main__', alter_sys=True)\n")


def linked(name: str, tree: Path, under: Path) -> Path:
    """A folder with ``qtui/`` made of ``tree``'s three source folders, for ``PYTHONPATH``.
    Each folder is compiled first: under ``PYTHONDONTWRITEBYTECODE`` a tree without ``.pyc``
    files (a fresh ``git archive``) would compile every module at every start."""
    folder = under / name / "qtui"
    folder.mkdir(parents=True)
    for package in ("core", "workers", "tui"):
        compileall.compile_dir(tree.resolve() / package, quiet=1)
        (folder / package).symlink_to(tree.resolve() / package)
    return folder.parent


def start(path: Path, work: Path, args: argparse.Namespace,
          callgrind: Path | None = None) -> tuple[float, float, str]:
    """Start a worker on ``path``'s sources until it is ready, then stop it: its wall time and
    CPU to ready, and what it wrote."""
    log = work / "worker.log"
    command = [sys.executable, "-c", RUNS_QTUI, "-A", "start_tasks", "run-worker", "-P",
               "solo", "-n", f"start-{os.getpid()}@%h", *args.option]
    if callgrind is not None:
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={callgrind}", *command]
    env = {**os.environ, "PYTHONPATH": f"{path}:{work}", "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=work, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while "ready." not in log.read_text():
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited before it was ready:\n{log.read_text()}")
            time.sleep(0.01)
        wall, cpu = time.monotonic() - started, own_cpu(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(300)
    return wall, cpu, log.read_text()


def modules_of(text: str) -> str:
    found = re.search(r"^modules: (\d+) redis: (\d+)$", text, re.MULTILINE)
    return f"{found[1]} modules ({found[2]} redis-py)" if found else "modules not reported"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", required=True, metavar="NAME=FOLDER",
                        help="a source tree to start the worker from (two or more)")
    parser.add_argument("--broker", required=True)
    parser.add_argument("--backend", default="rpc://")
    parser.add_argument("--pairs", type=int, default=5, help="rounds over the trees")
    parser.add_argument("--option", action="append", default=[],
                        help="a further worker option, such as --option=-Q --option=QUEUE")
    parser.add_argument("--callgrind", action="store_true",
                        help="then one run of each tree under callgrind")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qtui-bench-start-") as folder:
        work = Path(folder)
        (work / "start_tasks.py").write_text(TASKS.format(broker=args.broker,
                                                          backend=args.backend))
        trees = {name: linked(name, Path(tree), work)
                 for name, _, tree in (spec.partition("=") for spec in args.tree)}
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
        print(f"{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}")
        for round_ in range(args.pairs):
            for name, path in trees.items():
                wall, cpu, text = start(path, work, args)
                runs[name].append((wall, cpu))
                print(f"{round_} {name:>8}: wall {wall:.2f} s, CPU {cpu:.2f} s, "
                      f"{modules_of(text)}", flush=True)
        print(f"{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}")
        for name, rows in runs.items():
            print(f"{name:>8}: median wall {statistics.median(w for w, _ in rows):.2f} s, "
                  f"median CPU {statistics.median(c for _, c in rows):.2f} s")
        if args.callgrind:
            for name, path in trees.items():
                dump = work / f"callgrind-{name}.out"
                _, _, text = start(path, work, args, callgrind=dump)
                instructions = re.search(r"Collected : (\d+)", text)
                print(f"{name:>8}: {int(instructions[1]) if instructions else 0:,} "
                      f"instructions, start to ready and warm shutdown")
    return 0


if __name__ == "__main__":
    sys.exit(main())
