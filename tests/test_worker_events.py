"""A qtui worker's events, read by an EventReceiver and followed by the cluster state model:
online with Celery's heartbeat fields, every step of a task's life, task events batched as
``task.multi``, task events switched off and on at run time, ``--without-events`` and
``--without-heartbeat``, offline at shutdown. On Redis, RabbitMQ and the embedded SQLite broker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from kombu import Connection, Consumer, Queue

from qtui.core import App, states
from qtui.core.events import EventReceiver, event_exchange
from qtui.core.protocol import TaskMessage
from qtui.core.state import State
from qtui.workers.events import Events
from qtui.workers.timer import Timer

from .processes import stop
from .worker_helpers import (  # noqa: F401 - fixtures
    ModuleWorkers,
    hostname_of,
    make_setup,
    module_workers,
    redis_setup,
    wait_for,
)

HEARTBEAT_FIELDS = {"freq", "active", "processed", "loadavg", "sw_ident", "sw_ver", "sw_sys"}
STAMP_FIELDS = {"type", "hostname", "utcoffset", "pid", "clock", "timestamp"}


def follow(receiver: EventReceiver, state: State, done: Callable[[], bool], what: str,
           timeout: float = 60.0, seen: list[dict[str, Any]] | None = None) -> None:
    """Feed the state the events that arrive until ``done()``; keep them in ``seen``."""
    deadline = time.monotonic() + timeout
    for batch in receiver.batches(0.1, reconnect=False):
        state.ingest(batch)
        if seen is not None:
            seen.extend(batch)
        if done():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")


def finished(state: State, *task_ids: str) -> Callable[[], bool]:
    return lambda: all((t := state.task(i)) is not None and t.ready for i in task_ids)


def about(events: list[dict[str, Any]], task_id: str) -> list[str]:
    return [e["type"] for e in events if e.get("uuid") == task_id]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("broker", ["redis", "rabbitmq", "sqlite"])
def test_the_state_follows_a_qtui_worker(broker: str, module_workers: ModuleWorkers):
    """Online (a heartbeat answers the receiver's wake-up), a task that succeeds, one that
    fails: each with the fields Celery sends."""
    setup, _ = module_workers.get(broker, "-P", "prefork", "-c", "2")
    hostname = hostname_of(setup)
    app = setup.app()
    state = State()
    try:
        with EventReceiver(app) as receiver:
            follow(receiver, state, lambda: any(w.hostname == hostname
                                                for w in state.alive_workers()), "online")
            ok = app.send_task("tasks.add", args=[2, 3])
            bad = app.send_task("tasks.fail", args=["boom"])
            follow(receiver, state, finished(state, ok.id, bad.id), "both tasks finished")
    finally:
        app.close()
    worker = state.workers[hostname]
    assert (worker.sw_ident, worker.freq, worker.sw_sys) == ("qtui", 2.0, "Linux")
    assert worker.sw_ver and len(worker.loadavg) == 3 and worker.processed is not None
    added, failed = state.task(ok.id), state.task(bad.id)
    assert added.state == states.SUCCESS and added.result == "5" and added.runtime >= 0
    assert (added.name, added.args, added.kwargs, added.worker) == ("tasks.add", "(2, 3)", "{}",
                                                                    hostname)
    assert added.received is not None and added.started is not None
    assert failed.state == states.FAILURE and failed.exception == "ValueError('boom')"
    assert "ValueError: boom" in failed.traceback
    assert {t.id for t in state.tasks_by_worker(hostname)} >= {ok.id, bad.id}


@pytest.mark.timeout(120)
def test_heartbeats_come_every_two_seconds_with_celerys_fields(module_workers):
    setup, _ = module_workers.get("redis", "-P", "prefork", "-c", "2")
    hostname = hostname_of(setup)
    app = setup.app()

    def two_beats() -> bool:
        return sum(1 for e in seen if e["type"] == "worker-heartbeat"
                   and e["hostname"] == hostname) >= 2

    seen: list[dict[str, Any]] = []
    try:
        with EventReceiver(app, wakeup=False) as receiver:
            follow(receiver, State(), two_beats, "two heartbeats", seen=seen)
    finally:
        app.close()
    beats = [e for e in seen if e["type"] == "worker-heartbeat" and e["hostname"] == hostname]
    first, second = beats[:2]
    assert set(first) >= STAMP_FIELDS | HEARTBEAT_FIELDS
    assert first["freq"] == 2.0 and first["sw_ident"] == "qtui" and first["active"] >= 0
    assert second["clock"] > first["clock"] and second["timestamp"] > first["timestamp"]


@pytest.mark.timeout(120)
def test_task_events_are_sent_in_task_multi_batches(module_workers):
    """On RabbitMQ a queue bound with ``task.multi`` alone receives every task event: lists of
    them, several per message when tasks come together."""
    setup, _ = module_workers.get("rabbitmq", "-P", "prefork", "-c", "2")
    app = setup.app()
    messages: list[Any] = []
    try:
        with Connection(setup.broker) as conn:
            queue = Queue(f"raw-{setup.queue}", exchange=event_exchange(conn),
                          routing_key="task.multi", auto_delete=True, durable=False)
            with Consumer(conn, [queue], no_ack=True,
                          callbacks=[lambda body, message: messages.append(body)]):
                results = [app.send_task("tasks.add", args=[n, n]) for n in range(20)]
                for result in results:
                    result.get(timeout=30)
                ids = {r.id for r in results}
                deadline = time.monotonic() + 30

                def succeeded() -> set[str]:
                    return {e["uuid"] for batch in messages for e in batch
                            if e["type"] == "task-succeeded"}

                while not ids <= succeeded() and time.monotonic() < deadline:
                    try:
                        conn.drain_events(timeout=0.5)
                    except TimeoutError:
                        pass
    finally:
        app.close()
    assert ids <= succeeded()
    assert all(isinstance(batch, list) for batch in messages)
    events = [e for batch in messages for e in batch if e.get("uuid") in ids]
    assert {e["type"] for e in events} == {"task-received", "task-started", "task-succeeded"}
    assert len(messages) < len(events)


@pytest.mark.timeout(120)
def test_disable_events_stops_task_events_until_enable_events(module_workers):
    setup, _ = module_workers.get("redis", "-P", "prefork", "-c", "2")
    hostname = hostname_of(setup)
    app = setup.app()
    state = State()
    seen: list[dict[str, Any]] = []
    where = {"destination": [hostname], "reply": True, "timeout": 10}
    try:
        with EventReceiver(app, wakeup=False) as receiver:
            assert app.control.disable_events(**where) == [
                {hostname: {"ok": "task events disabled"}}]
            quiet = app.send_task("tasks.add", args=[1, 1])
            assert quiet.get(timeout=30) == 2
            # The result is stored before the worker's loop settles the task: wait for that.
            inspect = app.control.inspect(destination=[hostname], timeout=10)
            assert wait_for(lambda: inspect.active() == {hostname: []})
            assert app.control.enable_events(**where) == [
                {hostname: {"ok": "task events enabled"}}]
            heard = app.send_task("tasks.add", args=[2, 2])
            follow(receiver, state, finished(state, heard.id), "the second task", seen=seen)
    finally:
        app.control.enable_events(destination=[hostname])
        app.close()
    assert about(seen, quiet.id) == []
    assert about(seen, heard.id) == ["task-received", "task-started", "task-succeeded"]
    received = next(e for e in seen if e.get("uuid") == heard.id)
    assert set(received) >= CELERY_TASK_RECEIVED | STAMP_FIELDS


@pytest.mark.timeout(120)
def test_without_events_only_worker_events_go_out_and_offline_comes_at_shutdown(redis_setup):
    hostname = hostname_of(redis_setup)
    app = redis_setup.app()
    state = State()
    seen: list[dict[str, Any]] = []
    try:
        with EventReceiver(app) as receiver:
            with redis_setup.worker("-P", "solo", "--without-events") as proc:
                follow(receiver, state, lambda: any(w.hostname == hostname
                                                    for w in state.alive_workers()), "online",
                       seen=seen)
                result = app.send_task("tasks.add", args=[3, 3])
                assert result.get(timeout=30) == 6
                stop(proc)
                assert proc.returncode == 0
            follow(receiver, state, lambda: state.workers[hostname].offline, "offline",
                   seen=seen)
    finally:
        app.close()
    mine = [e["type"] for e in seen if e["hostname"] == hostname]
    assert mine[-1] == "worker-offline" and "worker-online" in mine
    assert all(kind.startswith("worker-") for kind in mine)
    assert not state.workers[hostname].alive()


@pytest.mark.timeout(120)
def test_without_heartbeat_task_events_go_out_but_no_heartbeats(module_workers):
    setup, _ = module_workers.get("redis", "-P", "solo", "--without-heartbeat")
    hostname = hostname_of(setup)
    app = setup.app()
    state = State()
    seen: list[dict[str, Any]] = []
    try:
        with EventReceiver(app, wakeup=False) as receiver:
            result = app.send_task("tasks.add", args=[4, 4])
            window = time.monotonic() + 2 * 2.0 + 0.5  # two heartbeat periods
            follow(receiver, state, lambda: finished(state, result.id)()
                   and time.monotonic() > window, "the task and two heartbeat periods",
                   seen=seen)
    finally:
        app.close()
    mine = [e["type"] for e in seen if e["hostname"] == hostname]
    assert about(seen, result.id) == ["task-received", "task-started", "task-succeeded"]
    assert not any(kind.startswith("worker-") for kind in mine)


@pytest.mark.timeout(120)
def test_a_long_task_in_the_solo_pool_shows_as_started_while_it_runs(module_workers):
    """The solo pool runs the task on the worker's main thread; its task-started still goes out
    while the task runs, not with its task-succeeded."""
    setup, _ = module_workers.get("redis", "-P", "solo", "--without-heartbeat")
    app = setup.app()
    state = State()
    try:
        with EventReceiver(app, wakeup=False) as receiver:
            result = app.send_task("tasks.slow", args=[4])
            follow(receiver, state, lambda: (t := state.task(result.id)) is not None
                   and t.state == states.STARTED, "task-started", timeout=30)
            assert not result.ready()
            follow(receiver, state, finished(state, result.id), "the task finished")
    finally:
        app.close()


def test_an_unreachable_broker_costs_dropped_events_not_the_worker():
    """The first failure is logged, then events are dropped without trying again at once."""
    app = App("t", broker="redis://127.0.0.1:1/0", broker_connection_timeout=0.2)
    worker = SimpleNamespace(app=app, hostname="w@h", clock=app.control.mailbox.clock,
                             timer=Timer(), active={}, processed=0, send_events=True,
                             heartbeat=True, pool_name="prefork", stopping=False)
    events = Events(worker)
    events.on_worker_ready(worker)
    assert events.dropped == 1 and events.dispatcher is None
    for _ in range(10):
        events.heartbeat_now()
    assert events.dropped == 11
    events.on_worker_stopped(worker)


#: task-received's own fields in Celery's worker (``celery/worker/strategy.py``, 5.x): uuid,
#: name, args and kwargs (their reprs), root_id, parent_id, retries, eta, expires.
CELERY_TASK_RECEIVED = {"uuid", "name", "args", "kwargs", "root_id", "parent_id", "retries",
                        "eta", "expires"}


class _Unreadable:
    """A message whose fields must not be read."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"task-received's {name} read with task events off")


def _events_sent(send_events: bool) -> tuple[Events, list[tuple[str, dict[str, Any]]]]:
    """An Events of a worker without a broker, and the events it sends."""
    app = App("t", broker="memory://")
    worker = SimpleNamespace(app=app, hostname="w@h", clock=app.control.mailbox.clock,
                             timer=Timer(), active={}, processed=0, send_events=send_events,
                             heartbeat=False, pool_name="threads", stopping=False)
    events = Events(worker)
    sent: list[tuple[str, dict[str, Any]]] = []
    events._send = lambda kind, fields: sent.append((kind, fields))  # type: ignore[method-assign]
    return events, sent


def test_task_received_is_not_built_while_task_events_are_off():
    events, sent = _events_sent(send_events=False)
    events.on_task_received(SimpleNamespace(message=_Unreadable(), task_id="t1", queue="q"))
    assert sent == []


def test_task_received_carries_celerys_fields_once_enable_events_turns_task_events_on():
    events, sent = _events_sent(send_events=False)
    assert events.enable()
    eta = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    message = TaskMessage(id="t1", task="tasks.add", args=(1, 2), argsrepr="(1, 2)",
                          kwargsrepr="{}", root_id="r", parent_id="p", retries=2, eta=eta,
                          expires=eta + timedelta(hours=1))
    events.on_task_received(SimpleNamespace(message=message, task_id="t1", queue="q"))
    [(kind, fields)] = sent
    assert kind == "task-received"
    assert set(fields) >= CELERY_TASK_RECEIVED
    assert {name: fields[name] for name in CELERY_TASK_RECEIVED} == {
        "uuid": "t1", "name": "tasks.add", "args": "(1, 2)", "kwargs": "{}", "root_id": "r",
        "parent_id": "p", "retries": 2, "eta": eta.isoformat(),
        "expires": (eta + timedelta(hours=1)).isoformat()}
