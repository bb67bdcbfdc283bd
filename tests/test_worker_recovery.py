"""Nothing is lost: warm and cold shutdown, a SIGKILLed worker, broker restarts mid-run."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.rabbit_node import rabbit_node

from .redis_server import redis_server, spare_port
from .worker_helpers import (  # noqa: F401 - fixtures
    REDIS_URL,
    Setup,
    make_setup,
    redis_setup,
    sqlite_setup,
    wait_for,
)

#: A visibility timeout that lets the next worker give back a SIGKILLed worker's deliveries
#: within seconds: the killed group takes its liveness helper along, so its ``alive`` key lasts
#: the visibility timeout (the worker's default, 60 s, was most of these tests' time).
DEAD_SOON = {"visibility_timeout": 4}
#: Seconds task B runs in the solo worker tests: long enough that its worker is killed while it
#: runs (the test kills it once B has started); the next worker runs it whole.
B_RUNS = 3


def _tags(setup: Setup, kind: str = "mark") -> list:
    return [r["tag"] for r in setup.records(kind)]


@pytest.mark.timeout(120)
def test_warm_shutdown_finishes_running_tasks_and_requeues_prefetched_ones(redis_setup: Setup):
    app = redis_setup.app()
    with redis_setup.worker("-P", "prefork", "-c", "1") as proc:
        app.send_task("tasks.slow", args=[2, "running"])
        for i in range(5):
            app.send_task("tasks.mark", args=[i], countdown=0)
        redis_setup.wait_records("started", 1)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log = proc.log_path.read_text()
    assert "Warm shutdown" in log and "Requeued" in log
    assert _tags(redis_setup, "done") == ["running"]
    assert _tags(redis_setup) == []
    with redis_setup.worker("-P", "solo", name="second"):
        assert wait_for(lambda: len(_tags(redis_setup)) == 5, 30)
    assert sorted(_tags(redis_setup)) == [0, 1, 2, 3, 4]
    app.close()


@pytest.mark.timeout(120)
def test_cold_shutdown_requeues_the_running_task(redis_setup: Setup):
    app = redis_setup.app()
    with redis_setup.worker("-P", "prefork", "-c", "1") as proc:
        result = app.send_task("tasks.slow", args=[3, "cold"])
        redis_setup.wait_records("started", 1)
        os.kill(proc.pid, signal.SIGQUIT)
        proc.wait(10)
        assert "Cold shutdown" in proc.log_path.read_text()
    assert _tags(redis_setup, "done") == []
    with redis_setup.worker("-P", "prefork", "-c", "1", name="second"):
        assert result.get(timeout=30) == "cold"
    assert _tags(redis_setup, "done") == ["cold"]
    app.close()


@pytest.mark.timeout(240)
def test_sigkill_of_the_whole_worker_with_1000_tasks_queued_loses_none(redis_setup: Setup):
    redis_setup.conf["broker_transport_options"] = DEAD_SOON
    app = redis_setup.app()
    with app.producer():
        pass
    for i in range(1000):
        app.send_task("tasks.mark", args=[i], ignore_result=True)
    with redis_setup.worker("-P", "prefork", "-c", "2", "--prefetch-multiplier", "10") as proc:
        assert wait_for(lambda: len(redis_setup.records("mark")) >= 100, 60)
        os.killpg(proc.pid, signal.SIGKILL)
    done_before = len(set(_tags(redis_setup)))
    assert done_before < 1000
    with redis_setup.worker("-P", "prefork", "-c", "2", name="second"):
        assert wait_for(lambda: len(set(_tags(redis_setup))) == 1000, 120)
    assert set(_tags(redis_setup)) == set(range(1000))  # lost = 0
    app.close()


@pytest.mark.timeout(240)
def test_broker_restart_mid_run_on_redis(tmp_path, unique, redis_url):
    port = spare_port()
    data = tmp_path / "redis-data"
    data.mkdir()
    setup = make_setup(tmp_path, f"qw-{unique}", f"redis://127.0.0.1:{port}/0", REDIS_URL)
    server = redis_server(data, port)
    server.__enter__()
    try:
        app = setup.app()
        for i in range(300):
            app.send_task("tasks.slow", args=[0.02, i])
        app.close()
        with setup.worker("-P", "prefork", "-c", "2") as worker:
            assert wait_for(lambda: len(setup.records("done")) >= 30, 60)
            server.__exit__(None, None, None)
            time.sleep(2)
            server = redis_server(data, port)
            server.__enter__()
            assert wait_for(lambda: len(set(_tags(setup, "done"))) == 300, 120), \
                worker.log_path.read_text()[-3000:]
            log = worker.log_path.read_text()
        assert "Broker connection lost" in log and "Reconnected" in log
        assert set(_tags(setup, "done")) == set(range(300))
    finally:
        server.__exit__(None, None, None)
        setup.cleanup()


@pytest.mark.timeout(300)
def test_broker_restart_mid_run_on_rabbitmq(tmp_path, unique):
    """On a RabbitMQ node of the test's own: restarting the shared one would break every other
    test talking to it at the same time."""
    with rabbit_node() as node:
        setup = make_setup(tmp_path, f"qw-{unique}", node.url, REDIS_URL)
        try:
            app = setup.app()
            for i in range(300):
                app.send_task("tasks.slow", args=[0.02, i])
            app.close()
            with setup.worker("-P", "prefork", "-c", "2") as worker:
                assert wait_for(lambda: len(setup.records("done")) >= 30, 60)
                node.restart()
                assert wait_for(lambda: len(set(_tags(setup, "done"))) == 300, 120), \
                    worker.log_path.read_text()[-3000:]
                log = worker.log_path.read_text()
            done = set(_tags(setup, "done"))
        finally:
            setup.cleanup()
    assert "Broker connection lost" in log and "Reconnected" in log
    assert done == set(range(300))


@pytest.mark.timeout(90)
def test_a_task_held_past_the_visibility_timeout_on_sqlite_runs_once(sqlite_setup: Setup):
    """The lease thread renews what a worker holds on the embedded broker too: a task running
    three times the visibility timeout is not delivered to the other worker meanwhile."""
    sqlite_setup.conf["broker_transport_options"] = {"visibility_timeout": 1}
    with sqlite_setup.worker("-P", "threads", "-c", "2", name="a"), \
            sqlite_setup.worker("-P", "threads", "-c", "2", name="b"):
        app = sqlite_setup.app()
        assert app.send_task("tasks.slow", args=[3, "long"]).get(timeout=30) == "long"
        time.sleep(1.5)
        app.close()
    assert [r["tag"] for r in sqlite_setup.records("started")] == ["long"]


@pytest.mark.timeout(120)
def test_what_a_busy_solo_worker_claimed_on_sqlite_is_not_run_by_another_worker_too(
        sqlite_setup: Setup):
    """A solo worker claims the next messages with the call before its task and delivers them
    after it: its lease thread renews them meanwhile, so the other worker does not take them
    when the visibility timeout passes (it ran them, and then the first worker ran them too)."""
    sqlite_setup.conf["broker_transport_options"] = {"visibility_timeout": 2}
    app = sqlite_setup.app()
    with sqlite_setup.worker("-P", "solo", name="a"):
        # All at once to the idle worker: its wait takes the long task and claims the others
        # ahead, and the call before the long task moves them to its fetch, read after it.
        with app.sending_batch():
            app.send_task("tasks.slow", args=[6, "long"])
            for i in range(3):
                app.send_task("tasks.mark", args=[i])
        app.close()
        (long,) = sqlite_setup.wait_records("started", 1)
        with sqlite_setup.worker("-P", "solo", name="b"):
            assert wait_for(lambda: len(_tags(sqlite_setup)) >= 3, 60)
    marks = sqlite_setup.records("mark")
    assert sorted(r["tag"] for r in marks) == [0, 1, 2]
    assert {r["pid"] for r in marks} == {long["pid"]}


@pytest.mark.timeout(120)
def test_soft_shutdown_lets_the_running_task_finish_before_a_cold_shutdown(redis_setup: Setup):
    """``worker_soft_shutdown_timeout``: SIGQUIT still stops the worker, after the running task
    finished (Celery's soft shutdown) instead of requeueing it."""
    redis_setup.conf["worker_soft_shutdown_timeout"] = 20
    app = redis_setup.app()
    with redis_setup.worker("-P", "prefork", "-c", "1") as proc:
        result = app.send_task("tasks.slow", args=[2, "soft"])
        redis_setup.wait_records("started", 1)
        os.kill(proc.pid, signal.SIGQUIT)
        proc.wait(30)
        assert "Soft shutdown" in proc.log_path.read_text()
    assert _tags(redis_setup, "done") == ["soft"]
    assert result.get(timeout=10) == "soft"
    app.close()


@pytest.mark.timeout(90)
def test_without_reject_on_worker_lost_a_task_whose_child_died_fails_once(redis_setup: Setup):
    """``task_reject_on_worker_lost = false`` (Celery's default): FAILURE with WorkerLostError,
    and the task is not delivered again."""
    from qtui.core.exceptions import WorkerLostError

    redis_setup.conf["task_reject_on_worker_lost"] = False
    app = redis_setup.app()
    with redis_setup.worker("-P", "prefork", "-c", "1"):
        result = app.send_task("tasks.die_once", args=["lost"])
        assert isinstance(result.get(timeout=30, propagate=False), WorkerLostError)
        assert app.send_task("tasks.add", args=[1, 1]).get(timeout=30) == 2
    assert len(redis_setup.records("die_once")) == 1
    app.close()


@pytest.mark.timeout(180)
def test_a_finished_task_is_not_run_again_when_its_solo_worker_dies_in_the_next(
        tmp_path, unique, redis_url):
    """A solo worker finishes A, then dies (SIGKILL) while B runs: A's ack was in Redis before B
    started, so the next worker runs B again (its worker died running it) and A never. No result
    backend: nothing else would tell a second run of A from the first."""
    setup = make_setup(tmp_path, f"qw-{unique}", redis_url, None, task_acks_late=True,
                       broker_transport_options=DEAD_SOON)
    try:
        app = setup.app()
        app.send_task("tasks.mark", args=["A"])
        app.send_task("tasks.slow", args=[B_RUNS, "B"])
        app.close()
        with setup.worker("-P", "solo") as proc:
            assert setup.wait_records("started", 1), proc.log_path.read_text()[-3000:]
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        assert [r["tag"] for r in setup.records("mark")] == ["A"]
        with setup.worker("-P", "solo", name="second") as proc:
            assert wait_for(lambda: setup.records("done"), 90), proc.log_path.read_text()[-3000:]
            time.sleep(1)  # what else it would run again is queued ahead of B or beside it
        assert [r["tag"] for r in setup.records("mark")] == ["A"]
    finally:
        setup.cleanup()


@pytest.mark.timeout(120)
def test_a_finished_task_is_not_run_again_when_its_solo_worker_dies_in_the_next_with_more_queued(
        tmp_path, unique, redis_url):
    """As above with tasks queued behind B, so that B starts in a turn that takes nothing (the
    prefetch window is full): A's ack still reaches Redis before B starts."""
    setup = make_setup(tmp_path, f"qw-{unique}", redis_url, None, task_acks_late=True,
                       broker_transport_options=DEAD_SOON)
    try:
        app = setup.app()
        app.send_task("tasks.mark", args=["A"])
        app.send_task("tasks.slow", args=[B_RUNS, "B"])
        for tag in "CDEFG":
            app.send_task("tasks.mark", args=[tag])
        app.close()
        with setup.worker("-P", "solo") as proc:
            assert setup.wait_records("started", 1), proc.log_path.read_text()[-3000:]
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        assert _tags(setup) == ["A"]
        with setup.worker("-P", "solo", name="second") as proc:
            assert wait_for(lambda: len(_tags(setup)) >= 6, 90), proc.log_path.read_text()[-3000:]
            time.sleep(1)  # what else it would run again is queued ahead of B or beside it
        assert sorted(_tags(setup)) == ["A", "C", "D", "E", "F", "G"]
    finally:
        setup.cleanup()
