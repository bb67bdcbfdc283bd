"""Revocation: a revoked task never runs, the set survives a restart, terminate kills it."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from qtui.core import App, Task, states
from qtui.core.canvas import chord, signature
from qtui.core.exceptions import TaskRevokedError
from qtui.workers import control
from qtui.workers.hooks import Observer
from qtui.workers.job import Job
from qtui.workers.worker import Worker

from .processes import write_module
from .worker_helpers import (  # noqa: F401 - fixtures
    REDIS_URL,
    Setup,
    amqp_setup,
    every_setup,
    hostname_of,
    redis_setup,
)

#: Seconds a task runs when the test shows it was stopped: short enough that the test can wait
#: past its end to see it never finished.
SHORT = 3


@pytest.mark.timeout(90)
def test_a_revoked_task_never_runs(every_setup: Setup):
    with every_setup.worker("-P", "prefork", "-c", "2"):
        app = every_setup.app()
        result = app.send_task("tasks.mark", args=["revoked"], countdown=2)
        time.sleep(0.5)
        app.control.revoke(result.id)
        exc = result.get(timeout=30, propagate=False)
        assert result.state == states.REVOKED and isinstance(exc, TaskRevokedError)
        assert app.send_task("tasks.add", args=[1, 1]).get(timeout=20) == 2
        app.close()
    assert every_setup.records("mark") == []


@pytest.mark.timeout(90)
def test_ping_is_answered(redis_setup: Setup):
    with redis_setup.worker("-P", "solo"):
        app = redis_setup.app()
        replies = app.control.broadcast("ping", reply=True, timeout=3)
        assert replies.by_worker().get(hostname_of(redis_setup)) == {"ok": "pong"}
        app.close()


@pytest.mark.timeout(120)
def test_the_revoked_set_survives_a_restart_with_statedb(redis_setup: Setup, tmp_path):
    statedb = str(tmp_path / "worker.state")
    task_id = str(uuid.uuid4())
    app = redis_setup.app()
    with redis_setup.worker("-P", "solo", "--statedb", statedb):
        replies = app.control.revoke(task_id, reply=True, timeout=3)
        assert replies.by_worker().get(hostname_of(redis_setup)) == {
            "ok": f"tasks {{'{task_id}'}} flagged as revoked"}
    result = app.send_task("tasks.mark", args=["revoked"], task_id=task_id)
    with redis_setup.worker("-P", "solo", "--statedb", statedb, name="again"):
        exc = result.get(timeout=30, propagate=False)
        assert isinstance(exc, TaskRevokedError)
    assert redis_setup.records("mark") == []
    app.close()


@pytest.mark.timeout(90)
def test_revoke_with_terminate_kills_the_running_task(redis_setup: Setup):
    with redis_setup.worker("-P", "prefork", "-c", "2") as worker:
        app = redis_setup.app()
        result = app.send_task("tasks.slow", args=[SHORT, "killed"])
        started = redis_setup.wait_records("started", 1)[0]["t"]
        replies = app.control.revoke(result.id, terminate=True, signal="SIGKILL", reply=True,
                                     timeout=3, destination=[hostname_of(redis_setup)])
        assert replies.by_worker().get(hostname_of(redis_setup)) == {
            "ok": f"terminate: {result.id}"}, worker.log_path.read_text()[-3000:]
        exc = result.get(timeout=20, propagate=False)
        assert result.state == states.REVOKED and "terminated" in str(exc), \
            worker.log_path.read_text()[-3000:]
        time.sleep(max(0.0, started + SHORT + 2 - time.time()))  # past when it would have ended
        assert redis_setup.records("done") == []
        assert app.send_task("tasks.add", args=[2, 2]).get(timeout=20) == 4
        app.close()


def wait_for_signalled(worker: Any, app: App, task_id: str, timeout: float = 30) -> None:
    """Wait until the worker process has taken in the end of the process that a terminate
    signalled while it ran ``task_id``: it logs that (either way) first, and runs a task sent
    after the line only once it has done the rest (its main thread does one thing at a time)."""
    deadline = time.monotonic() + timeout
    lines = (f"[{task_id}] terminated by signal", f"[{task_id}] had finished when signal",
             f"[{task_id}] was past its code when the terminate came",
             f"[{task_id}] ended ")  # its outcome stored before a SIGKILL landed
    while not any(line in worker.log_path.read_text() for line in lines):
        assert time.monotonic() < deadline, worker.log_path.read_text()[-3000:]
        time.sleep(0.05)
    assert app.send_task("tasks.add", args=[2, 2]).get(timeout=20) == 4


@pytest.mark.timeout(90)
def test_a_terminate_that_lands_after_the_result_was_stored_leaves_the_result(
        redis_setup: Setup):
    """The prefork child has stored the task's result and not yet told the worker (its
    ``after_return`` runs) when a SIGTERM terminate comes: the task is past its code, so it is
    not signalled and ends as it would have, its result standing, as on Celery (whose Redis
    backend never overwrites a SUCCESS); the reply says it was not signalled. Before, REVOKED
    'terminated' was stored over the SUCCESS of a task that had run to its end."""
    with redis_setup.worker("-P", "prefork", "-c", "1") as worker:
        app = redis_setup.app()
        result = app.send_task("tasks.lingering", args=[SHORT, "finished"])
        assert redis_setup.wait_records("stored", 1) != []
        assert app.AsyncResult(result.id).state == states.SUCCESS
        replies = app.control.revoke(result.id, terminate=True, signal="SIGTERM", reply=True,
                                     timeout=3, destination=[hostname_of(redis_setup)])
        assert replies.by_worker().get(hostname_of(redis_setup)) == {
            "ok": f"not signalled (past its code): {result.id}"}
        wait_for_signalled(worker, app, result.id)
        assert "was past its code when the terminate came" in worker.log_path.read_text()
        assert (result.state, result.get(timeout=5)) == (states.SUCCESS, "finished"), \
            worker.log_path.read_text()[-3000:]
        app.close()


@pytest.mark.timeout(90)
def test_a_sigkill_terminate_stops_a_task_stuck_past_its_code(redis_setup: Setup):
    """SIGKILL, the operator's last resort, goes through the gate: a prefork child stuck past
    its task's code (an ``after_return`` that blocks, as a result write to a frozen backend
    would) is killed, and the worker runs the next task; the stored result stands. Before, the
    child was left to block while the reply said it was terminated."""
    with redis_setup.worker("-P", "prefork", "-c", "1") as worker:
        app = redis_setup.app()
        result = app.send_task("tasks.lingering", args=[600, "finished"])
        assert redis_setup.wait_records("stored", 1) != []
        replies = app.control.revoke(result.id, terminate=True, signal="SIGKILL", reply=True,
                                     timeout=3, destination=[hostname_of(redis_setup)])
        assert replies.by_worker().get(hostname_of(redis_setup)) == {
            "ok": f"terminate: {result.id}"}
        wait_for_signalled(worker, app, result.id)  # the next task runs: the child was killed
        assert "was past its code when the terminate came" not in worker.log_path.read_text()
        assert result.state == states.SUCCESS, worker.log_path.read_text()[-3000:]
        app.close()


#: A tasks module whose chord part ``tasks.mark("slow")`` counts itself slowly in the chord (a
#: slow or far result backend): its SUCCESS is stored, the count not yet made, for seconds.
SLOW_CHORD_COUNT = """
import time

