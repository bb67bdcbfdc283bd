"""Workers: who is online, how busy, what they consume; and the actions on a worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual import work
from textual.binding import Binding
from textual.widgets import DataTable, Static

from qtui.core.exceptions import BrokerUnavailable

from .. import equivalents
from ..actions import registered_tasks
from . import format
from .base import TableView

#: The last choice of the add-consumer picker: a queue the broker does not list yet.
ANOTHER_QUEUE = "another queue (type its name)…"
#: The ``registered`` attributes that show each kind of limit a task type has now.
LIMIT_ITEMS = {"rate_limit": ("rate_limit",), "time_limit": ("soft_time_limit", "time_limit")}

POOL_KEYS = Binding.Group("pool", compact=True)
CONSUMER_KEYS = Binding.Group("consumer", compact=True)
LIMIT_KEYS = Binding.Group("limits", compact=True)
COLUMNS = ("Worker", "Status", "Heartbeat", "Pool", "Conc", "Active", "Processed", "Load",
           "Queues")


class WorkersScreen(TableView):
    TABLE, COLUMNS, NOUN = "workers", COLUMNS, "worker"
    # A long hostname must not push Status off the screen (at 80 columns the table scrolls
    # sideways from Load on); the line below the table shows it whole.
    SHORTENED = {"Worker": 16, "Queues": 6}
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
        self.fill((worker.hostname, format.cells(
            worker.hostname, format.alive(worker.alive), format.age(worker.heartbeat_age),
            worker.pool, "" if worker.concurrency is None else str(worker.concurrency),
            str(worker.active), str(worker.processed), format.load(worker.loadavg),
            ", ".join(worker.queues)))
            for worker in sorted(model.workers.values(), key=lambda w: (not w.alive, w.hostname)))
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

    def pid_of(self, worker: str) -> int | None:
        row = self.console.model.workers.get(worker)
        return row.pid if row is not None else None

    def if_same_process(self, worker: str, pid: int | None, then: Callable[[], object]) -> None:
        """``then``, if ``worker`` is still the process the operator chose (``pid`` when the
        key was pressed): remote control addresses a hostname, so an action confirmed after a
        restart under the same name would reach the new process. Says so when it is not."""
        now = self.pid_of(worker)
        if pid is None or now == pid:
            then()
            return
        self.notify(f"{worker} restarted since you chose it (pid {pid}, now "
                    f"{now if now is not None else 'unknown'}): nothing was sent. Choose again.",
                    severity="error")

    def action_grow(self) -> None:
        if worker := self.online():
            self.perform(lambda: self.console.actions.pool_grow(worker))

    def action_shrink(self) -> None:
        if worker := self.online():
            self.perform(lambda: self.console.actions.pool_shrink(worker))

    def action_add_consumer(self) -> None:
        """Pick one of the queues the broker lists that the worker does not consume yet, or
        type the name of another."""
        if worker := self.online():
            pid = self.pid_of(worker)

            def add(queue: str) -> None:
                self.if_same_process(worker, pid, lambda: self.perform(
                    lambda: self.console.actions.add_consumer(queue, [worker])))

            def ask() -> None:
                self.ask(f"Queue for {worker} to consume", add, "queue name")
            consumed = set(self.console.model.workers[worker].queues)
            queues = sorted(set(self.console.model.queues) - consumed)
            if not queues:
                ask()
                return
            self.choose(f"Which queue should {worker} consume?", [*queues, ANOTHER_QUEUE],
                        lambda queue: ask() if queue == ANOTHER_QUEUE else add(queue))

    def action_cancel_consumer(self) -> None:
        """Pick one of the queues the worker consumes (as its last poll said)."""
        if worker := self.online():
            queues = list(self.console.model.workers[worker].queues)
            if not queues:
                self.notify(f"{worker} has not said which queues it consumes yet",
                            severity="warning")
                return
            pid = self.pid_of(worker)
            self.choose(f"Which queue should {worker} stop consuming?", queues,
                        lambda queue: self.if_same_process(
                            worker, pid, lambda: self.stop_consuming(queue, [worker])))

    def action_rate_limit(self) -> None:
        if worker := self.online():
            self._pick_task_type(worker, "rate_limit")

    def action_time_limit(self) -> None:
        if worker := self.online():
            self._pick_task_type(worker, "time_limit")

    @work(thread=True, group="actions", exit_on_error=False)
    def _pick_task_type(self, worker: str, limit: str) -> None:
        """Ask the worker for its task types with their current limits (in a thread), then let
        the operator pick one; the task types seen in events when it does not answer."""
        items = LIMIT_ITEMS[limit]
        pid = self.app.call_from_thread(self.pid_of, worker)
        try:
            reply: Any = self.console.inspect(worker, "registered", *items)
        except BrokerUnavailable:
            reply = None
        known = registered_tasks(reply) if reply is not None else None
        self.app.call_from_thread(self._choose_task_type, worker, pid, limit, known)

    def _choose_task_type(self, worker: str, pid: int | None, limit: str,
                          known: dict[str, dict[str, str]] | None) -> None:
        if known is None:
            seen = {t.name for t in self.console.model.tasks.values() if t.name}
            labels = {f"{name}  (seen in events; limit unknown)": name for name in sorted(seen)}
        else:
            labels = {f"{name}  (now {_limits(limit, known[name])})": name
                      for name in sorted(known)}
        if not labels:
            self.notify(f"No task types known for {worker}", severity="warning")
            return
        current = known or {}

        def chosen(label: str) -> None:
            name = labels[label]
            attributes = current.get(name, {})
            if limit == "rate_limit":
                self.ask(f"Rate limit for {name} on {worker} (e.g. 10/s, 5/m, 0 = none)",
                         lambda rate: self.if_same_process(worker, pid, lambda: self.perform(
                             lambda: self.console.actions.rate_limit(name, rate, [worker]))),
                         "10/m", attributes.get("rate_limit", ""))
            else:
                now = f"{attributes.get('soft_time_limit', '')} {attributes.get('time_limit', '')}"
                self.ask(f"Time limits for {name} on {worker}: SOFT HARD (seconds)",
                         lambda text: self.if_same_process(
                             worker, pid, lambda: self._time_limit(worker, name, text)),
                         "10 20", now.strip())
        verb = "Rate-limit" if limit == "rate_limit" else "Set the time limits of"
        self.choose(f"{verb} which task type on {worker}?", list(labels), chosen)

    def _time_limit(self, worker: str, name: str, text: str) -> None:
        try:
            soft, hard = (float(part) for part in text.split())
        except ValueError:
            self.notify("Give a soft and a hard limit in seconds: 10 20", severity="error")
            return
        self.perform(lambda: self.console.actions.time_limit(name, soft, hard, [worker]))

    def action_shutdown(self) -> None:
        if worker := self.online():
            pid = self.pid_of(worker)
            self.confirm(f"Shut down {worker}? Its running tasks finish first.",
                         lambda: self.if_same_process(worker, pid, lambda: self.perform(
                             lambda: self.console.actions.shutdown(worker))),
                         equivalents.shutdown(worker))

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


def _limits(limit: str, attributes: dict[str, str]) -> str:
    """A task type's current limit of one kind, in words."""
    if limit == "rate_limit":
        return attributes.get("rate_limit") or "no limit"
    soft, hard = attributes.get("soft_time_limit"), attributes.get("time_limit")
    if soft is None and hard is None:
        return "no limit"
    return f"soft {soft or '-'}, hard {hard or '-'}"
