"""Every ETA task not yet due, wherever it waits (issue 16 items 4 and 8): ``qtui scheduled``
lists the broker-held ones (beyond the worker's hold horizon) and the worker-held ones (within
it, and a Celery worker's). What can be done to them is in test_scheduled_actions.py."""

from __future__ import annotations

import time

import pytest

from .scheduled_helpers import (  # noqa: F401 - fixtures
    HORIZON,
    horizon_setup,
    qtui,
    scheduled,
    send_far,
)
from .test_eta_store import celery_worker, held
from .worker_helpers import (  # noqa: F401 - fixtures
    Setup,
    amqp_setup,
    hostname_of,
    redis_setup,
    sqlite_setup,
    wait_for,
)


@pytest.mark.timeout(120)
def test_scheduled_lists_broker_held_and_worker_held_tasks(horizon_setup: Setup):
    setup = horizon_setup
    with setup.worker("-P", "solo"):
        far = send_far(setup, "far")
        near = setup.app().send_task("tasks.mark", args=["near"], countdown=HORIZON - 5)
        assert wait_for(lambda: len(scheduled(setup)["tasks"]) == 2, 20)
        tasks = {t["id"]: t for t in scheduled(setup)["tasks"]}
        assert tasks[far.id]["held_by"] == "broker"
        assert tasks[near.id]["held_by"] == hostname_of(setup)
        assert {t["queue"] for t in tasks.values()} == {setup.queue}
        assert {t["name"] for t in tasks.values()} == {"tasks.mark"}
        assert [t["id"] for t in scheduled(setup, "--filter", "worker:broker")["tasks"]] \
            == [far.id]


@pytest.mark.timeout(120)
def test_rabbitmq_counts_held_tasks_and_refuses_to_take_one_by_id(amqp_setup: Setup):
    amqp_setup.conf["worker_eta_horizon"] = HORIZON
    with amqp_setup.worker("-P", "solo"):
        result = send_far(amqp_setup, "far")
        found = scheduled(amqp_setup)
        assert found["unlisted"][amqp_setup.queue] == 1  # other tests' queues may be there
        done = qtui(amqp_setup, "eta", "run", result.id, "-Q", amqp_setup.queue)
        assert done.returncode == 1
        assert "cannot take one held task out" in done.stdout
        assert held(amqp_setup) == 1


@pytest.mark.timeout(120)
def test_a_celery_workers_held_eta_task_is_listed_as_held_by_it(redis_setup: Setup):
    with celery_worker(redis_setup):
        result = redis_setup.app().send_task("tasks.mark", args=["celery"], countdown=600)
        assert wait_for(lambda: scheduled(redis_setup)["tasks"], 20)
        [task] = scheduled(redis_setup)["tasks"]
        assert (task["id"], task["name"]) == (result.id, "tasks.mark")
        assert task["held_by"].startswith(f"celery-{redis_setup.queue}@")
        # Celery's `scheduled` sends the arguments, never their reprs: a mask could not be told
        # from them, so they are not shown.
        assert task["args"].startswith("(not shown") and "celery" not in task["args"]
        due = time.time() + 600
        assert task["eta"] is not None
        assert abs(_epoch(task["eta"]) - due) < 60


def _epoch(iso: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(iso).timestamp()


@pytest.mark.timeout(120)
def test_inspect_scheduled_piped_at_80_columns_shows_a_record_per_task(redis_setup: Setup):
    """A table at 80 columns left args, kwargs and eta one character wide (issue 16 item 9)."""
    redis_setup.conf["worker_eta_horizon"] = HORIZON
    with redis_setup.worker("-P", "solo"):
        result = redis_setup.app().send_task(
            "tasks.mark", args=["a fairly long argument"], countdown=HORIZON - 5)
        assert wait_for(lambda: scheduled(redis_setup)["tasks"], 20)
        done = qtui(redis_setup, "inspect", "scheduled", columns=80)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.strip() == f"id: {result.id}" for line in lines), done.stdout
    assert any("a fairly long argument" in line for line in lines)
    assert all(len(line) <= 80 for line in lines)
