"""qtui against Celery and Dramatiq on the same machine and broker: what ``make bench`` runs.

Sections (``--only`` picks some, comma-separated):

- ``redis``: enqueue and drain rates of no-op tasks -- qtui and Celery (prefork, threads, solo)
  and Dramatiq, all on the same Redis database;
- ``rabbitmq``: the same for qtui and Celery on RabbitMQ;
- in both, ``qtui-celeryapp``: the Celery cases' tasks module (a Celery app, sent by Celery's
  client) run by ``qtui -A module run-worker``, so the cost of Celery's tracer on qtui's worker
  shows beside qtui's own App;
- ``sqlite``: qtui on its embedded SQLite broker (a fresh file per run);
- ``bulk``: bulk enqueue (:func:`bench.bench_bulk.measure`, each case a client process of its
  own): qtui's ``app.send_many``, ``group(...).apply_async()`` and ``chunks`` on Redis and
  SQLite, Celery's group and chunks and Dramatiq's ``group(...).run()`` on the same Redis; each
  case reads every message id back (the count, none twice) before it reports a rate;
- ``latency``: round trip from ``delay`` to ``get``, one task at a time, qtui and Celery on Redis
  (results in the same Redis);
- ``console``: :mod:`bench.bench_console` in a process of its own (without it, the last
  figures recorded in bench/RESULTS.md are printed);
- ``eta``: how late ETA tasks run behind a backlog (:mod:`bench.bench_eta`: p50/p99/max late,
  qtui and Celery solo workers, events off for both), on RabbitMQ and on Redis;
- ``peek``: :mod:`bench.bench_peek` (the first page of a peek at 1,000,000 messages, 10,000
  dead letters requeued), on Redis.

Every case runs the same way: a client process sends the tasks one ``delay()`` at a time (the
enqueue rate), then the worker starts, and the clock runs from the first message it takes until
every task has run and, where the broker shows it (Redis, SQLite), nothing is left unacknowledged
(the drain rate). A task is a no-op that appends one byte to a file of its case, which is how
the bench counts the runs on every framework and broker (RabbitMQ shows no unacked count without
its management plugin); the queue is checked to be empty once the worker has stopped, and a
count above the number of tasks would show tasks that ran twice. Each case uses its own queue,
Redis runs use a database of their own (it must be empty at the start; it is flushed between
cases and at the end), RabbitMQ queues and exchanges are deleted after each case, and every
worker process is stopped whatever happens.

    python -m bench.run                      # everything: 20,000 tasks, 2,000 round trips
    python -m bench.run --quick              # 2,000 tasks, 300 round trips, console 10,000
    python -m bench.run --only redis,latency --repeat 3 --workers qtui
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

import redis

from bench.bench_bulk import child_argv
from bench.bench_cpu import listening_pid, process_cpu, redis_cpu, tree_cpu
from qtui.core.delayed import DUE_QUEUE

SECTIONS = ("redis", "rabbitmq", "sqlite", "latency", "console")
SECTIONS += ("eta",)  # bench.bench_eta's lateness of ETA tasks behind a backlog
SECTIONS += ("peek",)  # bench.bench_peek: a peek at 1,000,000 messages, 10,000 dead letters
SECTIONS += ("bulk",)  # bench.bench_bulk's bulk sends: qtui, Celery, Dramatiq
BULK_CASES = {"redis": [("qtui", "send_many"), ("qtui", "group"), ("qtui", "chunks"),
                        ("celery", "group"), ("celery", "chunks"), ("dramatiq", "group")],
              "sqlite": [("qtui", "send_many"), ("qtui", "group"), ("qtui", "chunks")]}
"""The ``bulk`` section's (framework, way) cases per broker: Celery has no ``send_many``;
Dramatiq has neither ``send_many`` nor ``chunks`` (:data:`bench.bench_bulk.FRAMEWORK_WAYS`)."""
BULK_TARGET = 30_000
"""Tasks (calls) per second issue 19 item 2 asks of each qtui bulk path."""
REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 120.0
"""Seconds a worker may take to start taking messages."""
DRAIN_TIMEOUT = 600.0
STALL_TIMEOUT = 60.0
"""Seconds a drain may go without one more task run before its case is reported as failed
(a worker that lost its broker and sits in warm shutdown, as Celery's threads pool with
``-E`` on RabbitMQ does here, costs a minute, not the whole drain timeout)."""
POLL = 0.005

# The tasks modules each case imports (client and worker), written to a temporary folder.
QTUI_MODULE = """
from qtui.core import App

import os as _os

# One byte per task run: how the bench knows every task ran (the same for every framework).
_ran = _os.open({counter!r}, _os.O_WRONLY | _os.O_APPEND | _os.O_CREAT, 0o644)

app = App("benchtasks", broker={broker!r}, backend={backend!r}, task_default_queue={queue!r},
          broker_transport_options={transport_options!r})

@app.task(name="benchtasks.noop", ignore_result=True)
def noop():
    _os.write(_ran, b".")

@app.task(name="benchtasks.echo")
def echo(x):
    return x

def send():
    noop.delay()

def roundtrip(i):
    assert echo.delay(i).get(timeout=30) == i

def close():
    app.close()
"""

CELERY_MODULE = """
from celery import Celery

import os as _os

# One byte per task run: how the bench knows every task ran (the same for every framework).
_ran = _os.open({counter!r}, _os.O_WRONLY | _os.O_APPEND | _os.O_CREAT, 0o644)

app = Celery("benchtasks", broker={broker!r}, backend={backend!r})
app.conf.task_default_queue = {queue!r}
app.conf.broker_transport_options = {transport_options!r}

