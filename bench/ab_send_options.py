"""CPU per ``apply_async`` on Redis, this checkout against another git ref, in separate
processes interleaved round by round: ``delay()`` (the task's own plan) and ``apply_async``
with a routing option (through ``send_task``'s option checks, where fx-callopts added the
publishing options). The other ref's core/, workers/ and tui/ are extracted from git and
mapped in place of this checkout's by the editable install's finder.

    python -m bench.ab_send_options --ref main --rounds 10 --calls 3000
    python -m bench.ab_send_options --ref main --callgrind   # instructions per call

``--callgrind`` runs each side under valgrind's callgrind with 200 and 1,200 calls of each
kind and reports the difference over 1,000: instructions per call, which the load does not
move (Redis's own work is not counted).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import uuid
from pathlib import Path

from bench.run import REPO

CHILD = """
import json, sys, time
import __editable___qtui_0_1_0_finder as finder
root = sys.argv[1]
if root:
    for name in list(finder.MAPPING):
        finder.MAPPING[name] = root + "/" + name.split(".")[1]
from qtui.core import App
import redis
queue, calls = sys.argv[2], int(sys.argv[3])
app = App("ab", broker="redis://127.0.0.1:6379/0", task_default_queue=queue,
          task_ignore_result=True)

@app.task
def add(x, y):
    return x + y

add.delay(0, 0)
add.apply_async((0, 0), queue=queue)
import gc
gc.freeze()  # a full collection scans what was loaded: not the send's cost, and it differs by ref
figures = {}
kinds = (("delay", lambda: add.delay(1, 2)),
         ("apply_async(queue=)", lambda: add.apply_async((1, 2), queue=queue)))
for name, send in kinds:
    if sys.argv[4:] and sys.argv[4] != name:
        continue
    start = time.process_time()
    for _ in range(calls):
        send()
    figures[name] = (time.process_time() - start) / calls * 1e6
redis.Redis(port=6379).delete(queue)
app.close()
print(json.dumps(figures))
"""


def extract(ref: str, folder: Path) -> Path:
    """``ref``'s core/, workers/ and tui/ written under ``folder``."""
    archive = subprocess.run(["git", "archive", ref, "core", "workers", "tui"], cwd=REPO,
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def instructions(root: str, calls: int, kind: str) -> int:
    """Instructions callgrind counts over one child's whole run."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        sys.executable, "-c", CHILD, root,
                        f"ab-send-options-{uuid.uuid4().hex[:8]}", str(calls), kind],
                       check=True, capture_output=True, timeout=600)
        found = re.search(r"^summary:\s+(\d+)", out.read_text(), re.MULTILINE)
        assert found is not None
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ref", default="main")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--callgrind", action="store_true")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ab-send-options-") as folder:
        run(options, {"this": "", options.ref: str(extract(options.ref, Path(folder)))})


def run(options: argparse.Namespace, sides: dict[str, str]) -> None:
    if options.callgrind:
        for kind in ("delay", "apply_async(queue=)"):
            for side, root in sides.items():
                per_call = (instructions(root, 1200, kind) - instructions(root, 200, kind)) / 1000
                print(f"{side:>6} {kind} {per_call:,.0f} instructions/call")
        return
    figures: dict[str, dict[str, list[float]]] = {side: {} for side in sides}
    for i in range(options.rounds):
        for side in sorted(sides, reverse=bool(i % 2)):
            queue = f"ab-send-options-{uuid.uuid4().hex[:8]}"
            out = subprocess.run([sys.executable, "-c", CHILD, sides[side], queue,
                                  str(options.calls)], check=True, capture_output=True,
                                 text=True, timeout=300).stdout
            for name, value in json.loads(out).items():
                figures[side].setdefault(name, []).append(value)
    for side, kinds in figures.items():
        print(f"{side:>6}", "  ".join(f"{name} {statistics.median(values):.1f} us/call"
                                      for name, values in kinds.items()))


if __name__ == "__main__":
    main()
