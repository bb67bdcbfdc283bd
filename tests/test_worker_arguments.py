"""The worker's store of recent tasks' full arguments (behind ``task_arguments``): bounded by
task count, by total size and per task, most recent kept."""

from __future__ import annotations

import json
from types import SimpleNamespace

from qtui.core.protocol import TaskMessage
from qtui.workers.arguments import Arguments, ArgumentStore


def received(task_id: str, *args: object, content_type: str = "application/json") -> object:
    """A job as the worker hands it to its hooks: decoded message, raw delivery, queue."""
    message = TaskMessage(id=task_id, task="tasks.add", args=args)
    body = json.dumps([list(args), {}, {}]).encode()
    return SimpleNamespace(message=message, queue="q", delivery=SimpleNamespace(
        body=body, headers={}, content_type=content_type))


def entry(size: int) -> Arguments:
    return Arguments((), {}, "tasks.add", "q", size)


def test_a_received_task_is_kept_with_its_full_arguments():
    store = ArgumentStore()
    store.on_task_received(received("t1", list(range(3000)), "x" * 5000))
    assert store.lookup(["t1", "unknown"], 10**9) == {"t1": {
        "args": [list(range(3000)), "x" * 5000], "kwargs": {}, "name": "tasks.add",
        "queue": "q"}}


def test_a_task_whose_arguments_are_too_big_is_not_kept():
    store = ArgumentStore(max_task_bytes=1000)
    store.on_task_received(received("big", "x" * 2000))
    store.on_task_received(received("small", "x" * 10))
    assert "big" not in store and "small" in store


def test_arguments_that_are_not_json_are_not_kept():
    store = ArgumentStore()
    job = received("t", 1)
    job.message.args = (object(),)
    job.delivery.content_type = "application/x-python-serialize"
    store.on_task_received(job)
    assert "t" not in store


def test_the_oldest_tasks_go_first_past_the_count():
    store = ArgumentStore(max_tasks=3)
    for n in range(5):
        store.add(f"t{n}", entry(10))
    assert [t for t in ("t0", "t1", "t2", "t3", "t4") if t in store] == ["t2", "t3", "t4"]


def test_the_oldest_tasks_go_first_past_the_total_size():
    store = ArgumentStore(max_bytes=100)
    for n in range(4):
        store.add(f"t{n}", entry(40))
    assert len(store) == 2 and store.bytes == 80 and "t3" in store and "t1" not in store


def test_a_reply_stops_growing_past_its_size():
    store = ArgumentStore()
    for n in range(4):
        store.add(f"t{n}", entry(40))
    assert list(store.lookup(["t0", "t1", "t2", "t3"], 100)) == ["t0", "t1"]
