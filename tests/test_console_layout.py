"""The console at 80x24 and at 200x50, driven with Pilot and read off the screen: the overview
as an incident screen (workers, queue alarm, exception column, rates on one scale with a time
axis), what must not be cut at 80 columns, notifications and their log, the help built from the
bindings, k9s's keys (`-`, `j`/`k`, `g`/`G`), prompt history and completion, the sort arrow and
the breadcrumbs."""

from __future__ import annotations

import html
import re
from dataclasses import replace

import pytest
from rich.text import Text
from textual.widgets import DataTable, Input
from textual.widgets._toast import Toast

from qtui.tui.command_mode import COMMANDS
from qtui.tui.console import Console
from qtui.tui.rows import QueueRow, ThroughputSeries
from qtui.tui.views.details import TaskDetailScreen
from qtui.tui.views.modals import CommandScreen, HelpScreen
from qtui.tui.views.notifications import NotificationsScreen
from qtui.tui.views.overview import OverviewScreen
from qtui.tui.views.rates import RateChart, bar_cells
from qtui.tui.views.tasks import TasksScreen
from qtui.tui.views.workers import WorkersScreen

from .console_data import (
    LONG_HOST,
    LONG_NAMES,
    LONG_QUEUE,
    LONG_TASK,
    SNAPSHOT,
    FixedConsole,
    changed,
)

SMALL = (80, 24)
LARGE = (200, 50)

pytestmark = pytest.mark.usefixtures("utc")  # times shown the same on every machine


def screen_lines(console: Console) -> list[str]:
    """The terminal's rows as plain text, top to bottom (from Textual's own screenshot)."""
    svg = console.export_screenshot()
    rows: dict[float, list[str]] = {}
    for y, text in re.findall(r'<text[^>]*\by="([0-9.]+)"[^>]*>(.*?)</text>', svg):
        rows.setdefault(float(y), []).append(html.unescape(text).replace("\xa0", " "))
    return ["".join(parts) for _, parts in sorted(rows.items())]


def line_with(console: Console, start: str) -> str:
    found = [line for line in screen_lines(console) if line.lstrip().startswith(start)]
    assert found, f"no line starts with {start!r}:\n" + "\n".join(screen_lines(console))
    return found[0]


BLOCKS = set("▁▂▃▄▅▆▇█")


# long names at 80 columns -------------------------------------------------------------------
async def test_a_long_queue_name_leaves_every_queue_column_on_the_screen():
    console = FixedConsole(snapshot=LONG_NAMES)
    async with console.run_test(size=SMALL) as pilot:
        await pilot.press("4")
        header = line_with(console, "Queue")
        assert header.split() == ["Queue", "Depth", "Oldest", "Sched", "Dead", "Cons", "In/s",
                                  "Out/s", "Paused", "Workers"], header
        long_row = line_with(console, LONG_QUEUE[:8])  # "reports.", not the queue "reports"
        assert len(long_row.rstrip()) <= SMALL[0] and "paused" in long_row.split(), long_row


async def test_the_line_below_the_queues_shows_the_cut_name_under_the_cursor_whole():
    console = FixedConsole(snapshot=LONG_NAMES)
    async with console.run_test(size=(200, 24)) as pilot:
        await pilot.press("4", "G")
        line_with(console, LONG_QUEUE)  # wide enough: the name is whole in the table
        await pilot.resize_terminal(*SMALL)
        await pilot.pause()
        assert line_with(console, "Queue: ").split()[:2] == ["Queue:", LONG_QUEUE]


async def test_a_long_hostname_leaves_the_worker_status_on_the_screen():
    console = FixedConsole(snapshot=LONG_NAMES)
    async with console.run_test(size=SMALL) as pilot:
        await pilot.press("2")
        assert line_with(console, LONG_HOST[:15]).split()[1] == "online"
        await pilot.press("g")  # the long hostname sorts first
        assert line_with(console, "Worker: ").split()[:2] == ["Worker:", LONG_HOST]


