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
    reply = store.lookup(["t1", "unknown"], 10**9)
    assert list(reply) == ["t1"]
    assert {k: reply["t1"][k] for k in ("args", "kwargs", "name", "queue", "masked")} == {
        "args": [list(range(3000)), "x" * 5000], "kwargs": {}, "name": "tasks.add",
        "queue": "q", "masked": False}


def test_a_reply_carries_the_senders_reprs_and_says_they_mask_the_arguments():
    store = ArgumentStore()
    job = received("t1", "hunter2")
    job.message = TaskMessage(id="t1", task="tasks.charge", args=("hunter2",),
                              kwargs={"token": "s3cr3t"}, argsrepr="('***',)",
                              kwargsrepr="{'token': '***'}", shadow="charge.masked")
    store.on_task_received(job)
    reply = store.lookup(["t1"], 10**9)["t1"]
    assert (reply["argsrepr"], reply["kwargsrepr"], reply["masked"], reply["shadow"]) == \
        ("('***',)", "{'token': '***'}", True, "charge.masked")


def test_a_reply_says_reprs_a_client_wrote_of_the_arguments_mask_nothing():
    store = ArgumentStore()
    job = received("t1", 2, 3)
    job.message = TaskMessage(id="t1", task="tasks.add", args=(2, 3), kwargs={"z": 1},
                              argsrepr="[2, 3]", kwargsrepr="{'z': 1}")
    store.on_task_received(job)
    reply = store.lookup(["t1"], 10**9)["t1"]
    assert (reply["argsrepr"], reply["kwargsrepr"], reply["masked"]) == \
        ("[2, 3]", "{'z': 1}", False)


def test_a_task_whose_arguments_are_too_big_keeps_only_its_reprs():
    store = ArgumentStore(max_task_bytes=1000)
    store.on_task_received(received("big", "x" * 2000))
    store.on_task_received(received("small", "x" * 10))
    replies = store.lookup(["big", "small"], 10**9)
    assert "args" not in replies["big"] and replies["big"]["masked"] is False
    assert replies["small"]["args"] == ["x" * 10]


def test_a_task_too_big_to_keep_still_says_its_reprs_mask_its_arguments():
    store = ArgumentStore(max_task_bytes=1000)
    job = received("big", "x" * 2000)
    job.message = TaskMessage(id="big", task="tasks.charge", args=("x" * 2000,),
                              argsrepr="('***',)")
    store.on_task_received(job)
    reply = store.lookup(["big"], 10**9)["big"]
    assert "args" not in reply
    assert (reply["argsrepr"], reply["masked"]) == ("('***',)", True)


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
