"""The layout of each view, compared with the accepted SVG snapshots in
``tests/__snapshots__/`` (update them with ``--snapshot-update`` after a deliberate change, and
look at the new SVGs before committing them)."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable

from qtui.tui.views.details import TaskDetailScreen
from qtui.tui.views.tasks import TasksScreen

from .console_data import FixedConsole
from .still import settle, tasks_table, typed

SIZE = (140, 36)


pytestmark = pytest.mark.usefixtures("utc")  # times shown the same on every machine


def test_overview_layout(snap_compare):
    assert snap_compare(FixedConsole(), terminal_size=SIZE)


def test_workers_layout(snap_compare):
    assert snap_compare(FixedConsole(), press=["2"], terminal_size=SIZE)


def test_tasks_layout(snap_compare):
    assert snap_compare(FixedConsole(), press=["3"], terminal_size=SIZE)


def test_tasks_filtered_layout(snap_compare):
    async def filter_tasks(pilot) -> None:  # type: ignore[no-untyped-def]
        table = await tasks_table(pilot)
        await pilot.press("slash")
        await typed(pilot, "state:FAILURE,RETRY", "the filter box focused")
        await pilot.press("enter")
        await settle(pilot, lambda: pilot.app.focused is table, "the filter applied")
    assert snap_compare(FixedConsole(), run_before=filter_tasks, terminal_size=SIZE)


def test_task_detail_layout(snap_compare):
    async def open_detail(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("colon")
        await typed(pilot, "tasks args:19.99", "the command box focused")
        await pilot.press("enter")
        await settle(pilot, lambda: isinstance(pilot.app.screen, TasksScreen)
                     and isinstance(pilot.app.focused, DataTable)
                     and pilot.app.focused.row_count == 1, "the one task found")
        await pilot.press("enter")
        await settle(pilot, lambda: isinstance(pilot.app.screen, TaskDetailScreen),
                     "the task's detail")
    assert snap_compare(FixedConsole(), run_before=open_detail, terminal_size=SIZE)


def test_queues_layout(snap_compare):
    assert snap_compare(FixedConsole(), press=["4"], terminal_size=SIZE)


def test_help_layout(snap_compare):
    assert snap_compare(FixedConsole(), press=["3", "question_mark"], terminal_size=(140, 60))


def test_read_only_tasks_layout(snap_compare):
    assert snap_compare(FixedConsole(read_only=True), press=["3"], terminal_size=SIZE)
