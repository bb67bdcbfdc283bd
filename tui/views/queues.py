"""Queues: every queue the broker can list, with depth, how long its oldest message has waited
(``~``: inferred from a ``task-sent`` event, ``?``: unknown), ETA tasks held in the broker's
delayed store, the depth of its dead-letter queue, consumers, tasks in and out per second (from
the event stream, marked the same way) and who consumes it.

The change of depth per second is not a column here: In/s and Out/s say why a queue grows or
drains, the Overview shows the trend, and at 80 columns there is room for only one of them."""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable, Static

from qtui.core.display import printable

from .. import equivalents
from . import format
from .base import TableView

COLUMNS = ("Queue", "Depth", "Oldest", "Sched", "Dead", "Cons", "In/s", "Out/s",
           "Paused", "Workers")


class QueuesScreen(TableView):
    TABLE, COLUMNS, NOUN = "queues", COLUMNS, "queue"
    # A long name must not push Paused off an 80-column terminal: the line below the table
    # shows the name under the cursor whole.
    SHORTENED = {"Queue": 8, "Workers": 7}
    BINDINGS = [
        Binding("P", "purge", "Purge"),
        Binding("a", "add_consumer", "Add consumer"),
        Binding("x", "cancel_consumer", "Cancel consumer"),
        Binding("p", "pause_queue", "Pause/resume"),
    ]

    def refresh_view(self) -> None:
        model = self.console.model
        self.fill((queue.name, format.cells(
            queue.name, "?" if queue.depth is None else str(queue.depth),
            "" if queue.depth == 0 else format.waited(queue.age),
            "" if queue.scheduled is None else str(queue.scheduled),
            "" if queue.dead is None else str(queue.dead), format.consumers(queue.consumers),
            format.per_second(queue.inflow), format.per_second(queue.outflow),
            Text("paused", style="bold yellow") if queue.paused else "",
            ", ".join(queue.workers or model.workers_consuming(queue.name))))
            for queue in sorted(model.queues.values(), key=lambda q: q.name))
        total = sum(q.depth or 0 for q in model.queues.values())
        summary = Text.from_markup(
            f"[b]{len(model.queues)}[/b] queue(s), [b]{total}[/b] message(s) waiting")
        if model.queue_notice:  # broker text: data, never markup
            summary.append(f"  ⚠ {printable(model.queue_notice)}", style="bold yellow")
        self.query_one("#summary", Static).update(summary)

    def action_purge(self) -> None:
        if queue := self.selected():
            row = self.console.model.queues.get(queue)  # it may have just left the broker
            depth = row.depth if row is not None else None
            held = f", and its {row.scheduled} scheduled (ETA) task(s)," \
                if row is not None and row.scheduled else ""
            # The depth is from the last poll: more may have arrived since. The outcome says
            # how many were really removed.
            count = f"About {depth}" if depth is not None else "All"
            self.confirm(f"Purge {queue}? {count} waiting message(s){held} will be deleted (the "
                         "number removed is reported after).",
                         lambda: self.perform(lambda: self.console.actions.purge(queue)),
                         equivalents.purge(queue))

    def action_add_consumer(self) -> None:
        if queue := self.selected():
            alive = self.console.model.alive_workers()
            self.choose(f"Which worker should consume {queue}?", ["all workers", *alive],
                        lambda scope: self.perform(lambda: self.console.actions.add_consumer(
                            queue, None if scope == "all workers" else [scope], alive)))

    def action_cancel_consumer(self) -> None:
        if queue := self.selected():
            self.choose(f"Which worker should stop consuming {queue}?",
                        ["all workers", *self.consumers_of(queue)],
                        lambda scope: self.stop_consuming(
                            queue, None if scope == "all workers" else [scope]))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a queue: peek at its waiting messages."""
        from .peek import PeekScreen
        if event.row_key.value is not None:
            self.app.push_screen(PeekScreen(str(event.row_key.value)))

    def action_pause_queue(self) -> None:
        """Pause the queue across the cluster, or resume it when paused."""
        if queue := self.selected():
            row = self.console.model.queues.get(queue)
            if row is not None and row.paused is not None:
                self.confirm(f"Resume {queue}? It goes back to the workers that consumed it "
                             f"({', '.join(row.paused.consumers) or 'none noted'}).",
                             lambda: self.perform(lambda: self.console.actions.resume(queue)),
                             equivalents.resume(queue))
                return
            self.confirm(f"Pause {queue} across the cluster? Every worker stops consuming it, "
                         "and workers that start later leave it out, until it is resumed.",
                         lambda: self.perform(lambda: self.console.actions.pause(queue)),
                         equivalents.pause(queue))
