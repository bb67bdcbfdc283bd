"""No head-of-line blocking in the prefork pool (issue 19 item 3): a task never waits behind a
long one in a busy child while another child is idle. Each child is handed one task at a time,
so this holds today; the test guards it against any change that feeds children ahead (one was
tried and measured: bench/RESULTS.md, "Prefork drain")."""

from __future__ import annotations

import pytest

from .worker_helpers import Setup, redis_setup  # noqa: F401 - fixture

#: Seconds the long task runs: every short one must end well inside it.
LONG = 5


@pytest.mark.timeout(60)
def test_short_tasks_never_wait_behind_a_long_one_while_a_child_is_idle(redis_setup: Setup):
    """-c 2: one long task, then ten short ones: every short one ends while the long one runs."""
    with redis_setup.worker("-P", "prefork", "-c", "2"):
        client = redis_setup.app()
        long = client.send_task("tasks.slow", args=[LONG, "long"])
        redis_setup.wait_records("started", 1)
        shorts = [client.send_task("tasks.slow", args=[0.05, f"short-{i}"]) for i in range(10)]
        for result in shorts:
            assert result.get(timeout=30) is not None
        done = [r["tag"] for r in redis_setup.wait_records("done", 11, timeout=30)]
        assert done[-1] == "long", done  # the long one ended last: no short one waited for it
        assert long.get(timeout=30) == "long"
        client.close()
