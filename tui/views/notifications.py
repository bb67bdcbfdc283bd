"""The notification log: every notification the console showed, newest first, so one that
vanished (they are short-lived) can still be read."""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.widgets import Static

from . import format
from .base import TableView

SEVERITY_STYLES = {"information": "green", "warning": "yellow", "error": "bold red"}


class NotificationsScreen(TableView):
    TABLE, COLUMNS, NOUN = "notifications", ("Time", "Level", "Title", "Message"), "notification"
    BINDINGS = [Binding("escape", "app.back", "Back")]

    def refresh_view(self) -> None:
        log = self.console.notification_log
        table = self.table
        table.clear()
        for n, note in enumerate(reversed(log)):
            table.add_row(*format.cells(
                format.clock(note.time), Text(note.severity, SEVERITY_STYLES[note.severity]),
                note.title, note.message.replace("\n", " ")), key=str(n))
        self.query_one("#summary", Static).update(
            f"{len(log)} notification(s), newest first (the last {log.maxlen} are kept)")
