"""Both chord joins -- the SQLite store's native one and Redis in Celery's layout -- count each
part once (a redelivered part too), send the body once from the part that completes the
header with the results in header order, and fail the body when a part failed."""

from __future__ import annotations

from typing import Any

import pytest
from kombu import Connection, Queue

from qtui.core import App, states
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
