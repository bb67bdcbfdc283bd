"""Task metrics: the histogram model (core/metrics.py), what the State counts from events, and
how the console's history keeps rollups (adding up, retention, migration of an older file)."""

from __future__ import annotations

import random
import sqlite3

import pytest

from qtui.core.metrics import BOUNDS, MINUTE, Histogram, Recorder, Rollup, bucket_of
from qtui.core.placement import PLACEMENT_WAIT, Held
from qtui.core.state import State
from qtui.tui.history import COARSE, History

T0 = 1_790_000_400.0  # the start of ten minutes (and of a minute)


def true_percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(q * len(ordered)) - 1)]


@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_a_percentile_falls_within_one_bucket_of_the_true_value(q):
    rng = random.Random(7)
    values = [rng.lognormvariate(-3, 1.5) for _ in range(5000)]
    histogram = Histogram()
    for value in values:
        histogram.add(value)
    found = histogram.percentile(q)
    assert found is not None
    assert abs(bucket_of(found) - bucket_of(true_percentile(values, q))) <= 1


def test_histograms_merged_read_as_one_histogram_of_all_the_values():
    first, second, both = Histogram(), Histogram(), Histogram()
    for i, value in enumerate([0.002, 0.3, 0.04, 7.0, 0.0005, 90.0, 0.3, 1.2]):
        (first if i % 2 else second).add(value)
        both.add(value)
    first.merge(second)
    assert first == both
    assert first.count == 8
    assert first.percentile(0.5) == both.percentile(0.5)


def test_values_above_the_last_bound_read_as_the_last_bound():
    histogram = Histogram()
    histogram.add(BOUNDS[-1] * 10)
    assert histogram.percentile(0.99) == BOUNDS[-1]
    assert Histogram().percentile(0.5) is None


def test_the_recorder_rolls_events_up_per_minute_name_and_queue_and_starts_over():
    recorder = Recorder()
    recorder.record("task-succeeded", T0 + 1, "a", "q", runtime=0.2)
    recorder.record("task-succeeded", T0 + 59, "a", "q", runtime=0.4)
    recorder.record("task-failed", T0 + 61, "a", "q")
    recorder.record("task-succeeded", T0 + 2, "b", "q")
    recorder.record("task-rejected", T0 + 3, "a", "q")  # not one of the counts
    taken = recorder.take()
    assert set(taken) == {(int(T0), "a", "q"), (int(T0) + MINUTE, "a", "q"), (int(T0), "b", "q")}
    assert taken[(int(T0), "a", "q")].count("succeeded") == 2
    assert taken[(int(T0), "a", "q")].runtime.count == 2
    assert taken[(int(T0) + MINUTE, "a", "q")].count("failed") == 1
    assert recorder.take() == {}


def event(kind: str, uuid: str, at: float, **fields: object) -> dict[str, object]:
    return {"type": kind, "uuid": uuid, "hostname": "w@h", "timestamp": at, "clock": 0,
            "local_received": at, **fields}


def test_the_state_counts_under_the_name_and_queue_the_task_has_so_far():
    state = State(metrics=Recorder())
    state.ingest([
        event("task-sent", "t1", T0, name="app.add", queue="fast"),
        event("task-received", "t1", T0 + 0.5),
        event("task-started", "t1", T0 + 2.0),
        event("task-succeeded", "t1", T0 + 2.3, runtime=0.3),
        event("task-received", "t2", T0 + 1, name="app.add", queue="fast"),
        event("task-started", "t2", T0 + 1.25),
        event("task-failed", "t2", T0 + 4.25, exception="ValueError()"),
    ])
    rollup = state.metrics.take()[(int(T0), "app.add", "fast")]  # type: ignore[union-attr]
    assert dict(zip(("sent", "received", "started", "succeeded", "failed"), rollup.counts[:5],
                strict=True)) \
        == {"sent": 1, "received": 2, "started": 2, "succeeded": 1, "failed": 1}
    # Waits: sent to started (2.0) for t1, received to started (0.25) for t2.
    assert rollup.wait.total == pytest.approx(2.25)
    # Runtimes: the event's 0.3, and started to failed (3.0) where the event has none.
    assert rollup.runtime.total == pytest.approx(3.3)


def test_a_retried_task_waits_from_its_new_delivery_not_from_the_first_send():
    state = State(metrics=Recorder())
    state.ingest([
        event("task-sent", "t1", T0, name="app.flaky", queue="q"),
        event("task-started", "t1", T0 + 1),
        event("task-retried", "t1", T0 + 2, exception="E()"),
        event("task-received", "t1", T0 + 10),
        event("task-started", "t1", T0 + 10.5),
    ])
    rollup = state.metrics.take()[(int(T0), "app.flaky", "q")]  # type: ignore[union-attr]
    assert rollup.count("retried") == 1
    assert rollup.wait.total == pytest.approx(1.0 + 0.5)


def test_a_workers_events_before_the_task_sent_count_under_the_queue_it_names():
    """A Celery worker names no queue: its events can arrive before the client's task-sent."""
    state = State(metrics=Recorder())
    state.ingest([
        event("task-received", "t1", T0 + 0.5, name="app.add"),
        event("task-started", "t1", T0 + 0.6),
        event("task-succeeded", "t1", T0 + 0.9, runtime=0.3),
        event("task-sent", "t1", T0 + 1.0, name="app.add", queue="fast", hostname="c@h"),
    ])
    taken = state.metrics.take()  # type: ignore[union-attr]
    assert list(taken) == [(int(T0), "app.add", "fast")]
    assert taken[(int(T0), "app.add", "fast")].counts[:4] == [1, 1, 1, 1]


