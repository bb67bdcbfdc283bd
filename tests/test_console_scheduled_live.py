"""The Scheduled view against a live qtui worker on Redis: a broker-held task shows up, and
run now from the console makes it run at once, once."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable

from qtui.tui.views.modals import ConfirmScreen

from .console_data import FixedConsole
from .scheduled_helpers import HORIZON
from .test_eta_store import held
from .worker_helpers import Setup, redis_setup, wait_for  # noqa: F401 - fixtures


@pytest.mark.timeout(120)
async def test_run_now_from_the_console_runs_a_broker_held_task_once(redis_setup: Setup):
    redis_setup.conf["worker_eta_horizon"] = HORIZON
    with redis_setup.worker("-P", "solo"):
        app = redis_setup.app()
        result = app.send_task("tasks.mark", args=["console"], countdown=600)
        assert wait_for(lambda: held(redis_setup) == 1, 20)
        console = FixedConsole(app=app)
        async with console.run_test(size=(120, 30)) as pilot:
            # Only this test's queue: other tests' workers share the broker.
            await pilot.press("colon", *f"scheduled {redis_setup.queue}", "enter")
            table = console.screen.query_one("#scheduled", DataTable)
            for _ in range(200):
                if table.row_count:
                    break
                await pilot.pause(0.05)
            assert [str(c) for c in table.get_row_at(0)][1:3] == ["broker", "tasks.mark"]
            await pilot.press("n")
            assert isinstance(console.screen, ConfirmScreen)
            await pilot.press("y")
            for _ in range(400):  # the action and the task run while the console runs on
                if result.ready():
                    break
                await pilot.pause(0.05)
        assert result.get(timeout=20) == "console"
        assert held(redis_setup) == 0
        redis_setup.app().send_task("tasks.mark", args=["after"]).get(timeout=20)
    assert [r["tag"] for r in redis_setup.records("mark")] == ["console", "after"]
