"""Drain rate on Redis: how fast a worker empties a queue of no-op tasks, qtui against Celery.

For each worker (qtui prefork/threads/solo, Celery prefork/threads/solo) the queue is filled with
the same protocol-v2 messages first (``ignore_result``), the worker is started, and the clock runs
from the first message it takes until the queue and the unacked set are both empty (every task
done and acknowledged). Each run uses its own Redis database, flushed before it starts.

    python -m bench.bench_drain [--tasks 20000] [--redis redis://127.0.0.1:6379/5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis

QUEUE = "bench-drain"

QTUI_TASKS = """
from qtui.core import App

app = App("benchtasks", broker="{url}", backend=None, task_default_queue="{queue}")

@app.task(name="benchtasks.noop", ignore_result=True)
def noop():
    pass
"""

CELERY_TASKS = """
from celery import Celery

app = Celery("benchtasks", broker="{url}")
app.conf.task_default_queue = "{queue}"

@app.task(name="benchtasks.noop", ignore_result=True)
def noop():
    pass
"""


@dataclass
class Run:
    label: str
    argv: list[str]
    module: str


def runs(concurrency: int, threads: int) -> list[Run]:
    py = sys.executable
    qtui = [py, "-m", "qtui.workers.cli", "-A", "qtui_benchtasks", "-l", "WARNING",
            "-Q", QUEUE]
    celery = [py, "-m", "celery", "-A", "celery_benchtasks", "worker", "-l", "WARNING", "-Q",
              QUEUE, "--without-gossip", "--without-mingle", "--without-heartbeat"]
    return [
        Run(f"qtui prefork -c {concurrency}", [*qtui, "-P", "prefork", "-c", str(concurrency)],
            "qtui"),
        Run(f"qtui threads -c {threads}", [*qtui, "-P", "threads", "-c", str(threads)], "qtui"),
        Run("qtui solo", [*qtui, "-P", "solo"], "qtui"),
        Run(f"celery prefork -c {concurrency}",
            [*celery, "-P", "prefork", "-c", str(concurrency)], "celery"),
        Run(f"celery threads -c {threads}", [*celery, "-P", "threads", "-c", str(threads)],
            "celery"),
        Run("celery solo", [*celery, "-P", "solo"], "celery"),
    ]


def fill(url: str, count: int, queue: str = QUEUE, onto: str | None = None) -> float:
    """Put ``count`` no-op task messages on ``queue`` (or on the list ``onto``, to be renamed
    into place later); returns the seconds it took.

    One message is sent with qtui's client; its Redis envelope is then copied with fresh task
    ids and delivery tags in pipelined LPUSHes, so filling takes a second, not a minute.
    """
    from qtui.core import App

    start = time.perf_counter()
    app = App("filler", broker=url, backend=None, task_default_queue=queue)
    app.send_task("benchtasks.noop", ignore_result=True)
    app.close()
    client = redis.Redis.from_url(url)
    template = json.loads(client.rpop(queue))
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        task_id = str(uuid.uuid4())
        template["headers"]["id"] = template["headers"]["root_id"] = task_id
        template["properties"]["correlation_id"] = task_id
        template["properties"]["delivery_tag"] = str(uuid.uuid4())
        pipe.lpush(onto or queue, json.dumps(template))
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    return time.perf_counter() - start


def drain(run: Run, url: str, count: int, workdir: Path) -> float:
    client = redis.Redis.from_url(url)
    client.flushdb()
    fill(url, count)
    assert client.llen(QUEUE) == count, "the queue was not filled"
    log_path = workdir / f"{run.label.replace(' ', '_')}.log"
    env = {**os.environ, "PYTHONPATH": str(workdir), "PYTHONUNBUFFERED": "1"}
    with log_path.open("w") as log:
        proc = subprocess.Popen(run.argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    try:
        while client.llen(QUEUE) == count:  # the clock starts with the first message taken
            if proc.poll() is not None:
                raise RuntimeError(f"{run.label} exited:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.001)
        start = time.perf_counter()
        while client.llen(QUEUE) or client.hlen("unacked"):
            time.sleep(0.005)
        return time.perf_counter() - start
    finally:
        stop(proc, 30)


def stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    """End a worker started in its own session: SIGTERM to its group, SIGKILL after ``grace``
    seconds."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/5",
                        help="a Redis database the benchmark may flush")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--only", help="run only the labels containing this text")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qtui-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "qtui_benchtasks.py").write_text(
            textwrap.dedent(QTUI_TASKS.format(url=args.redis, queue=QUEUE)))
        (workdir / "celery_benchtasks.py").write_text(
            textwrap.dedent(CELERY_TASKS.format(url=args.redis, queue=QUEUE)))
        results = []
        for run in runs(args.concurrency, args.threads):
            if args.only and args.only not in run.label:
                continue
            seconds = drain(run, args.redis, args.tasks, workdir)
            results.append((run.label, seconds, args.tasks / seconds))
            print(f"{run.label:<22} {seconds:8.2f} s {args.tasks / seconds:10.0f} tasks/s",
                  flush=True)
    print()
    print(f"| worker ({args.tasks:,} no-op tasks, Redis) | seconds | tasks/s |")
    print("| --- | ---: | ---: |")
    for label, seconds, rate in results:
        print(f"| {label} | {seconds:.2f} | {rate:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
