"""The worker against a Redis of the test's own that answers with error replies for a while
(READONLY after a failover, OOM at maxmemory, MISCONF after a failed save, BUSY under a long
script) while tasks run: the worker stays up and says what it waits for, every task runs once,
its result is stored, and nothing is left behind."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from kombu.exceptions import OperationalError

from qtui.core import App, sending, states
from qtui.core.brokers.redis import channel as redis_channel
from qtui.core.brokers.redis.refusals import describe, refusal_code
from qtui.core.canvas import Signature
from qtui.core.exceptions import BackendError
from qtui.core.protocol import TaskMessage
from qtui.workers import canvas
from qtui.workers.execution import Outcome
from qtui.workers.job import Job
from qtui.workers.settlement import Settlement
from qtui.workers.shutdown import Shutdown

from .redis_server import listening, redis_server, spare_port
from .worker_helpers import Setup, make_setup, wait_for

NO_MASTER = 1
"""The port of the missing master a refusing server replicates: a privileged port nothing
listens on (checked), where a merely free port could be taken meanwhile by another test's
redis-server, whose data the replica would then copy over its own."""

REFUSAL = 1.5
"""Seconds each refusal lasts in the worker runs: past a task and an ack or fetch."""


@pytest.fixture
def own_redis(tmp_path) -> Iterator[tuple[int, Path]]:
    port = spare_port()
    data = tmp_path / "redis-data"
    data.mkdir()
    with redis_server(data, port, durable=False):
        yield port, data


@contextmanager
def readonly(client: redis.Redis, data: Path) -> Iterator[None]:
    """A replica of a master that is not there (as after a failover): its data stays."""
    assert not listening(NO_MASTER)
    client.execute_command("REPLICAOF", "127.0.0.1", str(NO_MASTER))
    try:
        yield
    finally:
        client.execute_command("REPLICAOF", "NO", "ONE")


@contextmanager
def master_down(client: redis.Redis, data: Path) -> Iterator[None]:
    """A replica whose master is not there, told not to serve stale data: it refuses reads too."""
    client.config_set("replica-serve-stale-data", "no")
    try:
        with readonly(client, data):
            yield
    finally:
        client.config_set("replica-serve-stale-data", "yes")


@contextmanager
def out_of_memory(client: redis.Redis, data: Path) -> Iterator[None]:
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)
    try:
        yield
    finally:
        client.config_set("maxmemory", 0)


@contextmanager
def failed_save(client: redis.Redis, data: Path) -> Iterator[None]:
    """A background save that fails (its directory is gone) with stop-writes-on-bgsave-error
    (which Redis applies only where save points are set)."""
    client.config_set("save", "3600 1")
    client.config_set("stop-writes-on-bgsave-error", "yes")
    data.rmdir()  # the server's working directory: the save cannot create its file
    client.bgsave()
    assert wait_for(lambda: client.info("persistence")["rdb_last_bgsave_status"] == "err", 10)
    try:
        yield
    finally:
        client.config_set("stop-writes-on-bgsave-error", "no")
        client.config_set("save", "")


@contextmanager
def busy_script(client: redis.Redis, data: Path) -> Iterator[None]:
    """A script that runs for :data:`REFUSAL` seconds, past a busy threshold of 0.1 s: every
    command is BUSY."""
    client.config_set("busy-reply-threshold", 100)
    loop = ("local t = redis.call('TIME') repeat local n = redis.call('TIME') "
            f"until (n[1] - t[1]) * 1000000 + (n[2] - t[2]) > {int(REFUSAL * 1e6)}")
    runner = threading.Thread(target=client.eval, args=(loop, 0))
    runner.start()
    try:
        yield
    finally:
        runner.join(10)


FAULTS: dict[str, tuple[Callable[[redis.Redis, Path], object], str]] = {
    "READONLY": (readonly, "Redis refused writes (READONLY"),
    "OOM": (out_of_memory, "Redis refused writes (OOM"),
    "MISCONF": (failed_save, "Redis refused writes (MISCONF"),
    "BUSY": (busy_script, "Redis refused commands (BUSY"),
    "MASTERDOWN": (master_down, "Redis refused commands (MASTERDOWN"),
}


def _run_through(tmp_path, unique, port: int, data: Path, kinds: list[str], *pool: str,
                 results: str | None = None) -> str:
    """For each kind in turn: send four half-second tasks and refuse for :data:`REFUSAL` seconds
    while the first runs. Then check that the worker is alive and warned of each kind, each
    task ran once with its result stored, and nothing is left in the queue, the unacked
    records or the dead-letter queue. ``results``: where results go (the private Redis's
    db 1 unless set elsewhere, so that only fetches and acks meet the refusal). Returns the
    worker's log."""
    broker = f"redis://127.0.0.1:{port}/0"
    setup = make_setup(tmp_path, f"qw-{unique}", broker,
                       results or f"redis://127.0.0.1:{port}/1")
    client = redis.Redis(port=port)
    app = setup.app()
    ids: list[str] = []
    try:
        with setup.worker(*pool, "--prefetch-multiplier", "1") as worker:
            for turn, kind in enumerate(kinds):
                ids += [app.send_task("tasks.slow", args=[0.5, 10 * turn + i]).id
                        for i in range(4)]
                assert wait_for(lambda: len(setup.records("started")) > 4 * turn, 30)
                refuse, _ = FAULTS[kind]
                with refuse(client, data):  # type: ignore[operator]
                    time.sleep(REFUSAL)
                assert wait_for(lambda: len(setup.records("done")) >= 4 * (turn + 1), 60), \
                    worker.log_path.read_text()[-3000:]
            time.sleep(1.0)  # a task run twice would show now
            log = worker.log_path.read_text()
            assert worker.poll() is None, log[-3000:]
        tags = sorted(r["tag"] for r in setup.records("done"))
        assert tags == sorted(10 * turn + i for turn in range(len(kinds)) for i in range(4)), \
            log[-3000:]
        assert all(app.backend.get_task_meta(task_id)["status"] == states.SUCCESS
                   for task_id in ids), log[-4000:]
        assert [kind for kind in kinds if FAULTS[kind][1] not in log] == [], log[-3000:]
        # Told as what it is, once: not as a lost connection, nor at every try.
        assert "Broker connection lost" not in log and "Cannot connect" not in log, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
        assert client.llen(setup.queue) == 0 and client.hlen("unacked") == 0
        assert client.llen(f"{setup.queue}.dead") == 0
        return log
    finally:
        app.close()
        for undo in (lambda: client.config_set("maxmemory", 0),
                     lambda: client.execute_command("REPLICAOF", "NO", "ONE")):
            try:
                undo()
            except redis.RedisError:
                pass
        setup.cleanup()