async def test_a_long_task_name_leaves_the_state_and_worker_on_the_screen():
    console = FixedConsole(snapshot=LONG_NAMES)
    async with console.run_test(size=SMALL) as pilot:
        await pilot.press("3")
        cells = line_with(console, "8ff34739…").split()  # the long task, newest first
        assert cells[2:4] == ["STARTED", LONG_HOST[:15] + "…"], cells
        assert cells[1].endswith("…") and LONG_TASK.startswith(cells[1][:-1])


# the overview -----------------------------------------------------------------------------
def test_a_bar_is_nothing_for_zero_and_at_least_an_eighth_above_it():
    assert bar_cells(0, 100, 1) == [" "]
    assert bar_cells(1, 100, 1) == ["▁"]
    assert bar_cells(100, 100, 1) == ["█"]
    assert bar_cells(100, 100, 3) == ["█", "█", "█"]
    assert bar_cells(50, 100, 2) == [" ", "█"]


async def test_one_failure_draws_a_small_bar_on_the_scale_of_the_successes():
    series = [0] * 30
    throughput = ThroughputSeries(1.0, {
        "SUCCESS": [*series, 40, 80, 0], "FAILURE": [*series, 0, 1, 0],
        "RETRY": [0] * 33, "RECEIVED": [*series, 40, 80, 0]})
    console = FixedConsole(snapshot=replace(SNAPSHOT, throughput=throughput))
    async with console.run_test(size=SMALL):
        failure = line_with(console, "Failure")
        assert "1.0/s" in failure
        assert set(failure) & BLOCKS == {"▁"}  # not a full bar: 1 of 80
        assert "█" in line_with(console, "Success")
        retry = line_with(console, "Retry")
        assert "0.0/s" in retry and not set(retry) & BLOCKS  # a rate of 0 draws nothing
        assert "a full bar is 80/s" in "\n".join(screen_lines(console))


async def test_the_rates_have_a_time_axis():
    console = FixedConsole()
    async with console.run_test(size=SMALL):
        axis = [line for line in screen_lines(console) if line.rstrip().endswith("now")]
        assert axis and "-" in axis[0] and "s" in axis[0]


async def test_the_overview_at_80x24_shows_workers_the_stranded_queue_and_the_exception():
    console = FixedConsole()
    async with console.run_test(size=SMALL):
        text = "\n".join(screen_lines(console))
        for words in ("qtui@alpha", "qtui@beta", "celery@gamma", "offline",
                      "ValueError('card declined for order 8')", "Exception",
                      "1 with no consumer"):
            assert words in text, words
        queues = console.screen.query_one("#overview-queues", DataTable)
        first = queues.get_row_at(0)
        assert str(first[0]) == "reports"  # 250 waiting, 0 consumers: the alarm, first
        assert isinstance(first[0], Text) and "reverse" in str(first[0].style)
        ok = queues.get_row_at(1)[0]
        assert isinstance(ok, Text) and "reverse" not in str(ok.style)
        assert str(queues.get_row_at(1)[3]).startswith("↓")  # celery drains: its trend


async def test_a_broker_error_is_readable_at_80_columns():
    error = "queue depths unavailable: Error 111 connecting to 127.0.0.1:6379. Connection refused."
    console = FixedConsole(snapshot=replace(SNAPSHOT, connected=False, error=error))
    async with console.run_test(size=SMALL):
        text = " ".join(line.strip() for line in screen_lines(console))
        assert error in text


async def test_a_tall_terminal_gives_the_rates_taller_bars():
    console = FixedConsole()
    async with console.run_test(size=SMALL) as pilot:
        small = console.screen.query_one(RateChart).size.height
        await pilot.resize_terminal(*LARGE)
        await pilot.pause()
        chart = console.screen.query_one(RateChart)
        assert chart.size.height >= 2 * small
        lines = screen_lines(console)
        start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("Success"))
        assert set(lines[start + 1]) & BLOCKS, "the success bars are one row high"


# 80 columns -------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["1", "2", "3", "4"])
async def test_the_footer_fits_80_columns(key):
    console = FixedConsole()
    async with console.run_test(size=SMALL) as pilot:
        await pilot.press(key)
        footer = screen_lines(console)[-1]
        assert footer.rstrip().endswith("? Help"), footer
        if key == "3":
            assert "y Retry" in footer