from tasks import *  # noqa: F403 - the test's tasks, as they are
from tasks import app, record

_count = type(app.backend).on_chord_part_return


def _slow_count(self, message, state, result, send=None, retake=False):
    if list(message.args) == ["slow"]:
        record("counting", id=message.id, state=state)
        time.sleep(3)
    return _count(self, message, state, result, send=send, retake=retake)


type(app.backend).on_chord_part_return = _slow_count
"""


@pytest.mark.timeout(90)
def test_a_terminate_between_a_chord_parts_stored_result_and_its_count_leaves_the_chord_whole(
        redis_setup: Setup):
    """A chord part has stored SUCCESS and is counting itself in the chord when a SIGTERM
    terminate comes: it is past its code, so it is not signalled, its count is made and the
    chord's body runs. Before, the signal killed it there and its stored SUCCESS was left
    standing without the count: the chord's body never ran (PENDING for ever). (A SIGKILL
    terminate still kills it there: the operator's last resort.)"""
    write_module(redis_setup.directory, "slowchord", SLOW_CHORD_COUNT)
    with redis_setup.worker("-P", "prefork", "-c", "2", tasks="slowchord") as worker:
        app = redis_setup.app()
        parts = [signature("tasks.mark", "slow", app=app), signature("tasks.mark", "fast", app=app)]
        body = chord(parts, signature("tasks.mark", app=app)).apply_async()
        part_id = redis_setup.wait_records("counting", 1)[0]["id"]
        app.control.revoke(part_id, terminate=True, signal="SIGTERM")
        assert sorted(body.get(timeout=30)) == ["fast", "slow"], \
            worker.log_path.read_text()[-3000:]
        assert app.AsyncResult(part_id).get(timeout=5) == "slow"
        app.close()


