"""The layout of the tasks view and of the action dialogs (issue 20), at 80x24 and at the size
of the other console snapshots, compared with the accepted SVGs in ``tests/__snapshots__/``
(update them with ``--snapshot-update`` after a deliberate change, and look at them first)."""

from __future__ import annotations

import pytest
from textual.pilot import Pilot

from qtui.tui.views.modals import ChoiceScreen, ConfirmScreen

from .console_data import FixedConsole
from .still import settle, tasks_table

pytestmark = pytest.mark.usefixtures("utc")  # times shown the same on every machine

SIZES = pytest.mark.parametrize("size", [(80, 24), (140, 36)], ids=["80x24", "140x36"])


async def on_the_third_task(pilot: Pilot[object]) -> None:
    """The Tasks view, its cursor moved two rows down."""
    table = await tasks_table(pilot)
    await pilot.press("down", "down")
    await settle(pilot, lambda: table.cursor_row == 2, "the cursor on the third task")


@SIZES
def test_tasks_view_layout(snap_compare, size):
    assert snap_compare(FixedConsole(), run_before=on_the_third_task, terminal_size=size)


async def pick_a_signal(pilot: Pilot[object]) -> None:
    await on_the_third_task(pilot)
    await pilot.press("T")
    await settle(pilot, lambda: isinstance(pilot.app.screen, ChoiceScreen), "the signal picker")


@SIZES
def test_signal_picker_layout(snap_compare, size):
    assert snap_compare(FixedConsole(), run_before=pick_a_signal, terminal_size=size)


@SIZES
def test_terminate_confirmation_layout(snap_compare, size):
    async def confirm(pilot: Pilot[object]) -> None:
        await pick_a_signal(pilot)
        await pilot.press("enter")
        await settle(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen),
                     "the confirmation")
    assert snap_compare(FixedConsole(), run_before=confirm, terminal_size=size)


@SIZES
def test_cancel_last_consumer_confirmation_layout(snap_compare, size):
    assert snap_compare(FixedConsole(), press=["2", "x", "down", "enter"], terminal_size=size)


@SIZES
def test_queues_view_marks_a_queue_without_consumer_layout(snap_compare, size):
    assert snap_compare(FixedConsole(), press=["4"], terminal_size=size)


@SIZES
def test_purge_confirmation_layout(snap_compare, size):
    assert snap_compare(FixedConsole(), press=["4", "P"], terminal_size=size)


@SIZES
def test_resume_confirmation_layout(snap_compare, size):
    assert snap_compare(FixedConsole(), press=["4", "G", "p"], terminal_size=size)


@SIZES
def test_rate_limit_task_type_picker_layout(snap_compare, size):
    console = FixedConsole()
    console.inspect = lambda *args: [  # type: ignore[method-assign]
        "billing.charge", "images.resize [rate_limit=2/s]", "tasks.add [rate_limit=10/m]"]

    async def open_picker(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("2", "r")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(console, run_before=open_picker, terminal_size=size)