async def test_the_read_only_marker_is_whole_at_80_columns():
    console = FixedConsole(read_only=True)
    async with console.run_test(size=SMALL):
        assert "read-only" in screen_lines(console)[0]


async def test_the_filter_placeholder_is_whole_at_80_columns():
    console = FixedConsole()
    async with console.run_test(size=SMALL) as pilot:
        await pilot.press("3", "slash")
        assert any("(⏎ applies, esc clears)" in line for line in screen_lines(console))


# notifications ----------------------------------------------------------------------------
async def test_notifications_are_compact_short_and_clear_of_the_command_prompt():
    console = FixedConsole()
    async with console.run_test(size=SMALL, notifications=True) as pilot:
        console.notify("qtui@alpha: OK revoked", title="Revoke")
        console.notify("no reply from qtui@beta", severity="error")
        await pilot.press("colon")
        await pilot.pause()
        toasts = [t for screen in console.screen_stack for t in screen.query(Toast)]
        assert len(toasts) >= 2
        prompt = console.screen.query_one("#command", Input).region
        for toast in toasts:
            assert toast.region.height == 1  # title and message on one line
            assert toast.region.width < SMALL[0] * 0.7
            assert not toast.region.overlaps(prompt)
        assert "Revoke: qtui@alpha: OK revoked" in "\n".join(screen_lines(console))
        assert [n.timeout for n in console._notifications] == [3.0, 8.0]


async def test_a_long_notification_is_drawn_whole_at_80_columns():
    """A worker's reply wraps over several lines at 80x24; its last line used to be cut (the
    toast rack's scrollbar narrowed the toast after its height was measured)."""
    console = FixedConsole()
    reply = ("tmux-ct-98ea32fbc6@vm: OK tasks {'17393aae-1de1-4a6b-b313-6ae1815fa5d1'} "
             "flagged as revoked, the last words")
    async with console.run_test(size=SMALL, notifications=True) as pilot:
        console.notify(reply, title="revoke 17393aae-1de1-4a6b-b313-6ae1815fa5d1")
        await pilot.pause(0.2)
        [toast] = [t for screen in console.screen_stack for t in screen.query(Toast)]
        assert toast.region.height >= 4  # it does wrap
        assert "the last words" in " ".join("\n".join(screen_lines(console)).split())


async def test_ctrl_l_dismisses_the_notifications_and_N_shows_their_log():
    console = FixedConsole()
    async with console.run_test(size=SMALL, notifications=True) as pilot:
        console.notify("qtui@alpha: OK revoked", title="Revoke")
        console.notify("no reply from qtui@beta", severity="error")
        await pilot.pause()
        assert list(console.screen.query(Toast))
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert not list(console._notifications) and not list(console.screen.query(Toast))
        await pilot.press("N")
        assert isinstance(console.screen, NotificationsScreen)
        text = "\n".join(screen_lines(console))
        assert "no reply from qtui@beta" in text and "qtui@alpha: OK revoked" in text
        table = console.screen.query_one(DataTable)
        assert "no reply" in str(table.get_row_at(0)[3])  # newest first
        await pilot.press("escape")
        assert isinstance(console.screen, OverviewScreen)


# help ---------------------------------------------------------------------------------------
async def test_the_help_shows_key_symbols_and_every_command_alias_without_scrolling():
    console = FixedConsole()
    async with console.run_test(size=LARGE) as pilot:
        await pilot.press("3", "question_mark")
        screen = console.screen
        assert isinstance(screen, HelpScreen)
        keys = {key for _, pairs in screen.sections for key, _ in pairs}
        assert {"/", "]", "[", ":", "?", "-"} <= keys
        assert not {"slash", "right_square_bracket", "colon", "question_mark"} & keys
        text = "\n".join(screen_lines(console))
        for command in COMMANDS:
            for alias in command.aliases:
                assert f":{alias}" in text, alias
        assert "Clear filter" in text and "history, completion" in text  # first and last
        assert screen.query_one("#dialog").max_scroll_y == 0


# k9s's keys -------------------------------------------------------------------------------
async def test_minus_goes_back_to_the_last_view():
    console = FixedConsole()
    async with console.run_test(size=SMALL) as pilot:
        await pilot.press("2", "3", "minus")
        assert isinstance(console.screen, WorkersScreen)
        await pilot.press("minus")
        assert isinstance(console.screen, TasksScreen)


