"""Workers: who is online, how busy, what they consume; and the actions on a worker."""

from __future__ import annotations

from typing import Any

from textual import work
from textual.binding import Binding
from textual.widgets import DataTable, Static

from qtui.core.exceptions import BrokerUnavailable

from ..actions import registered_rate_limits
from . import format
from .base import TableView

COLUMNS = ("Worker", "Status", "Heartbeat", "Pool", "Conc", "Active", "Processed", "Load",
           "Queues")


class WorkersScreen(TableView):
    TABLE, COLUMNS, NOUN = "workers", COLUMNS, "worker"
    # Rebuilt whole on each redraw: up to console_max_workers rows (1,000 take ~0.2 s here), so
    # under a flood of made-up workers it redraws at most once a second and keys stay free.
    min_interval = 1.0
    BINDINGS = [
        Binding("enter", "drill", "Details", show=True),
        Binding("plus,equals_sign", "grow", "Pool +1"),
        Binding("minus", "shrink", "Pool -1"),
        Binding("a", "add_consumer", "Add consumer"),
        Binding("x", "cancel_consumer", "Cancel consumer"),
        Binding("r", "rate_limit", "Rate limit"),
        Binding("t", "time_limit", "Time limit"),
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

    def online(self) -> str | None:
        """The selected worker, if it is online. An offline one is refused at once: it would
        only show "no reply" after the timeout."""
        worker = self.selected()
        row = self.console.model.workers.get(worker) if worker else None
        if row is not None and not row.alive:
            self.notify(f"{worker} is offline (last heartbeat {format.age(row.heartbeat_age)}), "
                        "so it cannot act on anything. Delete forgets it.", severity="error")
            return None
        return worker

    def action_grow(self) -> None:
        if worker := self.online():
            self.perform(lambda: self.console.actions.pool_grow(worker))

    def action_shrink(self) -> None:
        if worker := self.online():
            self.perform(lambda: self.console.actions.pool_shrink(worker))

    def action_add_consumer(self) -> None:
        if worker := self.online():
            self.ask(f"Queue for {worker} to consume", lambda queue: self.perform(
                lambda: self.console.actions.add_consumer(queue, [worker])), "queue name")

    def action_cancel_consumer(self) -> None:
        """Pick one of the queues the worker consumes (as its last poll said)."""
        if worker := self.online():
            queues = list(self.console.model.workers[worker].queues)
            if not queues:
                self.notify(f"{worker} has not said which queues it consumes yet",
                            severity="warning")
                return
            self.choose(f"Which queue should {worker} stop consuming?", queues,
                        lambda queue: self.stop_consuming(queue, [worker]))

    def action_rate_limit(self) -> None:
        """Pick one of the worker's task types, each with its current limit: asked of the worker
        in a thread (the task types seen in events when it does not answer)."""
        if worker := self.online():
            self._load_task_types(worker)

    @work(thread=True, group="actions", exit_on_error=False)
    def _load_task_types(self, worker: str) -> None:
        try:
            reply: Any = self.console.inspect(worker, "registered", "rate_limit")
        except BrokerUnavailable:
            reply = None
        self.app.call_from_thread(self._choose_task_type, worker, registered_rate_limits(reply),
                                  reply is not None)

    def _choose_task_type(self, worker: str, limits: dict[str, str | None],
                          answered: bool) -> None:
        if not answered:
            seen = sorted({t.name for t in self.console.model.tasks.values() if t.name})
            limits = dict.fromkeys(seen)
        if not limits:
            self.notify(f"No task types known for {worker}", severity="warning")
            return
        labels = {f"{name}  (now {rate or 'no limit'})" if answered else
                  f"{name}  (seen in events; limit unknown)": name
                  for name, rate in sorted(limits.items())}

        def chosen(label: str) -> None:
            name = labels[label]
            self.ask(f"Rate limit for {name} on {worker} (e.g. 10/s, 5/m, 0 = none)",
                     lambda rate: self.perform(
                         lambda: self.console.actions.rate_limit(name, rate, [worker])),
                     "10/m", limits[name] or "")
        self.choose(f"Rate-limit which task type on {worker}?", list(labels), chosen)

    def action_time_limit(self) -> None:
        if worker := self.online():
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
        if worker := self.online():
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
