"""The console against live workers, driven with Pilot as a user drives it: every view fills from
a real qtui worker's events and replies, and every action reaches the worker and reports its
reply. Redis (database 9) and the embedded broker; the data layer also follows a real Celery
worker."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from textual.widgets import DataTable, TextArea

from qtui.core.brokers.redis.queues import RedisQueues
from qtui.core.state import State
from qtui.tui.console import Console
from qtui.tui.feed import Feed
from qtui.tui.views.base import TableView
from qtui.tui.views.details import TaskDetailScreen, WorkerDetailScreen
from qtui.tui.views.modals import ChoiceScreen, ConfirmScreen, PromptScreen

from .console_data import screen_text
from .processes import celery_worker, write_module
from .services import REDIS_HOST, REDIS_PORT, need
from .worker_helpers import Setup, make_setup

SIZE = (160, 45)
BROKER = f"redis://{REDIS_HOST}:{REDIS_PORT}/9"
#: Seconds a task runs (or waits for its countdown) when the test stops it: long enough to stop it
#: from the console, short enough that the test can wait past its end to see it never ran.
SHORT = 5


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[tuple[Setup, str]]:
    """One prefork worker (concurrency 2) on Redis for the whole module."""
    need("Redis", REDIS_HOST, REDIS_PORT)
    directory = tmp_path_factory.mktemp("console-live")
    setup = make_setup(directory, f"cl-{time.monotonic_ns() % 10**9}", BROKER, BROKER)
    with setup.worker("-P", "prefork", "-c", "2", name="live"):
        yield setup, f"live-{setup.queue}@{socket.gethostname()}"
    setup.cleanup()


def open_console(setup: Setup, **options: Any) -> Console:
    return Console(setup.app(), history=False, **options)


async def until(pilot: Any, condition: Callable[[], Any], timeout: float = 20.0,
                what: str = "condition") -> Any:
    """Let the console run until ``condition()`` is true (returns its value)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await pilot.pause(0.1)
    raise AssertionError(f"{what} not met within {timeout}s")


def table_rows(console: Console, table_id: str) -> list[list[str]]:
    """The table's rows, each cell whole: a view cuts long cells to fit the terminal (other
    tests' queues and workers on this shared DB can make this test's names the ones cut)."""
    screen = console.screen
    table = screen.query_one(f"#{table_id}", DataTable)
    whole = screen.whole if isinstance(screen, TableView) and screen.table is table else {}
    return [[str(cell) for cell in whole.get(str(row.key.value), table.get_row_at(i))]
            for i, row in enumerate(table.ordered_rows)]


def table_records(console: Console, table_id: str) -> list[dict[str, str]]:
    """The table's rows as {column key: cell text}: columns may be added without breaking."""
    table = console.screen.query_one(f"#{table_id}", DataTable)
    keys = [str(key.value) for key in table.columns]
    return [dict(zip(keys, row, strict=True)) for row in table_rows(console, table_id)]


def select(console: Console, table_id: str, key: str) -> None:
    table = console.screen.query_one(f"#{table_id}", DataTable)
    table.move_cursor(row=table.get_row_index(key))


def outcome_text(console: Console) -> str:
    return "\n".join(f"{o.title}: {o.message}" for o in console.outcomes)


async def filter_tasks(pilot: Any, task_id: str) -> None:
    """Open the tasks view filtered to one task (sent already, or about to be)."""
    # The id's first 12 characters pick it out (a field matches what contains the text), in
    # a third of the keys.
    await pilot.press("colon", *f"tasks id:{task_id[:12]}", "enter")


async def wait_task(pilot: Any, console: Console, task_id: str, state: str | None = None) -> None:
    """Wait for the filtered tasks view to show the task (in ``state``)."""
    def shown() -> bool:
        rows = table_rows(console, "tasks")
        return bool(rows) and (state is None or rows[0][2] == state)
    await until(pilot, shown, what=f"task {task_id} in state {state}")


async def show_task(pilot: Any, console: Console, task_id: str, state: str | None = None) -> None:
    """Open the tasks view filtered to one task, and wait for it (in ``state``)."""
    await filter_tasks(pilot, task_id)
    await wait_task(pilot, console, task_id, state)


