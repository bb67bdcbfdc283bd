"""The bulk lane of ``send_many`` and a group (:class:`qtui.core.plans.Lane`): a plain call of a
registered task goes straight into its message, and stores the same text as the usual way
(``apply_async`` per call); a call the lane does not take, part way through a run, goes the
usual way with its own options; a bad call part way sends nothing."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qtui.core import App, plans
from qtui.core.canvas import chunks, group, signature
from qtui.core.task import Task

from .test_send_many import client, fixed_wire, stored

__all__ = ["fixed_wire"]  # a fixture these tests use


@pytest.fixture
def counted_ids(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Task ids and group ids counted from 1, so two sends of the same calls compare; call
    what it gives to count from 1 again."""
    count = itertools.count(1)

    def restart() -> None:
        nonlocal count
        count = itertools.count(1)

    monkeypatch.setattr(plans, "new_id", lambda: f"id-{next(count)}")
    monkeypatch.setattr("qtui.core.canvas.new_id", lambda: f"id-{next(count)}")
    return restart


def stored_by(app: App, queues: list[str], send: Callable[[], Any]) -> list[str]:
    """What ``queues`` store after ``send()``, taken off them."""
    send()
    with app.connection_for_read() as conn:
        texts = [text for queue in queues for text in stored(conn.default_channel, queue)]
        for queue in queues:
            conn.default_channel.queue_purge(queue)
    return texts


def without_lanes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every call goes the usual way (``apply_async`` per call)."""
    monkeypatch.setattr(plans.Lane, "of", classmethod(lambda *_, **__: None))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("broker", ["redis", "sqlite"])
def test_a_run_broken_by_other_calls_stores_what_the_usual_way_stores(
        broker: str, tmp_path: Path, unique: str, fixed_wire: None,
        counted_ids: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain calls of two tasks, interleaved with calls with options, of a task not
    registered here, with kwargs, and a group; groups with and without arguments; chunks:
    byte for byte what the same calls store through ``apply_async`` one by one, in order."""
    queue, other = f"lane-{unique}", f"lane-other-{unique}"
    app = client(tmp_path, broker, queue)
    add = app.tasks["tasks.add"]

    @app.task(name="tasks.mul", queue=other, priority=3)
    def mul(x: int, y: int = 1) -> int:
        return x * y

    def calls() -> Iterator[Any]:
        for i in range(30):
            yield add.s(i, i)
            if i % 7 == 0:
                yield mul.s(i, y=i)
            if i % 11 == 0:
                yield add.s(i, 1).set(queue=other, priority=5)
                yield signature("tasks.elsewhere", i, app=app)
                yield group(add.s(i, 2), mul.s(i))

    def send() -> None:
        app.send_many(calls())
        group(add.s(i, i) for i in range(20)).apply_async()
        group(mul.s(i) for i in range(5)).apply_async((7,))
        chunks(add.s(), [(i, i) for i in range(25)], 10).apply_async()

    try:
        laned = stored_by(app, [queue, other], send)
        counted_ids()
        without_lanes(monkeypatch)
        usual = stored_by(app, [queue, other], send)
    finally:
        app.close()
    assert len(laned) == 30 + 5 + 3 * 4 + 20 + 5 + 3
    assert laned == usual


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", [
    pytest.param((object(), 1), id="unserializable"),
    pytest.param((1, 2, 3), id="too-many-arguments"),
])
def test_a_bad_call_at_the_1500th_sends_nothing(
        bad: tuple[Any, ...], tmp_path: Path, unique: str) -> None:
    """A call that cannot be serialized or does not fit its task, after 1,499 plain ones (a
    whole batch of 1,000 among them): a TypeError, and nothing is sent, from ``send_many``
    and from a group."""
    queue = f"lane-bad-{unique}"
    app = client(tmp_path, "sqlite", queue)
    add = app.tasks["tasks.add"]
    try:
        for send in (lambda calls: app.send_many(calls),
                     lambda calls: group(calls).apply_async()):
            calls = [add.s(i, i) for i in range(1499)] + [add.s(*bad)] + [add.s(1, 1)] * 10
            with pytest.raises(TypeError, match=r"tasks\.add"):
                send(calls)
            assert stored_by(app, [queue], lambda: None) == []
    finally:
        app.close()


@pytest.mark.timeout(60)
def test_a_task_option_changed_part_way_reaches_the_calls_after_it(
        tmp_path: Path, unique: str) -> None:
    queue, later = f"lane-{unique}", f"lane-later-{unique}"
    app = client(tmp_path, "sqlite", queue)
    add = app.tasks["tasks.add"]

    def calls() -> Iterator[Any]:
        yield add.s(1, 1)
        add.queue = later
        yield add.s(2, 2)
        app.conf.task_default_priority = 7
        yield add.s(3, 3)

    try:
        results = app.send_many(calls())
        with app.connection_for_read() as conn:
            first, rest = (stored(conn.default_channel, q) for q in (queue, later))
    finally:
        app.close()
    assert [r.id in text for r, text in zip(results, first + rest, strict=True)] == [True] * 3
    assert len(first) == 1 and len(rest) == 2
    assert '"priority": 7' in rest[1] and '"priority": 7' not in rest[0]


