"""Both chord joins -- the SQLite store's native one and Redis in Celery's layout -- count each
part once (a redelivered part too), send the body once from the part that completes the
header with the results in header order, and fail the body when a part failed."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import pytest
from kombu import Connection, Queue

from qtui.core import App, states
from qtui.core.backends.sqlite_chord import SQLiteChordJoin
from qtui.core.canvas import apply
from qtui.core.protocol import TaskMessage, parse


def body_of(group_id: str, body_id: str) -> dict[str, Any]:
    return {"task": "tasks.collect", "args": [], "kwargs": {}, "subtask_type": None,
            "immutable": False, "options": {"task_id": body_id, "group_id": group_id}}


def part(group_id: str, index: int, body: dict[str, Any]) -> TaskMessage:
    return TaskMessage(id=f"part-{index}", task="tasks.part", group=group_id,
                       group_index=index, chord=body)


@pytest.fixture(params=["sqlite", "redis"])
def apps(request, tmp_path, unique):
    """Two apps (two workers) on one memory broker and one result store."""
    url = f"memory://{unique}"
    if request.param == "redis":
        backend = request.getfixturevalue("redis_url")
    else:
        backend = f"sqlite://{tmp_path}/results.sqlite"
    made = [App("w", broker=url, backend=backend, task_default_queue=unique) for _ in range(2)]
    yield made
    for app in made:
        app.close()


def sent(app: App) -> list[TaskMessage]:
    found = []
    with Connection(app.broker_url) as conn:
        queue = Queue(app.conf.task_default_queue)(conn.default_channel)
        queue.declare()
        while (message := queue.get(no_ack=True)) is not None:
            found.append(parse(message.decode(), message.headers, message.properties))
    return found


def test_the_last_part_sends_the_body_once_with_results_in_header_order(apps, unique):
    first, second = apps
    group_id = f"g1-{unique}"
    body = body_of(group_id, f"body-1-{group_id}")
    first.backend.set_chord_size(group_id, 3)
    first.backend.on_chord_part_return(part(group_id, 2, body), states.SUCCESS, 30)
    second.backend.on_chord_part_return(part(group_id, 0, body), states.SUCCESS, 10)
    second.backend.on_chord_part_return(part(group_id, 0, body), states.SUCCESS, 10)  # redelivered
    assert sent(first) == []
    first.backend.on_chord_part_return(part(group_id, 1, body), states.SUCCESS, 20)
    second.backend.on_chord_part_return(part(group_id, 1, body), states.SUCCESS, 20)  # late copy
    messages = sent(first)
    assert [(m.id, m.task, m.args) for m in messages] == [(f"body-1-{group_id}", "tasks.collect",
                                                           ([10, 20, 30],))]


def test_a_failed_part_fails_the_body_instead_of_sending_it(apps, unique):
    first, second = apps
    group_id = f"g2-{unique}"
    body = body_of(group_id, f"body-2-{group_id}")
    first.backend.set_chord_size(group_id, 2)
    first.backend.on_chord_part_return(part(group_id, 0, body), states.SUCCESS, 1)
    second.backend.on_chord_part_return(part(group_id, 1, body), states.FAILURE, ValueError("bad"))
    assert sent(first) == []
    meta = first.backend.get_task_meta(f"body-2-{group_id}")
    assert meta["status"] == states.FAILURE
    assert meta["result"]["exc_type"] == "ChordError"
    assert "part-1" in meta["result"]["exc_message"][0]


def test_a_body_that_cannot_be_sent_fails_the_chord_instead_of_leaving_it_waiting(apps, unique):
    """As Celery's join does (``ChordError("Callback error: ...")``): the join is over once
    the last part arrived, so a body that was not sent would be waited on for ever."""
    first, _ = apps
    group_id = f"g3-{unique}"
    body = {**body_of(group_id, f"body-3-{group_id}"), "subtask_type": "no-such-kind"}
    first.backend.set_chord_size(group_id, 1)
    first.backend.on_chord_part_return(part(group_id, 0, body), states.SUCCESS, 1)
    assert sent(first) == []
    meta = first.backend.get_task_meta(f"body-3-{group_id}")
    assert meta["status"] == states.FAILURE
    assert meta["result"]["exc_type"] == "ChordError"
    assert "Callback error: CanvasError" in meta["result"]["exc_message"][0]
    assert "no-such-kind" in meta["result"]["exc_message"][0]


def test_a_backend_that_cannot_join_says_so():
    app = App("w", broker="memory://", backend="rpc://")
    try:
        with pytest.raises(Exception, match="cannot join a chord"):
            app.backend.set_chord_size("g3", 2)
    finally:
        app.close()


def test_the_same_part_run_twice_at_once_sends_the_body_once(apps, unique):
    """Two runs of the completing part (a duplicate delivery, two workers): the second reaches
    the join while the first holds the claim and sends the body; it does not send it too.
    Before (the claim token was the part's), both counted as the holder and both sent it."""
    first, second = apps
    group_id = f"gdup-{unique}"
    body = body_of(group_id, f"body-dup-{group_id}")
    first.backend.set_chord_size(group_id, 2)
    first.backend.on_chord_part_return(part(group_id, 0, body), states.SUCCESS, 10)
    holding, second_done = threading.Event(), threading.Event()

    def held_send(app, body, args, **options):  # the first run, publishing the body
        holding.set()
        second_done.wait(30)
        apply(app, body, args, None, **options)

    run = threading.Thread(target=first.backend.on_chord_part_return,
                           args=(part(group_id, 1, body), states.SUCCESS, 20),
                           kwargs={"send": held_send})
    run.start()
    try:
        assert holding.wait(30)
        second.backend.on_chord_part_return(part(group_id, 1, body), states.SUCCESS, 20)
    finally:
        second_done.set()
        run.join()
    assert [(m.id, m.args) for m in sent(first)] == [(f"body-dup-{group_id}", ([10, 20],))]


def test_a_failed_cleanup_after_the_body_went_neither_raises_nor_sends_it_again(
        tmp_path, unique, monkeypatch):
    """SQLite: the body is sent, then forgetting the parts and the claim fails (database
    locked, simulated): the join does not raise (the worker would store a CanvasError over the
    part's SUCCESS), and the part run again does not send the body again. Before, it raised
    and the claim it left sent the body a second time."""
    app = App("w", broker=f"memory://{unique}", backend=f"sqlite://{tmp_path}/r.sqlite",
              task_default_queue=unique)
    group_id = f"gs-{unique}"
    body = body_of(group_id, f"body-{group_id}")
    app.backend.set_chord_size(group_id, 2)
    app.backend.on_chord_part_return(part(group_id, 0, body), states.SUCCESS, 10)
    real = SQLiteChordJoin._sent

    def locked(conn, gid):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(SQLiteChordJoin, "_sent", staticmethod(locked))
    app.backend.on_chord_part_return(part(group_id, 1, body), states.SUCCESS, 20)
    monkeypatch.setattr(SQLiteChordJoin, "_sent", staticmethod(real))
    app.backend.on_chord_part_return(part(group_id, 1, body), states.SUCCESS, 20)  # run again
    app.backend.cleanup()  # the claimed chord's rows go
    app.backend.on_chord_part_return(part(group_id, 1, body), states.SUCCESS, 20)
    assert [(m.id, m.args) for m in sent(app)] == [(f"body-{group_id}", ([10, 20],))]
    app.close()
