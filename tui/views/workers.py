"""Workers: who is online, how busy, what they consume; and the actions on a worker."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import DataTable, Static

from . import format
from .base import TableView

POOL_KEYS = Binding.Group("pool", compact=True)
CONSUMER_KEYS = Binding.Group("consumer", compact=True)
LIMIT_KEYS = Binding.Group("limits", compact=True)
COLUMNS = ("Worker", "Status", "Heartbeat", "Pool", "Conc", "Active", "Processed", "Load",
           "Queues")


class WorkersScreen(TableView):
    TABLE, COLUMNS, NOUN = "workers", COLUMNS, "worker"
    # Rebuilt whole on each redraw: up to console_max_workers rows (1,000 take ~0.2 s here), so
    # under a flood of made-up workers it redraws at most once a second and keys stay free.
    min_interval = 1.0
    BINDINGS = [
        Binding("enter", "drill", "Details", show=True),
        # Pairs share one footer entry ("+_ pool"), so the footer fits 80 columns.
        Binding("plus,equals_sign", "grow", "Pool +1", group=POOL_KEYS),
        Binding("underscore", "shrink", "Pool -1", group=POOL_KEYS),
        Binding("a", "add_consumer", "Add consumer", group=CONSUMER_KEYS),
        Binding("x", "cancel_consumer", "Cancel consumer", group=CONSUMER_KEYS),
        Binding("r", "rate_limit", "Rate limit", group=LIMIT_KEYS),
        Binding("t", "time_limit", "Time limit", group=LIMIT_KEYS),
        Binding("D", "shutdown", "Shut down"),
        Binding("delete,backspace", "forget", "Forget offline"),
    ]

    def refresh_view(self) -> None:
        model = self.console.model
        table = self.table
        current = self.cursor_key()
        table.clear()
        for worker in sorted(model.workers.values(), key=lambda w: (not w.alive, w.hostname)):
            table.add_row(*format.cells(
                worker.hostname, format.alive(worker.alive), format.age(worker.heartbeat_age),
                worker.pool, "" if worker.concurrency is None else str(worker.concurrency),
                str(worker.active), str(worker.processed), format.load(worker.loadavg),
                ", ".join(worker.queues)), key=worker.hostname)
        if current in model.workers:
            table.move_cursor(row=table.get_row_index(current))
        online = sum(w.alive for w in model.workers.values())
        self.query_one("#summary", Static).update(
            f"[b]{online}[/b] online, [b]{len(model.workers) - online}[/b] offline")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_drill()

    def action_drill(self) -> None:
        from .details import WorkerDetailScreen
        worker = self.selected()
        if worker:
            self.app.push_screen(WorkerDetailScreen(worker))

    def action_grow(self) -> None:
        if worker := self.selected():
            self.perform(lambda: self.console.actions.pool_grow(worker))

    def action_shrink(self) -> None:
        if worker := self.selected():
            self.perform(lambda: self.console.actions.pool_shrink(worker))

    def action_add_consumer(self) -> None:
        if worker := self.selected():
            self.ask(f"Queue for {worker} to consume", lambda queue: self.perform(
                lambda: self.console.actions.add_consumer(queue, [worker])), "queue name")

    def action_cancel_consumer(self) -> None:
        if worker := self.selected():
            self.ask(f"Queue for {worker} to stop consuming", lambda queue: self.perform(
                lambda: self.console.actions.cancel_consumer(queue, [worker])), "queue name")

    def action_rate_limit(self) -> None:
        if worker := self.selected():
            self.ask(f"Rate limit on {worker}: TASK RATE (e.g. tasks.add 10/m)",
                     lambda text: self._rate_limit(worker, text), "tasks.add 10/m")

    def _rate_limit(self, worker: str, text: str) -> None:
        name, _, rate = text.partition(" ")
        if not rate.strip():
            self.notify("Give a task name and a rate, e.g. tasks.add 10/m", severity="error")
            return
        self.perform(lambda: self.console.actions.rate_limit(name, rate.strip(), [worker]))

    def action_time_limit(self) -> None:
        if worker := self.selected():
            self.ask(f"Time limits on {worker}: TASK SOFT HARD (seconds)",
                     lambda text: self._time_limit(worker, text), "tasks.add 10 20")

    def _time_limit(self, worker: str, text: str) -> None:
        parts = text.split()
        try:
            name, soft, hard = parts[0], float(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            self.notify("Give a task name, a soft and a hard limit: tasks.add 10 20",
                        severity="error")
            return
        self.perform(lambda: self.console.actions.time_limit(name, soft, hard, [worker]))

    def action_shutdown(self) -> None:
        if worker := self.selected():
            self.confirm(f"Shut down {worker}? Its running tasks finish first.",
                         lambda: self.perform(lambda: self.console.actions.shutdown(worker)))

    def action_forget(self) -> None:
        """Remove an offline worker from the list (it comes back if it sends a heartbeat)."""
        if worker := self.selected():
            row = self.console.model.workers.get(worker)
            if row is not None and row.alive:
                self.notify(f"{worker} is online; only offline workers can be forgotten",
                            severity="warning")
                return
            self.console.feed.forget_worker(worker)
            self.console.model.workers.pop(worker, None)
            self.refresh_view()