@app.task(name="benchtasks.noop", ignore_result=True)
def noop():
    _os.write(_ran, b".")

@app.task(name="benchtasks.echo")
def echo(x):
    return x

def send():
    noop.delay()

def roundtrip(i):
    assert echo.delay(i).get(timeout=30) == i

def close():
    app.close()
"""

DRAMATIQ_MODULE = """
import dramatiq
from dramatiq.brokers.redis import RedisBroker

import os as _os

# One byte per task run: how the bench knows every task ran (the same for every framework).
_ran = _os.open({counter!r}, _os.O_WRONLY | _os.O_APPEND | _os.O_CREAT, 0o644)

broker = RedisBroker(url={broker!r})
dramatiq.set_broker(broker)

@dramatiq.actor(queue_name={queue!r}, max_retries=0)
def noop():
    _os.write(_ran, b".")

def send():
    noop.send()

def close():
    broker.close()
"""


# the cases -----------------------------------------------------------------------------------
@dataclass
class Case:
    """One framework and pool on one broker."""

    broker: str
    framework: str
    pool: str
    argv: Callable[[str, str], list[str]] = field(repr=False)
    """(tasks module, queue) -> the worker's command line."""
    events: bool = False
    """The worker sends task events (qtui by default; Celery with ``-E``)."""

    @property
    def label(self) -> str:
        return f"{self.framework} {self.pool}"


@dataclass
class Measure:
    broker: str
    framework: str
    pool: str
    tasks: int
    enqueue: float
    drain: float
    seconds: float
    ran: int
    """Task runs counted (more than ``tasks``: some ran twice)."""
    left: int = 0
    """Messages still on the queue once the worker stopped (should be 0)."""
    events: bool = False
    worker_cpu: float | None = None
    """CPU seconds of the worker's process tree during the drain."""
    broker_cpu: float | None = None
    """CPU seconds of the broker during the drain (None: not seen, or in the worker: SQLite)."""


@dataclass
class BulkMeasure:
    """One bulk send: ``calls`` tasks sent one ``way``, in ``messages`` messages (fewer for
    ``chunks``, one message a part)."""

    broker: str
    framework: str
    way: str
    calls: int
    messages: int
    calls_rate: float
    messages_rate: float
    client_cpu_us: float
    """The client's CPU microseconds per call."""
    broker_cpu: float | None
    """CPU seconds of the broker during the send (None: not seen, or in the client: SQLite)."""
    gc: int
    """The cyclic garbage collector's passes during the send."""


def worker_cases(broker: str, concurrency: int, threads: int, events: bool = False
                 ) -> list[Case]:
    """Every framework's worker cases on ``broker``; qtui and Celery both send task events, or
    neither does (``events``), so their drain rates compare like for like."""
    py = sys.executable
    qtui_events = [] if events else ["--without-events"]
    celery_events = ["-E"] if events else []

    def qtui(pool: str, extra: list[str]) -> Callable[[str, str], list[str]]:
        return lambda module, queue: [
            py, "-m", "qtui.workers.cli", "-A", module, "-l", "WARNING", "-Q", queue,
            "-n", f"bench-{uuid.uuid4().hex[:8]}@%h", "-P", pool, *extra, *qtui_events]

    def celery(pool: str, extra: list[str]) -> Callable[[str, str], list[str]]:
        return lambda module, queue: [
            py, "-m", "celery", "-A", module, "worker", "-l", "WARNING", "-Q", queue,
            "-n", f"bench-{uuid.uuid4().hex[:8]}@%h", "-P", pool, *extra, *celery_events,
            "--without-gossip", "--without-mingle", "--without-heartbeat"]

    pools = [("prefork", ["-c", str(concurrency)], f"prefork -c {concurrency}"),
             ("threads", ["-c", str(threads)], f"threads -c {threads}"),
             ("solo", [], "solo")]
    cases = [Case(broker, "qtui", label, qtui(pool, extra), events)
             for pool, extra, label in pools]
    if broker != "sqlite":
        cases += [Case(broker, "qtui-celeryapp", label, qtui(pool, extra), events)
                  for pool, extra, label in pools]
        cases += [Case(broker, "celery", label, celery(pool, extra), events)
                  for pool, extra, label in pools]
    if broker == "redis":  # Dramatiq sends no task events, whatever ``events`` says
        cases.append(Case(broker, "dramatiq", f"-p {concurrency} -t {threads}",
                          lambda module, queue: [py, "-m", "dramatiq", module, "-Q", queue,
                                                 "-p", str(concurrency), "-t", str(threads)]))
    return cases


EVENT_SETTINGS = {"off": (False,), "on": (True,), "both": (False, True)}
"""What ``--events`` runs: task events off, on, or every case once each way."""


# brokers: how to count a queue, and how to leave nothing behind -------------------------------
class Broker:
    """A broker the cases of one section share."""

    name: str
    url: str

    def count(self, framework: str, queue: str) -> tuple[int, int | None]:
        """(ready, in flight) messages of ``queue``; in flight None when it cannot be seen."""
        raise NotImplementedError

    def reset(self, queue: str) -> None:
        """Remove what a case left (its queue, its keys)."""

    def describe(self) -> str:
        return self.name

    def cpu_seconds(self) -> float | None:
        """CPU seconds the broker process has used so far; None where it cannot be seen (or
        runs inside the worker: SQLite)."""
        return None


