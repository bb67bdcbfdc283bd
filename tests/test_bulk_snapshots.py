"""The layout of a bulk confirmation (with its sample, what it skips and the scripted command;
the typed count above 100 items) and of the audit view, at 80x24, compared with the accepted
SVGs in ``tests/__snapshots__/`` (update with ``--snapshot-update``, and look at them first)."""

from __future__ import annotations

import dataclasses

import pytest
from textual.widgets import DataTable

from qtui.tui.audit import AuditEntry, AuditLog
from qtui.tui.views.audit import AuditScreen
from qtui.tui.views.modals import ConfirmScreen
from qtui.tui.views.tasks import TasksScreen

from .console_data import SNAPSHOT, TASKS, FixedConsole
from .still import StillConsole, focused_input, settle, tasks_table, typed
from .test_console_actions import new_tasks

pytestmark = pytest.mark.usefixtures("utc")  # times shown the same on every machine

SMALL = (80, 24)


def test_bulk_confirmation_layout(snap_compare):
    async def mark_three(pilot):  # type: ignore[no-untyped-def]
        table = await tasks_table(pilot)
        # REVOKED, RECEIVED, RETRY marked: two to revoke, one skipped.
        await pilot.press("down", "shift+down", "shift+down")
        await settle(pilot, lambda: table.cursor_row == 3, "three tasks marked")
        await pilot.press("R")
        await settle(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen),
                     "the confirmation")
    assert snap_compare(FixedConsole(), run_before=mark_three, terminal_size=SMALL)


def test_bulk_confirmation_with_the_count_to_type_layout(snap_compare):
    console = StillConsole(snapshot=dataclasses.replace(
        SNAPSHOT, tasks=(*TASKS, *new_tasks(150))))

    async def mark_all_new(pilot):  # type: ignore[no-untyped-def]
        await pilot.press("3")
        await settle(pilot, lambda: isinstance(console.screen, TasksScreen), "the Tasks view")
        screen = console.screen
        assert isinstance(screen, TasksScreen)
        screen.set_filter("name:tasks.new")
        ids = screen.query_one("#tasks", DataTable).columns["ID"]
        unmarked = ids.content_width
        await pilot.press("asterisk")
        # The table measures the marked ids when idle, and the screen lays that out once more:
        # the confirmation then covers the table as it now is (Textual lays out no screen
        # under a modal one, so the widths of before would stay behind it).
        await settle(pilot, lambda: ids.content_width > unmarked, "the marks measured")
        await pilot.pause()
        await pilot.press("R")
        count = await focused_input(pilot, "the count box focused")
        await pilot.press(*"15")
        await settle(pilot, lambda: count.value == "15", "the count typed")

    assert snap_compare(console, run_before=mark_all_new, terminal_size=SMALL)


def test_audit_view_layout(snap_compare, tmp_path):
    console = FixedConsole()
    console.audit = log = AuditLog(tmp_path / "history.sqlite")
    t0 = 1_764_496_800.0
    for n, (action, targets, replies, ok) in enumerate([
            ("purge", ("celery",), (("-", "removed 12 message(s) from celery"),), True),
            ("terminate", (TASKS[2].id,), (("qtui@alpha", f"OK terminate: {TASKS[2].id}"),
                                           ("qtui@beta", "OK terminate: tasks unknown")), True),
            ("rate_limit", ("tasks.add",), (("qtui@alpha", "error: Invalid rate limit"),),
             False),
            ("revoke", tuple(t.id for t in TASKS[4:7]),
             (("qtui@alpha", "OK tasks {…} flagged as revoked"),
              ("qtui@beta", "OK tasks {…} flagged as revoked")), True)]):
        log.record(AuditEntry(t0 + n * 75, "ops@console-host", "redis://127.0.0.1:6379/15",
                              "cli" if action == "purge" else "console", action, targets,
                              replies, ok))

    async def open_audit(pilot):  # type: ignore[no-untyped-def]
        await pilot.press("colon")
        await typed(pilot, "audit", "the command box focused")
        await pilot.press("enter")
        await settle(pilot, lambda: isinstance(console.screen, AuditScreen), "the Audit view")
        await console.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(console, run_before=open_audit, terminal_size=SMALL)
