"""Retries, autoretry and expiry, run by a real worker."""

from __future__ import annotations

import time

import pytest

from qtui.core import states
from qtui.core.exceptions import TaskRevokedError

from .worker_helpers import Setup, every_setup, redis_setup  # noqa: F401 - fixtures


@pytest.mark.timeout(90)
def test_self_retry_runs_again_with_the_retry_count_until_it_succeeds(every_setup: Setup):
    with every_setup.worker("-P", "prefork", "-c", "2"):
        app = every_setup.app()
        assert app.send_task("tasks.flaky", args=[2]).get(timeout=30) == 2
        assert [r["retries"] for r in every_setup.records("flaky")] == [0, 1, 2]
        app.close()


@pytest.mark.timeout(90)
def test_autoretry_for_gives_up_after_max_retries_with_the_original_exception(redis_setup: Setup):
    with redis_setup.worker("-P", "threads", "-c", "2"):
        app = redis_setup.app()
        result = app.send_task("tasks.always_key_error")
        exc = result.get(timeout=30, propagate=False)
        assert isinstance(exc, KeyError) and result.state == states.FAILURE
        assert len(redis_setup.records("key_error")) == 3
        app.close()


@pytest.mark.timeout(90)
def test_an_expired_task_is_revoked_and_never_runs(redis_setup: Setup):
    app = redis_setup.app()
    result = app.send_task("tasks.mark", args=["late"], expires=0.5)
    fresh = app.send_task("tasks.mark", args=["fresh"], expires=60)
    time.sleep(1)
    with redis_setup.worker("-P", "solo"):
        assert fresh.get(timeout=30) == "fresh"
        exc = result.get(timeout=30, propagate=False)
    assert result.state == states.REVOKED
    assert isinstance(exc, TaskRevokedError) and "expired" in str(exc)
    assert [r["tag"] for r in redis_setup.records("mark")] == ["fresh"]
    app.close()