class RedisBroker(Broker):
    name = "redis"
    PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url)
        keys = self.client.dbsize()
        if keys:
            raise SystemExit(f"bench: the Redis database {url} holds {keys} keys; the benchmark "
                             "needs a database of its own (pass --redis with an empty one, or "
                             "flush this one if an earlier bench run left it)")

    def count(self, framework: str, queue: str) -> tuple[int, int | None]:
        if framework == "dramatiq":
            with self.client.pipeline(transaction=False) as pipe:
                ready, total = pipe.llen(f"dramatiq:{queue}").hlen(f"dramatiq:{queue}.msgs") \
                    .execute()
            return ready, max(0, total - ready)
        with self.client.pipeline(transaction=False) as pipe:
            for suffix in self.PRIORITY_SUFFIXES:
                pipe.llen(queue + suffix)
            pipe.hlen("unacked")
            *lengths, unacked = pipe.execute()
        return sum(lengths), unacked

    def reset(self, queue: str) -> None:
        self.client.flushdb()

    def describe(self) -> str:
        return f"Redis {self.client.info('server')['redis_version']}"

    def cpu_seconds(self) -> float | None:
        return redis_cpu(self.client)


class RabbitBroker(Broker):
    name = "rabbitmq"

    def __init__(self, url: str) -> None:
        from kombu import Connection
        self.url = url
        self.connection = Connection(url)
        self.connection.ensure_connection(max_retries=1)
        self.channel = self.connection.channel()
        host, port = self.connection.host.rpartition(":")[::2]
        self.port = int(port) if host in ("127.0.0.1", "localhost") else None
        """The port of a RabbitMQ on this machine, whose beam.smp's CPU time can be read."""
        self.pid: int | None = None
        self.cpu_seconds()  # finds the process: the first drain's reading is then its own

    def count(self, framework: str, queue: str) -> tuple[int, int | None]:
        try:
            ok = self.channel.queue_declare(queue, passive=True)
        except self.connection.channel_errors:
            self.channel = self.connection.channel()  # a 404 closes the channel
            return 0, None
        return ok.message_count, None

    def reset(self, queue: str) -> None:
        """The queue, the due queue a qtui worker declared for it (kept 48 h unused otherwise)
        and the exchange."""
        due = DUE_QUEUE.format(queue=queue)
        for delete in (lambda c: c.queue_delete(queue), lambda c: c.queue_delete(due),
                       lambda c: c.exchange_delete(queue)):
            try:
                delete(self.channel)
            except self.connection.channel_errors:
                self.channel = self.connection.channel()

    def describe(self) -> str:
        props = self.connection.connection.server_properties
        version = props.get("version", "?")
        return f"RabbitMQ {version.decode() if isinstance(version, bytes) else version}"

    def cpu_seconds(self) -> float | None:
        """None also when RabbitMQ restarted since the last call (a shared node: the two
        readings around a drain would be of two processes)."""
        pid = None if self.port is None else listening_pid(self.port)
        restarted, self.pid = pid != self.pid, pid
        try:
            return None if pid is None or restarted else process_cpu(pid)
        except OSError:  # it stopped meanwhile
            return None


class SQLiteBroker(Broker):
    name = "sqlite"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = ""

    def new_file(self) -> str:
        self.url = f"sqlite://{self.folder / f'broker-{uuid.uuid4().hex[:8]}.sqlite'}"
        return self.url

    def count(self, framework: str, queue: str) -> tuple[int, int | None]:
        path = self.url.removeprefix("sqlite://")
        if not os.path.exists(path):
            return 0, 0
        db = sqlite3.connect(path, timeout=5)
        try:
            total, held = db.execute(
                "SELECT count(*), count(holder) FROM messages WHERE queue = ?", (queue,)
            ).fetchone()
        finally:
            db.close()
        return total - held, held

    def reset(self, queue: str) -> None:
        path = self.url.removeprefix("sqlite://")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)

    def describe(self) -> str:
        return f"SQLite {sqlite3.sqlite_version} (qtui's embedded broker)"


