"""Overview: workers online, throughput by state over time, queue depths, recent failures."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import DataTable, Footer, Header, Label, Sparkline, Static

from qtui.core.display import printable

from . import format
from .base import ClusterView

SPARK_STATES = ("SUCCESS", "FAILURE", "RETRY", "RECEIVED")


class OverviewScreen(ClusterView):
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="summary", classes="summary")
        with Horizontal(id="sparks"):
            for state in SPARK_STATES:
                with Vertical(classes="spark"):
                    yield Label(state.title(), id=f"label-{state}")
                    yield Sparkline([], id=f"spark-{state}", classes=state.lower())
        with Horizontal(id="tables"):
            with Vertical():
                yield Label("Queues", classes="title")
                queues: DataTable[object] = DataTable(id="overview-queues", cursor_type="row")
                queues.add_columns("Queue", "Depth", "Consumers")
                yield queues
            with Vertical():
                yield Label("Recent failures", classes="title")
                failures: DataTable[object] = DataTable(id="failures", cursor_type="row")
                failures.add_columns("Time", "Task", "Worker", "Exception")
                yield failures
        yield Footer()

    def refresh_view(self) -> None:
        model = self.console.model
        online = sum(w.alive for w in model.workers.values())
        status = (("connected", "green") if model.connected
                  else (printable(model.error or "connecting…"), "red"))
        summary = Content.assemble(
            "Workers: ", (str(online), "bold"), " online, ",
            (str(len(model.workers) - online), "bold"), " offline · Tasks in memory: ",
            (str(len(model.tasks)), "bold"), f" · Events: {model.events_seen} · ", status)
        if model.bad_events:
            summary = summary.append_text(printable(
                f" · {model.bad_events} bad event(s) skipped (last: {model.last_bad_event})"),
                "yellow")
        self.query_one("#summary", Static).update(summary)
        for state in SPARK_STATES:
            series = model.throughput.series.get(state) or []
            self.query_one(f"#spark-{state}", Sparkline).data = series
            # The newest bucket is still filling: the rate is read off the one before it.
            done = series[-2] if len(series) > 1 else 0
            self.query_one(f"#label-{state}", Label).update(
                f"{state.title()} {done / model.throughput.interval:.1f}/s "
                f"(max {max(series, default=0)})")
        queues = self.query_one("#overview-queues", DataTable)
        queues.clear()
        for queue in sorted(model.queues.values(), key=lambda q: -(q.depth or 0)):
            queues.add_row(*format.cells(
                queue.name, "?" if queue.depth is None else str(queue.depth),
                "" if queue.consumers is None else str(queue.consumers)))
        failures = self.query_one("#failures", DataTable)
        # The cursor stays on the failure the operator chose, so Enter opens that one.
        chosen = failures.coordinate_to_cell_key(failures.cursor_coordinate).row_key.value \
            if failures.row_count else None
        failures.clear()
        for task in model.recent_failures():
            failures.add_row(*format.cells(format.clock(task.updated), task.name, task.worker,
                                           task.exception[:80]), key=task.id)
        if chosen in failures.rows:
            failures.move_cursor(row=failures.get_row_index(chosen))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter or a double click on a recent failure opens its task detail, traceback first."""
        from .details import TaskDetailScreen
        if event.data_table.id == "failures" and event.row_key.value is not None:
            self.app.push_screen(TaskDetailScreen(event.row_key.value))