@pytest.mark.timeout(180)
def test_a_threads_worker_waits_out_every_kind_of_refusal_and_loses_no_task_nor_result(
        tmp_path, unique, own_redis):
    port, data = own_redis
    # MISCONF last: it removes the server's working directory.
    _run_through(tmp_path, unique, port, data, ["READONLY", "OOM", "BUSY", "MASTERDOWN",
                                                "MISCONF"], "-P", "threads", "-c", "2")


@pytest.mark.timeout(120)
def test_a_solo_worker_whose_fetches_and_acks_redis_refuses_reconnects_and_loses_nothing(
        tmp_path, unique, own_redis):
    """Results in SQLite: what meets the refusal is the consumer's fetch and ack."""
    port, data = own_redis
    log = _run_through(tmp_path, unique, port, data, ["READONLY", "OOM"], "-P", "solo",
                       results=f"sqlite://{tmp_path / 'results.sqlite'}")
    reconnecting = [line for line in log.splitlines() if "Reconnecting" in line]
    assert [kind for kind in ("READONLY", "OOM")
            if not any(f"Redis refused writes ({kind}" in line for line in reconnecting)] == [], \
        log[-3000:]


@pytest.mark.timeout(120)
def test_a_prefork_worker_with_late_acks_waits_out_refused_writes(tmp_path, unique, own_redis):
    port, data = own_redis
    _run_through(tmp_path, unique, port, data, ["READONLY", "OOM"], "-P", "prefork", "-c", "2")


