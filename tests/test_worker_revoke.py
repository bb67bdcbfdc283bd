"""Revocation: a revoked task never runs, the set survives a restart, terminate kills it."""

from __future__ import annotations

import time
import uuid

import pytest

from qtui.core import states
from qtui.core.exceptions import TaskRevokedError

from .worker_helpers import Setup, every_setup, hostname_of, redis_setup  # noqa: F401 - fixtures

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
        app.control.revoke(result.id, terminate=True, signal="SIGKILL")
        exc = result.get(timeout=20, propagate=False)
        assert result.state == states.REVOKED and "terminated" in str(exc), \
            worker.log_path.read_text()[-3000:]
        time.sleep(max(0.0, started + SHORT + 2 - time.time()))  # past when it would have ended
        assert redis_setup.records("done") == []
        assert app.send_task("tasks.add", args=[2, 2]).get(timeout=20) == 4
        app.close()
