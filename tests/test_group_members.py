"""How a group holds and sends its members, as Celery's group does: it keeps the caller's
signatures as they are (a change made to one after the group was built is sent; freezing works
on copies), and sends each member as its task's ``apply_async`` sends it (the task's own
routing and options, its arguments checked), all of them or none; what a worker sends after a
task is not checked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from qtui.core import App, sending
from qtui.core.canvas import Signature, chord, group
from qtui.core.plans import PLANNED
from qtui.core.sending import Outgoing

from .services import REDIS_HOST, REDIS_PORT, need


@pytest.fixture
def app() -> Iterator[App]:
    app = App("members", broker="memory://", backend=None, task_default_queue="members")
    yield app
    app.close()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[Outgoing]:
    """What each send would have put on the broker, in order (nothing is sent)."""
    outgoing: list[Outgoing] = []
    monkeypatch.setattr(sending, "send", lambda _app, batch, *_: outgoing.extend(batch))
    return outgoing


def test_a_member_changed_after_the_group_was_built_is_sent_as_changed(
        app: App, sent: list[Outgoing]) -> None:
    @app.task(name="tasks.add", ignore_result=True)
    def add(x: int, y: int) -> int:
        return x + y

    member = add.s(1, 1)
    members = group([member, add.s(2, 2)])
    member.set(queue="later")
    member["args"] = (5, 5)
    members.apply_async()

    assert members.tasks[0] is member
    assert [(o.routing_key, o.message.args) for o in sent] == [
        ("later", (5, 5)), ("members", (2, 2))]


def test_freezing_a_group_freezes_copies_of_its_members(app: App) -> None:
    @app.task(name="tasks.add", ignore_result=True)
    def add(x: int, y: int) -> int:
        return x + y

    first, second = add.s(1, 1), add.s(2, 2)
    members = group([first, second])
    result = members.freeze()

    assert first.id is None and second.id is None
    assert [task.id for task in members.tasks] == [r.id for r in result.results]
    assert [task.options["group_index"] for task in members.tasks] == [0, 1]
    assert {task.options["group_id"] for task in members.tasks} == {result.id}


def test_a_chord_leaves_its_header_signatures_unfrozen(app: App, sent: list[Outgoing]) -> None:
    @app.task(name="tasks.add", ignore_result=True)
    def add(x: int, y: int) -> int:
        return x + y

    header = [add.s(1, 1), add.s(2, 2)]
    chord(header, add.s(0)).freeze()

    assert [sig.id for sig in header] == [None, None]


def test_a_member_is_sent_with_its_tasks_own_routing_and_options(
        app: App, sent: list[Outgoing]) -> None:
    @app.task(name="tasks.slow", queue="slow", priority=3, time_limit=30, ignore_result=True)
    def slow(x: int) -> int:
        return x

    result = group(slow.s(i) for i in range(2)).apply_async()
    alone = slow.apply_async((0,), task_id=result.results[0].id, group_id=result.id,
                             group_index=0)

    first, _, one = sent
    assert [o.routing_key for o in sent] == ["slow", "slow", "slow"]
    assert (first.message.priority, first.message.time_limit, first.message.ignore_result) \
        == (3, 30, True)
    assert first.message.id == alone.id == one.message.id
    assert first.message == one.message


def test_a_signature_of_a_registered_task_is_sent_with_the_tasks_queue(
        app: App, sent: list[Outgoing]) -> None:
    @app.task(name="tasks.slow", queue="slow")
    def slow(x: int) -> int:
        return x

    slow.s(1).apply_async()
    Signature("tasks.elsewhere", (1,), app=app).apply_async()  # not registered: by name

    assert [o.routing_key for o in sent] == ["slow", "members"]


def test_a_member_whose_arguments_do_not_fit_its_task_sends_no_member(
        app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    @app.task(name="tasks.add", ignore_result=True)
    def add(x: int, y: int) -> int:
        return x + y

    calls: list[Any] = []
    monkeypatch.setattr(sending, "send", lambda _app, batch, *_: calls.append(batch))
    with pytest.raises(TypeError, match=r"tasks\.add"):
        group([add.s(1, 1), add.s(1, 2, 3), add.s(2, 2)]).apply_async()

    assert calls == []


def test_what_a_worker_sends_after_a_task_is_sent_even_if_its_arguments_do_not_fit(
        app: App, sent: list[Outgoing]) -> None:
    """A chain step, link or chord body is applied (``canvas.apply``, as a worker applies it)
    without the argument check: it is sent and fails when it runs, so the task before it is
    not failed for it, nor is a chord left waiting for a body never sent."""
    from qtui.core.canvas import apply

    @app.task(name="tasks.add", ignore_result=True)
    def add(x: int, y: int) -> int:
        return x + y

    step = dict(add.s(1, 2))  # as a message carries it: the previous result makes 3 arguments
    body = dict(add.s(5, 6))  # a chord body gets the header's results: 3 arguments
    apply(app, step, (2,), parent_id="t-1", root_id="t-1")
    apply(app, body, ([2, 4],), group_id="g-1")

    assert [(o.message.task, o.message.args) for o in sent] == [
        ("tasks.add", (2, 1, 2)), ("tasks.add", ([2, 4], 5, 6))]


def test_a_call_giving_only_its_own_ids_shares_the_plan_of_a_call_giving_none() -> None:
    """``Task.send_call`` sends such a call on the task's default plan: none of its options
    may be planned, or a task default."""
    from qtui.core.task import _PER_CALL, _SEND_DEFAULTS

    assert _PER_CALL.isdisjoint(PLANNED) and _PER_CALL.isdisjoint(_SEND_DEFAULTS)


@pytest.mark.timeout(30)
def test_a_group_lands_in_its_tasks_queue_on_redis(unique: str) -> None:
    need("Redis", REDIS_HOST, REDIS_PORT)
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
    queue = f"members-{unique}"
    app = App("members", broker=url, backend=None, task_default_queue=f"default-{unique}")

    @app.task(name="tasks.noop", queue=queue, ignore_result=True)
    def noop(i: int) -> None:
        """Never run: the test only sends."""

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        result = group(noop.s(i) for i in range(5)).apply_async()
        assert client.llen(queue) == 5 and client.llen(f"default-{unique}") == 0
        assert [r.id for r in result.results] == [
            _header_id(item) for item in reversed(client.lrange(queue, 0, -1))]
    finally:
        client.delete(queue, f"default-{unique}")
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)
        app.close()


def _header_id(item: bytes) -> str:
    return str(json.loads(item)["headers"]["id"])
