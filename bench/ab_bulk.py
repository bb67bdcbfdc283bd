"""Bulk enqueue of this checkout against another git ref of qtui, interleaved round by round (A
then B, then B then A), on a private ``redis-server`` and a fresh embedded SQLite file per run:
load from other work on the machine hits both sides alike.

Each run is a child process (the other ref first on its ``PYTHONPATH``, as in
:mod:`bench.ab_latency`): :func:`bench.bench_bulk.measure` sends ``--tasks`` calls one way after
an untimed warm-up send of 200, then checks the queue holds exactly what it sent (the count, and
no id twice). It prints the rate (messages/s), the client's CPU per call
(``time.process_time()``, steadier than the rate on a loaded machine) and the cyclic garbage
collector's passes. Figures are the median and range per side. With ``--instructions`` each
run is one child per side under valgrind's callgrind, counting only the timed send
(``--toggle-collect`` on the ``functools.reduce`` that calls it): instructions per call, which
the load does not move.

    python -m bench.ab_bulk --ref main --rounds 4 --tasks 20000 --ways send_many,group
    python -m bench.ab_bulk --ref main --instructions --tasks 2000 --ways send_many,group
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from bench.ab_latency import extract
from bench.bench_bulk import WAYS, child_argv
from tests.redis_server import redis_server, spare_port

#: callgrind's options for ``--instructions``: only the timed send is counted.
CALLGRIND = ("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
             "--collect-atstart=no", "--toggle-collect=functools_reduce")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="main", help="the git ref to compare with (main)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=10, help="calls per part of chunks")
    parser.add_argument("--brokers", default="redis,sqlite")
    parser.add_argument("--ways", default="send_many,group")
    parser.add_argument("--port", type=int, help="the private redis-server's port (a spare one)")
    parser.add_argument("--instructions", action="store_true",
                        help="one run per side under callgrind: instructions per call")
    args = parser.parse_args(argv)
    ways = [w for w in args.ways.split(",") if w in WAYS]
    brokers = [b for b in args.brokers.split(",") if b]
    with tempfile.TemporaryDirectory(prefix="qtui-ab-bulk-") as tmp:
        folder = Path(tmp)
        other = extract(args.ref, folder)
        port = args.port or spare_port()
        sides = (args.ref, "this checkout")
        figures: dict[tuple[str, str, str], list[dict[str, float]]] = {}
        with redis_server(folder, port, durable=False):
            for round_ in range(1 if args.instructions else args.rounds):
                for side in sides if round_ % 2 == 0 else sides[::-1]:
                    env = dict(os.environ, PYTHONHASHSEED="0")
                    if side == args.ref:
                        env["PYTHONPATH"] = os.pathsep.join(
                            [str(other), *filter(None, [env.get("PYTHONPATH")])])
                    for broker in brokers:
                        for way in ways:
                            url = f"redis://127.0.0.1:{port}/0" if broker == "redis" else \
                                f"sqlite://{folder / f'bulk-{uuid.uuid4().hex[:8]}.sqlite'}"
                            run = subprocess.run(
                                [*(CALLGRIND if args.instructions else ()),
                                 *child_argv("qtui", way, url, args.tasks, args.chunk)],
                                env=env, check=True, capture_output=True, text=True)
                            result = json.loads(run.stdout.splitlines()[-1])
                            if args.instructions:
                                collected = re.search(r"Collected : (\d+)", run.stderr)
                                assert collected, run.stderr[-2000:]
                                result["instructions"] = int(collected[1]) / args.tasks
                            figures.setdefault((broker, way, side), []).append(result)
                            load = Path("/proc/loadavg").read_text().split()[0]
                            print(f"round {round_} {side:<14} {broker:<7} {way:<10} "
                                  f"{result['rate']:9,.0f}/s {result['cpu_us']:6.1f} us/call "
                                  f"gc {result['gc']:4d}  load {load}"
                                  + (f"  {result['instructions']:,.0f} instructions/call"
                                     if args.instructions else ""), flush=True)
    if args.instructions:
        print("\n| broker | how | side | instructions per call | gc passes |")
        print("| --- | --- | --- | ---: | ---: |")
        for (broker, way, side), results in figures.items():
            print(f"| {broker} | {way} | {side} | {results[0]['instructions']:,.0f} | "
                  f"{results[0]['gc']} |")
        return 0
    print("\n| broker | how | side | messages/s | client CPU us/call | gc passes |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for (broker, way, side), results in figures.items():
        print(f"| {broker} | {way} | {side} | {spread([r['rate'] for r in results], 0)} | "
              f"{spread([r['cpu_us'] for r in results], 1)} | "
              f"{statistics.median(r['gc'] for r in results):.0f} |")
    return 0


def spread(values: list[float], digits: int) -> str:
    return (f"{statistics.median(values):,.{digits}f} "
            f"({min(values):,.{digits}f}-{max(values):,.{digits}f})")


if __name__ == "__main__":
    sys.exit(main())