# running one case ----------------------------------------------------------------------------
class Bench:
    def __init__(self, workdir: Path, verbose: bool, confirm: bool = True,
                 drain_timeout: float = DRAIN_TIMEOUT, stall_timeout: float = STALL_TIMEOUT
                 ) -> None:
        self.workdir = workdir
        self.drain_timeout = drain_timeout
        self.stall_timeout = stall_timeout
        self.verbose = verbose
        self.confirm = confirm
        """Publisher confirms on RabbitMQ, the same for qtui and Celery (kombu's
        ``confirm_publish`` transport option; qtui's default is on, Celery's off)."""
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(workdir), str(REPO)]),
                    "PYTHONUNBUFFERED": "1"}

    def module(self, framework: str, broker: str, backend: str | None, queue: str
               ) -> tuple[str, Path]:
        """A tasks module for one case: its import name and the file its tasks count runs in."""
        template = {"qtui": QTUI_MODULE, "celery": CELERY_MODULE,
                    "qtui-celeryapp": CELERY_MODULE, "dramatiq": DRAMATIQ_MODULE}[framework]
        name = f"bench_{framework.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        counter = self.workdir / f"{name}.ran"
        options = {"confirm_publish": self.confirm} if broker.startswith("amqp") else {}
        (self.workdir / f"{name}.py").write_text(textwrap.dedent(template.format(
            broker=broker, backend=backend, queue=queue, counter=str(counter),
            transport_options=options)))
        return name, counter

    def client(self, what: str, module: str, count: int) -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-m", "bench.client", what, module, str(count)],
                              cwd=self.workdir, env=self.env, capture_output=True, text=True,
                              timeout=DRAIN_TIMEOUT)
        if done.returncode != 0:
            raise RuntimeError(f"bench client {what} {module} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    @contextmanager
    def worker(self, argv: list[str], label: str) -> Iterator[tuple[subprocess.Popen, Path]]:
        """A worker in a process group of its own, stopped (warm, then killed) on the way out."""
        log_path = self.workdir / f"{label.replace(' ', '_')}-{uuid.uuid4().hex[:6]}.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(argv, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                    env=self.env, start_new_session=True)
        try:
            yield proc, log_path
        finally:
            stop(proc)

    def run_case(self, case: Case, broker: Broker, tasks: int) -> Measure:
        queue = f"qtui-bench-{uuid.uuid4().hex[:8]}"
        url = broker.new_file() if isinstance(broker, SQLiteBroker) else broker.url
        module, counter = self.module(case.framework, url, None, queue)
        try:
            sent = self.client("enqueue", module, tasks)
            deadline = time.monotonic() + 30  # RabbitMQ counts what it routed, a moment late
            while (ready := broker.count(case.framework, queue)[0]) < tasks \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            if ready != tasks:
                raise RuntimeError(f"{case.label}: {ready} messages on the queue, "
                                   f"expected {tasks}")
            with self.worker(case.argv(module, queue), case.label) as (proc, log_path):
                seconds, used = self._drain(case, broker, queue, tasks, counter, proc,
                                            log_path)
            left = sum(n or 0 for n in broker.count(case.framework, queue))
            return Measure(broker.name, case.framework, case.pool, tasks, sent["rate"],
                           tasks / seconds, seconds, counter.stat().st_size, left, case.events,
                           *used)
        finally:
            broker.reset(queue)

    def _drain(self, case: Case, broker: Broker, queue: str, tasks: int, counter: Path,
               proc: subprocess.Popen, log_path: Path
               ) -> tuple[float, tuple[float, float | None]]:
        """Seconds from the first message taken until every task ran and, where the broker
        shows it, nothing is left unacknowledged; and the CPU seconds the worker's process
        tree and the broker used meanwhile."""
        deadline = time.monotonic() + START_TIMEOUT
        while broker.count(case.framework, queue)[0] >= tasks:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{case.label} did not start taking messages:\n"
                                   f"{log_path.read_text()[-3000:]}")
            time.sleep(0.001)
        start = time.perf_counter()
        worker_before, broker_before = tree_cpu(proc.pid), broker.cpu_seconds()
        deadline = time.monotonic() + self.drain_timeout
        ran, stall_at = -1, 0.0
        while True:
            if (now_ran := counter.stat().st_size) != ran:
                ran, stall_at = now_ran, time.monotonic() + self.stall_timeout
            if ran >= tasks:
                ready, in_flight = broker.count(case.framework, queue)
                if ready == 0 and not in_flight:
                    seconds = time.perf_counter() - start
                    broker_after = broker.cpu_seconds()
                    return seconds, (tree_cpu(proc.pid) - worker_before,
                                     None if broker_after is None or broker_before is None
                                     else broker_after - broker_before)
            else:
                ready = tasks - ran
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{case.label} stopped with {ready} messages left:\n"
                                   f"{log_path.read_text()[-3000:]}")
            if time.monotonic() > stall_at:
                raise RuntimeError(f"{case.label} ran no task for {self.stall_timeout:.0f} s "
                                   f"with {ready} messages left:\n"
                                   f"{log_path.read_text()[-3000:]}")
            time.sleep(POLL)

    def run_bulk(self, framework: str, way: str, broker: Broker, calls: int, chunk: int
                 ) -> BulkMeasure:
        """One bulk case in a client process of its own; raises if its queue did not hold
        exactly what it sent."""
        url = broker.new_file() if isinstance(broker, SQLiteBroker) else broker.url
        try:
            done = subprocess.run(child_argv(framework, way, url, calls, chunk),
                                  cwd=self.workdir, env=self.env, capture_output=True,
                                  text=True, timeout=DRAIN_TIMEOUT)
        finally:
            broker.reset("")
        if done.returncode != 0:
            raise RuntimeError(f"{framework} {way} failed:\n{done.stderr[-3000:]}")
        r = json.loads(done.stdout.strip().splitlines()[-1])
        return BulkMeasure(broker.name, framework, way, calls, r["messages"], r["calls_rate"],
                           r["rate"], r["cpu_us"], r["broker_cpu"], r["gc"])

    def run_latency(self, case: Case, redis_url: str, count: int) -> dict[str, Any]:
        queue = f"qtui-bench-{uuid.uuid4().hex[:8]}"
        module, _ = self.module(case.framework, redis_url, redis_url, queue)
        with self.worker(case.argv(module, queue), f"{case.label}-latency"):
            result = self.client("latency", module, count)
        samples = sorted(result["ms"])
        return {"framework": case.framework, "pool": case.pool, "tasks": count,
                "events": case.events,
                "p50": percentile(samples, 50), "p99": percentile(samples, 99),
                "mean": statistics.fmean(samples), "max": samples[-1]}


