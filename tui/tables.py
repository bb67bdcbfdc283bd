"""Rows for a terminal of any width: a table when every column fits whole, else a record per
row (``field: value`` lines), so a piped 80-column output never squeezes a column to one
character."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from qtui.core.display import safe_text

#: Columns a table spends on each column's borders and padding.
_PER_COLUMN = 3


def fits(columns: Sequence[str], rows: Sequence[Sequence[str]], width: int) -> bool:
    """Whether a table of these rows shows every cell whole in ``width`` columns."""
    needed = sum(max(len(name), *(len(row[i]) for row in rows)) + _PER_COLUMN
                 for i, name in enumerate(columns))
    return needed + 1 <= width


def table_or_records(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]],
                     width: int) -> Table | Text:
    """A table of ``rows`` when it fits ``width``, else :func:`records`. Cells are untrusted
    text (shown through :func:`safe_text`)."""
    if rows and not fits(columns, rows, width):
        return records(title, columns, rows)
    table = Table(title=title, title_justify="left")
    for name in columns:
        table.add_column(name, no_wrap=True)
    for row in rows:
        table.add_row(*map(safe_text, row))
    return table


def records(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Text:
    """Each row as ``field: value`` lines, a blank line between rows: readable at any width
    (a long value wraps under its own line)."""
    text = Text(f"{title}\n", style="bold")
    label = max(map(len, columns))
    for row in rows:
        text.append("\n")
        for name, value in zip(columns, row, strict=True):
            text.append(f"{name:>{label}}: ", style="bold")
            text.append_text(safe_text(value))
            text.append("\n")
    return text
