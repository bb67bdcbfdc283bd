"""Every ETA task not yet due, wherever it waits (issue 16 items 4 and 8): ``qtui scheduled``
lists the broker-held ones (beyond the worker's hold horizon) and the worker-held ones (within
it, and a Celery worker's), and ``qtui eta run|delete ID`` run a broker-held task now, once, or
discard it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from .test_eta_store import celery_worker, held
from .worker_helpers import (  # noqa: F401 - fixtures
    Setup,
    amqp_setup,
    hostname_of,
    redis_setup,
    sqlite_setup,
    wait_for,
)

#: Seconds within which a worker of these tests holds an ETA task itself.
HORIZON = 30.0


def qtui(setup: Setup, *argv: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qtui.tui.cli", "-A", "tasks", *argv],
                          cwd=setup.directory, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **setup.env, "PYTHONPATH": str(setup.directory),
                               "COLUMNS": str(columns)})


def scheduled(setup: Setup, *argv: str) -> dict[str, Any]:
    """``qtui scheduled --json``, with only this test's tasks (other tests' workers share the
    broker and answer ``inspect scheduled`` too)."""
    done = qtui(setup, "scheduled", "--json", "-t", "1", *argv)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    found["tasks"] = [t for t in found["tasks"] if t["queue"] == setup.queue]
    return found


def send_far(setup: Setup, tag: str, countdown: float = 600) -> Any:
    """A task beyond the horizon; returns once the running worker has stored it in the broker."""
    result = setup.app().send_task("tasks.mark", args=[tag], countdown=countdown)
    assert wait_for(lambda: held(setup) >= 1, 20)
    return result


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["redis_setup", "sqlite_setup"])
def test_scheduled_lists_broker_held_and_worker_held_tasks(name, request):
    setup: Setup = request.getfixturevalue(name)
    setup.conf["worker_eta_horizon"] = HORIZON
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
@pytest.mark.parametrize("name", ["redis_setup", "sqlite_setup"])
def test_run_now_runs_a_broker_held_task_at_once_and_only_once(name, request):
    setup: Setup = request.getfixturevalue(name)
    setup.conf["worker_eta_horizon"] = HORIZON
    with setup.worker("-P", "solo"):
        result = send_far(setup, "now")
        done = qtui(setup, "eta", "run", result.id, "-Q", setup.queue)
        assert done.returncode == 0, done.stderr
        assert f"{result.id}: run now" in done.stdout
        again = qtui(setup, "eta", "run", result.id, "-Q", setup.queue)
        assert again.returncode == 1
        assert "not held in the broker's delayed store" in again.stdout
        assert result.get(timeout=20) == "now"
        assert held(setup) == 0
        setup.app().send_task("tasks.mark", args=["after"]).get(timeout=20)
    assert [r["tag"] for r in setup.records("mark")] == ["now", "after"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["redis_setup", "sqlite_setup"])
def test_delete_discards_only_the_named_held_task(name, request):
    setup: Setup = request.getfixturevalue(name)
    setup.conf["worker_eta_horizon"] = HORIZON
    with setup.worker("-P", "solo"):
        gone = send_far(setup, "gone")
        kept = setup.app().send_task("tasks.mark", args=["kept"], countdown=600)
        assert wait_for(lambda: held(setup) == 2, 20)
        done = qtui(setup, "eta", "delete", gone.id, "-Q", setup.queue)
        assert done.returncode == 0, done.stderr
        assert [t["id"] for t in scheduled(setup)["tasks"]] == [kept.id]


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


def _held_by_worker(setup: Setup, task_id: str) -> Any:
    """The task as ``read`` shows it, once its worker reports holding it."""
    from qtui.core.scheduled import read

    def found() -> Any:
        return next((t for t in read(setup.app(), [setup.queue]).tasks if t.id == task_id),
                    None)
    assert wait_for(found, 20)
    return found()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("worker", ["qtui", "celery"])
def test_run_now_of_a_worker_held_task_runs_a_copy_now_and_never_the_original(
        worker, redis_setup: Setup):
    """A worker holds it in memory: run now revokes it there and sends a copy without ETA
    under a new id; the original, revoked, never runs, even after its ETA."""
    from qtui.tui.scheduled_actions import run_now
    redis_setup.conf["worker_eta_horizon"] = HORIZON
    started = redis_setup.worker("-P", "solo") if worker == "qtui" else celery_worker(redis_setup)
    with started:
        countdown = 20  # far enough that the copy runs well before it, within the horizon
        original = redis_setup.app().send_task("tasks.mark", args=["held"], countdown=countdown)
        due = time.time() + countdown
        task = _held_by_worker(redis_setup, original.id)
        assert not task.broker_held
        outcome = run_now(redis_setup.app(), [task], [task.holder])
        assert outcome.ok, outcome.lines
        assert [r["tag"] for r in redis_setup.wait_records("mark", 1)] == ["held"]
        ran_before_due = time.time() < due
        wait_for(lambda: time.time() > due + 2, countdown + 10)
    assert ran_before_due
    assert len(redis_setup.records("mark")) == 1


@pytest.mark.timeout(120)
@pytest.mark.parametrize("worker", ["qtui", "celery"])
def test_a_worker_held_task_whose_sender_masked_its_arguments_is_listed_and_run_with_the_mask(
        worker, redis_setup: Setup, monkeypatch):
    """Listed with its sender's reprs, never the secret; run now sends the copy with the real
    arguments and the same reprs, so the copy's events (the console, Flower) show the mask. A
    Celery worker sends the arguments, not the reprs: the copy's reprs are a neutral mask."""
    from qtui.core.display import UNSHOWN
    from qtui.tui.arguments import lookup
    from qtui.tui.scheduled_actions import UNKNOWN_REPRS, run_now
    redis_setup.conf["worker_eta_horizon"] = HORIZON
    started = redis_setup.worker("-P", "solo") if worker == "qtui" else celery_worker(redis_setup)
    app = redis_setup.app()
    sent: list[tuple[Any, Any]] = []
    send_task = app.send_task

    def spy(name, args=None, kwargs=None, **options):  # type: ignore[no-untyped-def]
        sent.append((options.get("argsrepr"), options.get("kwargsrepr")))
        return send_task(name, args=args, kwargs=kwargs, **options)
    with started:
        original = app.send_task("tasks.mark", args=["s3cret"], countdown=20,
                                 argsrepr="('***',)", kwargsrepr="{}")
        task = _held_by_worker(redis_setup, original.id)
        # A Celery worker sends the arguments, not the reprs (its `scheduled` ignores `safe`):
        # they are not shown (the console shows its events' reprs instead).
        assert (task.args, task.kwargs) == (("('***',)", "{}") if worker == "qtui" else
                                            (UNSHOWN, ""))
        monkeypatch.setattr(app, "send_task", spy)
        outcome = run_now(app, [task], [task.holder])
        assert outcome.ok, outcome.lines
        assert "s3cret" not in repr(outcome)
        assert sent == [("('***',)", "{}") if worker == "qtui" else (UNKNOWN_REPRS,) * 2]
        assert [r["tag"] for r in redis_setup.wait_records("mark", 1)] == ["s3cret"]
        copy = next(said.rpartition(" ")[2] for _, said in outcome.replies
                    if said.startswith("sent again as "))
        if worker == "qtui":  # the worker that ran the copy says what its message carried
            found = lookup(app, copy, task.holder)
            assert found is not None and found.masked
            assert (found.argsrepr, found.kwargsrepr) == ("('***',)", "{}")
