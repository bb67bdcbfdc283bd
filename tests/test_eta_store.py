"""No task depends on a qtui worker to run (issue 13 item 4): ETA tasks that qtui workers left in
the broker's delayed store are counted (``qtui status``), purged with their queue
(``qtui purge``), listed, and handed back to their queue (``qtui eta release``) where a Celery
worker runs them at their ETA; on RabbitMQ they reach Celery workers by themselves."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

import pytest
import redis
from kombu import Connection
from kombu.exceptions import ChannelError

from qtui.core.brokers.amqp.delayed import amqp_due_queue
from qtui.core.delayed import DELAYED_KEY, DUE_TTL, delayed_for
from qtui.workers.eta import RedisDelayedStore

from .processes import running, write_module
from .worker_helpers import (  # noqa: F401 - fixtures
    REDIS_URL,
    Setup,
    amqp_setup,
    redis_setup,
    sqlite_setup,
    wait_for,
)

CELERY_TASKS = """
import json
import os
import time

import redis
from celery import Celery

app = Celery("celerytasks", broker=os.environ["QTUI_TEST_BROKER"],
             backend=os.environ["QTUI_TEST_BACKEND"])
app.conf.task_default_queue = os.environ["QTUI_TEST_QUEUE"]
_redis = redis.Redis.from_url(os.environ["QTUI_TEST_RECORDS"])


@app.task(name="tasks.mark")
def mark(tag):
    _redis.rpush(f"{os.environ['QTUI_TEST_QUEUE']}:mark",
                 json.dumps({"t": time.time(), "tag": tag, "worker": "celery"}))
    return tag
"""


def qtui(setup: Setup, *argv: str) -> subprocess.CompletedProcess[str]:
    """``qtui -A tasks ARGV`` in the setup's directory."""
    return subprocess.run([sys.executable, "-m", "qtui.tui.cli", "-A", "tasks", *argv],
                          cwd=setup.directory, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **setup.env, "PYTHONPATH": str(setup.directory),
                               "COLUMNS": "200"})


def celery_worker(setup: Setup) -> Any:
    """A real Celery worker on the setup's queue, running ``tasks.mark``."""
    write_module(setup.directory, "celerytasks", CELERY_TASKS)
    argv = [sys.executable, "-m", "celery", "-A", "celerytasks", "worker", "--pool", "solo",
            "-Q", setup.queue, "-n", f"celery-{setup.queue}@{socket.gethostname()}",
            "--loglevel", "INFO", "--without-mingle", "--without-gossip", "--without-heartbeat"]
    return running(argv, setup.directory, ready="ready.", timeout=60.0, env=setup.env)


def held(setup: Setup) -> int:
    with Connection(setup.broker) as connection:
        reader = delayed_for(connection)
        assert reader is not None
        return reader.count(setup.queue)


def store_and_stop(setup: Setup, countdown: float) -> tuple[Any, float]:
    """Send a task; once a qtui worker has put it in the delayed store, stop that worker."""
    setup.conf["worker_eta_horizon"] = 1.0
    with setup.worker("-P", "solo") as proc:
        app = setup.app()
        due = time.time() + countdown
        result = app.send_task("tasks.mark", args=["eta"], countdown=countdown)
        assert wait_for(lambda: "stored until its ETA" in proc.log_path.read_text(), 20)
    return result, due


def status_of(setup: Setup) -> dict[str, Any]:
    done = qtui(setup, "status", "--json", "-t", "0.5")
    queues = json.loads(done.stdout)["queues"]
    return next(q for q in queues if q["name"] == setup.queue)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["redis_setup", "amqp_setup"])
def test_a_released_eta_task_runs_on_a_celery_worker_at_its_eta(name, request):
    setup: Setup = request.getfixturevalue(name)
    result, due = store_and_stop(setup, 8)
    assert status_of(setup)["scheduled"] == 1
    done = qtui(setup, "eta", "release", "-Q", setup.queue)
    assert done.returncode == 0, done.stderr
    assert f"{setup.queue}: released 1 ETA task" in done.stdout
    after = status_of(setup)
    assert (after["scheduled"], after["messages"]) == (0, 1)
    with celery_worker(setup):
        assert result.get(timeout=40) == "eta"
        time.sleep(1)
    runs = setup.records("mark")
    assert [r["worker"] for r in runs] == ["celery"]
    assert runs[0]["t"] >= due - 0.01


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["redis_setup", "amqp_setup", "sqlite_setup"])
def test_purging_a_queue_purges_its_held_eta_tasks(name, request):
    setup: Setup = request.getfixturevalue(name)
    store_and_stop(setup, 30)
    assert held(setup) == 1
    done = qtui(setup, "purge", "-f", "-Q", setup.queue)
    assert done.returncode == 0, done.stderr
    assert f"{setup.queue}: purged 0 messages and 1 scheduled (ETA) task" in done.stdout
    assert held(setup) == 0