async def test_workers_view_shows_the_live_worker_with_its_pool_and_queues(world):
    setup, hostname = world
    console = open_console(setup)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2")

        def row() -> list[str] | None:
            for r in table_rows(console, "workers"):
                if r[0] == hostname and r[3] == "prefork" and setup.queue in r[8]:
                    return r
            return None
        found = await until(pilot, row, what="worker row with pool and queues")
        assert found[1] == "online" and found[4] == "2"
        select(console, "workers", hostname)
        await pilot.press("enter")
        assert isinstance(console.screen, WorkerDetailScreen)
        screen = console.screen
        await until(pilot, lambda: "loading" not in str(screen.query_one("#note-registered")
                                                         .render()), what="registered reply")
        await pilot.click("#tabs-list Tab#--content-tab-tab-registered")
        await until(pilot, lambda: "tasks.add" in screen_text(console), what="registered tasks")


async def test_tasks_view_follows_tasks_and_drills_into_a_failure(world):
    setup, _ = world
    app = setup.app()
    console = open_console(setup)
    async with console.run_test(size=SIZE) as pilot:
        # Events on Redis reach only receivers already listening (the history covers restarts).
        await until(pilot, lambda: console.model.connected, what="connected")
        good = app.send_task("tasks.add", args=[2, 3])
        bad = app.send_task("tasks.fail", args=["card declined"])
        assert good.get(timeout=20) == 5
        await show_task(pilot, console, bad.id, "FAILURE")
        await pilot.press("enter")
        screen = console.screen
        assert isinstance(screen, TaskDetailScreen)
        await until(pilot, lambda: "card declined" in str(screen.query_one("#exception").render()),
                    what="the exception at the top of the task's detail")
        await pilot.press("escape")
    app.close()


async def test_revoke_a_scheduled_task_from_the_tasks_view(world):
    setup, hostname = world
    app = setup.app()
    console = open_console(setup)
    async with console.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: console.model.connected, what="connected")
        task_id = str(uuid.uuid4())
        await filter_tasks(pilot, task_id)  # before sending: typing the filter takes seconds
        sent = time.time()
        later = app.send_task("tasks.mark", args=["never"], countdown=SHORT, task_id=task_id)
        await wait_task(pilot, console, later.id, "RECEIVED")
        await pilot.press("R")
        assert isinstance(console.screen, ConfirmScreen)
        await pilot.press("y")
        await until(pilot, lambda: console.outcomes, what="revoke outcome")
        assert f"{hostname}: OK" in outcome_text(console)
        assert "revoked" in outcome_text(console)
        await until(pilot, lambda: table_rows(console, "tasks")[0][2] == "REVOKED", timeout=15,
                    what="task revoked")
    await asyncio.sleep(max(0.0, sent + SHORT + 2 - time.time()))  # past its countdown
    assert [r for r in setup.records("mark") if r["tag"] == "never"] == []
    app.close()


async def test_terminate_a_running_task_with_a_chosen_signal(world):
    setup, hostname = world
    app = setup.app()
    console = open_console(setup)
    async with console.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: console.model.connected, what="connected")
        task_id = str(uuid.uuid4())
        await filter_tasks(pilot, task_id)  # before sending: typing the filter takes seconds
        sent = time.time()
        running = app.send_task("tasks.slow", args=[SHORT, "terminate-me"], task_id=task_id)
        await wait_task(pilot, console, running.id, "STARTED")
        await pilot.press("T")
        assert isinstance(console.screen, ChoiceScreen)
        await pilot.press("down", "enter")  # SIGKILL
        assert isinstance(console.screen, ConfirmScreen)
        await pilot.press("y")
        await until(pilot, lambda: console.outcomes, what="terminate outcome")
        assert f"{hostname}: OK" in outcome_text(console)
        await until(pilot, lambda: table_rows(console, "tasks")[0][2] == "REVOKED", timeout=15,
                    what="task terminated")
    started = next((r["t"] for r in setup.records("started") if r["tag"] == "terminate-me"), sent)
    await asyncio.sleep(max(0.0, started + SHORT + 2 - time.time()))  # past when it would end
    assert [r for r in setup.records("done") if r["tag"] == "terminate-me"] == []
    app.close()


