"""What a snapshot test needs to take the same picture on a loaded machine: the console in the
state it waits for (not after Pilot's wait between keys, a guess from CPU time), with what
changes by the clock held still (toasts stay up, a focused input's cursor does not blink)."""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.pilot import Pilot
from textual.widgets import DataTable, Input

from qtui.tui.views.tasks import TasksScreen

from .console_data import FixedConsole


class StillConsole(FixedConsole):
    """The fixed console whose toasts stay up: a loaded machine took the screenshot more than
    the 3 s an information toast lasts after it came."""

    def notify(self, message: str, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        super().notify(message, *args, **{**kwargs, "timeout": 3600.0})


#: Seconds :func:`settle` waits at most: long enough for a thread worker on a loaded machine
#: (a count of pauses was not: a pause is short when the process is idle waiting for a thread).
SETTLE_SECONDS = 30.0


async def settle(pilot: Pilot[object], done: Callable[[], bool], what: str) -> None:
    """Pause (each pause lets every widget of the screen handle what it was sent) until
    ``done()``: the next key then lands where a person's would, however loaded the machine.
    Pilot's own wait between keys is a guess from CPU time."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"the console never settled: {what}")
        await pilot.pause()


async def focused_input(pilot: Pilot[object], what: str) -> Input:
    """The input the last key opened, once it has the focus, its cursor shown without
    blinking: a screenshot taken 0.5 s after the last key had it off."""
    await settle(pilot, lambda: isinstance(pilot.app.focused, Input), what)
    box = pilot.app.focused
    assert isinstance(box, Input)
    box.cursor_blink = False
    return box


async def typed(pilot: Pilot[object], text: str, what: str) -> Input:
    """``text`` typed into the input the last key opened, once it has the focus (the keys
    before that went to the screen below it)."""
    box = await focused_input(pilot, what)
    await pilot.press(*text)
    await settle(pilot, lambda: box.value == text, f"{text!r} typed")
    return box


async def tasks_table(pilot: Pilot[object]) -> DataTable[object]:
    """The Tasks view ('3'), once its table has the focus and its rows: keys sent sooner
    moved nothing."""
    await pilot.press("3")
    await settle(pilot, lambda: isinstance(pilot.app.screen, TasksScreen)
                 and isinstance(pilot.app.focused, DataTable) and pilot.app.focused.row_count > 0,
                 "the Tasks table focused and filled")
    table = pilot.app.focused
    assert isinstance(table, DataTable)
    return table
