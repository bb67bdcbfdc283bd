"""Frames per second the worker's AMQP transport cuts from its read buffer, without a broker: a
socket stand-in hands over 64 KB per ``recv`` of task-message-sized frames (method 40 B, header
120 B, body 300 B), so the figure is the buffer handling alone. ``--against FILE`` loads another
version of ``core/brokers/amqp/transport.py`` (``git show REV:core/brokers/amqp/transport.py``)
and runs the two interleaved.

    python -m bench.bench_amqp_reads --runs 5 --against /tmp/old_transport.py
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from types import ModuleType

from qtui.core.brokers.amqp import transport as current

SIZES = (40, 120, 300)
RECV_SIZE = 65536


def frame(payload: bytes) -> bytes:
    return bytes([3, 0, 1]) + len(payload).to_bytes(4, "big") + payload + b"\xce"


def frames_per_second(module: ModuleType, messages: int) -> float:
    wire = b"".join(frame(b"x" * size) for size in SIZES * messages)
    chunks = [wire[i:i + RECV_SIZE] for i in range(0, len(wire), RECV_SIZE)]
    transport = module.BufferedTCPTransport("127.0.0.1:1")
    transport._quick_recv = lambda size: chunks.pop(0)
    count = len(SIZES) * messages
    start = time.perf_counter()
    for _ in range(count):
        transport.read_frame()
    return count / (time.perf_counter() - start)


def load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("transport_against", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--against", metavar="FILE", help="another transport.py to compare")
    args = parser.parse_args(argv)
    versions = {"current": current}
    if args.against:
        versions["against"] = load(args.against)
    rates: dict[str, list[float]] = {name: [] for name in versions}
    for _ in range(args.runs):
        for name, module in versions.items():
            rates[name].append(frames_per_second(module, args.messages))
    for name, found in rates.items():
        print(f"{name}: {min(found):,.0f}-{max(found):,.0f} frames/s ({args.runs} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