async def test_retry_sends_a_failed_task_again_with_its_full_arguments(world):
    setup, _ = world
    app = setup.app()
    long_message = "x" * 3000  # far past the 1 KiB argsrepr that events carry
    console = open_console(setup)
    async with console.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: console.model.connected, what="connected")
        failed = app.send_task("tasks.fail", args=[long_message])
        await show_task(pilot, console, failed.id, "FAILURE")
        assert len(console.model.tasks[failed.id].args) < 3000
        await pilot.press("enter")
        detail = console.screen
        assert isinstance(detail, TaskDetailScreen)
        await until(pilot, lambda: detail.full_arguments is not None and (
            detail.full_arguments.args, detail.full_arguments.kwargs) == ([long_message], {}),
                    what="the complete arguments in the task's detail")
        # Below the failure, which comes first (its 3000-character message fills the screen).
        assert "complete, from the worker" in detail.query_one("#values", TextArea).text
        await pilot.press("escape")
        await pilot.press("y")  # the full arguments are looked up, then it asks
        await until(pilot, lambda: isinstance(console.screen, ConfirmScreen), what="the question")
        await pilot.press("y")
        text = await until(pilot, lambda: outcome_text(console), what="retry outcome")
        assert "sent again as" in text
        new_id = console.outcomes[-1].message.rsplit(" ", 1)[-1]
    with pytest.raises(ValueError, match="x" * 3000):
        app.AsyncResult(new_id).get(timeout=20)
    app.close()


async def test_rate_limit_a_task_type_on_all_workers(world):
    setup, hostname = world
    app = setup.app()
    console = open_console(setup)
    async with console.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: console.model.connected, what="connected")
        done = app.send_task("tasks.add", args=[1, 1])
        await show_task(pilot, console, done.id, "SUCCESS")
        await pilot.press("L")
        assert isinstance(console.screen, ChoiceScreen)
        await pilot.press("enter")  # all workers
        assert isinstance(console.screen, PromptScreen)
        await pilot.press(*"100/m", "enter")
        await until(pilot, lambda: console.outcomes, what="rate limit outcome")
        assert f"{hostname}: OK new rate limit set successfully" in outcome_text(console)
        await pilot.press("L", "enter")
        await pilot.press(*"0", "enter")  # and off again
        await until(pilot, lambda: len(console.outcomes) == 2, what="second outcome")
    app.close()


async def test_pool_grow_and_shrink_from_the_workers_view(world):
    setup, hostname = world
    console = open_console(setup)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2")

        def concurrency() -> str | None:
            for r in table_rows(console, "workers"):
                if r[0] == hostname:
                    return r[4]
            return None
        await until(pilot, lambda: concurrency() == "2", what="concurrency 2")
        select(console, "workers", hostname)
        await pilot.press("plus")
        await until(pilot, lambda: concurrency() == "3", what="concurrency 3")
        assert f"{hostname}: OK" in outcome_text(console)
        select(console, "workers", hostname)
        await pilot.press("underscore")
        await until(pilot, lambda: concurrency() == "2", what="concurrency back to 2")


