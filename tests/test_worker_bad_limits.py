"""Limits that are numbers but not sensible ones (negative, NaN, infinite, astronomically
large) get a clear answer and never stop a worker."""

from __future__ import annotations

import logging

import pytest

from qtui.core import App
from qtui.core.protocol import TaskMessage
from qtui.workers import control
from qtui.workers.execution import MAX_TIME_LIMIT, TaskOptions
from qtui.workers.job import Job
from qtui.workers.ratelimit import RateLimiter, parse_rate
from qtui.workers.timer import Timer

from .worker_helpers import redis_setup  # noqa: F401 - fixture


@pytest.mark.parametrize("rate", [-1, -0.5, float("nan"), float("inf")])
def test_a_rate_that_is_not_a_rate_is_refused(rate):
    with pytest.raises(ValueError, match="tasks per second >= 0"):
        parse_rate(rate)


def test_rate_limit_command_answers_an_error_for_a_negative_rate():
    reply = control.rate_limit(None, "tasks.add", -1)  # refused before the worker is touched
    assert "error" in reply and "Invalid rate limit" in reply["error"]


def test_a_task_with_a_negative_rate_runs_unlimited_and_says_why_once(caplog):
    app = App("t", broker="memory://")

    @app.task(name="tasks.neg", rate_limit=-1)
    def neg():
        pass

    limiter = RateLimiter(app, Timer(), release=lambda job: None)
    with caplog.at_level(logging.ERROR, logger="qtui.worker"):
        assert limiter._bucket("tasks.neg") is None
        assert limiter._bucket("tasks.neg") is None
    assert caplog.text.count("running it without a rate limit") == 1


@pytest.mark.parametrize("limit", [1e300, float("inf")])
def test_a_huge_time_limit_is_capped_where_timers_can_hold_it(limit):
    message = TaskMessage(id="i", task="t", time_limit=limit, soft_time_limit=limit)
    assert TaskOptions(True, None, None).limits(message) == (MAX_TIME_LIMIT, MAX_TIME_LIMIT)


@pytest.mark.timeout(60)
def test_a_prefork_worker_goes_on_after_a_message_with_a_huge_time_limit(redis_setup):
    app = redis_setup.app()
    app.send_task("tasks.mark", args=[1], time_limit=1e300)
    app.send_task("tasks.mark", args=[2])
    app.close()
    with redis_setup.worker("-P", "prefork", "-c", "1"):
        marks = redis_setup.wait_records("mark", 2, timeout=20)
    assert sorted(r["tag"] for r in marks) == [1, 2]


def _free_task_limiter() -> tuple[App, RateLimiter]:
    """An app with the task ``tasks.free`` (no rate limit of its own) and a rate limiter."""
    app = App("t", broker="memory://")

    @app.task(name="tasks.free")
    def free():
        pass

    return app, RateLimiter(app, Timer(), release=lambda job: None)


def _job(name: str) -> Job:
    return Job(TaskMessage(id=f"id-{name}", task=name), delivery=None, queue="q")


def test_a_rate_limit_set_in_config_after_the_first_message_applies_to_the_next():
    app, limiter = _free_task_limiter()
    assert limiter.rate_of("tasks.free") is None
    app.conf.task_annotations = {"tasks.free": {"rate_limit": "5/s"}}
    assert limiter.rate_of("tasks.free") == "5/s"
    assert limiter._bucket("tasks.free") is not None


def test_a_rate_set_by_command_after_unlimited_tasks_applies_to_the_next():
    _, limiter = _free_task_limiter()
    assert not limiter.throttle_task(_job("tasks.free"))  # unlimited, and known so
    limiter.set_rate("tasks.free", "1/m")
    assert [limiter.throttle_task(_job("tasks.free")) for _ in range(2)] == [False, True]


def test_a_rate_set_in_config_after_unlimited_tasks_applies_to_the_next():
    app, limiter = _free_task_limiter()
    assert not limiter.throttle_task(_job("tasks.free"))
    app.conf.task_annotations = {"tasks.free": {"rate_limit": "1/m"}}
    assert [limiter.throttle_task(_job("tasks.free")) for _ in range(2)] == [False, True]
