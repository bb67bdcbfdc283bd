"""Rows printed for a terminal of any width (``qtui scheduled``, ``qtui inspect active``...): a
table when every cell fits whole, else a record per row, never a column one character wide."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from qtui.core.scheduled import BROKER, ScheduledTask
from qtui.tui.scheduled_commands import scheduled_table

NOW = 1_790_000_000.0
TASKS = [ScheduledTask("5b1e0c2a-0000-4000-8000-000000000001", "reports.monthly", NOW + 3725,
                       "reports", '["2026-11", "all regions"]', '{"format": "pdf"}', BROKER)]


def printed(renderable: object, width: int) -> list[str]:
    console = Console(width=width, record=True, force_terminal=False)
    console.print(renderable)
    return console.export_text().splitlines()


def test_a_wide_terminal_gets_a_table_with_every_cell_whole() -> None:
    shown = scheduled_table(TASKS, NOW, 200)
    assert isinstance(shown, Table)
    text = "\n".join(printed(shown, 200))
    for cell in (TASKS[0].id, "reports.monthly", "1h02m", '["2026-11", "all regions"]'):
        assert cell in text


def test_80_columns_get_a_record_per_task() -> None:
    lines = printed(scheduled_table(TASKS, NOW, 80), 80)
    assert f"     id: {TASKS[0].id}" in lines
    assert '   args: ["2026-11", "all regions"] {"format": "pdf"}' in lines
    assert "held by: broker" in lines and " due in: 1h02m" in lines
    assert all(len(line) <= 80 for line in lines)