@pytest.mark.timeout(90)
def test_a_terminate_stores_revoked_over_an_earlier_run_of_the_same_id(redis_setup: Setup):
    """The result an earlier run of the same task id stored is not this run's: the run that the
    terminate ends is recorded REVOKED 'terminated'."""
    with redis_setup.worker("-P", "prefork", "-c", "1") as worker:
        app = redis_setup.app()
        task_id = str(uuid.uuid4())
        assert app.send_task("tasks.add", args=[1, 1], task_id=task_id).get(timeout=20) == 2
        result = app.send_task("tasks.slow", args=[30, "again"], task_id=task_id)
        assert redis_setup.wait_records("started", 1) != []
        app.control.revoke(result.id, terminate=True, signal="SIGKILL")
        wait_for_signalled(worker, app, result.id)
        exc = result.get(timeout=5, propagate=False)
        assert result.state == states.REVOKED and "terminated" in str(exc), \
            worker.log_path.read_text()[-3000:]
        app.close()


#: What a retrier's ``on_retry`` waits for: its run stays active after it stored RETRY.
LINGER = threading.Event()


class _LingersOnRetry(Task):
    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                 einfo: Any) -> None:
        assert LINGER.wait(30)


# In the worker's own process: the test decides where a remote-control request is handled.
@contextmanager
def worker_in_process(setup: Setup, pool: str, hostname: str | None = None,
                      concurrency: int = 1, **settings: Any
                      ) -> Iterator[tuple[App, Worker, threading.Event]]:
    """A worker of ``pool`` (``concurrency`` slots) run here by the test's turns, with
    ``note(tag)`` (records ``ran``), ``hold(tag)`` (records ``ran``, then waits for the event
    yielded; threads pool only: the event lives in this process) and ``retrier(tag)`` (as
    ``hold``, then retries in a second, its ``on_retry`` waiting for :data:`LINGER`)."""
    records = redis.Redis.from_url(REDIS_URL)
    release = threading.Event()
    LINGER.clear()
    app = App("revoke", broker=setup.broker, backend=setup.backend,
              task_default_queue=setup.queue, **settings)

    @app.task(name="note")
    def note(tag: str) -> str:
        records.rpush(f"{setup.queue}:ran", json.dumps({"tag": tag}))
        return tag

    @app.task(name="hold")
    def hold(tag: str) -> str:
        records.rpush(f"{setup.queue}:ran", json.dumps({"tag": tag}))
        assert release.wait(30)
        return tag

    @app.task(name="retrier", bind=True, base=_LingersOnRetry, max_retries=None)
    def retrier(self: Task, tag: str) -> str:
        records.rpush(f"{setup.queue}:ran", json.dumps({"tag": tag}))
        assert release.wait(30)
        raise self.retry(countdown=1)

    worker = Worker(app, pool=pool, concurrency=concurrency, heartbeat=False, send_events=False,
                    hostname=hostname)
    worker.pool.start()
    worker.consumer.connect(worker.prefetch_target())
    worker._on_connected()
    try:
        yield app, worker, release
    finally:
        release.set()
        LINGER.set()
        worker.pool.stop()
        worker.consumer.close()
        app.close()