def test_an_error_reply_that_is_no_refusal_is_not_told_as_one(own_redis):
    port, _ = own_redis
    client = redis.Redis(port=port)
    client.set("a-string", "x")
    with pytest.raises(redis.ResponseError) as wrong_type:
        client.lpush("a-string", "y")
    assert (refusal_code(wrong_type.value), describe(wrong_type.value)) == (None, None)


def test_a_refusal_inside_a_pipeline_error_is_told_by_its_code(own_redis):
    port, _ = own_redis
    client = redis.Redis(port=port)
    with out_of_memory(client, Path()):
        with pytest.raises(redis.RedisError) as refused:
            client.pipeline().set("b", "y").execute()  # the pipeline's wording around it
    assert describe(refused.value).startswith("Redis refused writes (OOM: maxmemory")


def test_a_refusal_redis_py_has_no_class_for_is_told_by_its_code():
    assert refusal_code(redis.ResponseError("MISCONF Redis is configured to save")) == "MISCONF"


def test_a_lost_connection_is_not_a_refusal():
    assert refusal_code(redis.ConnectionError("Connection refused")) is None


def test_a_refusal_kombu_raised_as_the_cause_of_its_own_error_is_told():
    try:
        raise OperationalError("BUSY Redis is busy") from redis.ResponseError("BUSY Redis is")
    except OperationalError as wrapped:
        assert refusal_code(wrapped) == "BUSY"


def test_a_kombu_error_without_a_redis_cause_is_not_a_refusal():
    assert refusal_code(OperationalError("READONLY")) is None


def test_a_result_write_refused_for_a_while_is_stored_once_writes_come_back(own_redis,
                                                                            caplog):
    port, data = own_redis
    client = redis.Redis(port=port)
    app = App("refused", broker="memory://", backend=f"redis://127.0.0.1:{port}/1")
    with readonly(client, data):
        lift = threading.Timer(1.0, client.execute_command, args=("REPLICAOF", "NO", "ONE"))
        lift.start()
        with caplog.at_level(logging.WARNING, logger="qtui.backend"):
            app.backend.store_result("t-1", 42, states.SUCCESS)
        lift.join()
    assert app.backend.get_task_meta("t-1")["result"] == 42
    assert [r.getMessage() for r in caplog.records] == [
        "Redis refused writes (READONLY: the server is a read-only replica, as after a "
        "failover): the result of task t-1 is written again until it is taken"]
    app.close()


def test_a_result_write_refused_past_result_backend_max_retries_fails(
        own_redis):
    port, data = own_redis
    client = redis.Redis(port=port)
    app = App("refused", broker="memory://", backend=f"redis://127.0.0.1:{port}/1")
    app.conf.result_backend_max_retries = 2
    with readonly(client, data), pytest.raises(BackendError, match="cannot store the result "
                                               "of task t-2 in Redis: Redis refused writes "
                                               r"\(READONLY: .*\): You can't write"):
        app.backend.store_result("t-2", 42, states.SUCCESS)
    app.close()


def test_a_chain_step_the_broker_refuses_for_a_while_is_sent_once_writes_come_back(
        own_redis, caplog):
    port, data = own_redis
    client = redis.Redis(port=port)
    app = App("refused", broker=f"redis://127.0.0.1:{port}/0")
    step = {"task": "tasks.add", "args": [1], "kwargs": {}, "options": {"queue": "next"}}
    message = TaskMessage(id="t-3", task="tasks.add", chain=[step])
    outcome = Outcome(job_id=1, state=states.SUCCESS, runtime=0.1)
    with readonly(client, data):
        lift = threading.Timer(1.0, client.execute_command, args=("REPLICAOF", "NO", "ONE"))
        lift.start()
        with caplog.at_level(logging.WARNING, logger="qtui.worker"):
            value = canvas.before_store(app, message, outcome, 2)
        lift.join()
    assert (value, outcome.state, outcome.dead_letter) == (2, states.SUCCESS, None)
    assert client.llen("next") == 1
    assert [r.getMessage() for r in caplog.records] == [
        "Redis refused writes (READONLY: the server is a read-only replica, as after a "
        "failover): what follows task t-3 is sent again until the broker takes it"]
    app.close()


