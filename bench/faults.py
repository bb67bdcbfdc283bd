"""The fault suite: qtui's worker under kills, broker restarts, bad input, long ETAs, lock
contention and a full disk, with counts. What ``make faults`` runs.

Every scenario sends numbered tasks (``faults.record(i)``); each run of a task adds ``i`` to a
set and counts one run in Redis (database 11, apart from the brokers), so the suite knows what
was lost (sent, never run) and what ran twice (runs minus distinct). The brokers are the real
ones on this machine, plus a ``redis-server --appendonly yes`` of the suite's own for the Redis
restart and a small tmpfs for the full disk. Results go to the "Fault suite" section of
``bench/RESULTS.md``; ``--quick`` runs small counts and does not write them.

    python -m bench.faults [--quick] [--only kill-parent,malformed,...]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import redis
from kombu import Connection, Exchange, Producer
from rich.console import Console
from rich.table import Table

from qtui.core import App
from qtui.workers.deadletter import DEAD_REASON_HEADER, dead_letter_queue_name
from tests.processes import running, write_module

REPO = Path(__file__).resolve().parent.parent
REDIS = "redis://127.0.0.1:6379"
RECORDS = f"{REDIS}/11"
BROKER_DB = f"{REDIS}/10"
AMQP = "amqp://guest:guest@127.0.0.1:5672//"

TASKS = """
import json, os, time
import redis
from qtui.core import App

app = App("faulttasks", broker=os.environ["FAULTS_BROKER"], backend=None,
          task_default_queue=os.environ["FAULTS_QUEUE"])
app.conf.update(json.loads(os.environ.get("FAULTS_CONF") or "{}"))
_records = redis.Redis.from_url(os.environ["FAULTS_RECORDS"])
_key = os.environ["FAULTS_QUEUE"]

@app.task(name="faults.record", ignore_result=True)
def record(i, seconds=0.0):
    if seconds:
        time.sleep(seconds)
    pipe = _records.pipeline()
    pipe.incr(_key + ":runs")
    pipe.sadd(_key + ":done", i)
    pipe.execute()
"""


@dataclass
class Outcome:
    name: str
    sent: int = 0
    distinct: int = 0
    runs: int = 0
    passed: bool = False
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.sent - self.distinct

    @property
    def duplicates(self) -> int:
        return self.runs - self.distinct


class World:
    """One scenario's queue, broker, tasks module, records and worker processes."""

    def __init__(self, workdir: Path, broker: str, **conf: Any) -> None:
        self.queue = f"faults-{uuid.uuid4().hex[:8]}"
        self.dir = workdir / self.queue
        self.dir.mkdir(parents=True)
        write_module(self.dir, "faulttasks", TASKS)
        self.broker = broker
        self.conf = conf
        self.records = redis.Redis.from_url(RECORDS)

    @property
    def env(self) -> dict[str, str]:
        return {"FAULTS_BROKER": self.broker, "FAULTS_QUEUE": self.queue,
                "FAULTS_RECORDS": RECORDS, "FAULTS_CONF": json.dumps(self.conf)}

    @contextmanager
    def worker(self, *options: str, name: str = "w") -> Iterator[subprocess.Popen[str]]:
        hostname = f"{name}-{self.queue}"
        argv = [sys.executable, "-m", "qtui.tui.cli", "-A", "faulttasks", "run-worker",
                "-n", hostname, "-l", "INFO", *options]
        with running(argv, self.dir, ready=f"qtui worker {hostname}@{socket.gethostname()} ready.", timeout=60,
                     env=self.env) as proc:
            yield proc

    def app(self) -> App:
        return App("faults-client", broker=self.broker, backend=None,
                   task_default_queue=self.queue, **self.conf)

    def send(self, numbers: range, seconds: float = 0.0, **options: Any) -> int:
        app = self.app()
        try:
            for i in numbers:
                app.send_task("faults.record", args=[i, seconds], ignore_result=True, **options)
        finally:
            app.close()
        return len(numbers)

    def done(self) -> int:
        return self.records.scard(f"{self.queue}:done")

    def runs(self) -> int:
        return int(self.records.get(f"{self.queue}:runs") or 0)

    def settle(self, outcome: Outcome, expected: int, timeout: float) -> bool:
        """Wait until ``expected`` distinct tasks ran, then a moment more for late duplicates."""
        finished = wait_for(lambda: self.done() >= expected, timeout)
        time.sleep(1.0)
        outcome.distinct, outcome.runs = self.done(), self.runs()
        return finished

    def cleanup(self) -> None:
        for key in self.records.scan_iter(f"{self.queue}*"):
            self.records.delete(key)


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def unacked(url: str) -> int:
    """Messages a Redis broker holds as delivered and not yet acked (kombu's ``unacked``)."""
    return redis.Redis.from_url(url).hlen("unacked")


