"""Alert rules: what each kind measures, pending for `for`, firing, clearing and unknown, with the
clock given in each observation; and the checks of the `alerts` setting."""

from __future__ import annotations

import pytest

from qtui.core import App
from qtui.core.alerts import (
    FIRING,
    OK,
    PENDING,
    UNKNOWN,
    Alerts,
    Finished,
    FinishedCounts,
    Observation,
    QueueLevel,
    Rule,
    evaluate,
    parse_rules,
)
from qtui.core.config import load_toml
from qtui.core.exceptions import ConfigError

T0 = 1_000_000.0


def seen(now: float = T0, **fields) -> Observation:
    return Observation(now=now, listening_since=fields.pop("listening_since", T0 - 60), **fields)


def rule(kind: str, **options) -> Rule:
    return parse_rules([{"name": "r", "kind": kind, **options}])[0]


# what each kind measures ------------------------------------------------------------------------
def test_worker_offline_counts_matching_known_workers_without_heartbeat():
    r = rule("worker_offline", worker="w*@*")
    status = evaluate(r, seen(workers={"w1@a": False, "w2@a": True, "other@a": False}))
    assert (status.state, status.value, status.detail) == (FIRING, 1, "w1@a")
    assert evaluate(r, seen(workers={"w1@a": True, "other@a": False})).state == OK


def test_worker_offline_is_unknown_until_a_matching_worker_was_seen():
    status = evaluate(rule("worker_offline", worker="w*@*"), seen(workers={"other@a": False}))
    assert (status.state, status.detail) == (UNKNOWN, "no matching worker seen yet")


def test_queue_depth_is_the_deepest_matching_queue():
    r = rule("queue_depth", queue="jobs.*", over=100)
    queues = {"jobs.a": QueueLevel(50), "jobs.b": QueueLevel(150), "celery": QueueLevel(900)}
    status = evaluate(r, seen(queues=queues))
    assert (status.state, status.value, status.detail) == (FIRING, 150, "jobs.b")
    assert evaluate(r, seen(queues={"jobs.a": QueueLevel(100)})).state == OK


def test_queue_rules_are_unknown_before_a_poll_and_when_no_queue_matches():
    r = rule("queue_depth", queue="celery", over=10)
    assert evaluate(r, seen(queues=None)).state == UNKNOWN
    assert evaluate(r, seen(queues={"other": QueueLevel(99)})).state == UNKNOWN
    assert evaluate(r, seen(queues={"celery": QueueLevel(None)})).state == UNKNOWN


def test_queue_age_is_unknown_while_the_poll_gives_no_ages_and_measured_once_it_does():
    r = rule("queue_age", queue="celery", over=60)
    status = evaluate(r, seen(queues={"celery": QueueLevel(5)}))
    assert status.state == UNKNOWN and "age" in status.detail
    assert evaluate(r, seen(queues={"celery": QueueLevel(5, age=61.0)})).state == FIRING


def counted(rules: list[Rule], tasks: list[Finished], now: float = T0) -> dict:
    counts = FinishedCounts(rules)
    for task in tasks:
        counts.add(task)
    return counts.counts(now)


def test_failure_rate_counts_failures_among_tasks_finished_in_the_window():
    r = rule("failure_rate", task="reports.*", worker="w1@*", over=0.25, window=60,
             min_finished=4)
    finished = [Finished("reports.a", "w1@a", failed, T0 - 10)
                for failed in (True, True, False, False)]
    finished += [Finished("reports.a", "w1@a", False, T0 - 100),  # before the window
                 Finished("other", "w1@a", True, T0 - 5),  # another task
                 Finished("reports.b", "w2@a", True, T0 - 5)]  # another worker
    status = evaluate(r, seen(finished=counted([r], finished)))
    assert (status.state, status.value) == (FIRING, 0.5)
    assert status.detail == "2 of 4 failed in the last 60 s"


