"""Metrics from a real worker: a counted set of tasks (some failing, some with known sleeps) runs
on a qtui worker on Redis (database 6, no other test's events), the console's feed ingests its
events, and the rollups in the history file say exactly what ran, with runtime percentiles
within one bucket of the true values."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from qtui.core.metrics import bucket_of
from qtui.tui.feed import Feed
from qtui.tui.history import History

from .services import REDIS_HOST, REDIS_PORT, need
from .worker_helpers import make_setup

BROKER = f"redis://{REDIS_HOST}:{REDIS_PORT}/6"
ADDS, FAILS = 30, 7
#: Seconds each ``slow`` task sleeps: p50 in the 0.25-0.5 s bucket, p95 and p99 in 1-2.5 s.
SLEEPS = [0.3] * 6 + [1.2] * 2


def wait(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not seen within {timeout}s")


def test_rollups_count_a_real_workers_tasks_exactly(tmp_path, unique):
    need("Redis", REDIS_HOST, REDIS_PORT)
    setup = make_setup(tmp_path, f"metrics-{unique}", BROKER, BROKER)
    app = setup.app()
    history = History(tmp_path / "history.sqlite", cluster="live")
    feed = Feed(app, history=history, poll_interval=0.5)
    thread = threading.Thread(target=feed.run, args=(lambda snapshot: None, 0.1), daemon=True)
    began = time.time()
    thread.start()
    try:
        wait(lambda: feed.connected, "the feed connected")
        with setup.worker("-P", "threads", "-c", "4"):
            sent = [app.send_task("tasks.add", args=[i, i]) for i in range(ADDS)]
            sent += [app.send_task("tasks.fail", args=[f"boom {i}"]) for i in range(FAILS)]
            sent += [app.send_task("tasks.slow", args=[s]) for s in SLEEPS]

            def finished() -> bool:
                with feed.lock:
                    return all((t := feed.state.task(r.id)) is not None and t.ready
                               for r in sent)
            wait(finished, "every task finished")
    finally:
        feed.stop()
        thread.join(10)
        app.close()
        setup.cleanup()
    assert not thread.is_alive()
    # The feed closed its history; a new one reads what it stored.
    stored = History(tmp_path / "history.sqlite", cluster="live")
    by_task = stored.metrics(began - 60, time.time() + 60, by="task")
    assert set(by_task) == {"tasks.add", "tasks.fail", "tasks.slow"}
    expected = {"tasks.add": (ADDS, 0), "tasks.fail": (0, FAILS), "tasks.slow": (len(SLEEPS), 0)}
    for name, (succeeded, failed) in expected.items():
        rollup = by_task[name]
        runs = succeeded + failed
        assert (rollup.count("received"), rollup.count("started"), rollup.count("succeeded"),
                rollup.count("failed"), rollup.count("retried"), rollup.count("revoked")) \
            == (runs, runs, succeeded, failed, 0, 0), name
        assert rollup.runtime.count == runs and rollup.wait.count == runs, name
    slow = by_task["tasks.slow"].runtime
    for q, true_value in ((0.5, 0.3), (0.95, 1.2), (0.99, 1.2)):
        found = slow.percentile(q)
        assert found is not None
        assert abs(bucket_of(found) - bucket_of(true_value)) <= 1, (q, found)
    by_queue = stored.metrics(began - 60, time.time() + 60, by="queue")
    assert by_queue[setup.queue].count("succeeded") == ADDS + len(SLEEPS)
    assert by_queue[setup.queue].count("failed") == FAILS
    stored.close()


@pytest.fixture(autouse=True)
def _flushed_db():
    """Database 6 holds only this module's queues and events."""
    need("Redis", REDIS_HOST, REDIS_PORT)
    import redis
    redis.Redis.from_url(BROKER).flushdb()
    yield
