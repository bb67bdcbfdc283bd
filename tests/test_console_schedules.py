"""The console's Schedules view (5, :schedules), on a real beat store (the embedded broker):
entries in words with next and last run and that run's state, the beat processes, recent runs
on Enter, and pause, resume and run now behind a confirmation."""

from __future__ import annotations

import time

import pytest
from textual.widgets import DataTable

from qtui.core import App
from qtui.core.beat.store import Node, Run, store_for
from qtui.tui.views.modals import ConfirmScreen
from qtui.tui.views.schedules import RunsScreen, SchedulesScreen

from .console_data import TASKS, FixedConsole, screen_text

SIZE = (160, 40)
pytestmark = pytest.mark.usefixtures("utc")


def _app(tmp_path) -> App:
    return App("t", broker=f"sqlite://{tmp_path / 'broker.sqlite'}", beat_schedule={
        "cleanup": {"task": "tasks.cleanup", "schedule": 300},
        "weekly": {"task": "tasks.report", "schedule": {"minute": "0", "hour": "3",
                                                        "day_of_week": "mon"}},
    })


async def _rows(console: FixedConsole, pilot, count: int) -> list[list[str]]:
    table = console.screen.query_one("#schedules", DataTable)
    for _ in range(100):
        if table.row_count >= count:
            break
        await pilot.pause(0.05)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_the_schedules_view_shows_entries_in_words_runs_and_beats(tmp_path) -> None:
    app = _app(tmp_path)
    store = store_for(app)
    store.record_run("cleanup", Run(1000.0, 1000.2, TASKS[0].id,
                                    "beat-a"))
    store.report_node(Node("beat-a", True, time.time()), ttl=60)
    store.report_node(Node("beat-b", False, time.time()), ttl=60)
    console = FixedConsole(app=app)  # its fixed cluster knows TASKS[0]: SUCCESS
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        assert isinstance(console.screen, SchedulesScreen)
        rows = await _rows(console, pilot, 2)
        assert rows[0][:3] == ["cleanup", "tasks.cleanup", "every 5 minutes"]
        assert rows[0][4:] == ["1970-01-01 00:16:40", TASKS[0].id,
                               "SUCCESS"]
        assert rows[1][:3] == ["weekly", "tasks.report", "at 03:00 on Mondays"]
        assert rows[1][4:] == ["-", "-", "-"]
        text = screen_text(console)
        assert "beat-a leader" in text and "beat-b standby" in text
        await pilot.press("enter")
        assert isinstance(console.screen, RunsScreen)
        assert TASKS[0].id in screen_text(console)
        await pilot.press("escape")
    store.close()


async def test_pause_resume_and_run_now_ask_first_then_change_the_store(tmp_path) -> None:
    app = _app(tmp_path)
    store = store_for(app)
    console = FixedConsole(app=app)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("colon", *"schedules", "enter")
        await _rows(console, pilot, 2)
        await pilot.press("p")
        assert isinstance(console.screen, ConfirmScreen)
        await pilot.press("n")
        assert store.paused() == set()
        await pilot.press("p", "y")
        await _until(pilot, lambda: store.paused() == {"cleanup"})
        await _until(pilot, lambda: _row(console)[3] == "paused")
        await pilot.press("r", "y")
        await _until(pilot, lambda: store.paused() == set())
        await pilot.press("n", "y")
        await _until(pilot, lambda: len(store.runs("cleanup")) == 1)
        assert store.runs("cleanup")[0].manual
    store.close()


def _row(console: FixedConsole) -> list[str]:
    table = console.screen.query_one("#schedules", DataTable)
    return [str(c) for c in table.get_row_at(0)]


async def _until(pilot, condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the console did not get there"
        await pilot.pause(0.05)


async def test_read_only_hides_and_refuses_pause_resume_and_run_now(tmp_path) -> None:
    app = _app(tmp_path)
    store = store_for(app)
    console = FixedConsole(read_only=True, app=app)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await _rows(console, pilot, 2)
        await pilot.press("p", "n")
        await pilot.pause(0.2)
        assert isinstance(console.screen, SchedulesScreen)
        assert "Pause" not in screen_text(console)
    assert store.paused() == set() and store.runs("cleanup") == []
    store.close()
