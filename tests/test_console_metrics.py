"""The Metrics view (6): rollups from the history file, the range cycling over 1 h, 24 h and 7 d,
grouping by task name or queue, ordering slowest or failing first, the selected row's origin,
and the layout at 80x24 (a snapshot)."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable

from qtui.core import App
from qtui.core.metrics import MINUTE, Rollup
from qtui.tui.console import Console
from qtui.tui.views.metrics import MetricsScreen

from .console_data import SNAPSHOT, FixedConsole, screen_text

NOW = 1_790_006_400.0  # a fixed instant, the start of an hour


def rollup(done: int, failed: int, runtime: float) -> Rollup:
    made = Rollup()
    made.counts[1] = made.counts[2] = done + failed  # received, started
    made.counts[3], made.counts[4] = done, failed
    for _ in range(done + failed):
        made.runtime.add(runtime)
        made.wait.add(runtime / 10)
    return made


class MetricsConsole(FixedConsole):
    """The fixed cluster, with a history file holding an hour, a day and a week of rollups:
    ``tasks.add`` fast and busy, ``billing.charge`` failing, ``images.resize`` slow (only in the
    last day), ``reports.build`` slowest of all (only in the last week)."""

    def __init__(self, path: Path) -> None:
        app = App("console-tests", broker="redis://127.0.0.1:6379/15",
                  console_history_file=str(path))
        super().__init__(app=app)
        self.use_history = True
        self._attach_cluster(app, None)
        history = self.feed.history
        assert history is not None
        history.clock = lambda: NOW
        rollups = {}
        for m in range(1, 60):
            start = int(NOW) - m * MINUTE
            rollups[(start, "tasks.add", "celery")] = rollup(20 + m % 7, 0, 0.004)
            rollups[(start, "billing.charge", "billing")] = rollup(5, 2 + m % 3, 0.2)
        for hour in range(2, 20):
            rollups[(int(NOW) - hour * 3600, "images.resize", "images")] = rollup(30, 1, 3.0)
        for day in range(2, 6):
            rollups[(int(NOW) - day * 86400, "reports.build", "reports")] = rollup(2, 0, 400.0)
        history.save_metrics(rollups)
        self.fixed = SNAPSHOT
        # The tasks in memory say which workers ran a task name.
        self.feed.state.ingest([
            {"type": "task-received", "uuid": f"t{n}", "name": "tasks.add", "hostname": worker,
             "timestamp": NOW - n, "clock": n} for n, worker in enumerate(
                 ("qtui@alpha", "qtui@beta", "qtui@alpha"))])


def names(console: Console) -> list[str]:
    table = console.screen.query_one("#metrics", DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


def loading(console: Console) -> bool:
    return any(w.group == "metrics" and not w.is_finished for w in console.workers)


async def settle(pilot, console: Console, count: int) -> None:
    """Wait for the view's reading thread to fill the table with ``count`` rows."""
    for _ in range(200):
        await pilot.pause(0.05)
        if len(names(console)) == count and not loading(console):
            await pilot.pause()
            return
    raise AssertionError(f"the metrics table never had {count} rows: {names(console)}")


async def test_the_range_key_cycles_the_last_hour_day_and_week(tmp_path):
    console = MetricsConsole(tmp_path / "h.sqlite")
    async with console.run_test(size=(120, 36)) as pilot:
        await pilot.press("6")
        assert isinstance(console.screen, MetricsScreen)
        await settle(pilot, console, 2)
        assert names(console) == ["billing.charge", "tasks.add"]  # slowest first
        assert "Last 1 h" in screen_text(console)
        await pilot.press("r")
        await settle(pilot, console, 3)
        assert names(console)[0] == "images.resize"
        assert "Last 24 h" in screen_text(console)
        await pilot.press("r")
        await settle(pilot, console, 4)
        assert names(console)[0] == "reports.build"
        await pilot.press("r")
        await settle(pilot, console, 2)


async def test_failing_first_and_by_queue(tmp_path):
    console = MetricsConsole(tmp_path / "h.sqlite")
    async with console.run_test(size=(120, 36)) as pilot:
        await pilot.press("6", "r")
        await settle(pilot, console, 3)
        assert names(console) == ["images.resize", "billing.charge", "tasks.add"]
        await pilot.press("o")
        await pilot.pause()
        assert names(console) == ["billing.charge", "images.resize", "tasks.add"]
        await pilot.press("b")
        await settle(pilot, console, 3)
        assert set(names(console)) == {"billing", "images", "celery"}


async def test_the_selected_row_says_which_queue_and_workers_it_came_from(tmp_path):
    console = MetricsConsole(tmp_path / "h.sqlite")
    async with console.run_test(size=(120, 36)) as pilot:
        await pilot.press("6")
        await settle(pilot, console, 2)
        await pilot.press("j")  # tasks.add
        await settle(pilot, console, 2)
        origin = str(console.screen.query_one("#metrics-origin").render())
        assert "tasks.add · queues: celery · workers: qtui@alpha, qtui@beta" in origin
        await pilot.press("b")
        await settle(pilot, console, 2)
        await pilot.press("k")  # billing, the slowest queue
        await settle(pilot, console, 2)
        origin = str(console.screen.query_one("#metrics-origin").render())
        assert "billing · tasks: billing.charge" in origin


async def test_without_a_history_file_the_view_says_why_it_is_empty():
    console = FixedConsole()
    async with console.run_test(size=(80, 24)) as pilot:
        await pilot.press("colon", *"metrics", "enter")
        await pilot.pause()
        assert isinstance(console.screen, MetricsScreen)
        assert "they need console_history and console_metrics on" in screen_text(console)


@pytest.mark.usefixtures("utc")
def test_metrics_layout_at_80x24(snap_compare, tmp_path):
    async def loaded(pilot) -> None:
        await pilot.press("6")
        await settle(pilot, pilot.app, 2)
    assert snap_compare(MetricsConsole(tmp_path / "h.sqlite"), run_before=loaded,
                        terminal_size=(80, 24))