@pytest.mark.timeout(120)
def test_a_released_eta_task_runs_at_its_eta_on_the_embedded_broker(sqlite_setup: Setup):
    """Released rows are ready at once in their queue; the next worker holds the task (or
    stores it again) until its ETA."""
    result, due = store_and_stop(sqlite_setup, 6)
    done = qtui(sqlite_setup, "eta", "release", "-Q", sqlite_setup.queue)
    assert f"{sqlite_setup.queue}: released 1 ETA task" in done.stdout, done.stderr
    after = status_of(sqlite_setup)
    assert (after["scheduled"], after["messages"]) == (0, 1)
    with sqlite_setup.worker("-P", "solo", name="second"):
        assert result.get(timeout=40) == "eta"
    runs = sqlite_setup.records("mark")
    assert len(runs) == 1 and runs[0]["t"] >= due - 0.01


@pytest.mark.timeout(120)
def test_held_eta_tasks_on_rabbitmq_are_counted_not_listed(amqp_setup: Setup):
    """A queued AMQP message cannot be read without taking it: ``eta list`` says how many."""
    store_and_stop(amqp_setup, 30)
    done = qtui(amqp_setup, "eta", "list", "-Q", amqp_setup.queue)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{amqp_setup.queue}: 1 held ETA task"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["redis_setup", "sqlite_setup"])
def test_held_eta_tasks_are_listed_with_their_eta(name, request):
    setup: Setup = request.getfixturevalue(name)
    result, _ = store_and_stop(setup, 30)
    done = qtui(setup, "eta", "list", "-Q", setup.queue)
    assert done.returncode == 0, done.stderr
    assert f"{setup.queue}: 1 held ETA task" in done.stdout
    assert result.id in done.stdout and "tasks.mark" in done.stdout


@pytest.mark.timeout(120)
def test_without_qtui_workers_a_due_task_goes_on_to_its_queue_after_due_ttl_on_rabbitmq(
        amqp_setup: Setup):
    """The ladder dead-letters into the due queue; nobody consumes it, so after DUE_TTL the
    task goes on to its queue, where a Celery worker runs it: no command needed. The whole
    minute is ``make faults`` scenario eta-without-qtui; here, the due queue the worker made
    has that TTL and route (RabbitMQ refuses a declare whose arguments differ)."""
    store_and_stop(amqp_setup, 4)
    assert held(amqp_setup) == 1
    with Connection(amqp_setup.broker) as connection:
        amqp_due_queue(amqp_setup.queue)(connection.default_channel).declare()
        wrong = amqp_due_queue(amqp_setup.queue)
        wrong.queue_arguments = {**wrong.queue_arguments, "x-message-ttl": DUE_TTL * 2000}
        with pytest.raises(ChannelError, match="PRECONDITION_FAILED"):
            wrong(connection.channel()).declare()


def test_held_eta_tasks_are_counted_and_purged_under_a_global_key_prefix(redis_url, unique):
    """kombu's client prefixes ZADD (how a worker stores a task) but not ZCARD."""
    queue = f"pfx-{unique}"
    with Connection(redis_url, transport_options={"global_keyprefix": f"pfx-{unique}:"}) as conn:
        try:
            conn.default_channel.client.zadd(DELAYED_KEY.format(queue=queue),
                                             {f"{queue}\n{{}}": time.time() + 600})
            reader = delayed_for(conn)
            assert reader is not None and reader.count(queue) == 1
            assert reader.purge(queue) == 1
            assert reader.count(queue) == 0
        finally:
            client = redis.Redis.from_url(redis_url)  # kombu's client would prefix DEL again
            for key in client.scan_iter(match=f"*{unique}*"):
                client.delete(key)


def test_released_run_now_and_due_eta_tasks_reach_the_prefixed_queue(redis_url, unique):
    """A member names its list without the transport's global_keyprefix; the scripts that push
    it back add the prefix, so the task lands in the list workers read, not beside it."""
    queue = f"pfx-{unique}"
    delayed = DELAYED_KEY.format(queue=queue)

    def member(task_id: str) -> str:
        return f"{queue}\n{json.dumps({'headers': {'id': task_id}})}"
    with Connection(redis_url, transport_options={"global_keyprefix": f"pfx-{unique}:"}) as conn:
        client = conn.default_channel.client  # kombu's: prefixes ZADD and LLEN
        reader = delayed_for(conn)
        assert reader is not None
        try:
            client.zadd(delayed, {member("released"): time.time() + 600})
            assert reader.release(queue) == 1
            client.zadd(delayed, {member("run-now"): time.time() + 600})
            assert reader.run_now(queue, ["run-now"]) == ["run-now"]
            client.zadd(delayed, {member("due"): time.time()})
            RedisDelayedStore(conn.default_channel, [queue]).poll()
            assert client.llen(queue) == 3
        finally:
            raw = redis.Redis.from_url(redis_url)
            for key in raw.scan_iter(match=f"*{unique}*"):
                raw.delete(key)
