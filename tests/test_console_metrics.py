"""The Metrics view (6): rollups from the history file, the range cycling over 1 h, 24 h and 7 d,
grouping by task name or queue, ordering slowest or failing first, the selected row's origin,
and the layout at 80x24 (a snapshot)."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable
from textual_plotext import PlotextPlot

from qtui.tui.console import Console
from qtui.tui.views.metrics import MetricsScreen

from .console_data import FixedConsole, MetricsConsole, screen_text


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
        assert "billing · deepest 40 · tasks: billing.charge" in origin


def time_axis(console: Console, plot: str) -> tuple[list[str], str]:
    """A plot's x axis as drawn: its tick labels left to right, and its label."""
    lines = console.screen.query_one(f"#{plot}", PlotextPlot).render().plain.splitlines()
    return lines[-2].split(), lines[-1].strip()


async def test_both_plots_span_the_whole_range_up_to_now_whichever_steps_had_a_runtime(tmp_path):
    # The slowest task of each range is selected: its runtimes cover a few steps of it only
    # (images.resize 2-19 hours of the day, reports.build one hour a day of the week).
    console = MetricsConsole(tmp_path / "h.sqlite")
    async with console.run_test(size=(120, 36)) as pilot:
        await pilot.press("6")
        for count, ticks, label in ((2, "60 45 30 15 now", "minutes ago"),
                                    (3, "24 18 12 6 now", "hours ago"),
                                    (4, "7 6 5 4 3 2 1 now", "days ago")):
            await settle(pilot, console, count)
            assert time_axis(console, "throughput-plot") == (ticks.split(), label)
            assert time_axis(console, "runtime-plot") == (ticks.split(), label)
            await pilot.press("r")


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
