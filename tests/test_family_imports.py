"""A process imports only the broker and result backend families it uses: redis-py (and kombu's
Redis transport) only where the broker or the result backend is Redis, qtui's embedded SQLite
broker only where the broker is SQLite."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from kombu import Connection

from qtui.core import App
from qtui.core.delayed import DUE_QUEUE

from .processes import running, write_module
from .test_cli_lazy import RUNS_QTUI, loaded

TASKS = """
import os

from qtui.core import App

app = App("tasks", broker=os.environ["QTUI_TEST_BROKER"],
          backend=os.environ["QTUI_TEST_BACKEND"])


@app.task
def add(x, y):
    return x + y
"""

#: ``python -c`` code that runs ``qtui`` with the arguments after it and no terminal: the
#: console is run headless by Textual's Pilot for a few seconds of polling, then the modules
#: loaded by then are written to stderr as :data:`RUNS_QTUI` writes them (``qtui`` leaves the
#: console through ``os._exit``, past ``atexit``).
RUNS_CONSOLE = ("import asyncio, runpy, sys\n"
                "from qtui.tui.console import Console\n"
                "async def look(console):\n"
                "    async with console.run_test() as pilot:\n"
                "        await pilot.pause(4)\n"
                "def run(console):\n"
                "    asyncio.run(look(console))\n"
                "    sys.stderr.write(''.join(\n"
                "        f'\\nloaded: {name}' for name in sorted(sys.modules)) + '\\n')\n"
                "Console.run = run\n"
                "runpy.run_module('qtui.tui.cli', run_name='__main__', alter_sys=True)\n")


def redis_modules(modules: set[str]) -> list[str]:
    """The modules of redis-py and of kombu's Redis transport among ``modules``."""
    return sorted(m for m in modules if m == "redis" or m.startswith("redis.")
                  or m == "kombu.transport.redis")


#: What a worker names whatever its broker: the delayed store's not-before header (its ETA stores
#: are chosen by type) and the ledger's table (kept in a SQLite result store too).
SQLITE_NAMES = {"qtui.core.brokers.sqlite", "qtui.core.brokers.sqlite.delayed",
                "qtui.core.brokers.sqlite.ledger_table"}


def embedded_broker_modules(modules: set[str]) -> list[str]:
    """The modules of qtui's embedded broker (its transport, SQL layer, queues and family) and of
    the SQLite result backend among ``modules``."""
    return sorted(m for m in modules
                  if m.startswith(("qtui.core.brokers.sqlite", "qtui.core.backends.sqlite"))
                  and m not in SQLITE_NAMES)


def started_worker_modules(tmp_path: Path, broker: str, backend: str, *options: str,
                           meanwhile: Callable[[], object] = lambda: None) -> set[str]:
    """The modules a solo worker on ``broker`` with results in ``backend`` had loaded when it
    was stopped, once ready and ``meanwhile`` has returned."""
    write_module(tmp_path, "tasks", TASKS)
    argv = [sys.executable, "-c", RUNS_QTUI, "-A", "tasks", "run-worker", "-P", "solo", *options]
    with running(argv, tmp_path, ready="ready.", timeout=60.0,
                 env={"QTUI_TEST_BROKER": broker, "QTUI_TEST_BACKEND": backend}) as proc:
        meanwhile()  # then stopped (warm shutdown): the modules are written as it exits
    modules = loaded(proc.log_path.read_text())
    assert "qtui.workers.worker" in modules
    return modules


def rabbitmq_worker_modules(tmp_path: Path, amqp_url: str, unique: str) -> set[str]:
    """:func:`started_worker_modules` of a worker on RabbitMQ with rpc:// results, consuming a
    queue of its own, deleted afterwards with the due queue the worker declared for it."""
    queue = f"fx-imports-{unique}"
    try:
        return started_worker_modules(tmp_path, amqp_url, "rpc://", "-Q", queue)
    finally:
        with Connection(amqp_url) as conn:
            for name in (queue, DUE_QUEUE.format(queue=queue)):
                conn.default_channel.queue_delete(name)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend", ["rpc://", "sqlite"])
def test_a_worker_on_the_embedded_broker_never_imports_redis(tmp_path, backend):
    if backend == "sqlite":
        backend = f"sqlite://{tmp_path / 'results.sqlite'}"
    modules = started_worker_modules(tmp_path, f"sqlite://{tmp_path / 'broker.sqlite'}", backend)
    assert "qtui.core.brokers.sqlite.family" in modules
    assert not redis_modules(modules), redis_modules(modules)
    assert "qtui.core.brokers.amqp.family" not in modules


@pytest.mark.timeout(90)
def test_a_worker_on_rabbitmq_with_rpc_results_never_imports_redis(tmp_path, amqp_url, unique):
    modules = rabbitmq_worker_modules(tmp_path, amqp_url, unique)
    assert "qtui.core.brokers.amqp.family" in modules
    assert not redis_modules(modules), redis_modules(modules)


@pytest.mark.timeout(90)
def test_a_worker_on_rabbitmq_with_rpc_results_never_imports_the_embedded_broker(
        tmp_path, amqp_url, unique):
    modules = rabbitmq_worker_modules(tmp_path, amqp_url, unique)
    assert "qtui.core.brokers.amqp.family" in modules
    assert not embedded_broker_modules(modules), embedded_broker_modules(modules)


@pytest.mark.timeout(90)
def test_a_worker_with_redis_results_imports_redis(tmp_path, redis_url):
    """The other side: the Redis result backend still loads what it needs. A task runs first:
    the worker opens its result backend when it first needs it, which may be after a stop
    sent as soon as it is ready."""
    broker = f"sqlite://{tmp_path / 'broker.sqlite'}"

    def one_task() -> None:
        app = App("client", broker=broker, backend=redis_url)
        try:
            assert app.send_task("tasks.add", args=[1, 2]).get(timeout=30) == 3
        finally:
            app.close()

    modules = started_worker_modules(tmp_path, broker, redis_url, meanwhile=one_task)
    assert "redis" in modules and "qtui.core.backends.redis" in modules


def run_qtui(tmp_path: Path, code: str, *argv: str) -> tuple[subprocess.CompletedProcess[str],
                                                             set[str]]:
    """``qtui ARGV`` run by ``code`` on the embedded default broker of a home of its own."""
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "PATH": "/usr/bin:/bin",
           "TERM": "xterm-256color"}
    out = subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    return out, loaded(out.stderr)


@pytest.mark.timeout(90)
def test_the_console_on_the_embedded_default_never_imports_redis(tmp_path):
    out, modules = run_qtui(tmp_path, RUNS_CONSOLE, "--no-history")
    assert out.returncode == 0, out.stderr
    assert "qtui.core.brokers.sqlite.family" in modules, out.stderr  # it polled the broker
    assert not redis_modules(modules), redis_modules(modules)


@pytest.mark.timeout(90)
def test_inspect_on_the_embedded_default_never_imports_redis(tmp_path):
    out, modules = run_qtui(tmp_path, RUNS_QTUI, "inspect", "ping", "-t", "0.5")
    assert "qtui.tui.commands" in modules, out.stderr
    assert not redis_modules(modules), redis_modules(modules)
