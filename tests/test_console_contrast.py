"""Every task state's colour is readable: a WCAG contrast of at least 4.5:1 against the row it
is drawn on, plain or striped, in the dark and the light theme. The colours are read off the
rendered tasks table (after Textual turns ANSI colours into real ones), so a badly chosen
colour, palette or row background fails here."""

from __future__ import annotations

from dataclasses import replace

import pytest
from rich.color_triplet import ColorTriplet
from textual.color import Color
from textual.filter import ANSIToTruecolor
from textual.widgets import DataTable

from qtui.tui.views.format import STATE_STYLES

from .console_data import SNAPSHOT, TASKS, FixedConsole, changed

pytestmark = pytest.mark.usefixtures("utc")

EXTRA = tuple(changed(TASKS[0], id=f"00000000-0000-4000-8000-0000000000{n}", state=state,
                      received=TASKS[-1].received + n)  # type: ignore[operator]
              # The newest (a SUCCESS) holds the cursor, whose colours replace the state's.
              for n, state in ((10, "PENDING"), (11, "REJECTED"), (12, "SUCCESS")))
ALL_STATES = replace(SNAPSHOT, tasks=TASKS + EXTRA)


def luminance(colour: ColorTriplet) -> float:
    """WCAG 2 relative luminance of an sRGB colour."""
    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    return (0.2126 * channel(colour.red) + 0.7152 * channel(colour.green)
            + 0.0722 * channel(colour.blue))


def contrast(a: ColorTriplet, b: ColorTriplet) -> float:
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_the_wcag_formula():
    black, white = ColorTriplet(0, 0, 0), ColorTriplet(255, 255, 255)
    assert contrast(black, white) == pytest.approx(21.0)
    assert contrast(ColorTriplet(0x77, 0x77, 0x77), white) == pytest.approx(4.48, abs=0.01)


@pytest.mark.parametrize("theme", ["textual-dark", "textual-light"])
async def test_state_colours_reach_4_5_to_1_on_plain_and_striped_rows(theme):
    console = FixedConsole(snapshot=ALL_STATES)
    seen: dict[tuple[str, bool], float] = {}
    async with console.run_test(size=(140, 30)) as pilot:
        console.theme = theme
        await pilot.press("3")
        for _ in range(2):  # then reversed: each state on the other stripe
            table = console.screen.query_one("#tasks", DataTable)
            await pilot.pause()
            real = ANSIToTruecolor(console.ansi_theme)
            for row in range(table.row_count):
                if row == table.cursor_row:
                    continue  # the cursor's own colours replace the state's
                strip = table.render_line(row + 1)  # line 0 is the header
                for segment in real.apply(list(strip), Color.parse("black")):
                    state = segment.text.strip()
                    if state in STATE_STYLES and segment.style and segment.style.color:
                        assert segment.style.bgcolor is not None
                        seen[state, row % 2 == 1] = contrast(segment.style.color.triplet,
                                                             segment.style.bgcolor.triplet)
            await pilot.press("S")
    assert {state for state, _ in seen} == set(STATE_STYLES)
    assert len({striped for _, striped in seen}) == 2
    low = {key: round(ratio, 2) for key, ratio in seen.items() if ratio < 4.5}
    assert not low, f"{theme}: (state, striped row) below 4.5:1: {low}"
