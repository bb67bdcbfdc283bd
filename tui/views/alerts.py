"""Alerts: every rule of the ``alerts`` setting with its state, value, threshold and since when
(the header shows the firing ones from any view)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from qtui.core.alerts import FIRING, PENDING, UNKNOWN, RuleStatus, format_value
from qtui.core.display import safe_text

from . import format
from .base import TableView

COLUMNS = ("Rule", "State", "Value", "Over", "Since", "About")


class AlertsScreen(TableView):
    TABLE, COLUMNS, NOUN = "alerts", COLUMNS, "rule"

    def compose(self) -> ComposeResult:
        widgets = list(super().compose())
        # Below the table: the rule under the cursor in full (the About column is cut at 80).
        yield from widgets[:-1]
        yield Static("", id="alert-detail")
        yield widgets[-1]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_detail()

    def show_detail(self) -> None:
        key = self.cursor_key()
        found = [s for s in self.console.model.alerts if s.rule.name == key]
        self.query_one("#alert-detail", Static).update(describe(found[0]) if found else "")

    def refresh_view(self) -> None:
        statuses = self.console.model.alerts
        table = self.table
        current = self.cursor_key()
        table.clear()
        for status in statuses:
            rule = status.rule
            over = format_value(rule.kind, rule.over, short=True) + (
                f" for {rule.hold:g}s" if rule.hold else "")
            # The kind (so the unit) and the detail share a column: 80 columns hold no more.
            about = " ".join(filter(None, (rule.kind, status.detail)))
            table.add_row(*format.cells(
                rule.name, format.alert_state(status.state),
                format_value(rule.kind, status.value, short=True), over,
                format.clock(status.since), about), key=rule.name)
        if current is not None and any(s.rule.name == current for s in statuses):
            table.move_cursor(row=table.get_row_index(current))
        self.show_detail()
        self.query_one("#summary", Static).update(
            summary(statuses, len(self.console.alert_rules)))


def describe(status: RuleStatus) -> Text:
    """``backlog (queue_depth queue=celery): 1500 messages, over 1000 messages for 60 s;
    firing since 10:51:50 (2m ago). celery``"""
    rule = status.rule
    hold = f" for {rule.hold:g} s" if rule.hold else ""
    head = " ".join(filter(None, (rule.kind, rule.selection())))
    return Text.assemble(
        (rule.name, "bold"), f" ({head}): {format_value(rule.kind, status.value)}, over "
        f"{format_value(rule.kind, rule.over)}{hold}; ", format.alert_state(status.state),
        f" since {format.clock(status.since)} ({format.age(format.since(status.since))}). ",
        safe_text(status.detail))


def summary(statuses: Sequence[RuleStatus], rules: int) -> Text:
    if not rules:
        return Text("No alert rules: add [[alerts]] tables to the config (config.example.toml)")
    counts = [(sum(s.state == state for s in statuses), state)
              for state in (FIRING, PENDING, UNKNOWN)]
    said = ", ".join(f"{n} {state}" for n, state in counts if n) or "all ok"
    return Text.assemble((f"{rules}", "bold"), f" rule(s): {said}")
