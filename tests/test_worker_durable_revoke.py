"""Revocations are kept in the cluster ledger: a worker that starts after a revoke, without a
shared ``--statedb``, still refuses the task (issue 12 item 13)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from qtui.core import states
from qtui.core.exceptions import TaskRevokedError

from .worker_helpers import REDIS_URL, Setup, broker_urls, hostname_of, make_setup, wait_for


@pytest.fixture(params=["redis", "rabbitmq", "sqlite"])
def setup(request, tmp_path, unique) -> Iterator[Setup]:
    """RabbitMQ with Redis results: the ledger is the result backend there."""
    url, backend = broker_urls(request.param, tmp_path)
    made = make_setup(tmp_path, f"qw-{unique}", url,
                      REDIS_URL if request.param == "rabbitmq" else backend)
    yield made
    made.cleanup()


@pytest.mark.timeout(90)
def test_a_worker_started_after_a_revoke_does_not_run_the_task(setup: Setup):
    app = setup.app()
    task_id = str(uuid.uuid4())
    app.control.revoke(task_id)  # no worker is listening
    result = app.send_task("tasks.mark", args=["revoked"], task_id=task_id)
    with setup.worker("-P", "solo") as proc:
        exc = result.get(timeout=30, propagate=False)
        assert result.state == states.REVOKED and isinstance(exc, TaskRevokedError)
        assert app.send_task("tasks.add", args=[1, 1]).get(timeout=20) == 2
        replies = app.control.inspect(timeout=3).revoked()
        assert task_id in replies[hostname_of(setup)]
        assert "revoked task id(s) read from" in proc.log_path.read_text()
    assert setup.records("mark") == []
    app.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("setup", ["redis"], indirect=True)
def test_a_revoke_a_worker_receives_is_kept_for_the_next_worker(setup: Setup):
    """A revoke that reaches a worker by broadcast alone (sent by Celery's client, say) is kept
    by the worker that receives it."""
    app = setup.app()
    task_id = str(uuid.uuid4())
    with setup.worker("-P", "solo", name="first"):
        replies = app.control.broadcast("revoke", arguments={"task_id": task_id}, reply=True,
                                        timeout=3)
        assert hostname_of(setup, "first") in replies.by_worker()
    result = app.send_task("tasks.mark", args=["revoked"], task_id=task_id)
    with setup.worker("-P", "solo", name="second"):
        exc = result.get(timeout=30, propagate=False)
        assert isinstance(exc, TaskRevokedError)
        assert wait_for(lambda: result.state == states.REVOKED, 5)
    assert setup.records("mark") == []
    app.close()
