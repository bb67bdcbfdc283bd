"""The audit trail (``:audit``): the newest actions taken on this cluster, from this console,
other consoles and scripted commands; the entry under the cursor in full below the table."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from qtui.core.config import mask_url
from qtui.core.display import safe_text

from ..audit import AuditEntry, AuditError
from . import format
from .base import TableView
from .keybar import KeyBar

#: Entries the view reads (`qtui audit --limit N` reads more).
SHOWN = 200
#: Characters of an entry's first target in the table (8 of a task id, as the tasks view).
TARGET_SHOWN = 12


class AuditScreen(TableView):
    TABLE, COLUMNS, NOUN = "audit", ("Time", "Who", "Action", "Result", "Targets"), "entry"
    BINDINGS = [Binding("escape", "app.back", "Back"), Binding("r", "reload", "Reload")]

    entries: list[AuditEntry] = []

    def compose(self) -> ComposeResult:
        for widget in super().compose():  # the entry in full between the table and the keys
            if isinstance(widget, KeyBar):
                yield Static("", id="entry")
            yield widget

    def on_mount(self) -> None:
        super().on_mount()
        self.action_reload()

    @work(thread=True, group="audit", exclusive=True, exit_on_error=False)
    def action_reload(self) -> None:
        """Read the newest entries (a file read: not on the UI thread)."""
        log = self.console.audit
        if log is None:
            self.app.call_from_thread(self._show, None, "The audit trail is off here "
                                      "(audit = false, or --no-history).")
            return
        try:
            found = log.entries(SHOWN, cluster=mask_url(self.console.cluster.broker_url))
        except AuditError as exc:
            self.app.call_from_thread(self._show, None, str(exc))
            return
        self.app.call_from_thread(self._show, found, "")

    def _show(self, found: list[AuditEntry] | None, problem: str) -> None:
        self.entries = found or []
        table = self.table
        table.clear()
        for n, item in enumerate(self.entries):
            # The first target cut as the tasks view cuts ids: the full list is below the table.
            first = item.targets[0] if item.targets else ""
            more = f" +{len(item.targets) - 1}" if len(item.targets) > 1 else ""
            table.add_row(*format.cells(
                format.clock(item.time), item.who, f"{item.action} ({item.source})",
                Text("ok", "green") if item.ok else Text("failed", "bold red"),
                (first if len(first) <= TARGET_SHOWN else first[:TARGET_SHOWN] + "…") + more),
                key=str(n))
        summary = problem or (f"{len(self.entries)} action(s) on this cluster, newest first "
                              "(qtui audit shows more)")
        self.query_one("#summary", Static).update(safe_text(summary))
        self._show_entry()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_entry()

    def _show_entry(self) -> None:
        """The entry under the cursor: its targets and every reply, as data (they come from
        the workers: control characters shown, never markup)."""
        key = self.cursor_key()
        if key is None or int(key) >= len(self.entries):
            self.query_one("#entry", Static).update("")
            return
        item = self.entries[int(key)]
        text = Text.assemble(("targets ", "bold"), safe_text(" ".join(item.targets[:20])))
        if len(item.targets) > 20:
            text.append(f" (+{len(item.targets) - 20} more)")
        for worker, reply in item.replies:
            text.append("\n")
            text.append_text(safe_text(worker, "bold"))
            text.append(": ")
            text.append_text(safe_text(reply))
        self.query_one("#entry", Static).update(text)
