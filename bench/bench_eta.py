"""How late ETA tasks run behind a backlog, qtui against Celery on the same broker.

Each framework in turn: a solo worker starts on a fresh queue, the client sends ``--eta`` tasks
with a countdown of ``--countdown`` seconds (past qtui's ``worker_eta_horizon`` of 10 s, so
qtui hands them to the broker's delayed store), then a backlog of ``--backlog`` tasks of
``--seconds`` each. Every ETA task records when it started against its ETA; the figures are
the lateness p50, p99 and max in seconds (issue 21 item 7: a due task going back to the tail of
its queue waits for the whole backlog).

    python -m bench.bench_eta                       # RabbitMQ on 127.0.0.1, qtui and Celery
    python -m bench.bench_eta --broker redis://127.0.0.1:6379/13   # an otherwise unused database
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import redis

from bench.run import REPO, RabbitBroker, percentile, stop

TASKS = {
    "qtui": """
        import json, time
        from qtui.core import App
        app = App("etabench", broker={broker!r}, backend=None, task_default_queue={queue!r})
        """,
    "celery": """
        import json, time
        from celery import Celery
        app = Celery("etabench", broker={broker!r}, backend=None)
        app.conf.task_default_queue = {queue!r}
        """,
}

COMMON = """
@app.task(name="etabench.work", ignore_result=True)
def work(seconds):
    time.sleep(seconds)

@app.task(name="etabench.probe", ignore_result=True)
def probe(eta):
    with open({record!r}, "a") as f:
        f.write(json.dumps(time.time() - eta) + "\\n")

def send(eta_tasks, countdown, backlog, seconds):
    for _ in range(eta_tasks):
        probe.apply_async(args=[time.time() + countdown], countdown=countdown)
    for _ in range(backlog):
        work.delay(seconds)
"""


def worker_argv(framework: str, module: str, queue: str) -> list[str]:
    py = sys.executable
    if framework == "qtui":
        return [py, "-m", "qtui.workers.cli", "-A", module, "-l", "WARNING", "-Q", queue,
                "-P", "solo", "--without-events", "-n", f"eta-{queue}@%h"]
    return [py, "-m", "celery", "-A", module, "worker", "-l", "WARNING", "-Q", queue, "-P",
            "solo", "-n", f"eta-{queue}@%h", "--without-gossip", "--without-mingle",
            "--without-heartbeat"]


def run(framework: str, broker: str, workdir: Path, args: argparse.Namespace) -> list[float]:
    """The lateness in seconds of every ETA task that ran (fewer than sent: some never ran)."""
    queue = f"qtui-etabench-{uuid.uuid4().hex[:8]}"
    module = f"etabench_{framework}_{uuid.uuid4().hex[:6]}"
    record = workdir / f"{module}.late"
    source = textwrap.dedent(TASKS[framework]) + COMMON
    (workdir / f"{module}.py").write_text(source.format(broker=broker, queue=queue,
                                                        record=str(record)))
    env = {**os.environ, "PYTHONPATH": f"{workdir}:{REPO}", "PYTHONUNBUFFERED": "1"}
    log = (workdir / f"{module}.log").open("w")
    proc = subprocess.Popen(worker_argv(framework, module, queue), cwd=workdir, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        subprocess.run([sys.executable, "-c", f"import {module}; {module}.send("
                        f"{args.eta}, {args.countdown}, {args.backlog}, {args.seconds})"],
                       cwd=workdir, env=env, check=True, timeout=300)
        deadline = time.monotonic() + args.countdown + args.backlog * args.seconds * 3 + 60
        while time.monotonic() < deadline:
            if record.exists() and len(record.read_text().splitlines()) >= args.eta:
                break
            time.sleep(0.2)
    finally:
        stop(proc)
        log.close()
        if broker.startswith("amqp"):
            RabbitBroker(broker).reset(queue)
        else:  # Redis: the queue's lists and qtui's delayed set
            client = redis.Redis.from_url(broker)
            for key in client.scan_iter(f"*{queue}*"):
                client.delete(key)
    return sorted(json.loads(line) for line in record.read_text().splitlines()) \
        if record.exists() else []


def options(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``[]``: the defaults, as ``make bench`` runs it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--frameworks", default="qtui,celery")
    parser.add_argument("--eta", type=int, default=20, help="ETA tasks (20)")
    parser.add_argument("--countdown", type=float, default=12.0, help="their countdown (12 s)")
    parser.add_argument("--backlog", type=int, default=250, help="backlog tasks (250)")
    parser.add_argument("--seconds", type=float, default=0.1, help="each backlog task (0.1 s)")
    return parser.parse_args(argv)


def heading(args: argparse.Namespace, broker: str) -> str:
    return (f"{args.eta} ETA tasks (countdown {args.countdown:g} s) ahead of {args.backlog} "
            f"tasks of {args.seconds:g} s, solo worker, {broker.split('://')[0]}\n"
            "| framework | ETA tasks run | late p50 s | late p99 s | late max s |\n"
            "| --- | ---: | ---: | ---: | ---: |")


def row(framework: str, late: list[float], sent: int) -> str:
    """One line of the table: how many ran, and their lateness p50, p99 and max."""
    cells = ([f"{percentile(late, p):.2f}" for p in (50, 99)] + [f"{late[-1]:.2f}"]
             if late else ["-", "-", "-"])
    return f"| {framework} | {len(late)} of {sent} | {' | '.join(cells)} |"


def main(argv: list[str] | None = None) -> int:
    args = options(argv)
    print(heading(args, args.broker))
    with tempfile.TemporaryDirectory(prefix="qtui-etabench-") as tmp:
        for framework in args.frameworks.split(","):
            late = run(framework, args.broker, Path(tmp), args)
            print(row(framework, late, args.eta), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