async def test_time_limit_and_consumers_from_the_workers_view(world):
    setup, hostname = world
    extra, waiting = f"{setup.queue}-extra", f"{setup.queue}-waiting"
    app = setup.app()
    console = Console(setup.app(alerts=[{"name": "waiting", "kind": "queue_depth",
                                         "queue": waiting, "over": 1000}]), history=False)
    try:
        async with console.run_test(size=SIZE) as pilot:
            await pilot.press("2")
            await until(pilot, lambda: any(r[0] == hostname
                                           for r in table_rows(console, "workers")),
                        what="worker row")
            select(console, "workers", hostname)
            await pilot.press("t")  # pick the task type from the worker's list, then the limits
            await until(pilot, lambda: isinstance(console.screen, ChoiceScreen),
                        what="the worker's task types")
            names = [choice.split()[0] for choice in console.screen.choices]
            await pilot.press(*["down"] * names.index("tasks.slow"), "enter")
            assert isinstance(console.screen, PromptScreen)
            await pilot.press(*"10 20", "enter")
            await until(pilot, lambda: console.outcomes, what="time limit outcome")
            assert f"{hostname}: OK" in outcome_text(console)

            # A queue the worker does not consume, so that the choice is offered even when no
            # other test's queue is on the broker. An alert rule names it, so every poll asks
            # for it (a queue nobody names is found by a listing reused for up to 30 s).
            app.send_task("tasks.noop", queue=waiting)
            await pilot.press("4")
            await until(pilot, lambda: waiting in console.model.queues, what="the waiting queue")
            await pilot.press("2")
            select(console, "workers", hostname)
            await pilot.press("a")  # the queues listed, then another one, typed
            assert isinstance(console.screen, ChoiceScreen)
            await pilot.press("end", "enter")
            assert isinstance(console.screen, PromptScreen)
            await pilot.press(*extra, "enter")
            await until(pilot, lambda: len(console.outcomes) == 2, what="add consumer outcome")
            assert f"{hostname}: OK" in console.outcomes[-1].message
            await pilot.press("4")
            await until(pilot, lambda: any(r["Queue"] == extra and hostname in r["Workers"]
                                           for r in table_records(console, "queues")),
                        what="the new queue consumed by the worker")
            await pilot.press("2")
            select(console, "workers", hostname)
            await pilot.press("x")  # pick the queue from the worker's queues
            assert isinstance(console.screen, ChoiceScreen) and extra in console.screen.choices
            await pilot.press(*["down"] * console.screen.choices.index(extra), "enter")
            assert isinstance(console.screen, ConfirmScreen)  # its last consumer: asks first
            await pilot.press("y")
            await until(pilot, lambda: len(console.outcomes) == 3,
                        what="cancel consumer outcome")
            assert f"{hostname}: OK" in console.outcomes[-1].message
            await pilot.press("4")
            await until(pilot, lambda: not any(r["Queue"] == extra and hostname in r["Workers"]
                                               for r in table_records(console, "queues")),
                        what="the queue no longer consumed")
    finally:
        redis.Redis.from_url(setup.broker).delete(waiting, f"_kombu.binding.{waiting}",
                                                  f"_kombu.binding_permanent.{waiting}")
        # The module's worker is shared: give tasks.slow back its time limits (none).
        reset = app.control.time_limit("tasks.slow", destination=[hostname], reply=True,
                                       timeout=10)
        app.close()
    assert reset.by_worker()[hostname] == {"ok": "time limits set successfully"}


async def test_purge_a_queue_nobody_consumes(world):
    setup, _ = world
    idle = f"{setup.queue}-idle"
    app = setup.app()
    for i in range(5):
        app.send_task("tasks.add", args=[i, i], queue=idle)
    # A queue only a client bound is found by a SCAN whose answer a process reuses for
    # LISTING_REUSE seconds (test_queues covers that): an earlier test's answer would hide it.
    RedisQueues._discovered.clear()
    console = open_console(setup)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await until(pilot, lambda: [idle, "5"] in [r[:2] for r in table_rows(console, "queues")],
                    what="idle queue with 5 messages")
        select(console, "queues", idle)
        await pilot.press("P")
        assert isinstance(console.screen, ConfirmScreen)
        await pilot.press("y")
        await until(pilot, lambda: console.outcomes, what="purge outcome")
        assert f"removed 5 message(s) from {idle}" in outcome_text(console)
        await until(pilot, lambda: [idle, "0"] in [r[:2] for r in table_rows(console, "queues")],
                    what="idle queue empty")
    app.close()


async def test_shut_a_worker_down_from_the_workers_view(world):
    setup, _ = world
    with setup.worker("-P", "solo", name="doomed") as proc:
        hostname = f"doomed-{setup.queue}@{socket.gethostname()}"
        console = open_console(setup)
        async with console.run_test(size=SIZE) as pilot:
            await pilot.press("2")
            await until(pilot, lambda: [hostname, "online"] in [
                r[:2] for r in table_rows(console, "workers")], what="doomed worker online")
            select(console, "workers", hostname)
            await pilot.press("D")
            assert isinstance(console.screen, ConfirmScreen)
            await pilot.press("y")
            await until(pilot, lambda: [hostname, "offline"] in [
                r[:2] for r in table_rows(console, "workers")], what="doomed worker offline")
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert proc.returncode == 0


