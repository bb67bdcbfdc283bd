"""Test helpers for the worker: a tasks module, real worker processes, and broker inspection.

Each test gets its own queue (from ``unique``), a tasks module in its temporary directory, and
records of what ran kept in Redis under keys named by the queue, so several worker processes
can be checked from the test.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Queue

from qtui.core import App
from qtui.core.brokers.redis import channel as redis_broker
from qtui.core.brokers.redis import worker_channel
from qtui.core.delayed import DELAY_QUEUE, DELAYED_KEY, DUE_QUEUE, LADDER
from qtui.workers.redelivery import direct_queue

from .processes import running, write_module
from .services import AMQP_HOST, AMQP_PORT, REDIS_HOST, REDIS_PORT, need

REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"

TASKS = """
import json
import os
import signal
import time

import redis

from qtui.core import App
from qtui.core.exceptions import SoftTimeLimitExceeded
from qtui.core.task import Task

app = App("tasks", broker=os.environ["QTUI_TEST_BROKER"],
          backend=os.environ.get("QTUI_TEST_BACKEND") or None,
          task_default_queue=os.environ["QTUI_TEST_QUEUE"])
app.conf.update(json.loads(os.environ.get("QTUI_TEST_CONF") or "{}"))
KEY = os.environ["QTUI_TEST_QUEUE"]
_redis = redis.Redis.from_url(os.environ["QTUI_TEST_RECORDS"])


def record(kind, **data):
    _redis.rpush(f"{KEY}:{kind}", json.dumps({"t": time.time(), "pid": os.getpid(), **data}))


@app.task
def add(x, y):
    return x + y


@app.task
def fail(message):
    raise ValueError(message)


@app.task
def mark(tag):
    record("mark", tag=tag)
    return tag


@app.task
def noop():
    pass


@app.task
def slow(seconds, tag=None):
    record("started", tag=tag)
    time.sleep(seconds)
    record("done", tag=tag)
    return tag


class _LingersAfterReturn(Task):
    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        # Its result is stored by now; its process lives on, its outcome not yet told.
        record("stored", status=status)
        time.sleep(args[0])


@app.task(base=_LingersAfterReturn)
def lingering(seconds, tag=None):
    record("started", tag=tag)
    return tag


@app.task
def overlap(seconds):
    # How many of these run at once (itself included), counted halfway through its sleep.
    running = f"{KEY}:overlap:running"
    _redis.incr(running)
    try:
        time.sleep(seconds / 2)
        seen = int(_redis.get(running))
        time.sleep(seconds / 2)
    finally:
        _redis.decr(running)
    return seen


@app.task
def die_once(tag):
    record("die_once", tag=tag)
    if _redis.incr(f"{KEY}:die_once:{tag}") == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return tag


@app.task
def die_always():
    record("die_always")
    os.kill(os.getpid(), signal.SIGKILL)


@app.task
def soft_limited(seconds):
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        record("soft")
        return "soft limit caught"
    return "finished"


@app.task
def spin(seconds):
    end = time.time() + seconds
    try:
        while time.time() < end:
            pass
    except SoftTimeLimitExceeded:
        return "soft limit caught"
    return "finished"


@app.task(rate_limit="5/s")
def tick(i):
    record("tick", i=i)


@app.task
def unserializable():
    return object()


@app.task(bind=True, max_retries=3)
def flaky(self, failures):
    attempt = self.request.retries
    record("flaky", retries=attempt)
    if attempt < failures:
        raise self.retry(exc=ValueError(f"attempt {attempt}"), countdown=0.2)
    return attempt


@app.task(autoretry_for=(KeyError,), max_retries=2, default_retry_delay=0.1)
def always_key_error():
    record("key_error")
    raise KeyError("missing")
