"""The exporter takes events from anyone who can publish: garbage fields, huge and hostile label
values and floods of made-up names must neither crash it nor grow its series without bound.
Events go straight into Exporter.ingest (no broker); the output is what a scrape serves."""

from __future__ import annotations

import itertools
import random
import time
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from qtui.core import App
from qtui.core.placement import PLACEMENT_WAIT
from qtui.tui import exporter as exporter_module
from qtui.tui.exporter import Exporter, client_host, exception_class
from qtui.tui.metric_labels import MAX_LENGTH, OVERFLOW, LabelSets, LabelValues, clean


@pytest.fixture
def exporter() -> Exporter:
    return Exporter(App("labels", broker="redis://127.0.0.1:6379/10"))


_clock = itertools.count(1)


def task_event(kind: str, uuid: str, **fields: Any) -> dict[str, Any]:
    """An event as a worker sends it: each one later on the worker's Lamport clock."""
    return {"type": kind, "uuid": uuid, "hostname": "w1@host", "timestamp": time.time(),
            "local_received": time.time(), "clock": next(_clock), "pid": 1, **fields}


def after_the_wait(exporter: Exporter) -> None:
    """Count what was held for want of a queue, as once no task-sent came in time."""
    exporter.ingest([], now=time.time() + PLACEMENT_WAIT + 1)


def served(exporter: Exporter) -> tuple[str, list[Any]]:
    text = generate_latest(exporter.registry).decode("utf-8")
    return text, [s for family in text_string_to_metric_families(text) for s in family.samples]


def label_values(samples: list[Any], metric: str, label: str) -> set[str]:
    return {s.labels[label] for s in samples if s.name == metric and label in s.labels}


def test_a_task_is_counted_under_its_name_and_queue_from_earlier_events(exporter):
    exporter.ingest([
        task_event("task-sent", "t1", name="proj.add", queue="hipri", hostname="gen42@web1"),
        task_event("task-received", "t1", name="proj.add"),
        task_event("task-started", "t1"),
        task_event("task-failed", "t1", exception="KeyError('x')"),
    ])
    _, samples = served(exporter)
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}
    labels = (("hostname", "w1@host"), ("name", "proj.add"), ("queue_name", "hipri"))
    assert found[("celery_task_started_total", labels)] == 1
    assert found[("celery_task_failed_total", (("exception", "KeyError"), *labels))] == 1
    assert found[("celery_task_sent_total",
                  (("hostname", "web1"), ("name", "proj.add"), ("queue_name", "hipri")))] == 1


def test_a_workers_events_before_the_task_sent_count_under_the_queue_it_names(exporter):
    """A Celery worker names no queue: its events can arrive before the client's task-sent."""
    exporter.ingest([
        task_event("task-received", "t1", name="proj.add"),
        task_event("task-started", "t1"),
        task_event("task-succeeded", "t1", runtime=0.25),
    ])
    exporter.ingest([task_event("task-sent", "t1", name="proj.add", queue="hipri",
                                hostname="gen42@web1")])
    _, samples = served(exporter)
    counted = {(s.name, s.labels["queue_name"]): s.value for s in samples
               if s.name.startswith("celery_task_") and s.name.endswith(("_total", "_count"))
               and s.value}
    assert counted == {(name, "hipri"): 1.0 for name in (
        "celery_task_sent_total", "celery_task_received_total", "celery_task_started_total",
        "celery_task_succeeded_total", "celery_task_runtime_count")}


def test_a_task_whose_queue_no_event_names_counts_under_celery_once_the_wait_is_over(exporter):
    exporter.ingest([task_event("task-received", "t1", name="proj.add"),
                     task_event("task-succeeded", "t1", runtime=0.25)])
    _, samples = served(exporter)
    assert not [s for s in samples if s.name.startswith("celery_task_") and s.value]
    after_the_wait(exporter)
    _, samples = served(exporter)
    succeeded = [(s.labels, s.value) for s in samples if s.name == "celery_task_succeeded_total"]
    assert succeeded == [({"name": "proj.add", "hostname": "w1@host", "queue_name": "celery"},
                          1.0)]


def test_a_task_no_event_named_counts_under_celery_exporters_none(exporter):
    exporter.ingest([task_event("task-started", "t9")])
    after_the_wait(exporter)
    _, samples = served(exporter)
    started = [s.labels for s in samples if s.name == "celery_task_started_total"]
    assert started == [{"name": "None", "hostname": "w1@host", "queue_name": "celery"}]


def test_garbage_fields_are_skipped_and_counted_not_raised(exporter):
    bad = [
        {"type": "task-received", "uuid": [1, 2], "hostname": "w1@host"},
        {"type": "task-started", "uuid": "t1", "timestamp": 1e300},
        {"type": "task-succeeded", "uuid": "t1", "runtime": "fast"},
        {"type": "worker-heartbeat", "hostname": 5},
        {"type": "worker-heartbeat", "hostname": "w@h", "freq": -1},
        {"type": "task-failed", "uuid": "t1", "clock": -3},
    ]
    exporter.ingest(bad)
    exporter.ingest([{"type": None}, {"no": "type"}])  # no type: the receiver drops these
    _, samples = served(exporter)
    assert [s.value for s in samples if s.name == "qtui_exporter_bad_events_total"] == [8]
    assert not [s for s in samples if s.name.startswith("celery_task_") and s.value]


