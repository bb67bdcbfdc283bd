"""Keys come first: a redraw that snapshots ask for while keys are being pressed waits until
INPUT_QUIET after the latest key, even one held back for the view's pace before that key came
(the repaint of a key would otherwise wait for the redraw of a whole table), but no longer than
INPUT_HOLD_MAX under a held key; and the tasks
table's redraw, which a key can still meet, draws its text cells at a tenth of DataTable's
cost, looking the same, and draws a column at the width its idle-time measure gave it."""

from __future__ import annotations

import dataclasses
import time

from rich.text import Text
from textual.coordinate import Coordinate
from textual.renderables.styled import Styled
from textual.widgets import DataTable

from qtui.core.display import safe_text
from qtui.tui.views import base, text_table
from qtui.tui.views.tasks import COLUMNS, TasksScreen
from qtui.tui.views.text_table import TextTable

from .console_data import SNAPSHOT, FixedConsole, changed, screen_text


async def tasks_view(pilot) -> TasksScreen:
    await pilot.press("3")
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, TasksScreen)
    return screen


def redraw_times(screen: TasksScreen, monkeypatch) -> list[float]:
    """When ``screen`` redraws from now on (monotonic seconds)."""
    drawn: list[float] = []
    original = screen.refresh_view
    monkeypatch.setattr(screen, "refresh_view",
                        lambda: (drawn.append(time.monotonic()), original())[1])
    return drawn


async def test_a_redraw_held_back_for_the_views_pace_waits_again_after_a_key(monkeypatch):
    console = FixedConsole()
    async with console.run_test(size=(140, 40)) as pilot:
        screen = await tasks_view(pilot)
        drawn = redraw_times(screen, monkeypatch)
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


async def test_keys_held_down_hold_a_redraw_back_for_a_while_not_for_ever(monkeypatch):
    console = FixedConsole()
    async with console.run_test(size=(140, 40)) as pilot:
        screen = await tasks_view(pilot)
        drawn = redraw_times(screen, monkeypatch)
        screen._last_redraw = 0.0  # long ago: only the keys hold the redraw back
        await pilot.press("down")
        console.apply(dataclasses.replace(SNAPSHOT, tasks=(changed(SNAPSHOT.tasks[0],
                                                                   state="FAILURE"),)))
        assert drawn == []
        for _ in range(30):  # an arrow key held down: a key every 0.1 s for 3 s
            await pilot.press("down")
            await pilot.pause(0.1)
            if drawn:
                break
        assert drawn, "keys held the redraw back as long as they came"


async def test_a_redraw_of_the_tasks_table_draws_its_text_cells_without_richs_layout(
        monkeypatch):
    console = FixedConsole()
    async with console.run_test(size=(140, 40)) as pilot:
        screen = await tasks_view(pilot)
        laid_out: list[object] = []
        render_lines = console.console.render_lines

        def counting(renderable: object, *args: object, **kwargs: object) -> object:
            if isinstance(renderable, Styled):  # how DataTable wraps each cell it draws
                laid_out.append(renderable.renderable)
            return render_lines(renderable, *args, **kwargs)  # type: ignore[arg-type]
        monkeypatch.setattr(console.console, "render_lines", counting)
        console.last_input = 0.0
        console.apply(dataclasses.replace(SNAPSHOT, tasks=(changed(SNAPSHOT.tasks[0],
                                                                   state="FAILURE"),)))
        screen._redraw_now()
        await pilot.pause()
        assert "FAILURE" in screen_text(console)
        # The header's cells only (they change with the table): the rows' are drawn here.
        assert 0 < len(laid_out) <= len(COLUMNS)


async def test_text_cells_look_as_datatable_draws_them():
    console = FixedConsole()
    cells = [Text("bench.task12", style="green"), safe_text("a\x1bb\x07c"), Text(""),
             Text("状态 ok"), Text("FAILURE", style="bold red"),
             Text.assemble(("✓ ", "bold"), "abc"), Text("x" * 30), Text("tab\there"),
             Text("two\nlines"), Text("right", justify="right"),
             Text("left", style="green", justify="left"), Text("unknown", style="no-such-style"),
             Text.assemble(("a", "no-such-style"), "b"), Text("ended", end=""),
             Text("ended", style="blue", end=" ")]
    async with console.run_test(size=(140, 40)) as pilot:
        table = TextTable(cursor_type="row", zebra_stripes=True)
        await console.screen.mount(table)
        table.add_column("a", width=12)
        table.add_column("b", width=40)
        for n, cell in enumerate(cells):
            table.add_row(cell, cell, key=str(n))
        await pilot.pause()
        style = table.rich_style
        for row in range(len(cells)):
            for column, width in ((0, 14), (1, 42)):
                for cursor, hover in ((False, False), (True, False), (False, True)):
                    ours = table._render_cell(row, column, style, width, cursor, hover)
                    table._cell_render_cache.clear()
                    theirs = DataTable._render_cell(table, row, column, style, width, cursor,
                                                    hover)
                    table._cell_render_cache.clear()
                    assert ours == theirs, (cells[row], width, cursor, hover)


async def test_a_textual_without_the_state_text_table_reads_draws_every_cell_as_datatable(
        monkeypatch):
    monkeypatch.setattr(text_table, "PRIVATE", (*text_table.PRIVATE, "_renamed_by_textual"))
    monkeypatch.setattr(TextTable, "_reads_datatable", None)

    def never(*args: object) -> object:
        raise AssertionError("drawn from state this Textual does not have")
    monkeypatch.setattr(TextTable, "_render_text_cell", never)
    console = FixedConsole()
    async with console.run_test(size=(140, 40)) as pilot:
        table = TextTable()
        await console.screen.mount(table)
        table.add_column("a", width=12)
        table.add_row(Text("bench.task12", style="green"))
        await pilot.pause()
        ours = table._render_cell(0, 0, table.rich_style, 14)
        table._cell_render_cache.clear()
        assert ours == DataTable._render_cell(table, 0, 0, table.rich_style, 14)
        assert TextTable._reads_datatable is False


async def test_cells_widened_before_the_table_measured_them_are_drawn_at_their_new_width():
    """DataTable measures updated cells when idle and keys its drawn lines by its update count,
    which the measure leaves as it was: lines drawn between the update and the measure (the
    screen's refresh tick came first, on a loaded machine) stayed at the old widths. Marking
    every task widens the id column by its mark: the marks stayed cut, and the header at the
    old widths behind the bulk confirmation, until the table next changed."""
    console = FixedConsole()
    async with console.run_test(size=(140, 40)) as pilot:
        screen = await tasks_view(pilot)
        table = screen.query_one("#tasks", DataTable)
        screen.action_mark_all()
        table.render_line(1)  # the first row, drawn before the table measured its new cells
        await pilot.pause()
        first_id = table.get_cell_at(Coordinate(0, 0))
        assert isinstance(first_id, Text) and first_id.plain.startswith("✓")
        assert first_id.plain in table.render_line(1).text