def test_failure_rate_forgets_what_finished_before_its_window():
    r = rule("failure_rate", over=0.25, window=60, min_finished=1)
    counts = FinishedCounts([r])
    counts.add(Finished("t", "w", True, T0))
    assert counts.counts(T0 + 30) == {"r": (1, 1)}
    assert counts.counts(T0 + 61) == {"r": (0, 0)}
    counts.add(Finished("t", "w", False, T0 + 200))
    counts.add(Finished("t", "w", True, T0 + 100))  # too old for the ring by now
    assert counts.counts(T0 + 201) == {"r": (1, 0)}


def test_failure_rate_cannot_fire_below_its_minimum_of_finished_tasks():
    r = rule("failure_rate", over=0.1, min_finished=5)
    status = evaluate(r, seen(finished=counted([r], [Finished("t", "w", True, T0)] * 4)))
    assert (status.state, status.value) == (OK, 1.0)
    assert "fires from 5 finished" in status.detail
    assert evaluate(r, seen()).state == OK  # a quiet cluster is not unknown


def test_no_events_counts_from_the_last_event_else_from_listening():
    r = rule("no_events", over=30)
    assert evaluate(r, seen(last_event=T0 - 31)).state == FIRING
    assert evaluate(r, seen(last_event=T0 - 29)).state == OK
    assert evaluate(r, seen(listening_since=T0 - 40)).value == 40


# for, firing, clearing --------------------------------------------------------------------------
def test_a_rule_is_pending_for_its_for_seconds_then_fires_and_clears():
    alerts = Alerts([rule("queue_depth", queue="q", over=10, **{"for": 30})])
    deep, shallow = {"q": QueueLevel(11)}, {"q": QueueLevel(3)}
    assert alerts.update(seen(T0, queues=deep)) == []
    assert alerts.statuses()[0].state == PENDING and alerts.statuses()[0].since == T0
    assert alerts.update(seen(T0 + 29, queues=deep)) == []
    fired = alerts.update(seen(T0 + 30, queues=deep))
    assert [(t.event, t.status.state, t.status.since) for t in fired] == [
        ("firing", FIRING, T0 + 30)]
    assert alerts.update(seen(T0 + 40, queues=deep)) == []
    assert alerts.statuses()[0].since == T0 + 30  # firing since it started firing
    cleared = alerts.update(seen(T0 + 50, queues=shallow))
    assert [(t.event, t.status.state) for t in cleared] == [("cleared", OK)]


def test_a_dip_under_the_threshold_starts_the_for_period_again():
    alerts = Alerts([rule("queue_depth", queue="q", over=10, **{"for": 30})])
    alerts.update(seen(T0, queues={"q": QueueLevel(20)}))
    alerts.update(seen(T0 + 20, queues={"q": QueueLevel(5)}))
    alerts.update(seen(T0 + 25, queues={"q": QueueLevel(20)}))
    assert alerts.update(seen(T0 + 40, queues={"q": QueueLevel(20)})) == []
    assert alerts.statuses()[0].state == PENDING


def test_a_firing_rule_stays_firing_while_its_value_is_unknown():
    alerts = Alerts([rule("queue_depth", queue="q", over=10)])
    alerts.update(seen(T0, queues={"q": QueueLevel(20)}))
    assert alerts.update(seen(T0 + 5, queues={"q": QueueLevel(None)})) == []
    status = alerts.statuses()[0]
    assert (status.state, status.value, status.since) == (FIRING, None, T0)


def test_an_unknown_rule_is_not_pending():
    alerts = Alerts([rule("queue_depth", queue="q", over=10, **{"for": 30})])
    alerts.update(seen(T0, queues={"q": QueueLevel(20)}))
    alerts.update(seen(T0 + 10, queues=None))
    assert alerts.statuses()[0].state == UNKNOWN
    alerts.update(seen(T0 + 35, queues={"q": QueueLevel(20)}))
    assert alerts.statuses()[0].state == PENDING  # the period started again


