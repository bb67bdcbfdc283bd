"""Random task messages from a client nobody trusts: hypothesis builds them (control
characters, markup, huge and wrong-typed headers and bodies, kombu's typed JSON values crafted to
fail its decoder), they go to a real worker on Redis, and the worker must keep running the valid
tasks behind them and never write a raw control character to its log or banner (issue 14)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu import Connection, Exchange, Producer, Queue

from .worker_helpers import Setup, make_setup, redis_setup, wait_for  # noqa: F401 - fixture

#: Control characters, markup and escape sequences a hostile client would try.
NASTY = ["\x1b[2J", "\x1b]52;c;aGk=\x07", "\x07", "\x9b31m", "[/]", "[@click=app.quit]",
         " [@click=app.screenshot]", "[ url=http://x]", "\u202e", "\r\n", "\x00"]
text = st.one_of(st.text(max_size=40), st.sampled_from(NASTY),
                 st.builds(lambda a, b: a + b, st.sampled_from(NASTY), st.text(max_size=10)),
                 st.just("x" * 200_000))
leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), text)
#: kombu's typed JSON values, well-formed or not (a type kombu does not know, or cannot hash;
#: a value of the wrong kind): its decoder raises anything on the bad ones.
typed = st.fixed_dictionaries({
    "__type__": st.sampled_from(["datetime", "date", "time", "decimal", "uuid", "bytes",
                                 "base64", "nope"]) | st.lists(leaf, max_size=1) | leaf,
    "__value__": st.sampled_from(["2030-01-02", "1.5", "aGk="]) | leaf
    | st.lists(leaf, max_size=2) | st.dictionaries(st.sampled_from(["hex", "x"]), leaf)})
value = st.recursive(leaf | typed,
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
HEADERS = ["task", "id", "eta", "expires", "retries", "timelimit", "argsrepr", "kwargsrepr",
           "root_id", "parent_id", "group", "origin", "shadow", "ignore_result"]
message = st.fixed_dictionaries({
    "headers": st.dictionaries(st.sampled_from(HEADERS), value, max_size=len(HEADERS)),
    "task": st.one_of(st.sampled_from(["tasks.add", "tasks.mark", "tasks.fail"]), text),
    "body": st.one_of(st.builds(lambda a, k: json.dumps([a, k, {}]),
                                st.lists(value, max_size=3),
                                st.dictionaries(st.text(max_size=5), value, max_size=2)),
                      st.builds(json.dumps, value), text),
})


@pytest.fixture
def worker(redis_setup: Setup) -> Iterator[tuple[Setup, object]]:
    with redis_setup.worker("-P", "threads", "-c", "2") as proc:
        yield redis_setup, proc


def _publish(setup: Setup, batch: list[dict]) -> None:
    with Connection(setup.broker) as conn:
        queue = Queue(setup.queue, Exchange(setup.queue), routing_key=setup.queue)
        producer = Producer(conn.default_channel)
        for item in batch:
            headers = {"lang": "py", "task": item["task"], "id": str(uuid.uuid4()),
                       **item["headers"]}
            producer.publish(item["body"], exchange=setup.queue, routing_key=setup.queue,
                             headers=headers, content_type="application/json",
                             content_encoding="utf-8", declare=[queue])


@pytest.mark.timeout(300)
@settings(max_examples=4, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(batch=st.lists(message, min_size=10, max_size=20))
def test_random_task_messages_never_stop_the_worker_nor_reach_its_log_raw(worker, batch):
    setup, proc = worker
    _publish(setup, batch)
    app = setup.app()
    try:
        assert app.send_task("tasks.add", args=[20, 22]).get(timeout=60) == 42
    finally:
        app.close()
    assert proc.poll() is None, proc.log_path.read_text()[-3000:]
    # The log is written as the worker goes; give the lines about the batch a moment.
    wait_for(lambda: "tasks.add" in proc.log_path.read_text(), 5)
    log = proc.log_path.read_text(errors="replace")
    for raw in ("\x1b", "\x07", "\x9b", "\u202e", "\x00"):
        assert raw not in log, (repr(raw), log[-3000:])
