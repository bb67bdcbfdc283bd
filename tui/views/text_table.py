"""A DataTable that draws its one-line text cells straight from their segments.

Every change to a DataTable (a row added, a cell updated) throws away its rendered cells, so a
redraw of the tasks table under a stream of events draws every visible cell again, on the UI
thread, while a key may wait. DataTable draws a cell through Rich's layout (a padding, a styled
wrapper, a line split and crop): about 85 µs a cell on this project's bench machine, against 9
µs for the same segments built here; the draw after such a redraw at 140x40 went from 45-51 ms
of CPU to 34-36 (bench/RESULTS.md).
Cells this does not cover (taller rows, text wider than its column, tabs, line breaks,
left-justified text, a non-default ``Text.end``, other renderables, the header) are drawn by
DataTable as before. The views' tables that redraw from
the feed (the tasks table, every one-table view, the overview's) are TextTables.

A TextTable also redraws the lines a column's new width changes: DataTable measures updated
cells when idle and keys its drawn lines by an update count its measure leaves as it was.
"""

from __future__ import annotations

from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual._types import SegmentLines
from textual.widgets import DataTable
from textual.widgets.data_table import CellKey

#: The justifications that leave a line that fits its width as it is ("left" pads it with the
#: text's own style, as DataTable draws it).
LEFT = (None, "default")
#: DataTable's private state that :meth:`TextTable._render_cell` reads.
PRIVATE = ("_row_locations", "_column_locations", "_show_hover_cursor", "_update_count",
           "_pseudo_class_state", "_cell_render_cache", "_data", "_get_styles_to_render_cell")


class TextTable(DataTable[object]):
    """A DataTable (same API, same look) whose one-line text cells cost a tenth to draw."""

    _reads_datatable: ClassVar[bool | None] = None
    """Whether this Textual's DataTable has the private state read here; found on first draw.
    Without it (a release renamed some), DataTable draws every cell
    (tests/test_console_keys.py compares the two)."""

    def _update_column_widths(self, updated_cells: set[CellKey]) -> None:
        """DataTable's measure of updated cells, then a new update count when a column's width
        changed: lines drawn between the update and this measure (the screen's refresh tick
        came first, on a loaded machine) kept the old widths until the table next changed, the
        marks of a bulk action cut (tests/test_console_keys.py)."""
        before = [column.content_width for column in self.columns.values()]
        super()._update_column_widths(updated_cells)
        if [column.content_width for column in self.columns.values()] != before:
            self._update_count += 1
            self.refresh()

    def _render_cell(self, row_index: int, column_index: int, base_style: Style, width: int,
                     cursor: bool = False, hover: bool = False) -> SegmentLines:
        if TextTable._reads_datatable is None:
            TextTable._reads_datatable = all(hasattr(self, name) for name in PRIVATE)
        if not TextTable._reads_datatable:
            return super()._render_cell(row_index, column_index, base_style, width, cursor,
                                        hover)
        return self._render_text_cell(row_index, column_index, base_style, width, cursor, hover)

    def _render_text_cell(self, row_index: int, column_index: int, base_style: Style,
                          width: int, cursor: bool, hover: bool) -> SegmentLines:
        if row_index < self.fixed_rows or column_index < self.fixed_columns:  # header, labels
            return super()._render_cell(row_index, column_index, base_style, width, cursor,
                                        hover)
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        if row_key is None or column_key is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor,
                                        hover)
        # DataTable's own cache key: what is drawn here is what it would draw.
        cache_key = (row_key, column_key, base_style, cursor, hover, self._show_hover_cursor,
                     self._update_count, self._pseudo_class_state)
        lines = self._cell_render_cache.get(cache_key)
        if lines is not None:
            return lines
        cell = self._data[row_key].get(column_key)
        inner = width - 2 * self.cell_padding
        if (self.rows[row_key].height != 1 or not isinstance(cell, Text)
                or cell.justify not in LEFT or cell.end != "\n" or cell.cell_len > inner
                or "\n" in cell.plain or "\t" in cell.plain):
            return super()._render_cell(row_index, column_index, base_style, width, cursor,
                                        hover)
        component_style, post_style = self._get_styles_to_render_cell(
            False, False, False, hover, cursor, self.show_cursor, self._show_hover_cursor,
            self.cursor_foreground_priority == "css", self.cursor_background_priority == "css")
        pre_style = (base_style + Style.from_meta({"row": row_index, "column": column_index})
                     + component_style)
        console = self.app.console
        blank = console.get_style("none")
        pad = [Segment(" " * self.cell_padding, blank)] if self.cell_padding else []
        text = cell.render(console, end="")
        style = console.get_style(cell.style, default=Style.null()) if cell.style else None
        line = [*pad, *(Segment.apply_style(text, style) if style else text)]
        if cell.cell_len < inner:
            line.append(Segment(" " * (inner - cell.cell_len), blank))
        line += pad
        lines = [list(Segment.apply_style(line, pre_style, post_style))]
        self._cell_render_cache[cache_key] = lines
        return lines