def turn_until(worker: Worker, done: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the worker never got there"
        worker._turn()


def finished(app: App, task_id: str) -> Callable[[], bool]:
    return lambda: app.backend.get_task_meta(task_id)["status"] in states.READY_STATES


def terminate(worker: Worker, task_id: str) -> Any:
    """The worker handles ``revoke(task_id, terminate=True)`` as a broadcast would have it."""
    return control.call(worker, "revoke", {"task_id": task_id, "terminate": True,
                                           "signal": "SIGKILL"})


class Seen(Observer):
    """What the worker reported of its tasks through its hooks, in order."""

    def __init__(self) -> None:
        self.received: list[Job] = []
        self.calls: list[str] = []

    def on_task_received(self, job: Job) -> None:
        self.received.append(job)

    def on_task_started(self, job: Job, pid: Any) -> None:
        self.calls.append("started")

    def on_task_revoked(self, job: Job, **how: Any) -> None:
        self.calls.append("revoked")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
@pytest.mark.parametrize("handled", ["after the revoked check", "in its early ack"])
def test_a_terminate_handled_on_the_way_to_the_pool_stops_the_task(
        redis_setup: Setup, pool: str, handled: str):
    """The terminate reaches the worker after the revoked check let the task through and before
    the pool has it: inside a broker round trip made on the way (py-amqp hands a remote-control
    request over while it waits for ``basic_qos``'s reply), so no process runs it yet. It never
    runs and is stored REVOKED. Before, it was not found running, so nothing stopped it: it ran
    to completion, SUCCESS, although the operator terminated it."""
    acks_late = handled != "in its early ack"
    with worker_in_process(redis_setup, pool, task_acks_late=acks_late) as (app, worker, _):
        result = app.send_task("note", args=["terminated"])
        replies: list[Any] = []
        if handled == "after the revoked check":
            next_batch = worker._next_batch

            def batch_then_terminate() -> list[Job]:
                batch = next_batch()
                if batch and not replies:
                    replies.append(terminate(worker, result.id))
                return batch
            worker._next_batch = batch_then_terminate  # type: ignore[method-assign]
        else:
            ack_before_run = worker.settlement.ack_before_run

            def ack_then_terminate(job: Job) -> None:
                ack_before_run(job)
                if not replies:
                    replies.append(terminate(worker, result.id))
            worker.settlement.ack_before_run = ack_then_terminate  # type: ignore[method-assign]
        turn_until(worker, finished(app, result.id))
        assert replies == [{"ok": f"terminate: {result.id}"}]
        assert result.state == states.REVOKED
        assert isinstance(result.get(timeout=5, propagate=False), TaskRevokedError)
        assert redis_setup.records("ran") == []
        assert not worker.active and not worker.jobs


@pytest.mark.timeout(60)
def test_a_terminate_rabbitmq_hands_over_while_the_worker_waits_for_basic_qos_stops_the_task(
        amqp_setup: Setup):
    """RabbitMQ, for real: the terminate is on the worker's connection when the turn that
    starts the task changes the prefetch window (a pool resize, an ETA task held): py-amqp
    dispatches it while it waits for ``basic_qos``'s reply, after the revoked check and before
    the pool has the task. It never runs. Before, it ran to completion (SUCCESS)."""
    hostname = f"revoke-{amqp_setup.queue}@test"
    with worker_in_process(amqp_setup, "threads", hostname=hostname) as (app, worker, _):
        result = app.send_task("note", args=["terminated"])
        turn_until(worker, lambda: bool(worker.reserved))  # received; starts on the next turn
        app.control.revoke(result.id, terminate=True, signal="SIGKILL", reply=False,
                           destination=[hostname])
        # The command has reached the worker's socket (nothing else is sent to it meanwhile).
        assert worker.consumer.connection is not None
        sock = worker.consumer.connection.connection.sock
        assert select.select([sock], [], [], 10)[0], "the command never reached the worker"
        worker.base_prefetch += 1  # as pool_grow does: this turn sends basic_qos
        turn_until(worker, finished(app, result.id))
        assert result.state == states.REVOKED
        assert amqp_setup.records("ran") == []


@pytest.mark.timeout(60)
def test_a_revoke_without_terminate_lets_a_started_task_finish_with_its_own_result(
        redis_setup: Setup):
    """As Celery: a plain revoke only keeps the task from starting; one already running ends
    as it would have, and its result is its own (SUCCESS), not REVOKED."""
    with worker_in_process(redis_setup, "threads") as (app, worker, release):
        result = app.send_task("hold", args=["finished"])
        turn_until(worker, lambda: bool(redis_setup.records("ran")))
        reply = control.call(worker, "revoke", {"task_id": result.id})
        assert reply == {"ok": f"tasks {{'{result.id}'}} flagged as revoked"}
        release.set()
        turn_until(worker, finished(app, result.id))
        assert (result.state, result.get(timeout=5)) == (states.SUCCESS, "finished")


@pytest.mark.timeout(60)
def test_a_revoked_copy_of_a_task_running_here_does_not_store_revoked_over_it(
        redis_setup: Setup):
    """A second delivery of a task this worker runs, arriving after a revoke (without terminate)
    of it: the copy is refused and acked, and the result stays the running one's (it finishes:
    SUCCESS). Before, the copy stored REVOKED 'revoked' while the task ran on, which a client
    waiting for the result took as its end."""
    with revoked_while_running(redis_setup, "hold", "finished") as (app, worker, release, seen,
                                                                    result):
        app.send_task("hold", args=["copy"], task_id=result.id)
        turn_until(worker, lambda: len(seen.received) == 2
                   and seen.received[1].id not in worker.jobs)
        assert app.backend.get_task_meta(result.id)["status"] != states.REVOKED
        release.set()
        turn_until(worker, finished(app, result.id))
        assert (result.state, result.get(timeout=5)) == (states.SUCCESS, "finished")
        assert [r["tag"] for r in redis_setup.records("ran")] == ["finished"]


@pytest.mark.timeout(60)
def test_a_terminated_task_still_waiting_for_a_slot_never_runs(redis_setup: Setup):
    """Terminate of a task the worker holds but has not started (its one slot is busy): it is
    never started, stored REVOKED, and the reply names it."""
    with worker_in_process(redis_setup, "threads") as (app, worker, release):
        busy = app.send_task("hold", args=["busy"])
        waiting = app.send_task("note", args=["never"])
        turn_until(worker, lambda: any(j.task_id == waiting.id for j in worker.reserved))
        assert terminate(worker, waiting.id) == {"ok": f"terminate: {waiting.id}"}
        release.set()
        turn_until(worker, lambda: finished(app, busy.id)() and finished(app, waiting.id)())
        assert busy.get(timeout=5) == "busy"
        assert waiting.state == states.REVOKED
        assert [r["tag"] for r in redis_setup.records("ran")] == ["busy"]


@contextmanager
def revoked_while_running(setup: Setup, task: str, tag: str
                          ) -> Iterator[tuple[App, Worker, threading.Event, Seen, Any]]:
    """A threads worker (two slots) in this process, told what it receives (``Seen``), whose
    running ``task`` (sent with ``tag``) was revoked without terminate: (app, worker, release,
    seen, the task's result)."""
    with worker_in_process(setup, "threads", concurrency=2) as (app, worker, release):
        seen = Seen()
        worker.hooks.add(seen)
        result = app.send_task(task, args=[tag])
        turn_until(worker, lambda: bool(setup.records("ran")))
        control.call(worker, "revoke", {"task_id": result.id})
        yield app, worker, release, seen, result


@contextmanager
def revoked_try_with_its_retry_held(setup: Setup) -> Iterator[tuple[Worker, Seen, Any]]:
    """A threads worker in this process whose running ``retrier`` try was revoked (a plain
    revoke) and has sent its retry message (same id, one retry more), which the worker has
    received while the try still runs (held in its ``on_retry`` until :data:`LINGER`)."""
    with revoked_while_running(setup, "retrier", "first") as (_, worker, release, seen, result):
        release.set()
        turn_until(worker, lambda: len(seen.received) == 2)  # the retry, while the try runs
        yield worker, seen, result


@pytest.mark.timeout(60)
def test_a_revoked_task_whose_running_try_retries_ends_revoked(redis_setup: Setup):
    """A plain revoke of a running task that then calls ``self.retry()``: the retry message
    (same id, one retry more) arrives while the try still runs (its ``on_retry``). It is not a
    copy of the running task: once the try ends (RETRY stored), the retry is refused, stored
    REVOKED and reported. Before, it was dropped as a copy, so the task stayed RETRY for ever
    and ``result.get()`` never returned."""
    with revoked_try_with_its_retry_held(redis_setup) as (worker, seen, result):
        assert result.id in {job.task_id for job in worker.active.values()}
        LINGER.set()
        turn_until(worker, lambda: not worker.active and not worker.jobs)
        assert result.state == states.REVOKED
        assert isinstance(result.get(timeout=5, propagate=False), TaskRevokedError)
        assert seen.calls == ["started", "revoked"]
        assert [r["tag"] for r in redis_setup.records("ran")] == ["first"]


@pytest.mark.timeout(60)
def test_a_task_revoked_on_its_way_to_the_pool_is_not_reported_started(redis_setup: Setup):
    """A task revoked after the gate let it through and before the pool took it never runs:
    the worker reports it revoked, never started (no task-started event, not counted in the
    stats' totals). Before, it was reported started, then revoked."""
    with worker_in_process(redis_setup, "threads") as (app, worker, _):
        seen = Seen()
        worker.hooks.add(seen)
        result = app.send_task("note", args=["never"])
        next_batch = worker._next_batch

        def batch_then_terminate() -> list[Job]:
            batch = next_batch()
            if batch and not seen.calls:
                terminate(worker, result.id)
            return batch
        worker._next_batch = batch_then_terminate  # type: ignore[method-assign]
        turn_until(worker, finished(app, result.id))
        assert result.state == states.REVOKED
        assert seen.calls == ["revoked"]
        assert dict(worker.total) == {}


@pytest.mark.timeout(60)
def test_a_revoked_tasks_held_retry_goes_back_to_its_queue_when_the_worker_stops(
        redis_setup: Setup):
    """The retry message a revoked task's running try sent, held until the try ends, is given
    back to its queue unrun when the worker stops meanwhile (as every message it holds and has
    not started): another worker refuses it then. Before, it was acked and dropped."""
    with revoked_try_with_its_retry_held(redis_setup) as (worker, _, result):
        worker.shutdown.put_back_waiting()
        assert not worker.jobs.keys() - {job.id for job in worker.active.values()}
        queued = [json.loads(raw) for raw in
                  redis.Redis.from_url(redis_setup.broker).lrange(redis_setup.queue, 0, -1)]
        assert [(m["headers"]["id"], m["headers"]["retries"]) for m in queued] == [
            (result.id, 1)]


class _SlowOnRetry(Task):
    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                 einfo: Any) -> None:
        time.sleep(5)  # the try runs on while the connection is lost and made again


