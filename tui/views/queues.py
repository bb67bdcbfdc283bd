"""Queues: every queue the broker can list, with depth, ETA tasks held in the broker's delayed
store, consumers and who consumes it."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Static

from . import format
from .base import TableView

COLUMNS = ("Queue", "Depth", "Scheduled", "Consumers", "Change/s", "Workers")


class QueuesScreen(TableView):
    TABLE, COLUMNS, NOUN = "queues", COLUMNS, "queue"
    BINDINGS = [
        Binding("P", "purge", "Purge"),
        Binding("a", "add_consumer", "Add consumer"),
        Binding("x", "cancel_consumer", "Cancel consumer"),
    ]

    def refresh_view(self) -> None:
        model = self.console.model
        table = self.table
        current = self.cursor_key()
        table.clear()
        for queue in sorted(model.queues.values(), key=lambda q: q.name):
            workers = queue.workers or tuple(model.workers_consuming(queue.name))
            table.add_row(*format.cells(
                queue.name, "?" if queue.depth is None else str(queue.depth),
                "" if queue.scheduled is None else str(queue.scheduled),
                "" if queue.consumers is None else str(queue.consumers),
                "" if queue.rate is None else f"{queue.rate:+.1f}", ", ".join(workers)),
                key=queue.name)
        if current in model.queues:
            table.move_cursor(row=table.get_row_index(current))
        total = sum(q.depth or 0 for q in model.queues.values())
        self.query_one("#summary", Static).update(
            f"[b]{len(model.queues)}[/b] queue(s), [b]{total}[/b] message(s) waiting")

    def action_purge(self) -> None:
        if queue := self.selected():
            row = self.console.model.queues.get(queue)  # it may have just left the broker
            depth = row.depth if row is not None else None
            held = f", and its {row.scheduled} scheduled (ETA) task(s)," \
                if row is not None and row.scheduled else ""
            self.confirm(f"Purge {queue}? {depth if depth is not None else 'All'} waiting "
                         f"message(s){held} will be deleted.",
                         lambda: self.perform(lambda: self.console.actions.purge(queue)))

    def action_add_consumer(self) -> None:
        if queue := self.selected():
            self._for_workers(f"Which worker should consume {queue}?",
                              lambda dest: self.console.actions.add_consumer(
                                  queue, dest, self.console.model.alive_workers()))

    def action_cancel_consumer(self) -> None:
        if queue := self.selected():
            self._for_workers(f"Which worker should stop consuming {queue}?",
                              lambda dest: self.console.actions.cancel_consumer(
                                  queue, dest, self.console.model.alive_workers()))

    def _for_workers(self, question: str, call) -> None:  # type: ignore[no-untyped-def]
        choices = ["all workers", *sorted(self.console.model.workers)]
        self.choose(question, choices, lambda scope: self.perform(
            lambda: call(None if scope == "all workers" else [scope])))