async def test_the_console_on_the_embedded_broker(tmp_path, unique, redis_url):
    broker = f"sqlite://{tmp_path}/broker.sqlite"
    setup = make_setup(tmp_path, f"ce-{unique}", broker, f"sqlite://{tmp_path}/results.sqlite")
    idle = f"{setup.queue}-idle"
    with setup.worker("-P", "threads", "-c", "2", name="embedded"):
        hostname = f"embedded-{setup.queue}@{socket.gethostname()}"
        app = setup.app()
        console = open_console(setup)
        async with console.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: console.model.connected, what="connected")
            done = app.send_task("tasks.add", args=[20, 22])
            app.send_task("tasks.add", args=[1, 2], queue=idle)
            assert done.get(timeout=20) == 42
            await pilot.press("2")
            await until(pilot, lambda: [hostname, "online"] in [
                r[:2] for r in table_rows(console, "workers")], what="worker online")
            await show_task(pilot, console, done.id, "SUCCESS")
            await pilot.press("4")
            await until(pilot, lambda: [idle, "1"] in [r[:2] for r in table_rows(
                console, "queues")], what="unconsumed queue listed")
            select(console, "queues", idle)
            await pilot.press("P", "y")
            await until(pilot, lambda: "removed 1 message(s)" in outcome_text(console),
                        what="purge outcome")
        app.close()
    setup.cleanup()


CELERY_TASKS = """
from celery import Celery

app = Celery("celerytasks", broker="{broker}", backend="{broker}")

@app.task(name="celerytasks.add")
def add(x, y):
    return x + y

@app.task(name="celerytasks.fail")
def fail(message):
    raise ValueError(message)
"""


def test_the_console_data_layer_follows_a_real_celery_worker(tmp_path, unique, redis_url):
    from qtui.core import App

    write_module(tmp_path, "celerytasks", CELERY_TASKS.format(broker=BROKER))
    queue = f"celery-{unique}"
    app = App("client", broker=BROKER, backend=BROKER)
    feed = Feed(app, poll_interval=0.5)
    snapshots: list[Any] = []
    stop_at = time.monotonic() + 60

    import threading
    threads = [threading.Thread(target=feed.run, args=(snapshots.append, 0.1), daemon=True),
               threading.Thread(target=feed.poll, daemon=True)]
    for thread in threads:
        thread.start()

    def state() -> State:
        return feed.state

    def wait(condition: Callable[[], bool], what: str) -> None:
        while time.monotonic() < stop_at:
            with feed.lock:
                if condition():
                    return
            time.sleep(0.1)
        raise AssertionError(f"{what} not seen")

    try:
        with celery_worker(tmp_path, "celerytasks", queue, extra=["-E"]) as proc:
            hostname = f"celery-{queue}@{socket.gethostname()}"
            wait(lambda: any(w.hostname == hostname and w.alive() for w in
                             state().workers.values()), "the Celery worker online")
            ok = app.send_task("celerytasks.add", args=[2, 2], queue=queue)
            bad = app.send_task("celerytasks.fail", args=["from celery"], queue=queue)
            assert ok.get(timeout=20) == 4
            wait(lambda: (t := state().task(ok.id)) is not None and t.state == "SUCCESS",
                 "task-succeeded")
            wait(lambda: (t := state().task(bad.id)) is not None and t.state == "FAILURE"
                 and "from celery" in (t.exception or ""), "task-failed")
            wait(lambda: any(q.name == queue and hostname in q.workers
                             for q in feed.snapshot().queues), "its queue and consumer")
            snapshot_workers = {w.hostname: w for w in feed.snapshot().workers}
            assert snapshot_workers[hostname].pool == "solo"
            assert proc.poll() is None
        wait(lambda: not state().workers[hostname].alive(), "the Celery worker offline")
    finally:
        feed.stop()
        for thread in threads:
            thread.join(5)
        app.close()


async def test_a_restarted_console_shows_what_it_saw_before(world, tmp_path):
    setup, _ = world
    app = setup.app(console_history_file=str(tmp_path / "history.sqlite"))
    console = Console(app)
    async with console.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: console.model.connected, what="connected")
        seen = app.send_task("tasks.add", args=[7, 8])
        assert seen.get(timeout=20) == 15
        await show_task(pilot, console, seen.id, "SUCCESS")
    again = Console(app, start_feed=False)  # no events at all this time
    async with again.run_test(size=SIZE) as pilot:
        await show_task(pilot, again, seen.id, "SUCCESS")
    app.close()
