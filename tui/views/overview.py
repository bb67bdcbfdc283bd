"""Overview, the incident screen: is the cluster connected, who is online, what flows, what
piles up with nobody to consume it, and what failed last."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Header, Label, Static

from qtui.core.display import printable, safe_text

from ..rows import QueueRow
from . import format
from .base import ClusterView
from .keybar import KeyBar
from .rates import RateChart
from .text_table import TextTable

#: Recent failures listed (the table scrolls; a tall terminal shows more of them).
FAILURES_SHOWN = 50
#: The style of a queue whose messages wait with no consumer: the alarm of the screen.
ALARM = "bold reverse red"


def stranded(queue: QueueRow) -> bool:
    """Messages wait and no one consumes them: they will wait for ever."""
    return bool(queue.depth) and queue.consumers == 0


def trend(rate: float | None) -> Text:
    """Change of depth per second, with an arrow: up fills, down drains."""
    if rate is None:
        return Text("")
    arrow = "↑" if rate > 0 else "↓" if rate < 0 else "→"
    return Text(f"{arrow} {rate:+.1f}/s", style="red" if rate > 0 else "")


class OverviewScreen(ClusterView):
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="summary", classes="summary")
        yield RateChart(id="rates")
        with Horizontal(id="lists"):
            with Vertical():
                yield Label("Workers", id="workers-title", classes="title")
                # Lists to read, not to act on (the views 2 and 4 are for that): no cursor, no
                # focus, so the alarm's colours show and keys go to the recent failures.
                workers: DataTable[object] = TextTable(id="overview-workers", show_cursor=False)
                workers.can_focus = False
                workers.add_columns("Worker", "Status", "Active", "Load")
                yield workers
            with Vertical():
                yield Label("Queues", id="queues-title", classes="title")
                queues: DataTable[object] = TextTable(id="overview-queues", show_cursor=False)
                queues.can_focus = False
                queues.add_columns("Queue", "Waiting", "Consumers", "Trend")
                yield queues
        with Vertical(id="failures-box"):
            yield Label("Recent failures", classes="title")
            failures: DataTable[object] = TextTable(id="failures", cursor_type="row")
            # The exception before the worker: it is what an operator reads at 80 columns.
            failures.add_columns("Time", "Task", "Exception", "Worker")
            yield failures
        yield KeyBar()

    def refresh_view(self) -> None:
        model = self.console.model
        online = sum(w.alive for w in model.workers.values())
        alarms = [q for q in model.queues.values() if stranded(q)]
        # The connection first: at 80 columns a broker error must not be cut off the line.
        status = (Text("● connected", "green") if model.connected
                  else Text(f"✗ {printable(model.error or 'connecting…')}", "bold red"))
        summary = Text.assemble(
            status, " · Workers: ", (str(online), "bold"), " online, ",
            (str(len(model.workers) - online), "bold"), " offline · Tasks in memory: ",
            (str(len(model.tasks)), "bold"), f" · Events: {model.events_seen}")
        if alarms:
            summary.append(f" · {len(alarms)} queue(s) with no consumer", "bold red")
        if model.bad_events:
            summary.append(printable(f" · {model.bad_events} bad event(s) skipped "
                                     f"(last: {model.last_bad_event})"), "yellow")
        self.query_one("#summary", Static).update(summary)
        self.query_one(RateChart).throughput = model.throughput

        workers = self.query_one("#overview-workers", DataTable)
        workers.clear()
        for worker in sorted(model.workers.values(), key=lambda w: (not w.alive, w.hostname)):
            workers.add_row(*format.cells(
                worker.hostname, format.alive(worker.alive), str(worker.active),
                f"{worker.loadavg[0]:.2f}" if worker.loadavg else ""), key=worker.hostname)
        self.query_one("#workers-title", Label).update(
            f"Workers: {online} of {len(model.workers)} online")

        queues = self.query_one("#overview-queues", DataTable)
        queues.clear()
        # Stranded queues first, then the deepest.
        for queue in sorted(model.queues.values(),
                            key=lambda q: (not stranded(q), -(q.depth or 0))):
            style = ALARM if stranded(queue) else ""
            queues.add_row(
                safe_text(queue.name, style),
                Text("?" if queue.depth is None else str(queue.depth), style),
                Text("" if queue.consumers is None else str(queue.consumers), style),
                trend(queue.rate), key=queue.name)
        title = self.query_one("#queues-title", Label)
        title.update(Text.assemble("Queues", (f" · {len(alarms)} with no consumer!", "bold red"))
                     if alarms else "Queues")

        failures = self.query_one("#failures", DataTable)
        # The cursor stays on the failure the operator chose, so Enter opens that one.
        chosen = failures.coordinate_to_cell_key(failures.cursor_coordinate).row_key.value \
            if failures.row_count else None
        failures.clear()
        for task in model.recent_failures(FAILURES_SHOWN):
            failures.add_row(*format.cells(format.clock(task.updated), task.name,
                                           task.exception[:120], task.worker), key=task.id)
        if chosen is not None and chosen in failures.rows:
            failures.move_cursor(row=failures.get_row_index(chosen))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter or a double click on a recent failure opens its task detail, traceback first."""
        from .details import TaskDetailScreen
        if event.data_table.id == "failures" and event.row_key.value is not None:
            self.app.push_screen(TaskDetailScreen(event.row_key.value))