def stop(proc: subprocess.Popen) -> None:
    """Warm shutdown of the worker's process group; killed if it takes longer than 30 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # children a worker left behind, if any
    except ProcessLookupError:
        pass
    proc.wait()


def percentile(sorted_values: list[float], p: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


# reporting -----------------------------------------------------------------------------------
def spread(values: list[float], digits: int = 0) -> str:
    """``median (min-max)`` of repeated measurements, or the one value."""
    fmt = f"{{:,.{digits}f}}"
    middle = fmt.format(statistics.median(values))
    if len(values) == 1:
        return middle
    return f"{middle} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def ratio(value: float, reference: float | None) -> str:
    return f"{value / reference:.1f}x" if reference else "-"


def rates_table(measures: list[Measure], broker: str) -> str:
    rows = [m for m in measures if m.broker == broker]
    if not rows:
        return ""
    by_case: dict[tuple[str, str], list[Measure]] = {}
    for m in rows:
        by_case.setdefault((m.framework, m.pool), []).append(m)
    enqueue_by_fw: dict[str, list[float]] = {}
    for m in rows:
        enqueue_by_fw.setdefault(m.framework, []).append(m.enqueue)
    celery_enqueue = statistics.median(enqueue_by_fw["celery"]) if "celery" in enqueue_by_fw \
        else None
    drains = {case: statistics.median(m.drain for m in ms) for case, ms in by_case.items()}
    celery_best = max((v for (fw, _), v in drains.items() if fw == "celery"), default=None)
    dramatiq = next((v for (fw, _), v in drains.items() if fw == "dramatiq"), None)
    tasks = rows[0].tasks
    lines = [f"| {broker}: {tasks:,} no-op tasks | enqueue tasks/s | vs Celery | "
             f"drain tasks/s | vs Celery's best | vs Dramatiq |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for (fw, pool), ms in by_case.items():
        enqueue = [m.enqueue for m in ms]
        drain = [m.drain for m in ms]
        left = sum(m.left for m in ms)
        extra = sum(m.ran - m.tasks for m in ms)
        note = (f" (left {left})" if left else "") + (f" ({extra} ran twice)" if extra else "")
        lines.append(
            f"| {fw} {pool}{note} | {spread(enqueue)} | "
            f"{ratio(statistics.median(enqueue), celery_enqueue)} | {spread(drain)} | "
            f"{ratio(statistics.median(drain), celery_best)} | "
            f"{ratio(statistics.median(drain), dramatiq)} |")
    lines.append("")
    lines.append("Enqueue, every fill of the section: " + "; ".join(
        f"{fw} {spread(values)} tasks/s over {len(values)} runs"
        + (f" ({ratio(statistics.median(values), celery_enqueue)} Celery)" if fw != "celery"
           and celery_enqueue else "")
        for fw, values in enqueue_by_fw.items()))
    return "\n".join(lines)


def latency_table(results: list[dict[str, Any]]) -> str:
    if not results:
        return ""
    by_case: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        by_case.setdefault((r["framework"], r["pool"]), []).append(r)
    p50s = {case: statistics.median(r["p50"] for r in rs) for case, rs in by_case.items()}
    celery_best = min((v for (fw, _), v in p50s.items() if fw == "celery"), default=None)
    lines = [f"| Redis, {results[0]['tasks']:,} sequential round trips | p50 ms | p99 ms | "
             "mean ms | p50: Celery same pool / qtui | p50: Celery's best / qtui |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for (fw, pool), rs in by_case.items():
        same = p50s.get(("celery", pool))
        mine = p50s[(fw, pool)]
        versus = (f"{same / mine:.2f}x" if same else "-", f"{celery_best / mine:.2f}x"
                  if celery_best else "-") if fw != "celery" else ("-", "-")
        lines.append(f"| {fw} {pool} | {spread([r['p50'] for r in rs], 2)} | "
                     f"{spread([r['p99'] for r in rs], 2)} | "
                     f"{spread([r['mean'] for r in rs], 2)} | {versus[0]} | {versus[1]} |")
    return "\n".join(lines)


def bulk_rates(bulk: list[BulkMeasure], broker: str
               ) -> dict[tuple[str, str], list[BulkMeasure]]:
    """``broker``'s bulk runs by (framework, way), in the order they ran."""
    cases: dict[tuple[str, str], list[BulkMeasure]] = {}
    for b in bulk:
        if b.broker == broker:
            cases.setdefault((b.framework, b.way), []).append(b)
    return cases


def bulk_versus(cases: dict[tuple[str, str], list[BulkMeasure]], way: str
                ) -> tuple[str, str, str]:
    """A qtui bulk path's median calls/s over Celery's same way, over Celery's best bulk path
    and over Dramatiq's (its one bulk path, ``group(...).run()``)."""
    rate = {case: statistics.median(b.calls_rate for b in bs) for case, bs in cases.items()}
    celery_best = max((v for (fw, _), v in rate.items() if fw == "celery"), default=None)
    mine = rate[("qtui", way)]
    same = times(mine, rate.get(("celery", way)))
    if way == "send_many" and celery_best:
        same = "Celery has no send_many"
    return same, times(mine, celery_best), times(mine, rate.get(("dramatiq", "group")))


