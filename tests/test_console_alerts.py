"""Alerts in the console: the header names a firing rule in every view, the Alerts view (`!`,
`:alerts`) lists every rule at 80x24, a rule that fires or clears is notified, and the feed
measures the rules from the state it keeps."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest

from qtui.core import App
from qtui.core.alerts import FIRING, OK, PENDING, UNKNOWN, RuleStatus, Transition, parse_rules
from qtui.core.queues import QueueHead
from qtui.tui.feed import Feed
from qtui.tui.rows import QueueRow
from qtui.tui.views import format
from qtui.tui.views.alert_badge import AlertBadge
from qtui.tui.views.alerts import AlertsScreen

from .console_data import SNAPSHOT, FixedConsole, screen_text

NOW = 1_796_036_000.0
RULES = [
    {"name": "backlog", "kind": "queue_depth", "queue": "celery", "over": 1000, "for": 60},
    {"name": "worker-down", "kind": "worker_offline", "worker": "*@prod-*"},
    {"name": "oldest", "kind": "queue_age", "queue": "celery", "over": 300},
    {"name": "failing", "kind": "failure_rate", "task": "reports.*", "over": 0.05},
]
BACKLOG, DOWN, OLDEST, FAILING = parse_rules(RULES)
STATUSES = (
    RuleStatus(BACKLOG, FIRING, NOW - 90, 1500, "celery", NOW - 150),
    RuleStatus(DOWN, FIRING, NOW - 30, 1, "w1@prod-a", NOW - 30),
    RuleStatus(OLDEST, UNKNOWN, NOW - 600, None, "the oldest message's age is not known"),
    RuleStatus(FAILING, OK, NOW - 600, 0.01, "1 of 100 failed in the last 300 s"),
)
QUIET = tuple(replace(s, state=OK) for s in STATUSES)


def console(statuses: tuple[RuleStatus, ...] = STATUSES) -> FixedConsole:
    return FixedConsole(app=App("console-tests", broker="redis://127.0.0.1:6379/15",
                                alerts=RULES), snapshot=replace(SNAPSHOT, alerts=statuses))


def badge(app: FixedConsole) -> AlertBadge:
    return app.screen.query_one(AlertBadge)


async def test_the_header_shows_how_many_rules_fire_and_the_first_one_in_every_view():
    app = console()
    async with app.run_test(size=(80, 24)) as pilot:
        for key in ("1", "2", "3", "4", "5"):
            await pilot.press(key)
            await pilot.pause()
            assert badge(app).display, key
            assert str(badge(app).render()) == "⚠ 2 firing: backlog"
        assert "⚠2firing:backlog" in screen_text(app).replace(" ", "")


async def test_the_header_shows_nothing_while_no_rule_fires():
    app = console(QUIET)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert not badge(app).display
        assert "firing" not in screen_text(app)


async def test_the_badge_appears_when_a_snapshot_brings_a_firing_rule_and_goes_when_it_clears():
    app = console(QUIET)
    async with app.run_test(size=(80, 24)) as pilot:
        app.apply(replace(SNAPSHOT, alerts=STATUSES))
        await pilot.pause(0.5)
        assert badge(app).display
        app.apply(replace(SNAPSHOT, alerts=QUIET))
        await pilot.pause(0.5)
        assert not badge(app).display


@pytest.mark.parametrize("keys", [["exclamation_mark"], ["colon", *"alerts", "enter"],
                                  ["colon", *"al", "enter"]])
async def test_the_alerts_view_lists_every_rule_with_state_value_threshold_and_since(keys):
    app = console()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press(*keys)
        await pilot.pause()
        assert isinstance(app.screen, AlertsScreen)
        table = app.screen.table
        rows = {str(table.get_row_at(i)[0]): [str(c) for c in table.get_row_at(i)]
                for i in range(table.row_count)}
        assert list(rows) == ["backlog", "worker-down", "oldest", "failing"]
        assert rows["backlog"][1:] == ["firing", "1500", "1000 for 60s",
                                       format.clock(NOW - 90), "queue_depth celery"]
        assert rows["worker-down"][1:] == ["firing", "1", "0", format.clock(NOW - 30),
                                           "worker_offline w1@prod-a"]
        assert rows["oldest"][1:4] == ["unknown", "?", "300s"]
        assert rows["failing"][1:4] == ["ok", "1%", "5%"]
        assert "2 firing, 1 unknown" in screen_text(app)


async def test_the_alerts_view_fits_80_columns_with_each_rule_and_its_state():
    app = console()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("exclamation_mark")
        await pilot.pause()
        text = screen_text(app)
        for name, state in (("backlog", "firing"), ("worker-down", "firing"),
                            ("oldest", "unknown"), ("failing", "ok")):
            assert name in text and state in text
        for column in ("Rule", "State", "Value", "Over", "Since"):
            assert column in text


async def test_without_rules_the_alerts_view_says_how_to_add_them():
    app = FixedConsole()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("exclamation_mark")
        await pilot.pause()
        assert "No alert rules: add [[alerts]] tables" in screen_text(app)


async def test_a_rule_that_fires_or_clears_is_notified():
    app = console(QUIET)
    async with app.run_test(size=(80, 24)) as pilot:
        app.apply(replace(SNAPSHOT, alerts=STATUSES,
                          alert_events=(Transition(FIRING, STATUSES[0], NOW),)))
        app.apply(replace(SNAPSHOT, alerts=QUIET,
                          alert_events=(Transition("cleared", QUIET[0], NOW + 5),)))
        await pilot.pause()
    assert app.notes == [
        ("error", "backlog fires: 1500 messages (over 1000 messages) celery"),
        ("information", "backlog cleared: 1500 messages (over 1000 messages) celery")]


async def test_the_help_lists_the_alerts_key_and_command():
    app = console()
    async with app.run_test(size=(80, 60)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        text = screen_text(app)
        assert "! " in text and ":alerts" in text


# the feed measures the rules from its state -------------------------------------------------------
def heartbeat(hostname: str, when: float, kind: str = "worker-heartbeat") -> dict:
    return {"type": kind, "hostname": hostname, "timestamp": when, "local_received": when,
            "pid": 1, "clock": 1, "freq": 2.0}


def task_event(uuid: str, kind: str, when: float, name: str = "reports.daily") -> dict:
    return {"type": kind, "uuid": uuid, "hostname": "w1@prod-a", "timestamp": when,
            "local_received": when, "name": name, "clock": 2}


def test_the_feed_sees_a_worker_go_offline_once_its_heartbeats_stop():
    feed = Feed(App("t", broker="redis://127.0.0.1:6379/15", alerts=RULES))
    feed.ingest([heartbeat("w1@prod-a", NOW), heartbeat("w2@other", NOW - 60)])
    statuses = {}
    for now in (NOW + 1, NOW + 5):
        feed.alerts.update(feed.observe(now))
        statuses[now] = {s.rule.name: s for s in feed.alerts.statuses()}
    assert statuses[NOW + 1]["worker-down"].state == OK
    # 2 x freq without a heartbeat: offline; w2 matches no rule.
    assert (statuses[NOW + 5]["worker-down"].state, statuses[NOW + 5]["worker-down"].detail) \
        == (FIRING, "w1@prod-a")


def test_the_feed_measures_queues_from_its_last_poll_and_failures_from_finished_tasks():
    feed = Feed(App("t", broker="redis://127.0.0.1:6379/15", alerts=RULES))
    feed._queues, feed._queues_fresh = (QueueRow("celery", 1200),), True
    events = [task_event("old", "task-failed", NOW - 400)]  # before the window
    events += [task_event(f"t{i}", "task-failed" if i < 5 else "task-succeeded", NOW - 10)
               for i in range(25)]
    events.append(task_event("other", "task-failed", NOW - 5, name="mail.send"))
    feed.ingest(events)
    feed.alerts.update(feed.observe(NOW))
    statuses = {s.rule.name: s for s in feed.alerts.statuses()}
    assert (statuses["backlog"].state, statuses["backlog"].value) == (PENDING, 1200)
    assert (statuses["failing"].state, statuses["failing"].value) == (FIRING, 0.2)
    assert statuses["failing"].detail == "5 of 25 failed in the last 300 s"
    assert statuses["oldest"].state == UNKNOWN


def test_the_feed_asks_for_the_queues_its_rules_name_without_a_glob():
    feed = Feed(App("t", broker="redis://127.0.0.1:6379/15", alerts=[
        *RULES, {"name": "jobs", "kind": "queue_depth", "queue": "jobs.*", "over": 1}]))
    assert feed.watched_queues() == {"celery"}


def test_alerts_view_layout_at_80x24(snap_compare, utc, monkeypatch):
    # "since" is shown as a time and an age: both fixed, so the picture is the same any day.
    monkeypatch.setattr(format, "time", SimpleNamespace(time=lambda: NOW))
    assert snap_compare(console(), press=["exclamation_mark"], terminal_size=(80, 24))


def test_the_feed_hands_each_change_of_firing_to_one_snapshot_only():
    feed = Feed(App("t", broker="redis://127.0.0.1:6379/15",
                    alerts=[{"name": "down", "kind": "worker_offline"}]))
    first = feed.ingest([heartbeat("w1@a", time.time() - 60)])  # evaluates the rules too
    with feed.lock:
        feed._alerts_at = 0.0  # evaluate again at once: nothing changed
        feed._evaluate_alerts()
        second = feed.snapshot()
    assert [(t.event, t.status.rule.name) for t in first.alert_events] == [("firing", "down")]
    assert second.alert_events == ()
    assert [s.state for s in second.alerts] == [FIRING]


def test_the_console_feed_runs_alert_command_when_a_rule_fires(tmp_path, monkeypatch):
    out = tmp_path / "alert.json"
    feed = Feed(App("t", broker="redis://127.0.0.1:6379/15",
                    alerts=[{"name": "down", "kind": "worker_offline"}],
                    alert_command=[sys.executable, "-c", "import sys; open(sys.argv[1], 'w')"
                                   ".write(sys.stdin.read())", str(out)]))

    class OneBatch:
        """An event receiver that hands over one heartbeat, a minute old, and stops the feed."""

        connected, error = True, ""

        def __init__(self, app: App) -> None:
            pass

        def batches(self, interval: float):
            yield [heartbeat("w1@a", time.time() - 60)]
            feed.stop()
            yield []

        def close(self) -> None:
            pass

    monkeypatch.setattr("qtui.tui.feed.EventReceiver", OneBatch)
    snapshots = []
    feed.run(snapshots.append)
    deadline = time.monotonic() + 30
    while not (out.exists() and out.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    alert = json.loads(out.read_text())
    assert (alert["event"], alert["name"], alert["detail"]) == ("firing", "down", "w1@a")
    assert [t.event for s in snapshots for t in s.alert_events] == ["firing"]


def test_the_feed_dates_a_queue_head_by_its_task_sent_event_or_the_broker():
    feed = Feed(App("t", broker="redis://127.0.0.1:6379/15", alerts=[
        {"name": "oldest", "kind": "queue_age", "queue": "*", "over": 300}]))
    feed.ingest([{"type": "task-sent", "uuid": "head", "hostname": "client@a", "clock": 1,
                  "timestamp": NOW - 400, "local_received": NOW - 400, "name": "t.x"}])
    feed._queues = (QueueRow("celery", 3), QueueRow("undated", 2), QueueRow("empty", 0))
    feed._heads = {"celery": [QueueHead("head")], "undated": [QueueHead("nobody-sent-it")]}
    feed._queues_fresh = True
    levels = feed.observe(NOW).queues
    assert levels is not None
    assert (levels["celery"].age, levels["undated"].age, levels["empty"].age) == (400, None, 0)
    feed.alerts.update(feed.observe(NOW))
    [oldest] = feed.alerts.statuses()
    assert (oldest.state, oldest.value, oldest.detail) == (FIRING, 400, "celery")


def test_queue_age_is_measured_on_the_embedded_broker(tmp_path):
    app = App("t", broker=f"sqlite://{tmp_path}/broker.sqlite", task_default_queue="work",
              alerts=[{"name": "stale", "kind": "queue_age", "queue": "work", "over": 3600},
                      {"name": "idle", "kind": "queue_age", "queue": "idle", "over": 0}])
    try:
        app.send_task("tasks.add", args=[1, 2])
        app.send_task("tasks.add", args=[3, 4], queue="idle")
        feed = Feed(app)
        app.send_task("tasks.add", args=[5, 6], queue="idle")
        feed.poll_once()
        now = time.time()
        with feed.lock:
            feed.alerts.update(feed.observe(now))
    finally:
        app.close()
    stale, idle = feed.alerts.statuses()
    assert stale.state == OK and stale.value is not None and 0 <= stale.value < 3600
    assert idle.state == FIRING and idle.detail == "idle"
