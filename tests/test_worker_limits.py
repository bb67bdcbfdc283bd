"""Time limits and rate limits, enforced by real worker processes."""

from __future__ import annotations

import time

import pytest

from qtui.core import states
from qtui.core.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from .worker_helpers import Setup, redis_setup  # noqa: F401 - fixtures

#: Seconds a task runs when the test shows it was stopped: long enough to outlive its time
#: limit, short enough that the test can wait past its end to see it never finished.
SHORT = 3


@pytest.mark.timeout(90)
def test_hard_time_limit_kills_the_prefork_child_and_records_failure(redis_setup: Setup):
    with redis_setup.worker("-P", "prefork", "-c", "1"):
        app = redis_setup.app()
        result = app.send_task("tasks.slow", args=[SHORT, "never"], time_limit=1)
        exc = result.get(timeout=20, propagate=False)
        assert result.state == states.FAILURE
        assert isinstance(exc, TimeLimitExceeded)
        started = redis_setup.wait_records("started", 1)[0]["t"]
        time.sleep(max(0.0, started + SHORT + 2 - time.time()))  # past when it would have ended
        assert redis_setup.records("done") == []
        assert app.send_task("tasks.add", args=[1, 1]).get(timeout=20) == 2  # respawned
        app.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_soft_time_limit_raises_inside_the_task(redis_setup: Setup, pool):
    with redis_setup.worker("-P", pool, "-c", "1"):
        app = redis_setup.app()
        result = app.send_task("tasks.soft_limited", args=[10], soft_time_limit=0.5)
        assert result.get(timeout=20) == "soft limit caught"
        app.close()


@pytest.mark.timeout(90)
def test_soft_time_limit_from_the_command_line(redis_setup: Setup):
    with redis_setup.worker("-P", "prefork", "-c", "1", "--soft-time-limit", "0.5"):
        app = redis_setup.app()
        assert app.send_task("tasks.soft_limited", args=[10]).get(timeout=20) == \
            "soft limit caught"
        app.close()


@pytest.mark.timeout(90)
def test_solo_hard_time_limit_raises_time_limit_exceeded(redis_setup: Setup):
    with redis_setup.worker("-P", "solo"):
        app = redis_setup.app()
        result = app.send_task("tasks.slow", args=[30], time_limit=1)
        assert isinstance(result.get(timeout=20, propagate=False), TimeLimitExceeded)
        assert app.send_task("tasks.add", args=[1, 1]).get(timeout=20) == 2
        app.close()


@pytest.mark.timeout(90)
def test_threads_enforce_time_limits_on_python_code(redis_setup: Setup):
    with redis_setup.worker("-P", "threads", "-c", "2"):
        app = redis_setup.app()
        soft = app.send_task("tasks.spin", args=[10], soft_time_limit=0.5)
        hard = app.send_task("tasks.spin", args=[10], time_limit=0.5, soft_time_limit=None)
        assert soft.get(timeout=20) == "soft limit caught"
        assert isinstance(hard.get(timeout=20, propagate=False), TimeLimitExceeded)
        app.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("limit", ["soft_time_limit", "time_limit"])
def test_threads_time_limits_never_interrupt_the_result_write(redis_setup: Setup, limit):
    """A limit so short that it fires as the task ends: the task's outcome is stored either way
    (issue 14.3: the result was lost; issue 12.6: a success became "cannot be serialized")."""
    with redis_setup.worker("-P", "threads", "-c", "2"):
        app = redis_setup.app()
        results = [app.send_task("tasks.add", args=[i, 1], **{limit: 1e-6}) for i in range(10)]
        for i, result in enumerate(results):
            value = result.get(timeout=20, propagate=False)
            if result.state == states.SUCCESS:
                assert value == i + 1
            else:
                assert result.state == states.FAILURE
                assert isinstance(value, (SoftTimeLimitExceeded, TimeLimitExceeded)), value
        assert redis_setup.dead_letters(expected=1, timeout=1) == []
        app.close()


@pytest.mark.timeout(120)
def test_rate_limit_of_5_per_second_is_honoured_without_blocking_other_tasks(redis_setup: Setup):
    app = redis_setup.app()
    ticks = [app.send_task("tasks.tick", args=[i]) for i in range(20)]
    others = [app.send_task("tasks.mark", args=[i]) for i in range(5)]
    with redis_setup.worker("-P", "prefork", "-c", "2"):
        for r in ticks:
            r.get(timeout=60)
        for r in others:
            r.get(timeout=60)
    times = sorted(r["t"] for r in redis_setup.records("tick"))
    marks = [r["t"] for r in redis_setup.records("mark")]
    assert len(times) == 20 and len(marks) == 5
    span = times[-1] - times[0]
    assert span >= 19 / 5 * 0.9, span
    # no more than 5 starts in any one-second window (plus the bucket's first token)
    for i, start in enumerate(times):
        assert sum(1 for t in times[i:] if t < start + 1.0) <= 6
    # the other task type, sent after all the ticks, ran while half of them still waited
    assert max(marks) < times[9], (marks, times)
    app.close()