def test_a_chain_step_whose_queue_bind_is_refused_once_goes_out_on_the_reconnected_channel(
        own_redis, monkeypatch):
    """READONLY ends between kombu's two tries of the step's queue declaration (the first
    refused bind lifts it here; under load the lift's timer can land there): kombu connected
    again for the second try, and the step goes out on that connection's channel, not on the
    one the reconnect closed."""
    port, data = own_redis
    client = redis.Redis(port=port)
    bind = redis_channel.Channel._queue_bind
    refused: list[str] = []

    def refused_once(channel: redis_channel.Channel, *args: Any) -> Any:
        try:
            return bind(channel, *args)
        except redis.exceptions.ReadOnlyError as exc:
            refused.append(str(exc))
            client.execute_command("REPLICAOF", "NO", "ONE")
            raise

    monkeypatch.setattr(redis_channel.Channel, "_queue_bind", refused_once)
    app = App("refused", broker=f"redis://127.0.0.1:{port}/0")
    step = {"task": "tasks.add", "args": [1], "kwargs": {}, "options": {"queue": "next"}}
    message = TaskMessage(id="t-4", task="tasks.add", chain=[step])
    outcome = Outcome(job_id=1, state=states.SUCCESS, runtime=0.1)
    with readonly(client, data):
        value = canvas.before_store(app, message, outcome, 2)
    assert len(refused) == 1
    assert (value, outcome.state, outcome.dead_letter) == (2, states.SUCCESS, None)
    assert client.llen("next") == 1
    app.close()


def test_a_chord_body_the_broker_refuses_for_a_while_is_sent_once_writes_come_back(
        own_redis, tmp_path, caplog):
    """The part that completes a chord sends its body as a chain step is sent: again until
    the broker takes it (the join is over once the part is counted: a body not sent then
    would fail the chord)."""
    port, data = own_redis
    client = redis.Redis(port=port)
    app = App("refused", broker=f"redis://127.0.0.1:{port}/0",
              backend=f"sqlite://{tmp_path / 'results.sqlite'}")
    body = {"task": "tasks.collect", "args": [], "kwargs": {}, "subtask_type": None,
            "immutable": False, "options": {"task_id": "body-1", "queue": "bodies"}}
    message = TaskMessage(id="part-0", task="tasks.add", group="g-1", group_index=0, chord=body)
    outcome = Outcome(job_id=1, state=states.SUCCESS, runtime=0.1)
    app.backend.set_chord_size("g-1", 1)
    with readonly(client, data):
        lift = threading.Timer(1.0, client.execute_command, args=("REPLICAOF", "NO", "ONE"))
        lift.start()
        with caplog.at_level(logging.WARNING, logger="qtui.worker"):
            canvas.after_store(app, message, outcome, 2)
        lift.join()
    assert (outcome.state, outcome.dead_letter) == (states.SUCCESS, None)
    assert client.llen("bodies") == 1
    assert app.backend.get_task_meta("body-1")["status"] == states.PENDING
    assert [r.getMessage() for r in caplog.records] == [
        "Redis refused writes (READONLY: the server is a read-only replica, as after a "
        "failover): what follows task part-0 is sent again until the broker takes it"]
    app.close()


def _all_succeeded(port: int, ids: list[str]) -> bool:
    """Whether each task's SUCCESS is stored on the test's Redis (db 1)."""
    stored = [redis.Redis(port=port, db=1).get(f"celery-task-meta-{i}") for i in ids]
    return all(b'"SUCCESS"' in (meta or b"") for meta in stored)


@pytest.mark.timeout(120)
def test_a_worker_fetches_no_task_while_a_result_write_waits_out_a_refusal(tmp_path, unique,
                                                                          own_redis):
    port, data = own_redis
    results = f"redis://127.0.0.1:{port}/1"
    client = redis.Redis(port=port)
    with make_setup(tmp_path, f"qw-{unique}", f"sqlite://{tmp_path / 'broker.db'}",
                    results) as setup:
        app = setup.app()
        ids = [app.send_task("tasks.slow", args=[0.5, i]).id for i in range(4)]
        app.close()
        with readonly(client, data), \
                setup.worker("-P", "threads", "-c", "1", "--prefetch-multiplier", "1") as worker:
            told = "no new task is fetched while a result waits to be written"
            assert wait_for(lambda: told in worker.log_path.read_text(), 30), \
                worker.log_path.read_text()[-3000:]
            assert len(setup.records("started")) == 1, worker.log_path.read_text()[-3000:]
            client.execute_command("REPLICAOF", "NO", "ONE")
            assert wait_for(lambda: len(setup.records("done")) >= 4, 60), \
                worker.log_path.read_text()[-3000:]
        assert _all_succeeded(port, ids)