def bulk_table(bulk: list[BulkMeasure], broker: str) -> str:
    """The ``bulk`` section's table of one broker: calls (tasks) and messages per second, the
    client's and the broker's CPU per call, qtui over Celery and Dramatiq, and
    whether each qtui path reaches issue 19's 30,000 tasks/s in the median."""
    cases = bulk_rates(bulk, broker)
    if not cases:
        return ""
    first = next(iter(cases.values()))[0]
    lines = [f"| {broker}: {first.calls:,} calls a case | tasks (calls)/s | messages/s | "
             "client CPU us/call | broker CPU us/call | vs Celery same way | "
             f"vs Celery's best | vs Dramatiq | {BULK_TARGET:,} tasks/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for (fw, way), bs in cases.items():
        calls = statistics.median(b.calls_rate for b in bs)
        versus = bulk_versus(cases, way) if fw == "qtui" else ("-", "-", "-")
        target = ("met" if calls >= BULK_TARGET else "not met") if fw == "qtui" else "-"
        lines.append(
            f"| {fw} {way} | {spread([b.calls_rate for b in bs])} | "
            f"{spread([b.messages_rate for b in bs])} | "
            f"{spread([b.client_cpu_us for b in bs], 1)} | "
            f"{per_call([b.broker_cpu for b in bs], bs[0].calls)} | "
            f"{' | '.join(versus)} | {target} |")
    lines.append("")
    lines.append("chunks: parts of " + ", ".join(sorted({
        f"{round(b.calls / b.messages)}" for b in bulk
        if b.broker == broker and b.way == "chunks"})) + " calls, one message a part. "
        "Celery has no send_many (its bulk paths are group and chunks); Dramatiq has no "
        "send_many or chunks: its bulk path is group(...).run(), one enqueue a message (its "
        "pipeline is a chain: it enqueues the first message only)."
        + ("" if broker == "redis" else " Celery and Dramatiq do not run on qtui's "
           "embedded broker."))
    return "\n".join(lines)


def per_call(seconds: list[float | None], calls: int) -> str:
    """CPU microseconds per call, the median of the runs that measured it."""
    known = [s for s in seconds if s is not None]
    return "-" if not known else f"{statistics.median(known) * 1e6 / calls:.1f}"


def per_thousand(seconds: list[float | None], tasks: int) -> str:
    """CPU seconds per 1,000 tasks, the median of the runs that measured it."""
    known = [s for s in seconds if s is not None]
    return "-" if not known else f"{statistics.median(known) * 1000 / tasks:.3f}"


def times(mine: float, theirs: float | None) -> str:
    """How many times ``theirs`` qtui's figure is (both the larger the better)."""
    return f"{mine / theirs:.2f}x" if theirs else "-"


def ratio_table(measures: list[Measure], latencies: list[dict[str, Any]],
                bulk: list[BulkMeasure] | None = None) -> str:
    """Every path side by side: qtui's figure over Celery's in the same pool and over Celery's
    best, over Dramatiq's where it ran (above 1.00x: qtui is ahead; for latency, the other's
    p50 over qtui's), and the CPU seconds per 1,000 tasks the worker's process tree and the
    broker used during the drain. Figures compare within one task events setting (Dramatiq
    has none: its runs serve both). A bulk path's row has the client's CPU in the worker's
    column, and compares with Celery's same way, Celery's best bulk path and Dramatiq's
    group."""
    lines = ["| path | worker | events | figure | vs Celery same pool | vs Celery's best | "
             "vs Dramatiq | worker CPU s/1,000 tasks | broker CPU s/1,000 tasks |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def row(path: str, worker: str, events: bool | None, figure: str, same: str, best: str,
            dramatiq: str, cpu: tuple[str, str] = ("-", "-")) -> None:
        shown = "-" if events is None else "on" if events else "off"
        lines.append(f"| {path} | {worker} | {shown} | {figure} | {same} | "
                     f"{best} | {dramatiq} | {cpu[0]} | {cpu[1]} |")

    groups: dict[tuple[str, bool], list[Measure]] = {}
    for m in measures:
        groups.setdefault((m.broker, m.events), []).append(m)
    for (broker, events), group in groups.items():
        if not any(m.framework != "dramatiq" for m in group):
            continue
        group += [m for m in measures if m.broker == broker and m.framework == "dramatiq"
                  and m.events != events]
        enqueue: dict[str, float] = {}
        drains: dict[tuple[str, str], list[Measure]] = {}
        for m in group:
            enqueue.setdefault(m.framework, statistics.median(
                x.enqueue for x in group if x.framework == m.framework))
            drains.setdefault((m.framework, m.pool), []).append(m)
        for fw, rate in enqueue.items():
            qtui = fw.startswith("qtui")
            row(f"enqueue, {broker}", fw, events, f"{rate:,.0f}/s",
                times(rate, enqueue.get("celery")) if qtui else "-",
                times(rate, enqueue.get("celery")) if qtui else "-",
                times(rate, enqueue.get("dramatiq")) if qtui else "-")
        rate_of = {case: statistics.median(m.drain for m in ms) for case, ms in drains.items()}
        celery_best = max((v for (fw, _), v in rate_of.items() if fw == "celery"), default=None)
        dramatiq = next((v for (fw, _), v in rate_of.items() if fw == "dramatiq"), None)
        for (fw, pool), ms in drains.items():
            rate, qtui = rate_of[(fw, pool)], fw.startswith("qtui")
            row(f"drain, {broker}", f"{fw} {pool}", events, f"{rate:,.0f}/s",
                times(rate, rate_of.get(("celery", pool))) if qtui else "-",
                times(rate, celery_best) if qtui else "-",
                times(rate, dramatiq) if qtui else "-",
                (per_thousand([m.worker_cpu for m in ms], ms[0].tasks),
                 "in the worker" if broker == "sqlite"
                 else per_thousand([m.broker_cpu for m in ms], ms[0].tasks)))
    p50s: dict[tuple[bool, str, str], float] = {}
    for r in latencies:
        key = (bool(r.get("events")), r["framework"], r["pool"])
        p50s.setdefault(key, statistics.median(
            x["p50"] for x in latencies
            if (bool(x.get("events")), x["framework"], x["pool"]) == key))
    for (events, fw, pool), p50 in p50s.items():
        qtui = fw.startswith("qtui")
        best = min((v for (e, f, _), v in p50s.items() if e == events and f == "celery"),
                   default=None)
        same = p50s.get((events, "celery", pool))
        row("latency p50, redis", f"{fw} {pool}", events, f"{p50:.2f} ms",
            f"{same / p50:.2f}x" if qtui and same else "-",
            f"{best / p50:.2f}x" if qtui and best else "-", "-")
    for broker in ("redis", "sqlite"):
        cases = bulk_rates(bulk or [], broker)
        for (fw, way), bs in cases.items():
            calls = statistics.median(b.calls_rate for b in bs)
            figure = f"{calls:,.0f} tasks/s" + (
                f" ({statistics.median(b.messages_rate for b in bs):,.0f} messages/s)"
                if way == "chunks" else "")
            versus = bulk_versus(cases, way) if fw == "qtui" else ("-", "-", "-")
            cpu = statistics.median(b.client_cpu_us for b in bs) / 1000
            row(f"bulk {way}, {broker}", f"{fw} (client)", None, figure, *versus,
                cpu=(f"client {cpu:.3f}", "in the client" if broker == "sqlite"
                     else per_thousand([b.broker_cpu for b in bs], bs[0].calls)))
    return "\n".join(lines) if len(lines) > 2 else ""


def machine(brokers: list[Broker]) -> str:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    packages = ", ".join(f"{name} {version(name)}" for name in
                         ("qtui", "kombu", "redis", "amqp", "celery", "billiard", "dramatiq"))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"date {date.today().isoformat()}; {os.cpu_count()} cores (nproc); "
            f"{platform.system()} {platform.release()}; Python {platform.python_version()}; "
            f"{packages}; brokers: {', '.join(b.describe() for b in brokers)}; "
            f"load average at start {load}")