def test_a_task_whose_queue_no_event_names_is_counted_once_the_wait_is_over():
    state = State(metrics=Recorder())
    state.ingest([event("task-received", "t1", T0, name="app.add"),
                  event("task-succeeded", "t1", T0 + 0.5, runtime=0.5)])
    state.measure_unplaced(T0 + PLACEMENT_WAIT / 2)
    assert state.metrics.take() == {}  # type: ignore[union-attr]
    state.measure_unplaced(T0 + PLACEMENT_WAIT)
    taken = state.metrics.take()  # type: ignore[union-attr]
    assert taken[(int(T0), "app.add", "")].count("succeeded") == 1


def test_held_counts_past_the_limit_are_due_at_once_oldest_first():
    held: Held[str] = Held(wait=10.0, limit=2)
    for uuid in ("a", "b", "c"):
        held.hold(uuid, f"{uuid}-received", now=0.0)
    held.hold("a", "a-started", now=1.0)
    assert held.due(now=0.0) == [("a", ["a-received", "a-started"])]
    assert held.release("c") == ["c-received"] and held.release("c") == []
    held.hold("c", "c-again", now=5.0)
    assert held.due(now=10.0) == [("b", ["b-received"])]
    assert held.due(now=15.0) == [("c", ["c-again"])]
    assert len(held) == 0


def rollup(succeeded: int = 0, failed: int = 0, runtimes: tuple[float, ...] = ()) -> Rollup:
    made = Rollup()
    made.counts[3], made.counts[4] = succeeded, failed
    for value in runtimes:
        made.runtime.add(value)
    return made


def fresh(path: object) -> History:
    """A history whose clock says it is just after T0 (retention keeps T0's rows)."""
    return History(path, cluster="c", clock=lambda: T0 + MINUTE)  # type: ignore[arg-type]


def test_rollups_saved_twice_for_one_minute_add_up(tmp_path):
    history = fresh(tmp_path / "h.sqlite")
    history.save_metrics({(int(T0), "a", "q"): rollup(2, 1, (0.1, 0.2))})
    history.save_metrics({(int(T0), "a", "q"): rollup(3, 0, (5.0,)),
                          (int(T0), "b", "q"): rollup(1)})
    by_task = history.metrics(T0, T0 + 3600, by="task")
    assert by_task["a"].count("succeeded") == 5 and by_task["a"].count("failed") == 1
    assert by_task["a"].runtime.count == 3
    assert by_task["a"].runtime.total == pytest.approx(5.3)
    assert history.metrics(T0, T0 + 3600, by="queue")["q"].count("succeeded") == 6


def test_minutes_older_than_the_fine_retention_become_ten_minutes_then_go(tmp_path):
    now = [T0]
    history = History(tmp_path / "h.sqlite", cluster="c", metrics_hours=48, metrics_days=30,
                      clock=lambda: now[0])
    minutes = {(int(T0) + m * MINUTE, "a", "q"): rollup(1, runtimes=(0.01 * (m + 1),))
               for m in range(20)}
    history.save_metrics(minutes)

    def periods() -> list[tuple[int, int, int]]:
        with sqlite3.connect(tmp_path / "h.sqlite") as db:
            return db.execute("SELECT period, start, succeeded FROM metrics "
                              "ORDER BY period, start").fetchall()
    assert len(periods()) == 20

    now[0] = T0 + 48 * 3600 + 15 * MINUTE  # the first ten minutes are past 48 hours
    history.trim_metrics()
    rows = periods()
    assert (COARSE, int(T0), 10) in rows
    assert [r for r in rows if r[0] == MINUTE] == [(MINUTE, int(T0) + m * MINUTE, 1)
                                                   for m in range(10, 20)]
    summed = history.metrics(T0, now[0], by="task")["a"]
    assert summed.count("succeeded") == 20 and summed.runtime.count == 20

    now[0] = T0 + 49 * 3600
    history.trim_metrics()
    assert [r[0] for r in periods()] == [COARSE, COARSE]

    now[0] = T0 + 30 * 86400 + 5 * MINUTE  # the first ten minutes are past 30 days
    history.trim_metrics()
    assert periods() == [(COARSE, int(T0) + COARSE, 10)]


def test_queue_depths_keep_the_deepest_poll_of_each_minute(tmp_path):
    history = fresh(tmp_path / "h.sqlite")
    history.save_queue_depths(T0 + 1, {"q": (5, None), "r": (None, None)})
    history.save_queue_depths(T0 + 3, {"q": (40, None), "r": (2, None)})
    history.save_queue_depths(T0 + 5, {"q": (7, None)})
    assert history.queue_depths(T0, T0 + MINUTE) == {"q": (40, None), "r": (2, None)}


def test_a_history_file_of_schema_1_gains_the_metrics_and_keeps_its_tasks(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the file as qtui wrote it before metrics
        db.execute("CREATE TABLE tasks (cluster TEXT NOT NULL, id TEXT NOT NULL, updated REAL "
                   "NOT NULL, data TEXT NOT NULL, PRIMARY KEY (cluster, id))")
        db.execute("CREATE INDEX tasks_age ON tasks (cluster, updated)")
        db.execute("INSERT INTO tasks VALUES ('c', 'kept', 5.0, ?)",
                   ('{"uuid": "kept", "state": "SUCCESS", "name": "a", "updated": 5.0}',))
        db.execute("PRAGMA user_version = 1")
    history = fresh(path)
    assert [t.uuid for t in history.load()] == ["kept"]
    history.save_metrics({(int(T0), "a", "q"): rollup(4)})
    assert history.metrics(T0, T0 + 60, by="task")["a"].count("succeeded") == 4
    history.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
