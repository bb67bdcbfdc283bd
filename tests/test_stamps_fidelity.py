"""Celery's stamps (``stamped_headers``, ``stamps``) on what a worker sends after a task: a
canvas stamped by Celery's client carries its stamps in every signature's options (the next
chain step, each link), and Celery's worker sends those as the next messages' stamp headers.
One message of a stamped canvas is run by Celery's tracer on one side and followed by qtui's
worker code on the other; the follow-ups on each queue must be the same, whole messages
compared as :mod:`tests.test_canvas_fidelity` compares them."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from qtui.core import states
from qtui.core.brokers.envelope import read_envelope
from qtui.core.exceptions import Retry
from qtui.core.protocol import json_loads, parse
from qtui.core.task import Request
from qtui.workers.canvas import follow

from .test_canvas_fidelity import Side, sides  # noqa: F401 - the fixture

trace = pytest.importorskip("celery.app.trace")
_state = pytest.importorskip("celery._state")
CeleryRetry = pytest.importorskip("celery.exceptions").Retry
CeleryRequest = pytest.importorskip("celery.worker.request").Request

ETA = datetime(2030, 1, 1, tzinfo=timezone.utc)


def run_by_celery(sender: Side, celery_side: Side) -> tuple[dict[str, Any], Any]:
    """Take the one message ``sender`` sent and run it with Celery's tracer (its follow-ups
    go to Celery's queue); the message's envelope and body."""
    raw = sender.redis.rpop(sender.queue)
    assert raw is not None and sender.redis.llen(sender.queue) == 0
    envelope, body = read_envelope(raw)
    args, kwargs, embed = json_loads(body)
    headers = envelope["headers"]
    request = {**headers, **embed, "args": args, "kwargs": kwargs, "is_eager": False,
               "correlation_id": headers["id"], "reply_to": None, "hostname": "fidelity",
               "delivery_info": {"exchange": "", "routing_key": celery_side.queue,
                                 "priority": 0, "redelivered": False}}
    task = celery_side.app.tasks[headers["task"]]
    trace.trace_task(task, headers["id"], args, kwargs, request, app=celery_side.app)
    return envelope, (args, kwargs, embed)


def followed(sides: dict[str, Side], canvas: Callable[[Side], Any]) -> list[dict[str, Any]]:
    """Send the stamped canvas with Celery's client, take its first message, run it with
    Celery's tracer (its follow-ups go to Celery's queue) and follow it with qtui's worker code
    (to qtui's queue); the follow-ups, the same on both queues."""
    celery_side, qtui_side = sides["celery"], sides["qtui"]
    canvas(celery_side).apply_async()
    envelope, (args, kwargs, embed) = run_by_celery(celery_side, celery_side)
    headers = envelope["headers"]
    task = celery_side.app.tasks[headers["task"]]
    message = parse((args, kwargs, embed), headers, envelope["properties"])
    follow(qtui_side.app, message, states.SUCCESS, task(*args, **kwargs), None)
    celery_sent, qtui_sent = celery_side.sent(), qtui_side.sent()
    assert json.dumps(qtui_sent, sort_keys=True) == json.dumps(celery_sent, sort_keys=True)
    return qtui_sent


def _stamps(sent: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    return [(m["headers"]["stamped_headers"], m["headers"]["stamps"]) for m in sent]


@pytest.mark.timeout(30)
def test_the_next_chain_step_keeps_the_stamps_it_carries(sides: dict[str, Side]) -> None:
    def canvas(side: Side) -> Any:
        steps = side.canvas.chain(side.add.s(1), side.add.s(2), side.add.s(3))
        steps.stamp(origin_stamp="o1")
        return steps

    sent = followed(sides, canvas)
    assert _stamps(sent) == [(["origin_stamp"], {"origin_stamp": "o1"})]
    assert [s["options"]["origin_stamp"] for s in sent[0]["chain"]] == ["o1"]


@pytest.mark.timeout(30)
def test_a_link_and_an_unstamped_link_keep_what_each_carries(sides: dict[str, Side]) -> None:
    def canvas(side: Side) -> Any:
        sig = side.add.s(1)
        sig.link(side.tsum.s())
        sig.stamp(batch="b7")
        sig.link(side.add.s(9))  # added after stamping: no stamps
        return sig

    sent = followed(sides, canvas)
    assert sorted(map(repr, _stamps(sent))) == sorted(map(repr, [
        (["batch"], {"batch": "b7"}), (None, {})]))


@pytest.mark.timeout(30)
def test_a_retry_keeps_the_stamps_of_the_message_it_retries(sides: dict[str, Side]) -> None:
    stamps = {"stamped_headers": ["batch"], "stamps": {"batch": "b7"}}
    request = {"id": "the-task", "args": (1,), "kwargs": {}, "retries": 0, "root_id": "the-root",
               "parent_id": "the-parent", "delivery_info": {}, "called_directly": False}
    for kind, side in sides.items():
        if kind == "celery":
            side.add.push_request(**request, **stamps)
            _state._task_stack.push(side.add)
        else:
            side.add.push_request(Request(**request, **stamps))
        try:
            with pytest.raises((Retry, CeleryRetry)):
                side.add.retry(eta=ETA, max_retries=3)
        finally:
            side.add.pop_request()
            if kind == "celery":
                _state._task_stack.pop()
    celery_sent, qtui_sent = sides["celery"].sent(), sides["qtui"].sent()
    assert qtui_sent == celery_sent
    assert _stamps(qtui_sent) == [(["batch"], {"batch": "b7"})]


@pytest.mark.timeout(30)
def test_celerys_send_form_of_stamps_is_taken_as_celery_takes_it(sides: dict[str, Side]) -> None:
    """``apply_async(stamped_headers=["a"], a=1)``: each stamp an option of its own."""
    for side in sides.values():
        side.add.apply_async((1,), stamped_headers=["a", "b"], a=1, b="two")
        side.app.send_task("tasks.other", (2,), stamped_headers=["c"], c=[3],
                           ignore_result=False)
        side.add.s(4).apply_async(stamped_headers=["d"], d=4)
    celery_sent, qtui_sent = sides["celery"].sent(), sides["qtui"].sent()
    assert qtui_sent == celery_sent
    assert _stamps(qtui_sent) == [(["a", "b"], {"a": 1, "b": "two"}), (["c"], {"c": [3]}),
                                  (["d"], {"d": 4})]


@pytest.mark.timeout(30)
def test_a_link_stamped_by_qtuis_client_is_followed_by_celerys_worker(
        sides: dict[str, Side]) -> None:
    """qtui's ``stamps`` mapping is written into a signature in Celery's form, which Celery's
    tracer reads when it sends the link (the mapping alone made it fail the task)."""
    celery_side, qtui_side = sides["celery"], sides["qtui"]
    link = qtui_side.tsum.s().set(stamped_headers=["batch"], stamps={"batch": "b7"})
    qtui_side.add.apply_async((1,), link=link)
    envelope, _ = run_by_celery(qtui_side, celery_side)
    assert celery_side.app.AsyncResult(envelope["headers"]["id"]).state == "SUCCESS"
    assert [(m["headers"]["task"], m["headers"]["stamped_headers"], m["headers"]["stamps"])
            for m in celery_side.sent()] == [("tasks.tsum", ["batch"], {"batch": "b7"})]


def read_by_celerys_worker(side: Side, celery_side: Side) -> list[Any]:
    """Each message ``side`` sent, oldest first, taken off its queue and read as Celery's
    worker reads it (``celery.worker.request.Request``)."""
    requests = []
    while (raw := side.redis.rpop(side.queue)) is not None:
        envelope, body = read_envelope(raw)
        message = SimpleNamespace(headers=envelope["headers"], body=body, delivery_info={},
                                  properties=envelope["properties"], payload=json_loads(body),
                                  content_type=envelope["content-type"],
                                  content_encoding=envelope["content-encoding"])
        requests.append(CeleryRequest(message, app=celery_side.app))
    return requests


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("given", "names"), [
    (["a", "b", "a"], ["a", "b"]),  # each name once, in its first place
    (["a", 1, "b"], ["a", "b"]),  # no JSON stamps key can be a number
    ("a", ["a"]),  # one name, as Celery's maybe_list takes it
], ids=["duplicates", "not-text", "one-name"])
def test_stamped_headers_go_out_the_same_whichever_way_qtui_sends_them(
        sides: dict[str, Side], given: Any, names: list[str]) -> None:
    """The stamps mapping, Celery's send form (each stamp an option of its own), and a
    signature's options all send ``stamped_headers`` as one function normalizes it, and
    Celery's worker reads each stamp it names."""
    celery_side, qtui_side = sides["celery"], sides["qtui"]
    stamps = {name: {"a": 1, "b": "two"}[name] for name in names}
    qtui_side.app.send_task("tasks.add", (1,), stamped_headers=given, stamps=stamps)
    qtui_side.app.send_task("tasks.add", (2,), **{"stamped_headers": given, **stamps})
    qtui_side.add.s(3).set(stamped_headers=given, **stamps).apply_async()
    assert [(r.stamped_headers, r.stamps) for r in read_by_celerys_worker(
        qtui_side, celery_side)] == [(names, stamps)] * 3


@pytest.mark.timeout(30)
def test_no_stamped_headers_go_out_as_none_and_celerys_worker_reads_no_stamps(
        sides: dict[str, Side]) -> None:
    celery_side, qtui_side = sides["celery"], sides["qtui"]
    qtui_side.app.send_task("tasks.add", (1,), stamped_headers=None)
    qtui_side.add.s(2).set(stamped_headers=None).apply_async()
    (first, second) = read_by_celerys_worker(qtui_side, celery_side)
    assert first._request_dict["stamped_headers"] is None
    assert [(r.stamped_headers, r.stamps) for r in (first, second)] == [([], {}), ([], {})]
