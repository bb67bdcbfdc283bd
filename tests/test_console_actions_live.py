"""Acting on the right queue against a live qtui worker on Redis (its own queue on database 0):
cancelling a worker's last consumer of a queue asks first, and the queues view then shows the
queue has no consumer; an action asked of a worker that restarted under its name before the
operator said yes is not sent (database 13)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import redis

from qtui.core.display import printable
from qtui.tui.console import Console
from qtui.tui.views.modals import ChoiceScreen, ConfirmScreen

from .services import REDIS_HOST, REDIS_PORT, need
from .test_console_live import select, table_records, table_rows, until
from .worker_helpers import Setup, hostname_of, make_setup, redis_setup  # noqa: F401 - fixture

SIZE = (160, 45)
#: Seconds the two same-named tasks run: long enough to pick one and a signal from the console.
RUNS = 12


async def test_cancelling_a_queues_last_consumer_asks_and_the_queue_shows_none(redis_setup):
    setup = redis_setup
    hostname = f"cc-{setup.queue}@{socket.gethostname()}"
    with setup.worker("-P", "solo", name="cc"):
        console = Console(setup.app(), history=False)
        async with console.run_test(size=SIZE) as pilot:
            await pilot.press("2")
            await until(pilot, lambda: any(r[0] == hostname and r[8] == setup.queue
                                           for r in table_rows(console, "workers")),
                        what="the worker and its queue")
            select(console, "workers", hostname)
            await pilot.press("x")
            assert isinstance(console.screen, ChoiceScreen)
            assert console.screen.choices == [setup.queue]
            await pilot.press("enter")
            assert isinstance(console.screen, ConfirmScreen)
            assert f"{setup.queue} will then have no consumer" in str(console.screen.question)
            await pilot.press("y")
            await until(pilot, lambda: console.outcomes, what="cancel consumer outcome")
            assert console.outcomes[-1].ok, console.outcomes[-1]
            await pilot.press("4")
            await until(pilot, lambda: any(r["Queue"] == setup.queue and r["Cons"] == "none"
                                           for r in table_records(console, "queues")),
                        what="the queue shown with no consumer")


#: Console extras: a database of their own (the worker's queue is this test's own too).
EXTRAS = f"redis://{REDIS_HOST}:{REDIS_PORT}/13"


@pytest.fixture
def extras(tmp_path, unique) -> Iterator[Setup]:
    """A setup on database 13 whose queue is ``x-<unique>``; its keys removed after."""
    need("Redis", REDIS_HOST, REDIS_PORT)
    setup = make_setup(tmp_path, f"x-{unique}", EXTRAS, EXTRAS)
    try:
        yield setup
    finally:
        setup.cleanup()
        client = redis.Redis.from_url(EXTRAS)
        for pattern in (f"{setup.queue}*", f"_kombu.binding*{setup.queue}*",
                        f"qtui.processing.*{setup.queue}*"):
            for key in client.scan_iter(pattern):
                client.delete(key)


@pytest.mark.timeout(180)
async def test_a_shutdown_confirmed_after_the_worker_restarted_under_its_name_is_not_sent(
        extras):
    """Remote control addresses a hostname: a shutdown asked of one process and confirmed once
    a new process took its name would stop the new one. The console sees the new pid in its
    events and sends nothing."""
    setup = extras
    hostname = hostname_of(setup, "rs")
    console = Console(setup.app(), history=False)

    def alive() -> bool:
        row = console.model.workers.get(hostname)
        return row is not None and row.alive
    async with console.run_test(size=SIZE) as pilot:
        with setup.worker("-P", "solo", name="rs"):
            await until(pilot, alive, what="the worker online")
            await pilot.press("2")
            await until(pilot, lambda: any(r[0] == hostname
                                           for r in table_rows(console, "workers")))
            select(console, "workers", hostname)
            await pilot.press("D")
            assert isinstance(console.screen, ConfirmScreen)
        await until(pilot, lambda: not alive(), what="the worker offline")
        with setup.worker("-P", "solo", name="rs") as second:
            await until(pilot, alive, what="the new process online under the same name")
            await pilot.press("y")
            await until(pilot, lambda: any("restarted since you chose it" in str(n.message)
                                           for n in console.notification_log),
                        what="the refusal")
            answered = setup.app().control.inspect(destination=[hostname], timeout=2.0).ping()
            assert answered and second.poll() is None  # the new process still runs


@pytest.mark.timeout(180)
async def test_terminate_hits_the_chosen_task_among_same_named_ones_while_rows_move(extras):
    """Two running tasks of one name, the chosen one with a long id full of control
    characters; a third arrives while the signal is being picked and the rows re-sort. The
    terminate goes to the chosen id alone: the other two finish."""
    setup = extras
    app = setup.app()
    # Its own id each run: workers keep revoked ids (durable revoke).
    chosen = f"kill\x1b[2J\r\x07{setup.queue}" + "z" * 300
    console = Console(app, history=False)
    with setup.worker("-P", "prefork", "-c", "3", name="tt"):
        async with console.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: console.model.connected, what="connected")
            app.send_task("tasks.slow", args=[RUNS, "keep"])
            app.send_task("tasks.slow", args=[RUNS, "kill"], task_id=chosen)
            await pilot.press("3")
            await until(pilot, lambda: len([r for r in table_rows(console, "tasks")
                                            if r[2] == "STARTED"]) == 2, what="both running")
            select(console, "tasks", chosen)
            await pilot.press("T")
            assert isinstance(console.screen, ChoiceScreen)
            app.send_task("tasks.slow", args=[1, "later"])  # a newer row, on top
            await until(pilot, lambda: len(console.model.tasks) == 3, what="the third")
            await pilot.pause(0.5)
            await pilot.press("down", "enter")  # SIGKILL
            assert isinstance(console.screen, ConfirmScreen)
            question = str(console.screen.query_one("#question").render())
            assert printable(chosen) in question  # whole, its controls made visible
            await pilot.press("y")
            await until(pilot, lambda: console.outcomes, what="terminate outcome")
            assert console.outcomes[-1].targets == (chosen,)
        # Waits for a third "done" until well after the chosen task would have finished.
        would_end = max(r["t"] for r in setup.records("started")
                        if r["tag"] in ("keep", "kill")) + RUNS + 5
        done = {r["tag"] for r in setup.wait_records("done", 3,
                                                     timeout=max(0.0, would_end - time.time()))}
    app.close()
    assert done == {"keep", "later"}, done
