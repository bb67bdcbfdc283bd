"""The layout of the incident screens at the smallest size the console is made for (80x24) and
at the size the other snapshots use (140x36), compared with the accepted SVGs in
``tests/__snapshots__/`` (update with ``--snapshot-update`` after a deliberate change, and look
at the new SVGs before committing them)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from textual.widgets._toast import Toast  # not exported; the toasts on screen

from qtui.tui.views.notifications import NotificationsScreen

from .console_data import LONG_NAMES, T0, FixedConsole
from .still import focused_input, settle, tasks_table

SIZES = {"80x24": (80, 24), "140x36": (140, 36)}

pytestmark = pytest.mark.usefixtures("utc")  # times shown the same on every machine


@pytest.mark.parametrize("size", SIZES)
def test_overview(snap_compare, size):
    assert snap_compare(FixedConsole(), terminal_size=SIZES[size])


@pytest.mark.parametrize("size", SIZES)
def test_workers(snap_compare, size):
    assert snap_compare(FixedConsole(), press=["2"], terminal_size=SIZES[size])


@pytest.mark.parametrize("size", SIZES)
def test_tasks_with_the_filter_open(snap_compare, size):
    async def open_filter(pilot) -> None:  # type: ignore[no-untyped-def]
        await tasks_table(pilot)
        await pilot.press("slash")
        await focused_input(pilot, "the filter box focused")
    assert snap_compare(FixedConsole(), run_before=open_filter, terminal_size=SIZES[size])


@pytest.mark.parametrize("size", SIZES)
def test_read_only_tasks(snap_compare, size):
    assert snap_compare(FixedConsole(read_only=True), press=["3"], terminal_size=SIZES[size])


@pytest.mark.parametrize("size", SIZES)
def test_help(snap_compare, size):
    assert snap_compare(FixedConsole(), press=["3", "question_mark"], terminal_size=SIZES[size])


@pytest.mark.parametrize("size", SIZES)
def test_command_prompt(snap_compare, size):
    async def complete(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("colon")
        box = await focused_input(pilot, "the command box focused")
        await pilot.press(*"qu")
        for _ in range(100):  # the completion is looked up in a worker
            if box.value == "queues":
                break
            await pilot.pause(0.05)
            await pilot.press("tab")
        assert box.value == "queues"
    assert snap_compare(FixedConsole(), run_before=complete, terminal_size=SIZES[size])


@pytest.mark.parametrize("size", SIZES)
def test_notification_log(snap_compare, size):
    async def notify(pilot) -> None:  # type: ignore[no-untyped-def]
        pilot.app.notify("qtui@alpha: OK tasks flagged as revoked", title="Revoke")
        pilot.app.notify("no reply from qtui@beta within 1 s", severity="error")
        log = pilot.app.notification_log
        fixed = [replace(note, time=T0 + n) for n, note in enumerate(log)]  # not the clock's
        log.clear()
        log.extend(fixed)
        await pilot.pause()  # the toasts are put up on a later refresh: let them come first
        pilot.app.clear_notifications()
        # The toasts leave on a later refresh: a loaded machine is slow.
        await settle(pilot, lambda: not pilot.app.screen.query(Toast), "the toasts gone")
        await pilot.press("N")
        await settle(pilot, lambda: isinstance(pilot.app.screen, NotificationsScreen),
                     "the notification log")
    assert snap_compare(FixedConsole(), run_before=notify, terminal_size=SIZES[size])


def test_overview_at_200x50(snap_compare):
    assert snap_compare(FixedConsole(), terminal_size=(200, 50))


@pytest.mark.parametrize("view", ["2", "3", "4"])
def test_long_names_at_80x24(snap_compare, view):
    """Workers, Tasks and Queues with a long hostname, task name and queue name: cut with an
    ellipsis, every column that matters still on the screen (Paused above all)."""
    assert snap_compare(FixedConsole(snapshot=LONG_NAMES), press=[view, "G"],
                        terminal_size=SIZES["80x24"])
