"""What qtui's canvas client puts on the broker is what Celery's client puts there: the same
canvas built with ``celery`` and with ``qtui.core`` sends the same messages -- every header,
property and body field, the canvas fields' signatures with their options, read back raw from
a Redis queue of each; ids compared by where they recur -- or qtui refuses it with an error
where Celery would send something qtui cannot."""

from __future__ import annotations

import base64
import json
import re
import uuid
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
import redis

from qtui.core import App
from qtui.core import canvas as qcanvas

from .services import REDIS_HOST, REDIS_PORT, need
from .worker_helpers import REDIS_URL

celery = pytest.importorskip("celery")
ccanvas = pytest.importorskip("celery.canvas")

#: What differs between the two clients' messages by design, so is not compared: qtui's send
#: time header, the ``reply_to`` each client's result consumer sets, the ``chord_size`` of
#: Celery's chord messages (qtui's backend counts the header itself) and the envelope's
#: ``delivery_tag`` (a random one per message). Everything else is.
_DIFFER_BY_DESIGN = frozenset({"x-qtui-sent-at", "reply_to", "chord_size", "delivery_tag"})
#: Properties Celery's client adds that qtui's does not (known, left as they are): the
#: copies of ``argsrepr``/``kwargsrepr`` given as options (the headers carry them on both
#: sides).
_CELERY_ONLY_PROPERTIES = frozenset({"argsrepr", "kwargsrepr"})
#: An id either client makes up (a task, group or delivery id).
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def add(x: int = 0, y: int = 0, z: int = 0) -> int:
    return x + y + z


def tsum(values: list[int], y: int = 0) -> int:
    return sum(values) + y


class Side:
    """One client (Celery's or qtui's) with the tasks ``tasks.add`` and ``tasks.tsum``, sending
    to a queue of its own on the shared Redis."""

    def __init__(self, kind: str, client: redis.Redis) -> None:
        self.queue = f"fidelity-{kind}-{uuid.uuid4().hex[:10]}"
        self.redis = client
        if kind == "celery":
            self.app: Any = celery.Celery("fidelity", broker=REDIS_URL, backend=REDIS_URL)
            self.app.conf.task_default_queue = self.queue
            self.canvas: Any = ccanvas
        else:
            self.app = App("fidelity", broker=REDIS_URL, backend=REDIS_URL,
                           task_default_queue=self.queue)
            self.canvas = qcanvas
        self.add = self.app.task(name="tasks.add")(add)
        self.tsum = self.app.task(name="tasks.tsum")(tsum)

    def sent(self, *, minutes: bool = True, priority: int = 0) -> list[dict[str, Any]]:
        """The messages on the queue, oldest first: each one's headers, properties and body
        fields (with the envelope's encodings), each id replaced by ``id-<n>``, ``n`` counting
        the ids in the order they first appear on this queue. ``minutes``: an ``expiration``
        (milliseconds until an ``expires`` date, a moment apart on the two sides) in whole
        minutes. ``priority``: those on kombu's list for that priority step (3, 6 or 9: the
        list ``<queue>\\x06\\x16<step>`` that priorities from the step up to the next go to;
        0, the queue itself)."""
        found, ids = [], {}
        key = f"{self.queue}\x06\x16{priority}" if priority else self.queue
        for raw in reversed(self.redis.lrange(key, 0, -1)):
            envelope = json.loads(raw)
            body = base64.b64decode(envelope.pop("body"))
            if envelope["headers"].get("compression"):
                body = zlib.decompress(body)
            args, kwargs, embed = json.loads(body)
            for name in _CELERY_ONLY_PROPERTIES:
                envelope["properties"].pop(name, None)
            if minutes and "expiration" in envelope["properties"]:
                envelope["properties"]["expiration"] = \
                    f"{int(envelope['properties']['expiration']) // 60_000} min"
            message = _compared({**envelope, "args": args, "kwargs": kwargs, **embed})
            text = json.dumps(message).replace(self.queue, "<queue>")
            found.append(json.loads(_ID.sub(lambda m: ids.setdefault(m[0], f"id-{len(ids)}"),
                                            text)))
        return found

    def close(self) -> None:
        self.redis.delete(self.queue, *(f"{self.queue}\x06\x16{step}" for step in (3, 6, 9)))
        self.app.close()


@pytest.fixture
def sides() -> Iterator[dict[str, Side]]:
    need("Redis", REDIS_HOST, REDIS_PORT)
    client = redis.Redis(REDIS_HOST, REDIS_PORT)
    made = {kind: Side(kind, client) for kind in ("celery", "qtui")}
    yield made
    for side in made.values():
        side.close()