def last_console_figures() -> str:
    """The console figures last written to bench/RESULTS.md."""
    text = (REPO / "bench" / "RESULTS.md").read_text()
    section = text.partition("## Console")[2]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return "\n".join(rows[:5]) or "(none recorded)"


# main ----------------------------------------------------------------------------------------
def each_events_setting(broker: str, args: argparse.Namespace) -> list[Case]:
    """The worker cases of ``broker`` for every task events setting ``--events`` asks for
    (Dramatiq's once: it has no events)."""
    cases = {(c.label, c.events): c for events in EVENT_SETTINGS[args.events]
             for c in worker_cases(broker, args.concurrency, args.threads, events=events)}
    return list(cases.values())


def run_eta(workdir: Path, args: argparse.Namespace) -> list[str]:
    """The ``eta`` section: one table per broker, qtui and Celery in turn on the same broker."""
    from bench import bench_eta  # it imports this module: loaded once both are

    options = bench_eta.options([])
    tables = []
    for broker in (args.amqp, args.redis):
        lines = [bench_eta.heading(options, broker)]
        for framework in ("qtui", "celery"):
            if args.workers and args.workers not in framework:
                continue
            late = bench_eta.run(framework, broker, workdir, options)
            lines.append(bench_eta.row(framework, late, options.eta))
            print(f"eta       {broker.split(':')[0]:<9} {lines[-1]}", flush=True)
        tables.append("\n".join(lines))
    return tables


def run_bulk_section(bench: Bench, brokers: dict[str, Broker], calls: int,
                     args: argparse.Namespace) -> list[BulkMeasure]:
    """The ``bulk`` section: every case of :data:`BULK_CASES` round-robin, ``--repeat``
    rounds per broker; a case that fails is reported and left out."""
    results = []
    for name, cases in BULK_CASES.items():
        cases = [(fw, way) for fw, way in cases if wanted(args.workers, f"{fw} {way}")]
        for _ in range(args.repeat):
            for fw, way in cases:
                try:
                    b = bench.run_bulk(fw, way, brokers[name], calls, args.chunk)
                except RuntimeError as exc:
                    print(f"bulk      {name:<7} {fw} {way} FAILED: {str(exc)[-1500:]}",
                          flush=True)
                    continue
                results.append(b)
                print(f"bulk      {name:<7} {fw:<9} {way:<10} {b.calls_rate:9,.0f} tasks/s "
                      f"{b.messages_rate:9,.0f} messages/s  {b.client_cpu_us:6.1f} us/call  "
                      f"gc {b.gc}", flush=True)
    return results


