"""What the console takes in from the event stream: bad events are counted and skipped, the
feed survives whatever happens in its loop, and memory stays bounded however much is sent."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from types import SimpleNamespace

import pytest
from kombu import Connection, Producer

from qtui.core import App
from qtui.core.events import event_exchange
from qtui.core.exceptions import ConfigError
from qtui.core.state import State, TaskState
from qtui.tui.feed import Feed
from qtui.tui.history import History
from qtui.tui.rows import Snapshot

from .console_data import SNAPSHOT, FixedConsole

NOW = 1_790_000_000.0


def received(uuid: str = "t1", **fields: object) -> dict[str, object]:
    return {"type": "task-received", "uuid": uuid, "hostname": "w1", "timestamp": NOW,
            "clock": 1, "name": "tasks.add", "args": "(1,)", **fields}


BAD_EVENTS = [
    received(uuid=[1, 2]),  # type: ignore[arg-type]
    received(timestamp=1e300),
    received(timestamp="yesterday"),
    received(timestamp=float("nan")),
    received(clock=-1),
    received(retries="3"),
    received(hostname={"a": 1}),
    received(name=["x"]),
    {"type": 5, "hostname": "w1"},
    {"type": "worker-heartbeat", "hostname": "w1", "loadavg": ["high"]},
    {"type": "worker-heartbeat", "hostname": "w1", "freq": 0},
    {"type": "worker-heartbeat", "hostname": "w1", "active": 1.5},
]


def test_bad_events_are_counted_and_skipped_and_the_next_good_one_applies():
    state = State()
    state.ingest([*BAD_EVENTS, received("good")])
    assert state.bad_events == len(BAD_EVENTS)
    assert "loadavg" in state.last_bad_event or "active" in state.last_bad_event
    assert [t.uuid for t in state.tasks()] == ["good"]
    assert state.task("good").received == NOW


def test_a_flood_of_made_up_workers_keeps_only_the_most_recent():
    state = State(max_workers=50)
    state.ingest({"type": "worker-heartbeat", "hostname": f"fake{n}", "timestamp": NOW}
                 for n in range(5_000))
    state.event({"type": "task-started", "uuid": "t", "hostname": "fake4000", "timestamp": NOW})
    assert len(state.workers) == 50
    assert "fake4999" in state.workers and "fake4000" in state.workers
    assert "fake0" not in state.workers


def test_huge_fields_are_cut_with_a_marker():
    state = State(max_field=1_000)
    huge = "x" * 4_000_000
    state.event(received(args=huge, kwargs={"k": huge}))
    state.event({"type": "task-failed", "uuid": "t1", "hostname": "w1", "timestamp": NOW + 1,
                 "clock": 2, "exception": huge, "traceback": huge, "result": [huge]})
    task = state.task("t1")
    for value in (task.args, task.kwargs, task.exception, task.traceback):
        assert len(value) < 1_100 and value.endswith("chars]")
    assert task.args.endswith("…[+3999000 chars]")


def test_the_history_skips_rows_no_event_could_have_made_and_cuts_huge_ones(tmp_path):
    path = tmp_path / "history.sqlite"
    history = History(path, cluster="c", max_field=500)
    history.save([TaskState("ok", args="(1,)", updated=NOW)])
    history.close()
    rows = [("c", "future", NOW, json.dumps({"uuid": "future", "received": 1e300})),
            ("c", "list", NOW, json.dumps({"uuid": [1, 2]})),
            ("c", "nan", NOW, '{"uuid": "nan", "timestamp": NaN}'),
            ("c", "line", NOW, json.dumps({"uuid": "line", "timeline": [["a", "b", "c"]]})),
            ("c", "huge", NOW, json.dumps({"uuid": "huge", "traceback": "t" * 100_000}))]
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO tasks VALUES (?, ?, ?, ?)", rows)
    history = History(path, cluster="c", max_field=500)
    try:
        loaded = {t.uuid: t for t in history.load()}
    finally:
        history.close()
    assert sorted(loaded) == ["huge", "ok"]
    assert len(loaded["huge"].traceback) < 600


def test_console_limits_are_settings_with_checked_values():
    app = App("t", console_max_workers=10, console_max_field=200)
    assert Feed(app).state.max_workers == 10 and Feed(app).state.max_field == 200
    for bad in ({"console_max_workers": 0}, {"console_max_field": 5},
                {"console_max_workers": "many"}):
        with pytest.raises(ConfigError):
            App("t", **bad)


def test_a_worker_forwards_at_most_1_kib_of_a_clients_argsrepr():
    from qtui.workers.events import Events
    events = Events(SimpleNamespace(send_events=True, heartbeat=False))  # type: ignore[arg-type]
    sent: list[dict[str, object]] = []
    events._send = lambda type, fields: sent.append(fields)  # type: ignore[method-assign]
    message = SimpleNamespace(id="t1", task="tasks.add", argsrepr="a" * 100_000,
                              kwargsrepr="k" * 5_000,
                              root_id=None, parent_id=None, retries=0, eta=None, expires=None)
    job = SimpleNamespace(task_id="t1", message=message, queue="celery")
    events.on_task_received(job)  # type: ignore[arg-type]
    assert sent[0]["args"] == "a" * 1024 + "…[+98976 chars]"
    assert sent[0]["kwargs"] == "k" * 1024 + "…[+3976 chars]"
    assert sent[0]["queue"] == "celery"  # qtui's addition: per-queue metrics need it


def run_feed(feed: Feed) -> tuple[threading.Thread, list[Snapshot]]:
    snapshots: list[Snapshot] = []
    thread = threading.Thread(target=feed.run, args=(snapshots.append, 0.1), daemon=True)
    thread.start()
    return thread, snapshots


def wait_for(condition, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.redis
def test_a_failing_event_loop_says_so_and_starts_again(redis_url):
    feed = Feed(App("t", broker=redis_url))
    ingest, calls = feed.state.ingest, []

    def fails_once(batch):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return ingest(batch)
    feed.state.ingest = fails_once  # type: ignore[method-assign]
    thread, snapshots = run_feed(feed)
    try:
        assert wait_for(lambda: any(s.feed_failures == 1 for s in snapshots))
        failed = next(s for s in snapshots if s.feed_failures == 1)
        assert "event feed failed (RuntimeError: boom); restarting" in failed.error
        assert failed.last_feed_failure == "RuntimeError: boom"
        assert wait_for(lambda: snapshots[-1].connected and len(calls) > 3)
    finally:
        feed.stop()
        thread.join(10)
    assert not thread.is_alive()


@pytest.mark.redis
def test_a_bad_event_on_the_wire_neither_stops_the_feed_nor_hides_the_next(redis_url, unique):
    app = App("t", broker=redis_url)
    feed = Feed(app)
    thread, snapshots = run_feed(feed)
    try:
        assert wait_for(lambda: bool(snapshots) and snapshots[-1].connected)
        with Connection(redis_url) as conn:
            producer = Producer(conn.default_channel)
            exchange = event_exchange(conn)
            for body in (received(uuid=[1, 2]), received(f"{unique}-late", timestamp=1e300),
                         [received(f"{unique}-ok")]):
                producer.publish(body, exchange=exchange.name, routing_key="task.multi",
                                 declare=[exchange], serializer="json")
        assert wait_for(lambda: any(t.id == f"{unique}-ok" for s in snapshots for t in s.tasks))
        assert snapshots[-1].bad_events >= 2 and snapshots[-1].feed_failures == 0
        assert not any(t.id == f"{unique}-late" for s in snapshots for t in s.tasks)
    finally:
        feed.stop()
        thread.join(10)


async def test_the_console_says_when_the_feed_failed_and_counts_bad_events():
    from dataclasses import replace
    console = FixedConsole(snapshot=replace(SNAPSHOT, bad_events=3,
                                            last_bad_event="uuid must be a string, not list"))
    async with console.run_test(size=(160, 40), notifications=True) as pilot:
        await pilot.pause()
        assert "3 bad event(s) skipped (last: uuid must be a string, not list)" \
            in str(console.screen.query_one("#summary").render())
        console.apply(replace(SNAPSHOT, feed_failures=1, last_feed_failure="KeyError: 'x'"))
        await pilot.pause(0.3)
        assert any("The event feed failed (KeyError: 'x') and was started again" in text
                   for _, text in console.notes)


@pytest.mark.parametrize("stats, queues", [
    ([1, 2], 5),
    ({"pool": [1]}, [{"name": 3}, "celery", None]),
    ({"pool": {"implementation": 7, "max-concurrency": "8"}}, {"name": "celery"}),
    ({"pool": {"implementation": "a.b:C", "max-concurrency": True}}, [{"name": ["x"]}]),
])
def test_worker_details_of_the_wrong_shape_are_left_out(stats, queues):
    from qtui.core.state import WorkerState
    from qtui.tui.feed import worker_row
    row = worker_row(WorkerState("w1"), {"stats": stats, "queues": queues}, NOW)
    assert row.queues == () and row.concurrency is None
    assert isinstance(row.pool, str)


def test_a_crafted_stats_reply_does_not_break_the_feeds_snapshots():
    feed = Feed(App("t", broker="redis://127.0.0.1:6379/15"))
    feed.state.event({"type": "worker-heartbeat", "hostname": "w1", "timestamp": time.time()})
    feed._details["w1"] = {"stats": ["not", "a", "dict"], "queues": [{"name": 1}]}
    with feed.lock:
        snapshot = feed.snapshot()
    assert [w.hostname for w in snapshot.workers] == ["w1"]


async def test_the_workers_view_redraws_at_most_once_a_second_under_a_flood(monkeypatch):
    from dataclasses import replace

    from qtui.tui.rows import WorkerRow
    from qtui.tui.views.workers import WorkersScreen
    workers = tuple(WorkerRow(f"fake-{n}", True, 1.0) for n in range(300))
    console = FixedConsole()
    async with console.run_test(size=(160, 40)) as pilot:
        await pilot.press("2")
        await pilot.pause()
        assert isinstance(console.screen, WorkersScreen)
        console.last_input = 0.0  # no key held redraws back: only the view's own pace
        drawn: list[int] = []
        original = console.screen.refresh_view
        monkeypatch.setattr(console.screen, "refresh_view",
                            lambda: (drawn.append(1), original())[1])
        console.screen._last_redraw = 0.0
        for n in range(20):
            console.apply(replace(SNAPSHOT, workers=workers[: 100 + n * 10]))
        assert 1 <= len(drawn) <= 2
        await pilot.pause(1.5)
        assert len(drawn) <= 3  # the last snapshot is drawn once its turn comes
        assert console.screen.table.row_count == 290


@pytest.mark.redis
def test_a_feed_whose_snapshots_fail_still_says_so_and_waits_longer_each_time(redis_url,
                                                                              monkeypatch):
    from qtui.tui import feed as feed_module
    monkeypatch.setattr(feed_module, "RESTART_DELAY", 0.1)
    feed = Feed(App("t", broker=redis_url))

    def broken() -> Snapshot:
        raise KeyError("snapshot")
    feed.snapshot = broken  # type: ignore[method-assign]
    waits: list[float] = []
    wait = feed.stopped.wait
    feed.stopped.wait = lambda seconds: (waits.append(seconds), wait(0.01))[1]  # type: ignore
    thread, snapshots = run_feed(feed)
    try:
        assert wait_for(lambda: len(snapshots) >= 4)
    finally:
        feed.stop()
        thread.join(10)
    assert snapshots[0].feed_failures == 1 and snapshots[3].feed_failures == 4
    assert "event feed failed (KeyError: 'snapshot')" in snapshots[3].error
    assert waits[:4] == [0.1, 0.2, 0.4, 0.8]


def test_arguments_the_result_backend_cannot_give_are_unknown_and_the_log_says_why(
        monkeypatch, caplog):
    from qtui.core.exceptions import BackendError

    feed = Feed(App("arguments", broker="memory://"))
    monkeypatch.setattr(feed.app.control, "broadcast", lambda *args, **options: [])

    def unreachable(task_id: str) -> dict[str, object]:
        raise BackendError(f"cannot read the result of task {task_id}: Connection refused")

    monkeypatch.setattr(feed.app.backend, "get_task_meta", unreachable)
    with caplog.at_level("INFO", logger="qtui.console"):
        assert feed.full_arguments("t-1") is None
    assert "cannot read the result of task t-1: Connection refused" in caplog.text


HUGE = 10 ** 400  # a JSON integer of 401 digits: json.loads gives a Python int, no float holds it


@pytest.mark.parametrize("event", [
    {"type": "worker-heartbeat", "hostname": "w1", "timestamp": NOW, "freq": HUGE},
    {"type": "worker-heartbeat", "hostname": "w1", "timestamp": NOW, "loadavg": [HUGE]},
    {"type": "worker-heartbeat", "hostname": "w1", "timestamp": NOW, "utcoffset": -HUGE},
    received(timestamp=HUGE),
    {"type": "task-succeeded", "uuid": "t1", "hostname": "w1", "timestamp": NOW,
     "runtime": HUGE},
])
def test_an_integer_too_big_for_a_float_is_a_bad_event_and_the_feed_goes_on(event):
    """Whoever can publish an event must not knock the console out: a number past 2**53 is
    refused, so later batches (a heartbeat's deadline) and the views (a runtime) still work."""
    from qtui.tui.views.format import duration

    feed = Feed(App("huge", broker="memory://"))
    first = feed.ingest(json.loads(json.dumps([received("t1"), event])))
    assert feed.state.bad_events == 1
    later = feed.ingest([received("t2", timestamp=NOW + 1)])
    assert [row.task.uuid for row in later.tasks] == ["t2"]
    assert all(duration(row.task.runtime) is not None for row in first.tasks)
