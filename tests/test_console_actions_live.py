"""Acting on the right queue against a live qtui worker on Redis (its own queue on database 0):
cancelling a worker's last consumer of a queue asks first, and the queues view then shows the
queue has no consumer."""

from __future__ import annotations

import socket

from qtui.tui.console import Console
from qtui.tui.views.modals import ChoiceScreen, ConfirmScreen

from .test_console_live import select, table_records, table_rows, until
from .worker_helpers import redis_setup  # noqa: F401 - fixture

SIZE = (160, 45)


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
