"""Tasks in and out of each queue per second, counted from task-sent and task-received events as
the state merges them (:mod:`qtui.core.queue_rates`), and carried to the Queues view's rows by
the feed's poll (Redis database 12: test_console_peek.py flushes 2, test_worker_acks.py 4)."""

from __future__ import annotations

import time
import uuid

from qtui.core import App
from qtui.core.queue_rates import WINDOW, QueueRates, Rate
from qtui.core.state import State
from qtui.tui.feed import Feed

from .services import REDIS_HOST, REDIS_PORT, need

NOW = 1_700_000_000.0
QTUI_WORKER, CELERY_WORKER = "qtui@w1", "celery@w2"


def sent(task_id: str, queue: str, at: float = NOW) -> dict:
    return {"type": "task-sent", "uuid": task_id, "hostname": "gen1@web", "timestamp": at,
            "local_received": at, "name": "tasks.add", "queue": queue}


def received(task_id: str, hostname: str, at: float = NOW, queue: str | None = None) -> dict:
    event = {"type": "task-received", "uuid": task_id, "hostname": hostname, "timestamp": at,
             "local_received": at, "name": "tasks.add", "clock": 1}
    if queue is not None:  # qtui's worker names the queue; Celery's does not
        event["queue"] = queue
    return event


def counted(*events: dict) -> QueueRates:
    rates = QueueRates(since=NOW - 60)
    State(queue_rates=rates).ingest(events)
    return rates


def test_in_counts_the_task_sent_events_naming_the_queue_over_the_window():
    rates = counted(*(sent(f"t{i}", "jobs") for i in range(30)), sent("x", "other"))
    assert rates.inflow("jobs", NOW) == Rate(30 / WINDOW, exact=True)


def test_in_is_unknown_for_a_queue_no_task_sent_named():
    rates = counted(received("t1", QTUI_WORKER, queue="jobs"))
    assert rates.inflow("jobs", NOW) is None


def test_out_from_a_qtui_worker_is_exact_from_the_queue_its_event_names():
    rates = counted(*(received(f"t{i}", QTUI_WORKER, queue="jobs") for i in range(15)))
    assert rates.outflow("jobs", [QTUI_WORKER], NOW) == Rate(1.0, exact=True)


def test_out_from_a_celery_worker_is_inferred_from_the_queue_of_the_task_sent():
    rates = counted(sent("t1", "jobs"), received("t1", CELERY_WORKER),
                    received("t2", QTUI_WORKER, queue="jobs"))
    assert rates.outflow("jobs", [QTUI_WORKER, CELERY_WORKER], NOW) \
        == Rate(2 / WINDOW, exact=False)


def test_a_consumer_taking_tasks_no_event_places_makes_out_unknown():
    """A Celery worker's task-received with no task-sent seen: which of its queues it came
    from is unknown, so none of them can be counted."""
    rates = counted(received("t1", CELERY_WORKER), received("t2", QTUI_WORKER, queue="mail"))
    assert rates.outflow("jobs", [CELERY_WORKER], NOW) is None
    assert rates.outflow("mail", [QTUI_WORKER], NOW) == Rate(1 / WINDOW, exact=True)


def test_events_older_than_the_window_no_longer_count():
    rates = counted(sent("old", "jobs", NOW - WINDOW - 1), sent("new", "jobs", NOW - 1))
    assert rates.inflow("jobs", NOW) == Rate(1 / WINDOW, exact=True)


def test_a_young_count_is_divided_by_the_time_it_covers():
    rates = QueueRates(since=NOW - 5)
    State(queue_rates=rates).ingest([sent(f"t{i}", "jobs", NOW - 1) for i in range(10)])
    assert rates.inflow("jobs", NOW) == Rate(2.0, exact=True)


def test_the_feed_puts_in_and_out_on_each_queue_row_it_polls():
    need("Redis", REDIS_HOST, REDIS_PORT)
    token = uuid.uuid4().hex[:8]
    queue, other = f"rates-{token}", f"rates-other-{token}"
    feed = Feed(App("t", broker=f"redis://{REDIS_HOST}:{REDIS_PORT}/12"))
    feed._details = {QTUI_WORKER: {"queues": [{"name": queue}]},
                     CELERY_WORKER: {"queues": [{"name": other}]}}
    now = time.time()
    feed.ingest([sent("t1", queue, now), received("t1", QTUI_WORKER, now, queue=queue),
                 received("t2", CELERY_WORKER, now)])
    feed._poll_queues()
    rows = {row.name: row for row in feed._queues}
    inflow, outflow = rows[queue].inflow, rows[queue].outflow
    assert inflow is not None and inflow.exact and inflow.per_second > 0
    assert outflow is not None and outflow.exact and outflow.per_second > 0
    assert (rows[other].inflow, rows[other].outflow) == (None, None)


def test_qtui_queues_listen_counts_tasks_in_while_it_listens(capsys):
    """``qtui queues --json --listen`` counts the task-sent events of the seconds it listens;
    without ``--listen`` in and out are unknown."""
    import json
    import threading

    from kombu import Connection

    from qtui.core.queues import inspector_for
    from qtui.tui.cli import main

    need("Redis", REDIS_HOST, REDIS_PORT)
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/12"
    queue = f"rates-listen-{uuid.uuid4().hex[:8]}"
    client = App("client", broker=url, task_send_sent_event=True)
    listening = threading.Event()

    def send() -> None:  # until the command is done: some land while it listens
        while not listening.wait(0.2):
            client.send_task("tasks.add", args=[1, 2], queue=queue)

    sender = threading.Thread(target=send, daemon=True)
    try:
        client.send_task("tasks.add", args=[1, 2], queue=queue)
        assert main(["-b", url, "queues", "--json", "-t", "0.2"]) == 0
        row = next(r for r in json.loads(capsys.readouterr().out)["queues"] if r["name"] == queue)
        assert (row["in_per_second"], row["out_per_second"]) == (None, None)

        sender.start()
        assert main(["-b", url, "queues", "--json", "-t", "0.2", "--listen", "3"]) == 0
        listening.set()
        sender.join(5)
        row = next(r for r in json.loads(capsys.readouterr().out)["queues"] if r["name"] == queue)
        assert row["in_per_second"] > 0 and row["in_exact"] is True
        assert (row["out_per_second"], row["out_exact"]) == (0.0, True)  # nobody consumes it
    finally:
        listening.set()
        with inspector_for(client) as inspector:
            inspector.purge(queue)
        with Connection(url) as conn:
            conn.default_channel.client.delete(f"_kombu.binding.{queue}",
                                               f"_kombu.binding_permanent.{queue}")
        client.close()