def turn_through_losses(worker: Worker) -> None:
    """One turn of the worker; a lost connection is handled as ``Worker._loop`` does."""
    try:
        worker._turn()
    except worker.consumer.errors as exc:
        worker._on_connection_lost(exc)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("revoked", [True, False])
@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_retry_message_rabbitmq_gives_back_on_a_reconnection_is_not_taken_for_its_try(
        amqp_setup: Setup, pool: str, revoked: bool):
    """A task's retry message (same id, one retry more) arrives while its try still runs (its
    ``on_retry``), then the connection is lost: RabbitMQ delivers the retry again once the
    worker has reconnected. It is not a redelivery of the running try: a revoked task's retry
    is held and refused after the try (REVOKED), another's runs. Before, it was adopted as the
    running try's delivery and acked, so the retry was lost and the task stayed RETRY."""
    records = redis.Redis.from_url(REDIS_URL)
    app = App("revoke", broker=amqp_setup.broker, backend=REDIS_URL,
              task_default_queue=amqp_setup.queue, worker_prefetch_multiplier=1,
              task_acks_late=False)

    @app.task(name="retrier", bind=True, base=_SlowOnRetry, max_retries=1)
    def retrier(self: Task, tag: str) -> str:
        records.rpush(f"{amqp_setup.queue}:ran", json.dumps({"retries": self.request.retries}))
        if self.request.retries:
            return tag
        time.sleep(1)
        raise self.retry(countdown=0)

    worker = Worker(app, pool=pool, concurrency=1, heartbeat=False, send_events=False,
                    hostname=f"revoke-{amqp_setup.queue}@test")
    worker.pool.start()
    worker.consumer.connect(worker.prefetch_target())
    worker._on_connected()
    try:
        seen = Seen()
        worker.hooks.add(seen)
        result = app.send_task("retrier", args=["again"])
        turn_until(worker, lambda: bool(amqp_setup.records("ran")))
        if revoked:
            control.call(worker, "revoke", {"task_id": result.id})
        turn_until(worker, lambda: len(seen.received) == 2)  # the retry, while the try runs
        assert result.id in {job.task_id for job in worker.active.values()}
        worker.consumer.connection.connection.sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + 60
        while not (finished(app, result.id)() and not worker.active and not worker.jobs):
            assert time.monotonic() < deadline, (result.state, amqp_setup.records("ran"))
            turn_through_losses(worker)
        ran = [r["retries"] for r in amqp_setup.records("ran")]
        if revoked:
            assert (result.state, ran) == (states.REVOKED, [0])
            assert seen.calls[-1] == "revoked"
        else:
            assert (result.state, result.get(timeout=5), ran) == (states.SUCCESS, "again", [0, 1])
    finally:
        worker.pool.stop()
        worker.consumer.close()
        app.close()
