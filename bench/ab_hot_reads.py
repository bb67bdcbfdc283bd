"""CPU per call of two steps on a task's path, this checkout against another git ref, in one
process, interleaved round by round: the worker channel's read of one ``basic.deliver``
(``WorkerChannel.dispatch_method``) and one ``RedisLedger.put(wait=False)`` on a private
``redis-server``. The other ref's ``core/brokers/amqp/transport.py`` and ``core/ledger.py`` are
loaded from git beside this checkout's (their imports are this checkout's modules).

    python -m bench.ab_hot_reads --ref main --rounds 15
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from amqp import spec
from amqp.basic_message import Message
from amqp.serialization import dumps

from bench.run import REPO
from qtui.core import ledger as this_ledger
from qtui.core.brokers.amqp import transport as this_transport
from tests.redis_server import redis_server, spare_port

CONSUMER_TAG = "amq.ctag-abcdefghijklmnop"
PAYLOAD = b"".join(part.to_bytes(2, "big") for part in spec.Basic.Deliver) + dumps(
    "sLbss", [CONSUMER_TAG, 7, False, "celery", "celery"])


def load(ref: str, path: str, module: str, folder: Path) -> ModuleType:
    """``path`` as it is at ``ref``, imported as ``module`` (a sibling of this checkout's)."""
    source = folder / Path(path).name
    source.write_bytes(subprocess.run(["git", "show", f"{ref}:{path}"], cwd=REPO, check=True,
                                      capture_output=True).stdout)
    found = importlib.util.spec_from_file_location(module, source)
    assert found is not None and found.loader is not None
    loaded = importlib.util.module_from_spec(found)
    sys.modules[module] = loaded
    found.loader.exec_module(loaded)
    return loaded


def deliver_us(transport: ModuleType, n: int) -> float:
    channel = transport.WorkerChannel(transport.BufferedConnection(host="127.0.0.1:1"), 1)
    channel.callbacks[CONSUMER_TAG] = lambda message: None
    messages = [Message(b"{}", content_type="application/json") for _ in range(n)]
    start = time.process_time()
    for message in messages:
        channel.dispatch_method(spec.Basic.Deliver, PAYLOAD, message)
        channel.unsettled.clear()
    return (time.process_time() - start) / n * 1e6


def put_us(ledger: ModuleType, url: str, n: int) -> float:
    store = ledger.RedisLedger(url)
    expires = time.time() + 60
    start = time.process_time()
    for i in range(n):
        store.put("bench", {f"k{i}": expires}, wait=False, trim=False)
    spent = (time.process_time() - start) / n * 1e6
    store.close()
    this_ledger.RedisLedger(url).client.delete(store.key("bench"))
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="main")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--delivers", type=int, default=100_000)
    parser.add_argument("--puts", type=int, default=5_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        old_transport = load(args.ref, "core/brokers/amqp/transport.py",
                             "qtui.core.brokers.amqp.transport_ref", Path(folder))
        old_ledger = load(args.ref, "core/ledger.py", "qtui.core.ledger_ref", Path(folder))
        port = spare_port()
        with redis_server(Path(folder), port, durable=False):
            url = f"redis://127.0.0.1:{port}/0"
            figures: dict[str, list[float]] = {}
            for _ in range(args.rounds):
                for side, transport, ledger in ((args.ref, old_transport, old_ledger),
                                                ("this", this_transport, this_ledger)):
                    figures.setdefault(f"deliver {side}", []).append(
                        deliver_us(transport, args.delivers))
                    figures.setdefault(f"put {side}", []).append(
                        put_us(ledger, url, args.puts))
    for name, values in figures.items():
        print(f"{name}: median {statistics.median(values):.2f} us, "
              f"min {min(values):.2f}, max {max(values):.2f} ({len(values)} rounds)")


if __name__ == "__main__":
    main()