def test_the_alert_json_names_the_event_rule_value_and_threshold():
    alerts = Alerts([rule("queue_depth", queue="q", over=10)])
    [fired] = alerts.update(seen(T0, queues={"q": QueueLevel(12)}))
    data = fired.as_dict()
    assert {k: data[k] for k in ("event", "name", "kind", "state", "value", "threshold",
                                 "since", "at", "detail", "selection")} == {
        "event": "firing", "name": "r", "kind": "queue_depth", "state": "firing", "value": 12,
        "threshold": 10, "since": T0, "at": T0, "detail": "q", "selection": "queue=q"}
    assert data["rule"] == {"name": "r", "kind": "queue_depth", "over": 10, "for": 0,
                            "queue": "q"}


# the setting ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("tables", "message"), [
    ([{"kind": "queue_depth", "over": 1}], "alerts[0] needs a name"),
    ([{"name": "b", "kind": "queue_deep", "over": 1}],
     "alerts[0] ('b'): kind must be one of worker_offline, queue_depth, queue_age, failure_rate, "
     "no_events, got 'queue_deep' Did you mean 'queue_depth'?"),
    ([{"name": "b", "kind": "queue_depth", "task": "x", "over": 1}],
     "'task' does not apply to kind 'queue_depth' (it applies to failure_rate); the selectors "
     "of queue_depth: queue"),
    ([{"name": "b", "kind": "no_events", "queue": "x", "over": 1}],
     "the selectors of no_events: none"),
    ([{"name": "b", "kind": "queue_depth", "over": -1}], "over must be a number >= 0, got -1"),
    ([{"name": "b", "kind": "queue_depth"}], "over (the threshold, in messages) is missing"),
    ([{"name": "b", "kind": "failure_rate", "over": 5}], "over must be a rate below 1"),
    ([{"name": "b", "kind": "queue_depth", "over": 1, "for": "1m"}],
     "for must be a number >= 0, got '1m'"),
    ([{"name": "b", "kind": "queue_depth", "over": 1}, {"name": "b", "kind": "no_events",
                                                        "over": 9}],
     "alerts[1]: the name 'b' is taken by an earlier rule"),
    ([{"name": "b", "kind": "queue_depth", "over": 1, "fro": 60}],
     "alerts[0] ('b'): unknown key 'fro'. Did you mean 'for'?"),
    ([{"name": "b", "kind": "queue_depth", "over": 1, "window": 60}],
     "'window' does not apply to kind 'queue_depth' (it applies to failure_rate)"),
    ([{"name": "b", "kind": "failure_rate", "over": 0.1, "min_finished": 0}],
     "min_finished must be a whole number >= 1"),
    ({"name": "b"}, "setting 'alerts' must be a list of alert rules"),
])
def test_a_wrong_rule_is_refused_naming_the_rule_and_the_field(tables, message):
    with pytest.raises(ConfigError) as caught:
        App("t").conf.update(alerts=tables)
    assert message in str(caught.value)


def test_alerts_load_from_toml_tables_and_errors_name_the_file(tmp_path):
    path = tmp_path / "qtui.toml"
    path.write_text('[[alerts]]\nname = "backlog"\nkind = "queue_depth"\nqueue = "celery"\n'
                    'over = 1000\nfor = 60\n\n[[alerts]]\nname = "silence"\nkind = "no_events"\n'
                    'over = 120\n')
    app = App("t")
    app.config_from_file(path)
    assert [r.name for r in parse_rules(app.conf.alerts)] == ["backlog", "silence"]
    assert parse_rules(app.conf.alerts)[0].hold == 60
    path.write_text('[[alerts]]\nname = "backlog"\nkind = "queue_depth"\nover = 1000\nfour = 6\n')
    with pytest.raises(ConfigError, match=r"qtui\.toml: alerts\[0\] \('backlog'\): unknown key "
                                          r"'four'. Did you mean 'for'\?"):
        App("t").config_from_file(path)
    assert load_toml(path)["alerts"][0]["four"] == 6