async def test_j_k_g_and_G_move_the_table_cursor():
    console = FixedConsole()
    async with console.run_test(size=SMALL) as pilot:
        await pilot.press("3")
        table = console.screen.query_one("#tasks", DataTable)
        await pilot.press("j", "j")
        assert table.cursor_row == 2
        await pilot.press("k")
        assert table.cursor_row == 1
        await pilot.press("G")
        assert table.cursor_row == table.row_count - 1
        await pilot.press("g")
        assert table.cursor_row == 0


async def test_the_command_prompt_remembers_and_completes():
    console = FixedConsole()
    async with console.run_test(size=SMALL) as pilot:
        await pilot.press("colon", *"workers", "enter")
        assert isinstance(console.screen, WorkersScreen)
        await pilot.press("colon", "up")
        assert console.screen.query_one("#command", Input).value == "workers"
        await pilot.press("escape", "colon", *"qu")
        await pilot.pause()
        await pilot.press("tab")
        assert isinstance(console.screen, CommandScreen)
        assert console.screen.query_one("#command", Input).value == "queues"
        await pilot.press("enter")
        assert console.screen.__class__.__name__ == "QueuesScreen"


async def test_the_filter_remembers_earlier_filters():
    console = FixedConsole()
    async with console.run_test(size=SMALL) as pilot:
        await pilot.press("3", "slash", *"state:FAILURE", "enter")
        await pilot.press("escape", "slash")
        box = console.screen.query_one("#filter", Input)
        assert box.value == ""
        await pilot.press("up")
        assert box.value == "state:FAILURE"


async def test_the_sorted_column_has_an_arrow():
    console = FixedConsole()
    async with console.run_test(size=SMALL) as pilot:
        await pilot.press("3")
        table = console.screen.query_one("#tasks", DataTable)

        def labels() -> list[str]:
            return [column.label.plain.strip() for column in table.columns.values()]
        assert "Received ▼" in labels()
        await pilot.press("S")
        assert "Received ▲" in labels()
        await pilot.press("s")
        assert "Started ▲" in labels() and "Received" in labels()


async def test_the_header_shows_the_way_here():
    console = FixedConsole()
    async with console.run_test(size=SMALL) as pilot:
        await pilot.press("colon", *"tasks args:19.99", "enter")
        assert console.screen.title == "qtui › Tasks › args:19.99"
        await pilot.press("enter")
        assert isinstance(console.screen, TaskDetailScreen)
        assert console.screen.title.startswith("qtui › Tasks › args:19.99 › ")
        assert "qtui › Tasks › args:19.99" in screen_lines(console)[0]


async def test_a_queue_with_consumers_is_no_alarm():
    queues = (QueueRow("celery", 5, 1, 0.0, ("qtui@alpha",)), QueueRow("idle", 0, 0, None))
    console = FixedConsole(snapshot=replace(SNAPSHOT, queues=queues))
    async with console.run_test(size=SMALL):
        assert "no consumer" not in "\n".join(screen_lines(console))


async def test_a_view_coming_back_shows_the_current_data_at_once():
    """Switching back to a view draws what arrived meanwhile in the same frame, instead of
    showing the old table until the quiet time after a key has passed."""
    console = FixedConsole()
    async with console.run_test(size=SMALL) as pilot:
        await pilot.press("3")
        await pilot.press("2")
        newer = changed(SNAPSHOT.tasks[0], id="ffffffff-0000-4000-8000-000000000099",
                        received=SNAPSHOT.tasks[-1].received + 60)  # type: ignore[operator]
        console.apply(replace(SNAPSHOT, tasks=(newer,)))
        await pilot.press("3")
        table = console.screen.query_one("#tasks", DataTable)
        assert newer.id in [str(row.key.value) for row in table.ordered_rows]


async def test_the_footer_follows_the_view():
    console = FixedConsole()
    async with console.run_test(size=SMALL) as pilot:
        await pilot.press("2")
        assert "Shut down" in screen_lines(console)[-1]
        await pilot.press("3")
        footer = screen_lines(console)[-1]
        assert "Retry" in footer and "Shut down" not in footer