def wanted(workers: str | None, label: str) -> bool:
    """Whether ``--workers`` (texts, comma-separated) picks the case ``label``."""
    return not workers or any(text.strip() in label for text in workers.split(","))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections out of {', '.join(SECTIONS)}")
    parser.add_argument("--workers", help="only the cases whose label contains this text "
                                          "(for example qtui, celery, threads), or one of "
                                          "these texts, comma-separated")
    parser.add_argument("--tasks", type=int, help="tasks per enqueue/drain case (20000)")
    parser.add_argument("--latency-tasks", type=int, help="sequential round trips (2000)")
    parser.add_argument("--console-tasks", type=int, help="tasks of the console bench (100000)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every case this many times (figures: median and range)")
    parser.add_argument("--quick", action="store_true",
                        help="2,000 tasks, 300 round trips, a console bench of 10,000 tasks")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12",
                        help="an empty Redis database the benchmark may flush")
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2,
                        help="prefork processes (and Dramatiq processes)")
    parser.add_argument("--threads", type=int, default=8,
                        help="threads of the threads pools (and per Dramatiq process)")
    parser.add_argument("--events", choices=tuple(EVENT_SETTINGS), default="off",
                        help="task events from qtui's and Celery's workers alike (off: Celery's "
                             "default; qtui's is on; both: every case once each way)")
    parser.add_argument("--confirm", choices=("on", "off"), default="on",
                        help="publisher confirms on RabbitMQ, for qtui and Celery alike (on: "
                             "qtui's default; Celery's is off)")
    parser.add_argument("--drain-timeout", type=float, default=DRAIN_TIMEOUT,
                        help="seconds a drain may take before its case is reported as failed "
                             "and the run goes on")
    parser.add_argument("--stall-timeout", type=float, default=STALL_TIMEOUT,
                        help="seconds a drain may go without a task run before its case is "
                             "reported as failed (60)")
    parser.add_argument("--chunk", type=int, default=10,
                        help="calls per part of chunks in the bulk section (10)")
    parser.add_argument("--json", metavar="FILE", help="also write every measurement here")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    tasks = args.tasks or (2_000 if args.quick else 20_000)
    latency_tasks = args.latency_tasks or (300 if args.quick else 2_000)
    console_tasks = args.console_tasks or (10_000 if args.quick else 100_000)

    brokers: dict[str, Broker] = {}
    if {"redis", "latency", "bulk"} & set(sections):
        brokers["redis"] = RedisBroker(args.redis)
    if "rabbitmq" in sections:
        brokers["rabbitmq"] = RabbitBroker(args.amqp)
    measures: list[Measure] = []
    latencies: list[dict[str, Any]] = []
    bulk: list[BulkMeasure] = []
    console = ""
    eta_tables: list[str] = []
    peek = ""
    with tempfile.TemporaryDirectory(prefix="qtui-bench-") as tmp:
        workdir = Path(tmp)
        if {"sqlite", "bulk"} & set(sections):
            brokers["sqlite"] = SQLiteBroker(workdir)
        print(f"# qtui bench\n\n{machine(list(brokers.values()))}\n"
              f"task events {args.events} for qtui and Celery workers; publisher confirms "
              f"{args.confirm} on RabbitMQ for both\n", flush=True)
        bench = Bench(workdir, args.verbose, confirm=args.confirm == "on",
                      drain_timeout=args.drain_timeout, stall_timeout=args.stall_timeout)
        try:
            for name in ("redis", "rabbitmq", "sqlite"):
                if name not in sections:
                    continue
                cases = [c for c in each_events_setting(name, args)
                         if wanted(args.workers, c.label)]
                for _ in range(args.repeat):  # round-robin, so a noisy minute hits every case
                    for case in cases:
                        try:
                            m = bench.run_case(case, brokers[name], tasks)
                        except RuntimeError as exc:  # one worker's failure ends its case only
                            print(f"{name:<9} {case.label:<22} FAILED"
                                  + (" (events on)" if case.events else "")
                                  + f": {str(exc)[-1500:]}", flush=True)
                            continue
                        measures.append(m)
                        print(f"{name:<9} {case.label:<22} enqueue {m.enqueue:8,.0f}/s   "
                              f"drain {m.drain:8,.0f}/s ({m.seconds:.2f} s)"
                              + (" events on" if m.events else "")
                              + (f"  LEFT {m.left}" if m.left else "")
                              + (f"  RAN {m.ran}" if m.ran != tasks else ""), flush=True)
            if "bulk" in sections:
                bulk = run_bulk_section(bench, brokers, tasks, args)
            if "latency" in sections:
                cases = [c for c in each_events_setting("redis", args)
                         if c.framework in ("qtui", "celery")
                         and wanted(args.workers, c.label)]
                for _ in range(args.repeat):
                    for case in cases:
                        r = bench.run_latency(case, args.redis, latency_tasks)
                        brokers["redis"].reset("")
                        latencies.append(r)
                        print(f"latency   {case.label:<22} p50 {r['p50']:.2f} ms  "
                              f"p99 {r['p99']:.2f} ms  mean {r['mean']:.2f} ms", flush=True)
            if "console" in sections:
                done = subprocess.run(
                    [sys.executable, "-m", "bench.bench_console", "--tasks", str(console_tasks),
                     "--redis", args.redis], cwd=REPO, capture_output=True, text=True)
                console = done.stdout.strip() or done.stderr[-2000:]
                if "redis" in brokers:
                    brokers["redis"].reset("")
            if "eta" in sections:
                eta_tables = run_eta(workdir, args)
            if "peek" in sections:  # a process of its own, on the run's Redis database
                done = subprocess.run([sys.executable, "-m", "bench.bench_peek", "--redis",
                                       args.redis], cwd=REPO, capture_output=True, text=True)
                peek = done.stdout.strip() or done.stderr[-2000:]
        finally:
            if "redis" in brokers:
                brokers["redis"].reset("")

    print("\n## Results\n")
    for events in EVENT_SETTINGS[args.events]:
        if args.events == "both":
            print(f"### Task events {'on' if events else 'off'}\n")
        for name in ("redis", "rabbitmq", "sqlite"):
            table = rates_table([m for m in measures if m.events == events
                                 or m.framework == "dramatiq"], name)
            if table:
                print(table + "\n")
        mine = [r for r in latencies if r["events"] == events]
        if mine:
            print(latency_table(mine) + "\n")
    for name in ("redis", "sqlite"):
        table = bulk_table(bulk, name)
        if table:
            print(f"Bulk enqueue, {name}:\n\n{table}\n")
    ratios = ratio_table(measures, latencies, bulk)
    if ratios:
        print("### Ratios and CPU per 1,000 tasks\n\n" + ratios + "\n")
    for table in eta_tables:
        print(table + "\n")
    if peek:
        print(f"Peek and dead letters (Redis):\n{peek}\n")
    if console:
        print(f"Console ({console_tasks:,} tasks):\n{console}\n")
    else:
        print("Console: not run (--only console runs it); last recorded in bench/RESULTS.md:\n"
              + last_console_figures())
    print(f"\nload average at the end {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": machine(list(brokers.values())),
            "measures": [asdict(m) for m in measures], "latency": latencies,
            "bulk": [asdict(b) for b in bulk],
            "console": console}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
