"""The worker against a Redis of the test's own in trouble: refusing writes, gone while the
worker shuts down, and a warm shutdown that must not churn the queue."""

from __future__ import annotations

import signal
import time

import pytest
import redis

from .redis_server import redis_server, spare_port
from .worker_helpers import REDIS_URL, make_setup, wait_for


@pytest.fixture
def own_redis(tmp_path):
    port = spare_port()
    data = tmp_path / "redis-data"
    data.mkdir()
    with redis_server(data, port) as proc:
        yield port, proc


def _setup(tmp_path, unique, port):
    return make_setup(tmp_path, f"qw-{unique}", f"redis://127.0.0.1:{port}/0", REDIS_URL)


@pytest.mark.timeout(90)
def test_redis_refusing_writes_makes_the_worker_wait_not_die(tmp_path, unique, own_redis):
    port, _ = own_redis
    setup = _setup(tmp_path, unique, port)
    client = redis.Redis(port=port)
    try:
        setup.send_slow(40, 0.2)
        with setup.worker("-P", "threads", "-c", "2") as worker:
            assert wait_for(lambda: len(setup.records("done")) >= 5, 30)
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", 1)  # every write now answers OOM
            assert wait_for(lambda: "maxmemory" in worker.log_path.read_text(), 20), \
                worker.log_path.read_text()[-3000:]
            client.config_set("maxmemory", 0)
            assert wait_for(lambda: len({r["tag"] for r in setup.records("done")}) == 40, 40), \
                worker.log_path.read_text()[-3000:]
            assert worker.poll() is None
    finally:
        client.config_set("maxmemory", 0)
        setup.cleanup()


@pytest.mark.timeout(90)
def test_a_warm_shutdown_takes_no_more_tasks_while_running_ones_finish(tmp_path, unique,
                                                                        own_redis):
    port, _ = own_redis
    client = redis.Redis(port=port)
    with _setup(tmp_path, unique, port) as setup:
        app = setup.app()
        app.send_task("tasks.slow", args=[3, "long"])
        with setup.worker("-P", "threads", "-c", "2", "--prefetch-multiplier", "1") as worker:
            assert wait_for(lambda: setup.records("started"), 20)
            before = client.info("stats")["total_commands_processed"]
            worker.send_signal(signal.SIGTERM)
            for i in range(10):  # a free slot, but the worker is stopping
                app.send_task("tasks.mark", args=[i])
            assert worker.wait(30) == 0
            spent = client.info("stats")["total_commands_processed"] - before
        app.close()
        assert [r["tag"] for r in setup.records("done")] == ["long"]
        assert setup.records("mark") == [] and client.llen(setup.queue) == 10
        # Finishing the running task, remote control and events take a few dozen commands;
        # taking tasks only to put them back takes thousands a second.
        assert spent < 1_500, f"{spent} Redis commands during a 3 s warm shutdown"


@pytest.mark.timeout(90)
def test_a_warm_shutdown_while_redis_is_gone_finishes_the_running_task(tmp_path, unique,
                                                                       own_redis):
    port, server = own_redis
    setup = _setup(tmp_path, unique, port)
    app = setup.app()
    app.send_task("tasks.slow", args=[4, "long"])
    app.close()
    with setup.worker("-P", "threads", "-c", "1") as worker:
        assert wait_for(lambda: setup.records("started"), 20)
        server.terminate()
        server.wait(10)
        assert wait_for(lambda: "Broker connection lost" in worker.log_path.read_text(), 20)
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(30)
        log = worker.log_path.read_text()
        assert code == 0, log[-3000:]
    assert [r["tag"] for r in setup.records("done")] == ["long"]
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.timeout(120)
def test_tasks_given_back_on_lost_connections_are_not_dead_lettered_for_it(tmp_path, unique):
    """Each lost connection gives the prefetched tasks back to Redis, and they come back
    flagged redelivered; that is not a delivery that failed, so three Redis restarts in a row
    must not send a task that never ran to the dead-letter queue."""
    port = spare_port()
    data = tmp_path / "redis-data"
    data.mkdir()
    setup = _setup(tmp_path, unique, port)
    server = redis_server(data, port)
    server.__enter__()
    try:
        app = setup.app()
        app.send_task("tasks.slow", args=[8, "long"])
        app.send_task("tasks.mark", args=["waiting"])
        app.close()
        with setup.worker("-P", "threads", "-c", "1", "--prefetch-multiplier", "4") as worker:
            assert wait_for(lambda: setup.records("started"), 20)
            for restart in range(1, 4):
                server.__exit__(None, None, None)
                server = redis_server(data, port)
                server.__enter__()
                assert wait_for(
                    lambda: worker.log_path.read_text().count("Reconnected") >= restart, 20)
                time.sleep(0.5)  # the waiting task is taken again before the next restart
            assert wait_for(lambda: setup.records("mark"), 30), worker.log_path.read_text()[-3000:]
            log = worker.log_path.read_text()
        assert [r["tag"] for r in setup.records("mark")] == ["waiting"]
        assert redis.Redis(port=port).llen(f"{setup.queue}.dead") == 0
        assert "Requeued 1 prefetched task(s) that had not started" in log, log[-3000:]
    finally:
        server.__exit__(None, None, None)
        setup.cleanup()
