"""Round-trip latency (``delay()`` then ``get()``) of this checkout against another git ref of qtui
and against Celery, in one pool, interleaved round by round (A, B, Celery, then the other way
round), on a private ``redis-server``: load from other work on the machine hits every side alike.

The other ref is extracted with ``git archive`` into a temporary folder and put first on the
worker's and the client's ``PYTHONPATH`` (``qtui`` is a namespace package: its ``core``,
``workers`` and ``tui`` folders are linked under it), so both sides run with this venv's
packages. Each case is :meth:`bench.run.Bench.run_latency` (the ``latency`` section of
``bench.run``); the figures are the p50 of each run, then their median and range per side.

    python -m bench.ab_latency --ref main --rounds 10 --tasks 1000 --pool solo
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.run import REPO, Bench, worker_cases
from tests.redis_server import redis_server, spare_port


def extract(ref: str, folder: Path) -> Path:
    """``ref``'s tree under ``folder``, and the folder to put first on ``PYTHONPATH``."""
    tree = folder / "tree"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    path = folder / "path"
    (path / "qtui").mkdir(parents=True)
    for part in ("core", "workers", "tui"):
        (path / "qtui" / part).symlink_to(tree / part)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="main", help="the git ref to compare with (main)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=1000, help="round trips per run (1000)")
    parser.add_argument("--pool", default="solo", choices=("solo", "threads", "prefork"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qtui-ab-") as tmp:
        folder = Path(tmp)
        other = extract(args.ref, folder)
        work = folder / "work"
        work.mkdir()
        port = spare_port()
        sides = {args.ref: "qtui", "this checkout": "qtui", "celery": "celery"}
        p50s: dict[str, list[float]] = {side: [] for side in sides}
        with redis_server(folder, port, durable=False):
            url = f"redis://127.0.0.1:{port}/0"
            bench = Bench(work, False)
            env = dict(bench.env)
            cases = {c.framework: c for c in worker_cases("redis", 2, 8)
                     if c.pool.startswith(args.pool)}
            for round_ in range(args.rounds):
                order = list(sides) if round_ % 2 == 0 else list(sides)[::-1]
                for side in order:
                    bench.env = dict(env)
                    if side == args.ref:
                        bench.env["PYTHONPATH"] = os.pathsep.join([str(other), env["PYTHONPATH"]])
                    result = bench.run_latency(cases[sides[side]], url, args.tasks)
                    p50s[side].append(result["p50"])
                    load = Path("/proc/loadavg").read_text().split()[0]
                    print(f"round {round_} {side:<14} p50 {result['p50']:.3f} ms  p99 "
                          f"{result['p99']:.3f} ms  load {load}", flush=True)
        print()
        for side, values in p50s.items():
            print(f"{side:<14} p50 median {statistics.median(values):.3f} ms "
                  f"({min(values):.3f}-{max(values):.3f}) over {len(values)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