def test_hostile_label_values_are_made_visible_masked_and_cut(exporter):
    name = "\x1b[2J\x1b]52;c;ZXZpbA==\x07evil"
    exporter.ingest([
        task_event("task-received", "t1", name=name, hostname="w\x1b[31m@host"),
        task_event("task-received", "t2", name="redis://:hunter2@db.example.com/0"),
        task_event("task-received", "t3", name="x" * 100_000),
    ])
    after_the_wait(exporter)
    text, samples = served(exporter)
    assert "\x1b" not in text and "\x07" not in text and "hunter2" not in text
    names = label_values(samples, "celery_task_received_total", "name")
    assert "␛[2J␛]52;c;ZXZpbA==␇evil" in names
    assert "redis://:**@db.example.com/0" in names
    assert max(len(n) for n in names) <= MAX_LENGTH + len("…[+99800 chars]")
    assert "w␛[31m@host" in label_values(samples, "celery_task_received_total", "hostname")


def test_a_flood_of_names_and_hostnames_stays_within_the_bounds(monkeypatch):
    monkeypatch.setattr(exporter_module, "MAX_TASK_NAMES", 20)
    monkeypatch.setattr(exporter_module, "MAX_HOSTNAMES", 10)
    monkeypatch.setattr(exporter_module, "MAX_SERIES", 15)
    exporter = Exporter(App("labels", broker="redis://127.0.0.1:6379/10"))
    exporter.ingest(task_event("task-received", f"t{i}", name=f"made.up.{i}",
                               hostname=f"w{i % 30}@host") for i in range(2_000))
    after_the_wait(exporter)
    exporter.ingest({"type": "worker-heartbeat", "hostname": f"fake{i}@host", "freq": 2.0,
                     "timestamp": time.time(), "local_received": time.time(), "active": 1}
                    for i in range(500))
    _, samples = served(exporter)
    received = [s for s in samples if s.name == "celery_task_received_total"]
    assert len(received) <= 15 + 1                        # MAX_SERIES, and the 'other' set
    assert sum(s.value for s in received) == 2_000        # folded, never dropped
    assert len(label_values(samples, "celery_task_received_total", "name")) <= 20 + 1
    up = [s for s in samples if s.name == "celery_worker_up"]
    assert len(up) <= 10 + 1
    assert {"hostname": OVERFLOW} in [s.labels for s in up]
    folded = {s.labels["label"]: s.value for s in samples
              if s.name == "qtui_exporter_labels_folded_total"}
    assert folded["name"] == 2_000 - 20
    assert folded["hostname"] > 0 and folded["series"] > 0
    again = {s.labels["label"]: s.value for s in served(exporter)[1]
             if s.name == "qtui_exporter_labels_folded_total"}
    assert again == folded


def test_random_events_never_break_a_scrape(exporter):
    rng = random.Random(18)
    values: list[Any] = [None, "", "x", "\x00\x1b\x9b", 0, -1, 1.5, 1e308, float("nan"), True,
                         [], {}, [1, "a"], {"k": "v"}, "a" * 5000, "@", "@@", "w@"]
    kinds = ["task-sent", "task-received", "task-started", "task-succeeded", "task-failed",
             "task-retried", "task-revoked", "task-rejected", "worker-online",
             "worker-heartbeat", "worker-offline", "bogus"]
    fields = ["uuid", "hostname", "name", "queue", "runtime", "exception", "timestamp",
              "clock", "pid", "freq", "active", "local_received", "utcoffset"]
    events = []
    for _ in range(3_000):
        event: dict[str, Any] = {"type": rng.choice(kinds)}
        for key in rng.sample(fields, rng.randint(0, len(fields))):
            event[key] = rng.choice(values)
        events.append(event)
    exporter.ingest(events)
    after_the_wait(exporter)
    _, samples = served(exporter)  # parses: the output stays valid exposition text
    assert any(s.name == "qtui_exporter_bad_events_total" and s.value > 0 for s in samples)


def test_exception_class_and_client_host_read_as_celery_exporter_reads_them():
    assert exception_class("ValueError('boom')") == "ValueError"
    assert exception_class("boom") == "UnknownException"
    assert exception_class(None) == "UnknownException"
    assert client_host("gen1234@web1") == "web1"
    assert client_host("web1") == "web1"


def test_label_bounds_fold_past_their_limit():
    names = LabelValues("name", 2)
    assert [names("a"), names("b"), names("c"), names("a")] == ["a", "b", OVERFLOW, "a"]
    assert names.folded == 1
    sets = LabelSets(1)
    assert sets(("a", "b")) == ("a", "b")
    assert sets(("c", "d")) == (OVERFLOW, OVERFLOW)
    assert clean("line\nbreak") == "line␊break"