def test_a_task_class_that_overrides_apply_async_is_called_for_each_call() -> None:
    app = App("client", broker="memory://", backend=None, task_default_queue="lane-override")
    seen: list[tuple[Any, ...]] = []

    class Counted(Task):
        def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
            seen.append(tuple(args or ()))
            return super().apply_async(args, kwargs, **options)

    @app.task(name="tasks.counted", base=Counted)
    def counted(x: int) -> int:
        return x

    try:
        results = app.send_many(counted.s(i) for i in range(5))
    finally:
        app.close()
    assert seen == [(i,) for i in range(5)] and len(results) == 5


def test_under_always_eager_send_many_runs_each_call_here() -> None:
    app = App("client", broker="memory://", backend=None, task_default_queue="lane-eager",
              task_always_eager=True)

    @app.task(name="tasks.double")
    def double(x: int) -> int:
        return 2 * x

    try:
        results = app.send_many(double.s(i) for i in range(3))
    finally:
        app.close()
    assert [r.get() for r in results] == [0, 2, 4]


@pytest.fixture
def held_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """An app whose sends are only recorded (``app.sent``), with one task ``t.a``."""
    app = App("c", broker="memory://", backend=None, task_default_queue="lanes")
    sent: list[Any] = []
    monkeypatch.setattr("qtui.core.app.sending.send", lambda _app, out, *_: sent.extend(out))
    app.sent = sent  # type: ignore[attr-defined]

    @app.task(name="t.a")
    def a(x: int, y: int = 1) -> int:
        return x

    yield app
    app.close()


@pytest.mark.parametrize("method", ["apply_async", "send_call"])
def test_a_send_patched_on_the_task_itself_is_called_for_each_call(
        held_app: App, method: str) -> None:
    """``mock.patch.object(task, "apply_async")``, a test's way to keep a send from the broker:
    send_many and a group call it, as apply_async per call does, and store nothing."""
    from unittest import mock
    a = held_app.tasks["t.a"]
    with mock.patch.object(a, method) as patched:
        held_app.send_many([a.s(1), a.s(2)])
    assert patched.call_count == 2 and held_app.sent == []  # type: ignore[attr-defined]


def test_a_send_call_patched_on_the_task_itself_is_called_for_each_group_member(
        held_app: App) -> None:
    from unittest import mock
    a = held_app.tasks["t.a"]
    with mock.patch.object(a, "send_call") as patched:
        group([a.s(1), a.s(2)]).apply_async()
    assert patched.call_count == 2 and held_app.sent == []  # type: ignore[attr-defined]


def test_send_many_while_another_thread_sets_a_task_option(held_app: App) -> None:
    """A task option set by another thread while a lane is made sends the batch the usual
    way (it was a KeyError, nothing sent)."""
    import sys
    import threading
    a = held_app.tasks["t.a"]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    stop = threading.Event()

    def setter() -> None:
        for i in itertools.count():
            if stop.is_set():
                return
            a.priority = i % 3

    thread = threading.Thread(target=setter)
    thread.start()
    try:
        for _ in range(3000):
            held_app.send_many([a.s(1)])
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert len(held_app.sent) == 3000  # type: ignore[attr-defined]


def test_a_task_registered_again_part_way_sends_the_calls_after_it(held_app: App) -> None:
    """A lane keeps its task for the batch: a task registered again under the name while a
    generator feeds send_many sends the calls after it as the new one's."""
    a = held_app.tasks["t.a"]

    def calls() -> Iterator[Any]:
        yield a.s(1)

        @held_app.task(name="t.a", queue="elsewhere")
        def again(x: int) -> int:
            return x
        yield again.s(2)
    held_app.send_many(calls())
    queues = [o.routing_key for o in held_app.sent]  # type: ignore[attr-defined]
    assert queues == ["lanes", "elsewhere"]


def test_a_lane_checks_a_new_keyword_name_after_a_good_call(held_app: App) -> None:
    a = held_app.tasks["t.a"]
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        held_app.send_many([a.s(1, y=2), a.s(1, z=2)])
    assert held_app.sent == []  # type: ignore[attr-defined]


def test_s_uses_an_overridden_signature(held_app: App) -> None:
    from qtui.core.canvas import Signature

    class Tagged(Task):
        def signature(self, args: Any = None, kwargs: Any = None, immutable: bool = False,
                      **options: Any) -> Signature:
            return Signature(self, args, kwargs, {"queue": "tagged", **options}, app=self.app)

    @held_app.task(name="t.tagged", base=Tagged)
    def tagged(x: int) -> int:
        return x

    assert tagged.s(1)["options"] == {"queue": "tagged"}