@pytest.mark.timeout(120)
def test_a_warm_shutdown_during_a_refusal_settles_what_ran_once_writes_come_back(
        tmp_path, unique, own_redis):
    """SIGTERM half a second into a READONLY that lasts three seconds, within the
    thirty-second grace (results in SQLite: the acks and the put-backs meet the refusal): each
    finished task is acked, the others go back to the queue."""
    port, data = own_redis
    broker = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis(port=port)
    with make_setup(tmp_path, f"qw-{unique}", broker,
                    f"sqlite://{tmp_path / 'results.sqlite'}") as setup:
        setup.send_slow(4, 1.0)
        with setup.worker("-P", "threads", "-c", "2", "--prefetch-multiplier", "2") as worker:
            assert wait_for(lambda: len(setup.records("started")) >= 2, 30)
            with readonly(client, data):
                time.sleep(0.5)
                worker.send_signal(signal.SIGTERM)
                time.sleep(3.0)
            worker.wait(60)
            log = worker.log_path.read_text()
        done = {r["tag"] for r in setup.records("done")}
        assert done and client.hlen("unacked") == 0, log[-3000:]
        assert client.llen(setup.queue) == 4 - len(done), log[-3000:]
        assert "Redis refused writes (READONLY" in log, log[-3000:]
        assert "Broker connection lost" not in log and "Broker unreachable" not in log, \
            log[-3000:]


@pytest.mark.parametrize("first", ["SIGTERM", "request"])
def test_a_warm_shutdown_asked_again_keeps_its_one_grace(first):
    """A SIGTERM, a second SIGTERM (cold) and ``shutdown`` commands: one grace timer, whose end
    a later request does not move."""
    backend = SimpleNamespace(stop_retrying=threading.Event())
    shutdown = Shutdown(SimpleNamespace(app=SimpleNamespace(backend=backend),
                                        pool_name="threads"), timeout=30.0)
    if first == "SIGTERM":
        shutdown._on_warm_signal(signal.SIGTERM, None)
    else:
        shutdown.request()
    deadline = shutdown.deadline
    shutdown.request()
    shutdown._on_warm_signal(signal.SIGTERM, None)
    shutdown.request(cold=True)
    timers = [t for t in threading.enumerate()
              if isinstance(t, threading.Timer) and t.function == shutdown._grace_over]
    assert (len(timers), shutdown.deadline, shutdown.cold) == (1, deadline, True)
    for timer in timers:
        timer.cancel()


class _Acting(logging.Handler):
    """Calls ``act`` at each record: what ends a refusal once the worker has met it."""

    def __init__(self, act: Callable[[], object]) -> None:
        super().__init__()
        self.act = act

    def emit(self, record: logging.LogRecord) -> None:
        self.act()


def _group(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"task": "celery.group", "subtask_type": "group", "args": (),
            "kwargs": {"tasks": tasks}, "options": {}}


