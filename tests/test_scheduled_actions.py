"""``qtui eta run|delete ID`` run a broker-held ETA task now, once, or discard it, and run now
of a worker-held one runs a copy and never the original (issue 16 items 4 and 8). How they are
listed is in test_scheduled_listing.py."""

from __future__ import annotations

import time
from typing import Any

import pytest

from .scheduled_helpers import (  # noqa: F401 - fixtures
    HORIZON,
    held_by_worker,
    horizon_setup,
    qtui,
    scheduled,
    send_far,
)
from .test_eta_store import celery_worker, held
from .worker_helpers import (  # noqa: F401 - fixtures
    Setup,
    redis_setup,
    sqlite_setup,
    wait_for,
)


@pytest.mark.timeout(120)
def test_run_now_runs_a_broker_held_task_at_once_and_only_once(horizon_setup: Setup):
    setup = horizon_setup
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
def test_delete_discards_only_the_named_held_task(horizon_setup: Setup):
    setup = horizon_setup
    with setup.worker("-P", "solo"):
        gone = send_far(setup, "gone")
        kept = setup.app().send_task("tasks.mark", args=["kept"], countdown=600)
        assert wait_for(lambda: held(setup) == 2, 20)
        done = qtui(setup, "eta", "delete", gone.id, "-Q", setup.queue)
        assert done.returncode == 0, done.stderr
        assert [t["id"] for t in scheduled(setup)["tasks"]] == [kept.id]


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
        # Far enough that the copy runs well before it (6.4 s after the send at load 8), within
        # the horizon; the test then waits past it.
        countdown = 14
        original = redis_setup.app().send_task("tasks.mark", args=["held"], countdown=countdown)
        due = time.time() + countdown
        task = held_by_worker(redis_setup, original.id)
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
        task = held_by_worker(redis_setup, original.id)
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
