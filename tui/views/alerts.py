"""Alerts: every rule of the ``alerts`` setting with its state, value, threshold and since when
(the header shows the firing ones from any view)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Static

from qtui.core.alerts import FIRING, PENDING, UNKNOWN, RuleStatus, format_value

from . import format
from .base import TableView

COLUMNS = ("Rule", "State", "Value", "Over", "Since", "About")


class AlertsScreen(TableView):
    TABLE, COLUMNS, NOUN = "alerts", COLUMNS, "rule"

    def refresh_view(self) -> None:
        statuses = self.console.model.alerts
        table = self.table
        current = self.cursor_key()
        table.clear()
        for status in statuses:
            rule = status.rule
            over = format_value(rule.kind, rule.over) + (f" for {rule.hold:g}s"
                                                         if rule.hold else "")
            about = " ".join(filter(None, (rule.kind, rule.selection(), status.detail)))
            table.add_row(*format.cells(
                rule.name, format.alert_state(status.state),
                format_value(rule.kind, status.value), over,
                f"{format.clock(status.since)} ({format.age(format.since(status.since))})",
                about), key=rule.name)
        if current is not None and any(s.rule.name == current for s in statuses):
            table.move_cursor(row=table.get_row_index(current))
        self.query_one("#summary", Static).update(
            summary(statuses, len(self.console.alert_rules)))


def summary(statuses: Sequence[RuleStatus], rules: int) -> Text:
    if not rules:
        return Text("No alert rules: add [[alerts]] tables to the config (config.example.toml)")
    counts = [(sum(s.state == state for s in statuses), state)
              for state in (FIRING, PENDING, UNKNOWN)]
    said = ", ".join(f"{n} {state}" for n, state in counts if n) or "all ok"
    return Text.assemble((f"{rules}", "bold"), f" rule(s): {said}")