def _continuations(parts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A group of ``parts`` as a task's link, as its next chain step, and as the header of a
    chord that is its next chain step."""
    body = {"task": "tasks.add", "args": [0], "kwargs": {}, "options": {"queue": "body"}}
    chord = {"task": "celery.chord", "subtask_type": "chord", "args": (), "options": {},
             "kwargs": {"header": _group(parts), "body": body}}
    return {"link": {"callbacks": [_group(parts)]}, "chain step": {"chain": [_group(parts)]},
            "chord": {"chain": [chord]}}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["link", "chain step", "chord"])
def test_a_group_refused_part_way_sends_each_task_once_when_writes_come_back(own_redis, kind,
                                                                             caplog):
    """Past the first batch of a send, Redis runs out of memory for a second (a batch of a
    thousand tasks takes about 1.2 MB stored, and its command as much while Redis reads it):
    the batch it took is not sent again, the rest is, each task under one id."""
    port, _data = own_redis
    client = redis.Redis(port=port)
    app = App("refused", broker=f"redis://127.0.0.1:{port}/0",
              backend=f"redis://127.0.0.1:{port}/1")
    count = 2 * sending.BATCH_SIZE
    parts = [{"task": "tasks.add", "args": [i], "kwargs": {}, "options": {"queue": "next"}}
             for i in range(count)]
    message = TaskMessage(id="t-5", task="tasks.add", **_continuations(parts)[kind])
    outcome = Outcome(job_id=1, state=states.SUCCESS, runtime=0.1)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", client.info("memory")["used_memory"] + 1_800_000)
    lift = _Acting(lambda: client.config_set("maxmemory", 0))  # at the refusal's warning
    logging.getLogger("qtui.worker").addHandler(lift)
    try:
        with caplog.at_level(logging.WARNING, logger="qtui.worker"):
            value = canvas.before_store(app, message, outcome, 2)
    finally:
        logging.getLogger("qtui.worker").removeHandler(lift)
    assert "Redis refused writes (OOM" in caplog.text
    ids = [json.loads(raw)["headers"]["id"] for raw in client.lrange("next", 0, -1)]
    assert (value, outcome.state) == (2, states.SUCCESS)
    assert (len(ids), len(set(ids))) == (count, count)
    app.close()


@pytest.mark.timeout(60)
def test_a_chain_step_refused_past_the_shutdown_grace_sends_the_task_back(own_redis, caplog):
    """The grace ends (the shutdown's timer sets ``stop_retrying``) while Redis still refuses
    the next step: one error names what was not sent, and the task is requeued, not failed nor
    dead-lettered, so it runs again and sends the step then."""
    port, data = own_redis
    client = redis.Redis(port=port)
    app = App("refused", broker=f"redis://127.0.0.1:{port}/0")
    step = {"task": "tasks.add", "args": [1], "kwargs": {}, "options": {"queue": "next",
                                                                         "task_id": "t-7"}}
    message = TaskMessage(id="t-6", task="tasks.add", chain=[step])
    outcome = Outcome(job_id=1, state=states.SUCCESS, runtime=0.1)
    with readonly(client, data):
        grace = threading.Timer(1.0, app.backend.stop_retrying.set)
        grace.start()
        with caplog.at_level(logging.ERROR, logger="qtui.worker"):
            canvas.before_store(app, message, outcome, 2)
        grace.join()
    assert (outcome.state, outcome.requeue, outcome.dead_letter) == (states.REJECTED, True,
                                                                    None)
    assert client.llen("next") == 0
    assert [r.getMessage() for r in caplog.records] == [
        "Task tasks.add[t-6]: Redis refused writes (READONLY: the server is a read-only "
        "replica, as after a failover) until the end of the shutdown grace: what follows task "
        "t-6 was not sent (t-7); the task will run again"]
    app.close()


@pytest.mark.timeout(180)
def test_a_warm_shutdown_gives_up_a_chain_step_refused_past_its_grace_and_loses_nothing(
        tmp_path, unique, own_redis):
    """SIGTERM while a task's chain step is refused, until the worker has stopped: the worker
    stops at its two-second grace, naming the step not sent; once Redis takes writes again,
    the next worker runs the task again and its step then."""
    setup, log = _stopped_during_a_chain_step_refusal(tmp_path, unique, own_redis,
                                                      task_acks_late=True)
    try:
        with setup.worker("-P", "threads", "-c", "1", name="again"):
            assert wait_for(lambda: setup.records("mark"), 120), log[-3000:]
        assert [r["tag"] for r in setup.records("done")] == ["a", "a"]
    finally:
        setup.cleanup()


def test_a_requeue_of_a_task_acked_early_dead_letters_it(caplog):
    """What follows it not sent by the end of the grace, a task acked before it ran cannot go
    back to its queue (kombu would refuse to ack its delivery twice; Celery's ``Reject`` needs
    acks_late): its message goes to the dead-letter queue, never dropped."""
    hooks = SimpleNamespace(on_task_rejected=lambda job, reason: None)
    consumer = SimpleNamespace(publisher=lambda: None, queue_type=None)
    settlement = Settlement(App("refused", broker="memory://"), consumer, {},
                            SimpleNamespace(settled=lambda key: None), hooks, 3)
    put_back: list[str] = []
    dead: list[tuple[str, str]] = []
    settlement.put_back = lambda queue, delivery, counted=None: put_back.append(queue)
    settlement.dead_letters = SimpleNamespace(
        send=lambda delivery, queue, reason: dead.append((queue, reason)))
    job = Job(TaskMessage(id="t-8", task="tasks.add"), delivery=None, queue="q", acked=True)
    outcome = Outcome(job_id=job.id, state=states.REJECTED, runtime=0.1, requeue=True,
                      exception="not sent")
    with caplog.at_level(logging.WARNING, logger="qtui.worker"):
        settlement.rejected_by_task(job, outcome)
    assert put_back == []
    assert dead == [("q", "rejected by the task: not sent")]
    assert "(dead-lettered: acknowledged before it ran, it cannot be requeued)" in caplog.text


def _stopped_during_a_chain_step_refusal(tmp_path, unique, own_redis, **conf: Any
                                         ) -> tuple[Setup, str]:
    """A worker with a two-second grace, stopped while Redis (out of memory: the connections
    stay up) refuses its chain step; its log names the step not sent, which has not run."""
    port, data = own_redis
    setup = make_setup(tmp_path, f"qw-{unique}", f"redis://127.0.0.1:{port}/0",
                       f"sqlite://{tmp_path / 'results.sqlite'}", worker_shutdown_timeout=2,
                       **conf)
    client = redis.Redis(port=port)
    try:
        app = setup.app()
        (Signature("tasks.slow", (1.0, "a"), app=app)
         | Signature("tasks.mark", ("b",), immutable=True, app=app)).apply_async()
        app.close()
        with setup.worker("-P", "threads", "-c", "1") as worker:
            assert wait_for(lambda: setup.records("started"), 30)
            with out_of_memory(client, data):
                told = "is sent again until the broker takes it"
                assert wait_for(lambda: told in worker.log_path.read_text(), 30), \
                    worker.log_path.read_text()[-3000:]
                worker.send_signal(signal.SIGTERM)
                worker.wait(60)
            log = worker.log_path.read_text()
        assert "until the end of the shutdown grace: what follows task" in log, log[-3000:]
        assert not setup.records("mark"), log[-3000:]
    except BaseException:
        setup.cleanup()
        raise
    return setup, log


@pytest.mark.timeout(150)
@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_worker_takes_no_task_sent_while_a_result_write_waits_out_a_refusal(
        tmp_path, unique, own_redis, pool):
    """A result write meets READONLY (on the results' server; the broker is another one, which
    takes writes): the worker -- a prefork child tells its parent -- takes none of the tasks
    sent meanwhile (prefetch 4; kombu's idle BRPOP included) until the write goes through."""
    port, data = own_redis
    broker_data = tmp_path / "broker-data"
    broker_data.mkdir()
    broker_port = spare_port()
    client = redis.Redis(port=port)
    with redis_server(broker_data, broker_port, durable=False):
        setup = make_setup(tmp_path, f"qw-{unique}", f"redis://127.0.0.1:{broker_port}/0",
                           f"redis://127.0.0.1:{port}/1")
        app = setup.app()
        try:
            with setup.worker("-P", pool, "-c", "1", "--prefetch-multiplier", "4") as worker:
                def received() -> int:
                    return worker.log_path.read_text().count("] received")

                with readonly(client, data):
                    ids = [app.send_task("tasks.slow", args=[0.1, 0]).id]
                    told = "no new task is fetched while a result waits to be written"
                    assert wait_for(lambda: told in worker.log_path.read_text(), 30), \
                        worker.log_path.read_text()[-3000:]
                    ids += [app.send_task("tasks.slow", args=[0.1, i]).id for i in range(1, 4)]
                    # Five seconds to take them, which a parent that fetched would use; an
                    # idle wait under way as the child spoke may take one.
                    assert not wait_for(lambda: received() > 2, 5), \
                        worker.log_path.read_text()[-3000:]
                assert wait_for(lambda: len(setup.records("done")) >= 4, 60), \
                    worker.log_path.read_text()[-3000:]
            assert _all_succeeded(port, ids)
        finally:
            app.close()
            setup.cleanup()
