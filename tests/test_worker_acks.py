"""Acks the worker gathers to send in one round trip (Redis) must not wait so long that the
visibility timeout gives a finished task's message back: it would run again."""

from __future__ import annotations

from collections import Counter

import pytest
import redis

from .services import REDIS_HOST, REDIS_PORT
from .worker_helpers import make_setup, wait_for

#: A database of this test's own: the short visibility timeout restores what any process left
#: unacked in it.
DB = 4
TASKS = 8


@pytest.mark.timeout(90)
def test_a_finished_task_is_not_given_back_while_its_ack_waits(tmp_path, unique, redis_url):
    client = redis.Redis(REDIS_HOST, REDIS_PORT, db=DB)
    client.flushdb()
    setup = make_setup(tmp_path, f"qw-{unique}", f"redis://{REDIS_HOST}:{REDIS_PORT}/{DB}", None,
                       broker_transport_options={"visibility_timeout": 1})
    try:
        app = setup.app()
        for i in range(TASKS):
            app.send_task("tasks.slow", args=[1.5, i])
        app.close()
        # Six of eight reserved while two run: the worker is not starved for work, so acks
        # would otherwise wait for the next pair to finish, past the 1 s timeout.
        with setup.worker("-P", "threads", "-c", "2", "--prefetch-multiplier", "4"):
            assert wait_for(lambda: len({r["tag"] for r in setup.records("done")}) >= TASKS, 60)
            # Long enough for a wrongly given-back message to be restored and start again.
            wait_for(lambda: len(setup.records("started")) > TASKS, 2.5)
        runs = Counter(r["tag"] for r in setup.records("started"))
        assert runs == Counter(range(TASKS)), f"ran more than once: {runs}"
    finally:
        setup.cleanup()
        client.flushdb()


@pytest.mark.timeout(60)
def test_without_acks_on_failure_a_failed_task_is_dead_lettered(tmp_path, unique, redis_url):
    """``task_acks_on_failure_or_timeout = false``: a failure is stored and its message goes to
    ``<queue>.dead`` (Celery rejects it), while a success is acked as ever."""
    setup = make_setup(tmp_path, f"qw-{unique}", redis_url, redis_url,
                       task_acks_on_failure_or_timeout=False)
    try:
        with setup.worker("-P", "solo"):
            app = setup.app()
            failed = app.send_task("tasks.fail", args=["boom"])
            assert isinstance(failed.get(timeout=30, propagate=False), Exception)
            dead = setup.dead_letters()
            assert dead[0].headers["id"] == failed.id
            assert app.send_task("tasks.add", args=[2, 2]).get(timeout=30) == 4
            assert setup.dead_letters(expected=2, timeout=1) == []
            app.close()
    finally:
        setup.cleanup()
