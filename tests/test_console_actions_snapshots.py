"""The layout of the tasks view and of the action dialogs (issue 20), at 80x24 and at the size
of the other console snapshots, compared with the accepted SVGs in ``tests/__snapshots__/``
(update them with ``--snapshot-update`` after a deliberate change, and look at them first)."""

from __future__ import annotations

import pytest

from .console_data import FixedConsole

pytestmark = pytest.mark.usefixtures("utc")  # times shown the same on every machine

SIZES = pytest.mark.parametrize("size", [(80, 24), (140, 36)], ids=["80x24", "140x36"])


@SIZES
def test_tasks_view_layout(snap_compare, size):
    assert snap_compare(FixedConsole(), press=["3", "down", "down"], terminal_size=size)


@SIZES
def test_signal_picker_layout(snap_compare, size):
    assert snap_compare(FixedConsole(), press=["3", "down", "down", "T"], terminal_size=size)


@SIZES
def test_terminate_confirmation_layout(snap_compare, size):
    assert snap_compare(FixedConsole(), press=["3", "down", "down", "T", "enter"],
                        terminal_size=size)


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