def spare_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


# scenarios ----------------------------------------------------------------------------------------
def kill_parent(work: Path, n: int, kills: int) -> Outcome:
    """SIGKILL the whole worker (parent and children) again and again while it drains ``n``
    tasks with late acks; a last worker finishes. In flight at each kill: the broker's count of
    delivered, unacked messages."""
    redis.Redis.from_url(BROKER_DB).flushdb()
    world = World(work, BROKER_DB, broker_transport_options={"visibility_timeout": 4})
    outcome = Outcome("SIGKILL the worker, repeatedly (Redis, prefork -c 2)")
    try:
        outcome.sent = world.send(range(n), seconds=0.002)
        in_flight = []
        for k in range(kills):
            goal = world.done() + n // (kills + 2)
            with world.worker("-P", "prefork", "-c", "2", name=f"k{k}") as proc:
                wait_for(lambda g=goal: world.done() >= g, 120)
                in_flight.append(unacked(BROKER_DB))
                os.killpg(proc.pid, signal.SIGKILL)
        with world.worker("-P", "prefork", "-c", "2", name="last"):
            finished = world.settle(outcome, n, 300)
        bound = sum(in_flight)
        outcome.figures.update(kills=kills, in_flight=f"{min(in_flight)}-{max(in_flight)}",
                               duplicate_bound=bound)
        outcome.passed = finished and outcome.lost == 0 and outcome.duplicates <= bound
        return outcome
    finally:
        world.cleanup()
        redis.Redis.from_url(BROKER_DB).flushdb()


def kill_child(work: Path, n: int, kills: int) -> Outcome:
    """SIGKILL one prefork child at a time while the worker drains; the worker redelivers the
    task the child held (one in flight per kill)."""
    redis.Redis.from_url(BROKER_DB).flushdb()
    world = World(work, BROKER_DB)
    outcome = Outcome("SIGKILL a prefork child, repeatedly (Redis, prefork -c 2)")
    try:
        outcome.sent = world.send(range(n), seconds=0.002)
        done_kills = 0
        with world.worker("-P", "prefork", "-c", "2") as proc:
            rng = random.Random(7)
            for k in range(kills):
                wait_for(lambda g=(k + 1) * n // (kills + 2): world.done() >= g, 120)
                children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                          text=True).stdout.split()
                if children:
                    os.kill(int(rng.choice(children)), signal.SIGKILL)
                    done_kills += 1
            finished = world.settle(outcome, n, 300)
        dead = redis.Redis.from_url(BROKER_DB).llen(dead_letter_queue_name(world.queue))
        outcome.figures.update(kills=done_kills, in_flight=1, duplicate_bound=done_kills,
                               dead_lettered=dead)
        outcome.passed = (finished and outcome.lost == 0 and outcome.duplicates <= done_kills)
        return outcome
    finally:
        world.cleanup()
        redis.Redis.from_url(BROKER_DB).flushdb()


