"""Celery's worker settings in one task run (:func:`qtui.workers.execution.execute`):
``task_track_started``, the whole of ``result_extended``, and the traceback of a retry (which
``task-retried`` events carry). The run happens here; results go to the real Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from qtui.core import App, states
from qtui.core.protocol import TaskMessage
from qtui.core.task import new_task_id
from qtui.workers.execution import WorkItem, execute


@pytest.fixture
def app(redis_url: str) -> Iterator[App]:
    app = App("settings", broker="memory://", backend=redis_url)
    yield app
    app.close()


def run(app: App, name: str, queue: str, *args: Any) -> tuple[Any, str]:
    message = TaskMessage(id=new_task_id(), task=name, args=args)
    item = WorkItem(job_id=1, message=message, hostname="settings@test",
                    delivery_info={"exchange": "", "routing_key": queue, "priority": 0})
    return execute(app, item), message.id


def test_track_started_stores_started_with_pid_and_hostname(app: App, unique: str):
    seen: dict[str, Any] = {}

    @app.task(bind=True, name=f"started-{unique}")
    def own_state(self):
        seen.update(app.backend.get_task_meta(self.request.id))

    app.conf.task_track_started = True
    outcome, task_id = run(app, own_state.name, unique)
    assert outcome.state == states.SUCCESS
    assert seen["status"] == states.STARTED
    assert seen["result"] == {"pid": os.getpid(), "hostname": "settings@test"}
    assert app.backend.get_task_meta(task_id)["status"] == states.SUCCESS


def test_without_track_started_a_running_task_stays_pending(app: App, unique: str):
    seen: dict[str, Any] = {}

    @app.task(bind=True, name=f"pending-{unique}")
    def own_state(self):
        seen.update(app.backend.get_task_meta(self.request.id))

    run(app, own_state.name, unique)
    assert seen["status"] == states.PENDING


def test_extended_results_name_the_worker_and_the_queue(app: App, unique: str):
    @app.task(name=f"extended-{unique}")
    def add(x, y):
        return x + y

    app.conf.result_extended = True
    _, task_id = run(app, add.name, unique, 2, 3)
    meta = app.backend.get_task_meta(task_id)
    assert meta["result"] == 5
    assert (meta["name"], meta["args"], meta["kwargs"], meta["retries"]) == (add.name, [2, 3],
                                                                             {}, 0)
    assert (meta["worker"], meta["queue"]) == ("settings@test", unique)


def test_a_retry_keeps_its_traceback_for_the_retried_event(app: App, unique: str):
    @app.task(bind=True, name=f"retry-{unique}")
    def again(self):
        raise self.retry(exc=ValueError("not yet"), countdown=60)

    outcome, _ = run(app, again.name, unique)
    assert outcome.state == states.RETRY
    assert outcome.traceback and "raise self.retry(" in outcome.traceback
