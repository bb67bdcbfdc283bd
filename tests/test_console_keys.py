"""Keys come first: a redraw that snapshots ask for while keys are being pressed waits until
INPUT_QUIET after the latest key, even one held back for the view's pace before that key came
(the repaint of a key would otherwise wait for the redraw of a whole table)."""

from __future__ import annotations

import dataclasses
import time

from qtui.tui.views import base
from qtui.tui.views.tasks import TasksScreen

from .console_data import SNAPSHOT, FixedConsole, changed


async def test_a_redraw_held_back_for_the_views_pace_waits_again_after_a_key(monkeypatch):
    console = FixedConsole()
    async with console.run_test(size=(140, 40)) as pilot:
        await pilot.press("3")
        await pilot.pause()
        screen = console.screen
        assert isinstance(screen, TasksScreen)
        drawn: list[float] = []
        original = screen.refresh_view
        monkeypatch.setattr(screen, "refresh_view",
                            lambda: (drawn.append(time.monotonic()), original())[1])
        console.last_input = 0.0
        # The view drew a moment ago: the next redraw waits for its turn, 0.1 s from now.
        screen._last_redraw = time.monotonic() - screen.min_interval + 0.1
        console.apply(dataclasses.replace(SNAPSHOT, tasks=(changed(SNAPSHOT.tasks[0],
                                                                   state="FAILURE"),)))
        assert drawn == []
        key = console.last_input = time.monotonic()  # a key, before that turn came
        for _ in range(100):
            await pilot.pause(0.05)
            if drawn:
                break
        assert drawn, "the held-back redraw never came"
        assert drawn[0] - key >= base.INPUT_QUIET