@contextmanager
def redis_server(directory: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--dir", str(directory),
                             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        if not wait_for(lambda: listening(port), 10):
            raise RuntimeError("redis-server did not start")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


def broker_restart(work: Path, n: int, kind: str) -> Outcome:
    """Restart the broker while the worker drains; count what is lost and how long consumption
    took to resume (from the broker being back to the next task run)."""
    data = work / f"redis-{uuid.uuid4().hex[:6]}"
    data.mkdir()
    port = spare_port()
    url = f"redis://127.0.0.1:{port}/0" if kind == "redis" else AMQP
    world = World(work, url)
    outcome = Outcome(f"restart {'Redis (own, appendonly)' if kind == 'redis' else 'RabbitMQ'}"
                      " mid-run (prefork -c 2)")
    server = redis_server(data, port) if kind == "redis" else None
    try:
        if server is not None:
            server.__enter__()
        outcome.sent = world.send(range(n), seconds=0.005)
        with world.worker("-P", "prefork", "-c", "2") as proc:
            wait_for(lambda: world.done() >= n // 5, 120)
            if server is not None:
                server.__exit__(None, None, None)
                time.sleep(2)
                server = redis_server(data, port)
                server.__enter__()
            else:
                rabbitmqctl("stop_app")
                time.sleep(2)
                rabbitmqctl("start_app")
                wait_for(lambda: amqp_up(url), 60)
            back, before = time.monotonic(), world.done()
            resumed = wait_for(lambda: world.done() > before, 60, interval=0.01)
            outcome.figures["resume_s"] = round(time.monotonic() - back, 2) if resumed else None
            finished = world.settle(outcome, n, 300)
            log = proc.log_path.read_text()  # type: ignore[attr-defined]
        outcome.figures["reconnected"] = "Reconnected" in log
        outcome.passed = (finished and outcome.lost == 0 and resumed
                          and outcome.figures["resume_s"] <= 10)
        return outcome
    finally:
        if server is not None:
            server.__exit__(None, None, None)
        if kind == "rabbitmq":
            rabbitmqctl("start_app")
            wait_for(lambda: amqp_up(url), 60)
            delete_amqp_queues(world.queue, dead_letter_queue_name(world.queue))
        world.cleanup()
        shutil.rmtree(data, ignore_errors=True)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def amqp_up(url: str) -> bool:
    try:
        with Connection(url, connect_timeout=1) as conn:
            conn.connect()
        return True
    except Exception:
        return False


def delete_amqp_queues(*names: str) -> None:
    with Connection(AMQP) as conn:
        for name in names:
            try:
                conn.default_channel.queue_delete(name)
            except Exception:
                conn.close()
                conn.connect()


#: Malformed messages, each a way a message can be wrong: (kind, body, content type, headers).
def bad_message(rng: random.Random, queue: str) -> tuple[str, bytes, str, str, dict[str, Any]]:
    task_id = str(uuid.uuid4())
    good_headers = {"lang": "py", "task": "faults.record", "id": task_id, "root_id": task_id,
                    "parent_id": None, "group": None, "retries": 0, "eta": None,
                    "expires": None, "timelimit": [None, None], "argsrepr": "()",
                    "kwargsrepr": "{}", "origin": "faults"}
    good_body = json.dumps([[1], {}, {"callbacks": None, "errbacks": None, "chain": None,
                                      "chord": None}]).encode()
    kind = rng.choice(["not-json", "pickle-not-accepted", "no-task-header", "unknown-task",
                       "body-not-a-triple", "random-bytes", "bad-eta", "bad-retries",
                       "truncated-json"])
    if kind == "not-json":
        return kind, b"{this is not json", "application/json", "utf-8", good_headers
    if kind == "pickle-not-accepted":
        return (kind, pickle.dumps([[1], {}, {}]), "application/x-python-serialize", "binary",
                good_headers)
    if kind == "no-task-header":
        return kind, good_body, "application/json", "utf-8", {"id": task_id}
    if kind == "unknown-task":
        return kind, good_body, "application/json", "utf-8", {**good_headers,
                                                              "task": f"no.such.{queue}"}
    if kind == "body-not-a-triple":
        return kind, json.dumps({"args": [1]}).encode(), "application/json", "utf-8", good_headers
    if kind == "random-bytes":
        return (kind, rng.randbytes(rng.randint(1, 200)), "application/octet-stream", "binary",
                good_headers)
    if kind == "bad-eta":
        return kind, good_body, "application/json", "utf-8", {**good_headers, "eta": "tomorrow"}
    if kind == "bad-retries":
        return kind, good_body, "application/json", "utf-8", {**good_headers, "retries": "x"}
    return kind, good_body[: rng.randint(1, len(good_body) - 1)], "application/json", "utf-8", \
        good_headers


def malformed(work: Path, bad: int, good: int) -> Outcome:
    """``bad`` malformed messages interleaved with ``good`` valid tasks on Redis: the worker stays
    up, every valid one runs, every invalid one is dead-lettered with a reason."""
    redis.Redis.from_url(BROKER_DB).flushdb()
    world = World(work, BROKER_DB)
    outcome = Outcome(f"{bad:,} malformed messages among {good:,} valid (Redis, threads -c 8)")
    rng = random.Random(2481)
    kinds: Counter[str] = Counter()
    try:
        app = world.app()
        order = ["bad"] * bad + ["good"] * good
        rng.shuffle(order)
        with Connection(BROKER_DB) as conn:
            producer = Producer(conn.default_channel, exchange=Exchange(""))
            i = 0
            for what in order:
                if what == "good":
                    app.send_task("faults.record", args=[i, 0.0], ignore_result=True)
                    i += 1
                    continue
                kind, body, content_type, encoding, headers = bad_message(rng, world.queue)
                kinds[kind] += 1
                producer.publish(body, routing_key=world.queue, content_type=content_type,
                                 content_encoding=encoding, headers=headers)
        app.close()
        outcome.sent = good
        dead_queue = dead_letter_queue_name(world.queue)
        client = redis.Redis.from_url(BROKER_DB)
        with world.worker("-P", "threads", "-c", "8") as proc:
            finished = wait_for(lambda: world.done() >= good and client.llen(dead_queue) >= bad,
                                300)
            time.sleep(1.0)
            alive = proc.poll() is None
        outcome.distinct, outcome.runs = world.done(), world.runs()
        reasons: Counter[str] = Counter()
        without_reason = 0
        for raw in client.lrange(dead_queue, 0, -1):
            headers = json.loads(raw).get("headers") or {}
            reason = headers.get(DEAD_REASON_HEADER)
            if reason:
                reasons[UUID.sub("<id>", reason).split(" (")[0][:70]] += 1
            else:
                without_reason += 1
        dead = client.llen(dead_queue)
        outcome.figures.update(invalid_sent=bad, dead_lettered=dead, without_reason=without_reason,
                               worker_alive=alive, kinds=dict(kinds))
        outcome.notes.append("reasons: " + "; ".join(f"{r} x{c}"
                                                     for r, c in reasons.most_common(12)))
        outcome.passed = (finished and alive and outcome.lost == 0 and dead == bad
                          and without_reason == 0 and outcome.duplicates == 0)
        return outcome
    finally:
        world.cleanup()
        redis.Redis.from_url(BROKER_DB).flushdb()


def long_eta(work: Path, n: int, kind: str) -> Outcome:
    """ETA tasks due 3-8 s ahead with a 2 s visibility timeout: each runs exactly once."""
    if kind == "redis":
        redis.Redis.from_url(BROKER_DB).flushdb()
        broker = BROKER_DB
    else:
        broker = f"sqlite://{work}/eta-{uuid.uuid4().hex[:6]}.sqlite"
    world = World(work, broker, broker_transport_options={"visibility_timeout": 2})
    outcome = Outcome(f"ETA past the visibility timeout (2 s), {kind}, two workers")
    try:
        with world.worker("-P", "threads", "-c", "4", name="a"), \
                world.worker("-P", "threads", "-c", "4", name="b"):
            rng = random.Random(3)
            app = world.app()
            for i in range(n):
                app.send_task("faults.record", args=[i, 0.0], ignore_result=True,
                              countdown=rng.uniform(3, 8))
            app.close()
            outcome.sent = n
            finished = world.settle(outcome, n, 60)
            time.sleep(4)  # past another visibility timeout: nothing runs again
            outcome.runs = world.runs()
        outcome.passed = finished and outcome.lost == 0 and outcome.duplicates == 0
        return outcome
    finally:
        world.cleanup()
        if kind == "redis":
            redis.Redis.from_url(BROKER_DB).flushdb()


PRODUCER = """
import sys, time
from qtui.core import App
broker, queue, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
app = App("producer", broker=broker, backend=None, task_default_queue=queue)
for i in range(first, first + count):
    app.send_task("faults.record", args=[i, 0.0], ignore_result=True)
app.close()
"""


def sqlite_contention(work: Path, producers: int, each: int) -> Outcome:
    """Several producer processes and a worker on one SQLite file at once."""
    broker = f"sqlite://{work}/contention-{uuid.uuid4().hex[:6]}.sqlite"
    world = World(work, broker)
    outcome = Outcome(f"embedded broker: {producers} producer processes + a worker on one file")
    script = world.dir / "producer.py"
    script.write_text(PRODUCER)
    try:
        with world.worker("-P", "threads", "-c", "8") as proc:
            started = time.monotonic()
            procs = [subprocess.Popen([sys.executable, str(script), broker, world.queue,
                                       str(p * each), str(each)], cwd=world.dir,
                                      env={**os.environ, "PYTHONPATH": str(REPO)},
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                     for p in range(producers)]
            outputs = [p.communicate(timeout=300)[0] for p in procs]
            failed = sum(1 for p in procs if p.returncode != 0)
            outcome.sent = producers * each
            finished = world.settle(outcome, outcome.sent, 300)
            seconds = time.monotonic() - started
            log = proc.log_path.read_text()  # type: ignore[attr-defined]
        busy = sum(o.count("busy") for o in outputs) + log.count("busy")
        outcome.figures.update(producers_failed=failed, busy_retries_logged=busy,
                               tasks_per_s=round(outcome.sent / seconds))
        outcome.passed = (finished and failed == 0 and outcome.lost == 0
                          and outcome.duplicates == 0)
        return outcome
    finally:
        world.cleanup()


def disk_full(work: Path, batch: int) -> Outcome:
    """The embedded broker's file on a 16 MB tmpfs that fills up: sending fails with a clear
    error; once space returns, everything that was accepted runs, and sending works again."""
    mount = work / "tmpfs"
    mount.mkdir()
    outcome = Outcome("embedded broker on a full disk (16 MB tmpfs)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        outcome.notes.append(f"not run: mount refused ({mounted.stderr.strip()})")
        return outcome
    world = World(work, f"sqlite://{mount}/broker.sqlite")
    try:
        app = world.app()
        accepted, error = 0, None
        app.send_task("faults.record", args=[0, 0.0], ignore_result=True)  # creates the file
        accepted = 1
        filler = mount / "filler"
        with filler.open("wb") as f:  # leave ~64 KB for the broker
            free = shutil.disk_usage(mount).free
            f.write(b"\0" * max(0, free - 64 * 1024))
        for i in range(1, 100_000):
            try:
                app.send_task("faults.record", args=[i, 0.0], ignore_result=True)
                accepted += 1
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                break
        app.close()
        filler.unlink()  # space returns
        app = world.app()
        for i in range(100_000, 100_000 + batch):
            app.send_task("faults.record", args=[i, 0.0], ignore_result=True)
        app.close()
        outcome.sent = accepted + batch
        with world.worker("-P", "threads", "-c", "4"):
            finished = world.settle(outcome, outcome.sent, 120)
        outcome.figures.update(accepted_before_full=accepted, sent_after_space=batch)
        outcome.notes.append(f"the error at the call site: {error}")
        outcome.passed = (error is not None and finished and outcome.lost == 0
                          and outcome.duplicates == 0)
        return outcome
    finally:
        world.cleanup()
        subprocess.run(["umount", str(mount)], capture_output=True)


# running ----------------------------------------------------------------------------------------
SCENARIOS: dict[str, Callable[[Path, bool], Outcome]] = {
    "kill-parent": lambda w, q: kill_parent(w, 2_000 if q else 10_000, 3 if q else 5),
    "kill-child": lambda w, q: kill_child(w, 2_000 if q else 10_000, 5 if q else 20),
    "restart-redis": lambda w, q: broker_restart(w, 600 if q else 3_000, "redis"),
    "restart-rabbitmq": lambda w, q: broker_restart(w, 600 if q else 3_000, "rabbitmq"),
    "malformed": lambda w, q: malformed(w, 1_000 if q else 10_000, 500 if q else 2_000),
    "eta-redis": lambda w, q: long_eta(w, 50 if q else 200, "redis"),
    "eta-sqlite": lambda w, q: long_eta(w, 50 if q else 200, "sqlite"),
    "sqlite-contention": lambda w, q: sqlite_contention(w, 4, 500 if q else 2_500),
    "disk-full": lambda w, q: disk_full(w, 100 if q else 500),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts; RESULTS.md untouched")
    parser.add_argument("--only", help="comma-separated: " + ", ".join(SCENARIOS))
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    console = Console()
    outcomes = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qtui-faults-") as tmp:
        for name in names:
            console.print(f"[bold]{name}[/bold] ...")
            try:
                outcome = SCENARIOS[name](Path(tmp), args.quick)
            except Exception as exc:  # a scenario that breaks is a failed scenario, not the end
                outcome = Outcome(name, notes=[f"scenario error: {type(exc).__name__}: {exc}"])
            outcomes.append(outcome)
            console.print(f"  {'PASS' if outcome.passed else 'FAIL'} sent {outcome.sent:,} "
                          f"lost {outcome.lost:,} duplicates {outcome.duplicates:,} "
                          f"{outcome.figures} {' '.join(outcome.notes)}", markup=False)
    seconds = time.monotonic() - started
    console.print(table(outcomes))
    if not args.quick and not args.only:
        write_results(outcomes, seconds)
    return 0 if all(o.passed for o in outcomes) else 1


def table(outcomes: list[Outcome]) -> Table:
    result = Table(title="fault suite")
    for column in ("scenario", "sent", "ran", "lost", "duplicates", "figures", "result"):
        result.add_column(column)
    for o in outcomes:
        result.add_row(o.name, f"{o.sent:,}", f"{o.distinct:,}", f"{o.lost:,}",
                       f"{o.duplicates:,}", describe(o), "PASS" if o.passed else "FAIL")
    return result


def describe(o: Outcome) -> str:
    parts = [f"{k.replace('_', ' ')} {v}" for k, v in o.figures.items()]
    return "; ".join(parts + o.notes)


def write_results(outcomes: list[Outcome], seconds: float) -> None:
    path = REPO / "bench" / "RESULTS.md"
    text = path.read_text()
    marker = "## Fault suite"
    if marker in text:
        head, _, rest = text.partition(marker)
        tail = rest[rest.find("\n## "):] if "\n## " in rest else ""
        text = head.rstrip() + "\n\n" + tail.lstrip("\n")
    versions = subprocess.run(["redis-server", "--version"], capture_output=True,
                              text=True).stdout.split()[2]
    lines = [
        marker, "",
        "Command, from the repository root: `make faults` (that is, `python -m bench.faults`).",
        "",
        f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores; "
        f"Python {sys.version.split()[0]}; Redis {versions.removeprefix('v=')}; "
        f"whole run {seconds:.0f} s.",
        "- Lost: sent and never run. Duplicates: runs beyond the first (at-least-once: a task "
        "killed after its work and before its ack runs again); for kills, bounded by the "
        "messages in flight at each kill.",
        "", "| scenario | sent | ran | lost | duplicates | figures | result |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for o in outcomes:
        lines.append(f"| {o.name} | {o.sent:,} | {o.distinct:,} | **{o.lost:,}** | "
                     f"{o.duplicates:,} | {describe(o).replace('|', '/')} | "
                     f"{'pass' if o.passed else 'FAIL'} |")
    path.write_text(text.rstrip() + "\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