def _compared(value: Any) -> Any:
    """``value`` without the keys that differ by design, at any depth."""
    if isinstance(value, dict):
        return {k: _compared(v) for k, v in value.items() if k not in _DIFFER_BY_DESIGN}
    if isinstance(value, list):
        return [_compared(v) for v in value]
    return value


def _headers(message: dict[str, Any], *names: str) -> tuple[Any, ...]:
    return tuple(message["headers"][name] for name in names)


def _steps(message: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The rest of a message's chain, as (task, args, kwargs) of each step, last first."""
    return [(s["task"], s["args"], s["kwargs"]) for s in message["chain"] or []]


def same_messages(sides: dict[str, Side], send: Callable[[Side], Any], priority: int = 0
                  ) -> list[dict[str, Any]]:
    """Send the canvas ``send`` builds on each side; the messages each put on its queue (its
    list for ``priority``: see :meth:`Side.sent`), which must be the same."""
    for side in sides.values():
        send(side)
    celery_sent, qtui_sent = sides["celery"].sent(priority=priority), \
        sides["qtui"].sent(priority=priority)
    assert qtui_sent == celery_sent
    return qtui_sent


@pytest.mark.timeout(30)
def test_a_groups_keyword_arguments_go_to_each_member(sides: dict[str, Side]) -> None:
    sent = same_messages(sides, lambda s: s.canvas.group(s.add.s(1), s.add.s(2))
                         .apply_async(kwargs={"y": 5}))
    assert [(m["args"], m["kwargs"]) for m in sent] == [([1], {"y": 5}), ([2], {"y": 5})]


@pytest.mark.timeout(30)
def test_a_groups_delay_keywords_go_to_each_member(sides: dict[str, Side]) -> None:
    sent = same_messages(sides, lambda s: s.canvas.group(s.add.s(1), s.add.s(2, z=1)).delay(y=6))
    assert [m["kwargs"] for m in sent] == [{"y": 6}, {"z": 1, "y": 6}]


@pytest.mark.timeout(30)
def test_a_chains_keyword_arguments_go_to_its_first_step(sides: dict[str, Side]) -> None:
    sent = same_messages(sides, lambda s: s.canvas.chain(s.add.s(1), s.add.s(2))
                         .apply_async(kwargs={"y": 5}))
    assert [(m["args"], m["kwargs"], _steps(m)) for m in sent] == [
        ([1], {"y": 5}, [("tasks.add", [2], {})])]


@pytest.mark.timeout(30)
def test_a_chords_keyword_arguments_go_to_its_header_not_its_body(sides: dict[str, Side]) -> None:
    sent = same_messages(sides, lambda s: s.canvas.chord([s.add.s(1), s.add.s(2)], s.tsum.s())
                         .delay(y=7))
    assert [(m["kwargs"], m["chord"]["task"]) for m in sent] == [({"y": 7}, "tasks.tsum")] * 2


@pytest.mark.timeout(30)
def test_a_group_then_a_step_in_a_chain_gives_the_keywords_to_the_header(
        sides: dict[str, Side]) -> None:
    sent = same_messages(sides, lambda s: s.canvas.chain(
        s.canvas.group(s.add.s(1), s.add.s(2)), s.tsum.s()).apply_async(kwargs={"y": 5}))
    assert [m["kwargs"] for m in sent] == [{"y": 5}] * 2


@pytest.mark.timeout(30)
def test_a_signatures_compression_retries_shadow_and_limits_reach_the_message(
        sides: dict[str, Side]) -> None:
    sent = same_messages(sides, lambda s: s.add.s(1).set(
        compression="zlib", retries=3, shadow="masked", time_limit=9, soft_time_limit=4)
        .apply_async())
    assert [_headers(m, "compression", "retries", "shadow", "timelimit") for m in sent] == [
        ("application/x-gzip", 3, "masked", [9, 4])]


@pytest.mark.timeout(30)
def test_a_groups_own_and_call_options_reach_each_member(sides: dict[str, Side]) -> None:
    sent = same_messages(sides, lambda s: (
        s.canvas.group(s.add.s(1), s.add.s(2), compression="zlib", retries=2).apply_async(),
        s.canvas.group(s.add.s(3), s.add.s(4)).apply_async(compression="zlib", retries=1)))
    assert [(m["args"], *_headers(m, "compression", "retries")) for m in sent] == [
        ([1], "application/x-gzip", 2), ([2], "application/x-gzip", 2),
        ([3], "application/x-gzip", 1), ([4], "application/x-gzip", 1)]


@pytest.mark.timeout(30)
def test_a_chains_options_go_to_its_first_step(sides: dict[str, Side]) -> None:
    sent = same_messages(sides, lambda s: s.canvas.chain(s.add.s(1), s.add.s(2))
                         .apply_async(retries=2, compression="zlib"))
    assert [_headers(m, "retries", "compression") for m in sent] == [(2, "application/x-gzip")]


@pytest.mark.timeout(30)
def test_a_group_of_one_group_is_that_groups_members(sides: dict[str, Side]) -> None:
    results = {}

    def send(s: Side) -> None:
        built = s.canvas.group(s.canvas.group(s.add.s(1), s.add.s(2)))
        assert [(t["task"], tuple(t["args"])) for t in built.tasks] == [
            ("tasks.add", (1,)), ("tasks.add", (2,))]
        results[s] = built.apply_async()

    sent = same_messages(sides, send)
    assert [(m["args"], m["headers"]["group_index"]) for m in sent] == [([1], 0), ([2], 1)]
    result = results[sides["qtui"]]
    assert [type(r).__name__ for r in result.results] == ["AsyncResult", "AsyncResult"]


@pytest.mark.timeout(30)
def test_a_chain_in_a_chain_is_spliced_in_with_its_error_links(sides: dict[str, Side]) -> None:
    def send(s: Side) -> Any:
        inner = s.canvas.chain(s.add.s(1), s.add.s(2)).set(link_error=[s.tsum.si([0])])
        built = s.canvas.chain(inner, s.add.s(3))
        assert [step.options.get("link_error") for step in built.tasks] == [
            [s.tsum.si([0])], [s.tsum.si([0])], None]
        return built.apply_async()

    sent = same_messages(sides, send)
    assert [_steps(m) for m in sent] == [[("tasks.add", [3], {}), ("tasks.add", [2], {})]]
    assert [[s["options"].get("link_error") for s in m["chain"]] for m in sent] == [
        [None, [{"task": "tasks.tsum", "args": [[0]], "kwargs": {}, "options": {},
                  "subtask_type": None, "immutable": True}]]]
    assert [s["task"] for s in sent[0]["errbacks"]] == ["tasks.tsum"]


def test_an_option_qtui_cannot_send_is_an_error_not_dropped(sides: dict[str, Side]) -> None:
    qtui = sides["qtui"]
    with pytest.raises(TypeError, match="mandatory"):
        qtui.add.s(1).set(mandatory=True).apply_async()
    with pytest.raises(TypeError, match="mandatory"):
        qtui.canvas.group(qtui.add.s(1), qtui.add.s(2).set(mandatory=True)).apply_async()
    with pytest.raises(TypeError, match="mandatory"):
        qtui.canvas.chain(qtui.add.s(1), qtui.add.s(2)).apply_async(mandatory=True)
    assert qtui.sent() == []


def test_a_link_given_to_a_groups_apply_async_is_an_error_as_in_celery(
        sides: dict[str, Side]) -> None:
    for side in sides.values():
        with pytest.raises(TypeError, match="chord"):
            side.canvas.group(side.add.s(1)).apply_async(link=side.tsum.s())
        with pytest.raises(TypeError, match="individual tasks"):
            side.canvas.group(side.add.s(1)).apply_async(link_error=side.tsum.s())
        assert side.sent() == []


@pytest.mark.timeout(30)
def test_a_signatures_expiry_headers_reprs_and_link_are_celerys(sides: dict[str, Side]) -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    sent = same_messages(sides, lambda s: s.add.s(1).set(
        expires=at, headers={"hh": 1}, argsrepr="A", ignore_result=True, link=s.tsum.s())
        .apply_async())
    assert [(m["headers"]["expires"], m["headers"]["argsrepr"], m["headers"]["hh"],
             [c["task"] for c in m["callbacks"]]) for m in sent] == [
        (at.isoformat(), "A", 1, ["tasks.tsum"])]


@pytest.mark.timeout(30)
def test_a_groups_options_win_over_its_members_own(sides: dict[str, Side]) -> None:
    sent = same_messages(sides, lambda s: s.canvas.group(
        s.add.s(1).set(retries=5, shadow="own"), s.add.s(2)).apply_async(retries=2))
    assert [_headers(m, "retries", "shadow") for m in sent] == [(2, "own"), (2, None)]


@pytest.mark.timeout(30)
def test_a_spliced_chains_link_and_error_links_travel_as_celerys(sides: dict[str, Side]) -> None:
    sent = same_messages(sides, lambda s: s.canvas.chain(
        s.canvas.chain(s.add.s(1), s.add.s(2)).set(link_error=[s.tsum.si([0])],
                                                   link=[s.tsum.si([1])]),
        s.add.s(3)).apply_async())
    assert [[(s["options"].get("link"), s["options"].get("link_error") is not None)
             for s in m["chain"]] for m in sent] == [[(None, False), (
                 [{"task": "tasks.tsum", "args": [[1]], "kwargs": {}, "options": {},
                   "subtask_type": None, "immutable": True}], True)]]


@pytest.mark.timeout(30)
def test_send_task_sends_null_ignore_result_as_celerys_send_task_does(
        sides: dict[str, Side]) -> None:
    """Celery's ``send_task`` sends ``ignore_result`` as given (null when not), registered task
    or not; ``apply_async`` sends the task's own setting."""
    sent = same_messages(sides, lambda s: (
        s.app.send_task("tasks.add", (1,)), s.app.send_task("tasks.other", (2,)),
        s.app.send_task("tasks.add", (3,), ignore_result=True), s.add.apply_async((4,))))
    assert [m["headers"]["ignore_result"] for m in sent] == [None, None, True, False]


@pytest.mark.timeout(30)
def test_a_chords_expiry_goes_to_its_header_tasks_and_its_body(sides: dict[str, Side]) -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    sent = same_messages(sides, lambda s: s.canvas.chord([s.add.s(1), s.add.s(2)], s.tsum.s())
                         .apply_async(expires=at, time_limit=30))
    in_body = {"__type__": "datetime", "__value__": at.isoformat()}  # kombu's JSON of a date
    assert [(m["headers"]["expires"], m["chord"]["options"]["expires"],
             m["chord"]["options"]["time_limit"]) for m in sent] \
        == [(at.isoformat(), in_body, 30)] * 2


@pytest.mark.timeout(30)
def test_replaced_task_nesting_given_to_a_send_goes_in_its_header(
        sides: dict[str, Side]) -> None:
    sent = same_messages(sides, lambda s: (
        s.app.send_task("tasks.other", (1,), replaced_task_nesting=3),
        s.add.apply_async((2,), replaced_task_nesting=1),
        s.add.s(3).set(replaced_task_nesting=2).apply_async(), s.add.delay(4)))
    assert [m["headers"]["replaced_task_nesting"] for m in sent] == [3, 1, 2, 0]


def test_a_replaced_task_nesting_that_is_not_a_count_is_refused_before_sending() -> None:
    app = App("fidelity", broker="memory://")
    with pytest.raises(TypeError, match="replaced_task_nesting must be a count"):
        app.send_task("tasks.other", (1,), replaced_task_nesting="2")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("given, sent", [(1, 1), ("1", 0), (1.0, 0), (-1, 0), (True, 0)])
def test_a_worker_sends_the_next_step_without_a_replaced_task_nesting_not_a_count(
        sides: dict[str, Side], caplog: pytest.LogCaptureFixture, given: Any, sent: int) -> None:
    """A chain step whose options carry a ``replaced_task_nesting`` that is not a count (some
    client's garbage) is sent after the task's success without it, with a warning: the task
    that ran succeeded and its chain goes on (before, the worker raised, stored the task as a
    FAILURE and sent nothing). A count goes on, as Celery's ``Task.replace`` sets it."""
    from qtui.core.protocol import TaskMessage
    from qtui.workers.canvas import before_store
    from qtui.workers.execution import Outcome

    side = sides["qtui"]
    step = {"task": "tasks.add", "args": [1], "kwargs": {}, "subtask_type": None,
            "immutable": False, "options": {"replaced_task_nesting": given}}
    outcome = Outcome(job_id=1, state="SUCCESS", runtime=0.0)
    message = TaskMessage(id="ran", task="tasks.add", args=(1, 2), chain=[step])
    assert before_store(side.app, message, outcome, 3) == 3
    assert outcome.state == "SUCCESS"
    assert [(m["headers"]["task"], m["args"], m["headers"]["replaced_task_nesting"])
            for m in side.sent()] == [("tasks.add", [3, 1], sent)]
    assert ("Left out replaced_task_nesting" in caplog.text) is (sent == 0)


@pytest.mark.timeout(30)
def test_how_a_chord_is_published_stays_off_its_body(sides: dict[str, Side]) -> None:
    """``retry`` and a ``producer`` given to a chord's ``apply_async`` are how that call is
    published: its body, sent later by a worker, does not carry them (qtui's side alone:
    Celery's copies ``retry`` into the body's options)."""
    side = sides["qtui"]
    with side.app.producer() as producer:
        side.canvas.chord([side.add.s(1)], side.tsum.s()).apply_async(
            expires=600, retry=False, producer=producer)
    [message] = side.sent()
    assert sorted(message["chord"]["options"]) == ["expires", "group_id", "task_id"]
