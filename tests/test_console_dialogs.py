"""Every confirmation and prompt reads whole at 80x24 and at 200x50 (issue 16 item 9 saw
"Revoke ...? It w", a terminate dialog without its signal and a rate-limit prompt ending at
"0 = "): the dialog's lines, joined, hold the whole question and the whole scripted command."""

from __future__ import annotations

import pytest

from qtui.tui.console import Console

from .console_data import FixedConsole
from .test_console_layout import LARGE, SMALL, screen_lines

pytestmark = pytest.mark.usefixtures("utc")

TASK = "b54cda26-0000-4000-8000-000000000006"  # tasks.add, RECEIVED: the third row


def dialog_text(console: Console) -> str:
    """The text inside the dialog's frame (between its ``█`` borders), wrapped lines joined."""
    inside = []
    for line in screen_lines(console):
        if line.count("█") >= 2:
            inside.append(line[line.index("█") + 1:line.rindex("█")].strip("█▊▎ "))
    return " ".join(part for part in inside if part)


@pytest.mark.parametrize("size", [SMALL, LARGE])
@pytest.mark.parametrize(("keys", "expected"), [
    (["R"], [f"Revoke tasks.add [{TASK}]? It will not run.",
             f"qtui control revoke {TASK}"]),
    (["T", "down", "enter"], [f"Terminate tasks.add [{TASK}] with SIGKILL?",
                              f"qtui control revoke {TASK} --terminate --signal SIGKILL"]),
    (["T"], [f"Signal to terminate tasks.add [{TASK}] with", "SIGUSR1"]),
    (["L", "enter"], ["Rate limit for tasks.add on all workers (e.g. 10/s, 5/m, 0 = none)"]),
], ids=["revoke", "terminate", "signal", "rate-limit"])
async def test_a_dialog_shows_its_whole_question_and_command(size, keys, expected) -> None:
    console = FixedConsole()
    async with console.run_test(size=size) as pilot:
        await pilot.press("3", "down", "down", *keys)
        await pilot.pause()
        text = dialog_text(console)
        for words in expected:
            assert words in text, text