"""


@dataclass
class Setup:
    """One test's world: its queue, broker, backend, tasks module and client app; as a context
    manager, cleaned up when the block ends."""

    directory: Path
    queue: str
    broker: str
    backend: str | None
    conf: dict[str, Any] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {"QTUI_TEST_BROKER": self.broker, "QTUI_TEST_BACKEND": self.backend or "",
                "QTUI_TEST_QUEUE": self.queue, "QTUI_TEST_RECORDS": REDIS_URL,
                "QTUI_TEST_CONF": json.dumps(self.conf)}

    @contextmanager
    def worker(self, *options: str, name: str = "w", timeout: float = 30.0, tasks: str = "tasks",
               ) -> Iterator[Any]:
        """A ``qtui -A tasks run-worker`` process (``tasks``: another module of the test's
        directory), stopped (TERM, then KILL) when the block ends."""
        hostname = f"{name}-{self.queue}"
        argv = [sys.executable, "-m", "qtui.tui.cli", "-A", tasks, "run-worker",
                "-n", hostname, "-l", "INFO", *options]
        ready = f"qtui worker {hostname}@{socket.gethostname()} ready."
        with running(argv, self.directory, ready=ready, timeout=timeout, env=self.env) as proc:
            yield proc

    def __enter__(self) -> Setup:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    def app(self, **settings: Any) -> App:
        app = App("client", broker=self.broker, backend=self.backend,
                  task_default_queue=self.queue, **{**self.conf, **settings})
        return app

    def send_slow(self, count: int, seconds: float) -> None:
        """Send ``count`` ``tasks.slow`` of ``seconds`` each, tagged 0 to ``count - 1``."""
        app = self.app()
        for i in range(count):
            app.send_task("tasks.slow", args=[seconds, i])
        app.close()

    def records(self, kind: str) -> list[dict[str, Any]]:
        client = redis.Redis.from_url(REDIS_URL)
        return [json.loads(r) for r in client.lrange(f"{self.queue}:{kind}", 0, -1)]

    def wait_records(self, kind: str, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.records(kind)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def dead_letters(self, expected: int = 1, timeout: float = 15.0) -> list[Any]:
        """The messages in ``<queue>.dead`` (acked: read once)."""
        found: list[Any] = []
        deadline = time.monotonic() + timeout
        with Connection(self.broker) as conn:
            queue = direct_queue(f"{self.queue}.dead")(conn.default_channel)
            queue.declare()
            while len(found) < expected and time.monotonic() < deadline:
                message = queue.get(no_ack=False)
                if message is None:
                    time.sleep(0.1)
                    continue
                message.ack()
                found.append(message)
        return found

    def cleanup(self) -> None:
        client = redis.Redis.from_url(REDIS_URL)
        # The queues' lists and records, and kombu's binding sets of the queues' exchanges
        # (``<queue>`` and ``<queue>-...`` ones), so no queue of this test outlives it.
        for pattern in (f"{self.queue}*", f"_kombu.binding.{self.queue}*",
                        f"_kombu.binding_permanent.{self.queue}*"):
            for key in client.scan_iter(pattern):
                client.delete(key)
        client.delete(DELAYED_KEY.format(queue=self.queue))
        if self.broker.startswith("amqp"):
            with Connection(self.broker) as conn:
                names = [self.queue, f"{self.queue}.dead", DUE_QUEUE.format(queue=self.queue)] + [
                    DELAY_QUEUE.format(queue=self.queue, seconds=s) for s in LADDER]
                for name in names:
                    try:
                        conn.default_channel.queue_delete(name)
                    except Exception:
                        conn.close()
                        conn.connect()


def make_setup(directory: Path, queue: str, broker: str, backend: str | None,
               **conf: Any) -> Setup:
    write_module(directory, "tasks", TASKS)
    return Setup(directory, queue, broker, backend, conf)


@pytest.fixture
def redis_setup(tmp_path, unique, redis_url) -> Iterator[Setup]:
    setup = make_setup(tmp_path, f"qw-{unique}", redis_url, redis_url)
    yield setup
    setup.cleanup()


@pytest.fixture
def any_setup(tmp_path, unique, broker) -> Iterator[Setup]:
    """Parametrized over Redis (redis results) and RabbitMQ (rpc results)."""
    url, backend = broker
    setup = make_setup(tmp_path, f"qw-{unique}", url, backend)
    yield setup
    setup.cleanup()


@pytest.fixture(params=["redis", "rabbitmq", "sqlite"])
def every_setup(request, tmp_path, unique) -> Iterator[Setup]:
    """Parametrized over Redis, RabbitMQ (rpc results) and the embedded SQLite transport."""
    if request.param == "sqlite":
        request.getfixturevalue("redis_url")  # the task records live in Redis
        url, backend = f"sqlite://{tmp_path}/broker.sqlite", f"sqlite://{tmp_path}/results.sqlite"
    elif request.param == "redis":
        url = backend = request.getfixturevalue("redis_url")
    else:
        url, backend = request.getfixturevalue("amqp_url"), "rpc://"
    setup = make_setup(tmp_path, f"qw-{unique}", url, backend)
    yield setup
    setup.cleanup()


@pytest.fixture
def sqlite_setup(tmp_path, unique, redis_url) -> Iterator[Setup]:
    """The embedded broker and SQLite results (the task records live in Redis)."""
    setup = make_setup(tmp_path, f"qw-{unique}", f"sqlite://{tmp_path}/broker.sqlite",
                       f"sqlite://{tmp_path}/results.sqlite")
    yield setup
    setup.cleanup()


@pytest.fixture
def amqp_setup(tmp_path, unique, amqp_url) -> Iterator[Setup]:
    setup = make_setup(tmp_path, f"qw-{unique}", amqp_url, REDIS_URL)
    yield setup
    setup.cleanup()


def broker_urls(name: str, directory: Path) -> tuple[str, str]:
    """(broker_url, result_backend) for ``redis``, ``rabbitmq`` (rpc results) or ``sqlite``
    (the embedded transport, in ``directory``); skips the test when the broker is missing. The
    task records always live in Redis."""
    need("Redis", REDIS_HOST, REDIS_PORT)
    if name == "redis":
        return REDIS_URL, REDIS_URL
    if name == "rabbitmq":
        need("RabbitMQ", AMQP_HOST, AMQP_PORT)
        return f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}//", "rpc://"
    if name == "sqlite":
        return f"sqlite://{directory}/broker.sqlite", f"sqlite://{directory}/results.sqlite"
    raise ValueError(f"unknown broker {name!r}")


class ModuleWorkers:
    """Worker processes shared by the tests of one module: each started on first use (per
    broker, options and settings) and stopped, its queues cleaned, when the module ends."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._factory = tmp_path_factory
        self._stack = ExitStack()
        self._started: dict[str, tuple[Setup, Any]] = {}

    def get(self, broker: str, *options: str, **conf: Any) -> tuple[Setup, Any]:
        """(setup, process) of the worker for ``broker`` run with ``options`` and ``conf``."""
        key = json.dumps([broker, options, conf], sort_keys=True)
        if key not in self._started:
            directory = self._factory.mktemp("worker")
            url, backend = broker_urls(broker, directory)
            setup = make_setup(directory, f"qw-{uuid.uuid4().hex[:10]}", url, backend, **conf)
            self._stack.callback(setup.cleanup)
            process = self._stack.enter_context(setup.worker(*options))
            self._started[key] = (setup, process)
        return self._started[key]

    def close(self) -> None:
        self._stack.close()


@pytest.fixture(scope="module")
def module_workers(tmp_path_factory) -> Iterator[ModuleWorkers]:
    workers = ModuleWorkers(tmp_path_factory)
    try:
        yield workers
    finally:
        workers.close()


def hostname_of(setup: Setup, name: str = "w") -> str:
    """The node name of ``setup.worker(name=name)``."""
    return f"{name}-{setup.queue}@{socket.gethostname()}"


def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@contextmanager
def owned_channel(url: str, owner: str, queue: str) -> Iterator[tuple[Connection, Any, list[Any]]]:
    """A worker's Redis channel taking deliveries as ``owner``, consuming ``queue``: the
    connection, the channel and the list its messages are delivered to."""
    received: list[Any] = []
    with redis_broker.connection(url, transport=worker_channel.Transport) as conn:
        channel = conn.channel()
        channel.own(owner, ttl=60)
        Consumer(channel, [Queue(queue)], callbacks=[lambda body, message:
                                                     received.append(message)]).consume()
        yield conn, channel, received
