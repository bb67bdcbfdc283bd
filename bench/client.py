"""The client side of a benchmark, run in a process of its own by :mod:`bench.run`.

``python -m bench.client enqueue MODULE COUNT`` imports the generated tasks module and calls its
``send()`` COUNT times (one untimed first send opens the connection, then COUNT - 1 timed ones);
``python -m bench.client latency MODULE COUNT`` times ``roundtrip(i)`` (``delay`` then ``get``)
COUNT times after a short warm-up. Each prints one JSON line on stdout.
"""

from __future__ import annotations

import importlib
import json
import sys
import time

LATENCY_WARMUP = 20


def enqueue(module: str, count: int) -> dict[str, float]:
    tasks = importlib.import_module(module)
    tasks.send()
    start = time.perf_counter()
    for _ in range(count - 1):
        tasks.send()
    seconds = time.perf_counter() - start
    tasks.close()
    return {"seconds": seconds, "rate": (count - 1) / seconds}


def latency(module: str, count: int) -> dict[str, list[float]]:
    tasks = importlib.import_module(module)
    for i in range(LATENCY_WARMUP):
        tasks.roundtrip(i)
    samples = []
    for i in range(count):
        start = time.perf_counter()
        tasks.roundtrip(i)
        samples.append((time.perf_counter() - start) * 1000)
    tasks.close()
    return {"ms": samples}


def main(argv: list[str]) -> int:
    what, module, count = argv[0], argv[1], int(argv[2])
    result = enqueue(module, count) if what == "enqueue" else latency(module, count)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
