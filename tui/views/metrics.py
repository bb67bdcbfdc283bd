"""Metrics: throughput, failures and runtime percentiles per task name or per queue over the
last hour, day or week, read from the history file's rollups (:mod:`qtui.core.metrics`).

Two plots show the selected row (everything when none is selected): tasks done and failed per
step, and runtime p50/p95 per step. The table lists task names (or queues), slowest first or
most failing first; the line under it says where the selected row came from (its queues and
the workers that ran it, or a queue's deepest poll, task names and consumers). Reading the
file happens in a thread worker: keys never wait for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Header, Static
from textual.worker import get_current_worker
from textual_plotext import PlotextPlot

from qtui.core.display import safe_text
from qtui.core.metrics import Rollup

from ..history import History
from . import format
from .base import ClusterView
from .keybar import KeyBar


class TimeRange(NamedTuple):
    """A range the plots show, and how their time axis reads it."""

    label: str
    span: int
    """Seconds shown, up to now."""
    step: int
    """Seconds per plotted point: whole rows of the file (a minute for 48 hours, ten minutes
    after), at most about 170 points."""
    unit: str
    """What the time axis counts back from now in ("minutes": it reads 60 45 30 15 now)."""
    unit_seconds: int
    tick: int
    """Seconds between the axis's ticks."""


RANGES = (TimeRange("1 h", 3600, 60, "minutes", 60, 900),
          TimeRange("24 h", 86400, 600, "hours", 3600, 6 * 3600),
          TimeRange("7 d", 7 * 86400, 3600, "days", 86400, 86400))

#: Orders of the table: its name and the row's sort key (largest first).
ORDERS = ("slowest", "failing")
#: Seconds between reloads while the view is shown (rows are per minute).
RELOAD_EVERY = 10.0
COLUMNS = ("Name", "Done", "Failed", "Fail %", "p50", "p95", "p99", "Wait p95")


@dataclass(frozen=True)
class MetricsPage:
    """What one read of the history found, for one range, grouping and selection."""

    key: str | None
    """The selected row the series are of (None: all rows)."""
    rows: dict[str, Rollup]
    series: dict[int, Rollup]
    since: float
    until: float
    step: int
    pairs: list[tuple[str, str]]
    """(task name, queue) pairs seen in the range: where each row came from."""
    workers: list[str]
    """Workers that ran the selected task name (from the tasks in memory)."""
    depths: dict[str, int | None]
    """The deepest each queue was in the range (from the queue polls)."""
    error: str = ""


def seconds(value: float | None) -> str:
    """A duration as the tasks view shows one, and under a millisecond in µs (no-op tasks)."""
    if value is not None and value < 0.001:
        return f"{value * 1e6:.0f}µs"
    return format.duration(value)


def failure_share(rollup: Rollup) -> float:
    done = rollup.count("succeeded") + rollup.count("failed")
    return rollup.count("failed") / done if done else 0.0


class MetricsScreen(ClusterView):
    BINDINGS = [
        Binding("r", "next_range", "Range"),
        Binding("b", "next_grouping", "By task/queue"),
        Binding("o", "next_order", "Order"),
    ]

    range_index = 0
    by = "task"
    order = "slowest"
    page: MetricsPage | None = None
    _loaded_at = 0.0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="summary", classes="summary")
        with Horizontal(id="metrics-plots"):
            yield PlotextPlot(id="throughput-plot")
            yield PlotextPlot(id="runtime-plot")
        table: DataTable[object] = DataTable(id="metrics", cursor_type="row", zebra_stripes=True)
        for column in COLUMNS:
            table.add_column(column, key=column)
        yield table
        yield Static("", id="metrics-origin", classes="summary")
        yield KeyBar()

    @property
    def history(self) -> History | None:
        """Where the rollups are; None when the console keeps no history or no metrics."""
        feed = self.console.feed
        return feed.history if feed.state.metrics is not None else None

    @property
    def table(self) -> DataTable[object]:
        return self.query_one("#metrics", DataTable)

    def selected_key(self) -> str | None:
        table = self.table
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    # loading (a thread) --------------------------------------------------------------------
    def refresh_view(self) -> None:
        """Snapshots come several times a second; the rollups change by the minute."""
        if time.monotonic() - self._loaded_at >= RELOAD_EVERY:
            self.reload()

    def reload(self) -> None:
        self._loaded_at = time.monotonic()
        history = self.history
        if history is None:
            # They live in the history file: both settings must be on.
            self.query_one("#summary", Static).update(Text(
                "No metrics: they need console_history and console_metrics on."))
            return
        shown = RANGES[self.range_index]
        self.load(history, shown.span, shown.step, self.by, self.selected_key())

    @work(thread=True, exclusive=True, group="metrics", exit_on_error=False)
    def load(self, history: History, span: int, step: int, by: str, key: str | None) -> None:
        until = history.clock()
        since = (until - span) // step * step + step  # whole steps, the newest one filling
        try:
            rows = history.metrics(since, until, by=by)
            if key is not None and key not in rows:
                key = None
            series = history.metrics_series(since, until, step, by=by, key=key)
            pairs = history.metrics_pairs(since, until)
            depths = {queue: depth for queue, (depth, _) in
                      history.queue_depths(since, until).items()}
        except Exception as exc:  # noqa: BLE001 - a closed or damaged file: say so, keep going
            self.app.call_from_thread(self.show, MetricsPage(
                None, {}, {}, since, until, step, [], [], {}, f"metrics unreadable: {exc}"))
            return
        workers: list[str] = []
        if by == "task" and key is not None:
            feed = self.console.feed
            with feed.lock:
                workers = sorted({t.worker for t in feed.state.tasks_by_type(key) if t.worker})
        if not get_current_worker().is_cancelled:  # a newer load replaced this one
            self.app.call_from_thread(self.show, MetricsPage(key, rows, series, since, until,
                                                             step, pairs, workers, depths))

    # drawing (the UI thread) ---------------------------------------------------------------
    def show(self, page: MetricsPage) -> None:
        if not self.is_mounted:
            return
        self.page = page
        self._draw_summary(page)
        self._draw_table(page)
        self._draw_plots(page)
        self._draw_origin(page)

    def _draw_summary(self, page: MetricsPage) -> None:
        total = Rollup()
        for rollup in page.rows.values():
            total.merge(rollup)
        done = total.count("succeeded") + total.count("failed")
        label = RANGES[self.range_index].label
        summary = Text.assemble(
            f"Last {label} by {self.by}, {self.order} first · ", (f"{done:,}", "bold"),
            " done, ", (f"{total.count('failed'):,}", "bold"),
            f" failed ({100 * failure_share(total):.1f}%) · p95 ",
            (seconds(total.runtime.percentile(0.95)) or "-", "bold"))
        if page.error:
            summary = Text(page.error, "bold red")
        self.query_one("#summary", Static).update(summary)

    def _draw_table(self, page: MetricsPage) -> None:
        table = self.table
        current = self.selected_key()
        if self.order == "slowest":
            def rank(item: tuple[str, Rollup]) -> Any:
                return item[1].runtime.percentile(0.95) or 0.0
        else:
            def rank(item: tuple[str, Rollup]) -> Any:
                return (item[1].count("failed"), failure_share(item[1]))
        table.clear()
        for name, rollup in sorted(page.rows.items(), key=rank, reverse=True):
            runtime = rollup.runtime
            table.add_row(*format.cells(
                name or "(unknown)", f"{rollup.count('succeeded') + rollup.count('failed'):,}",
                f"{rollup.count('failed'):,}", f"{100 * failure_share(rollup):.1f}",
                seconds(runtime.percentile(0.5)), seconds(runtime.percentile(0.95)),
                seconds(runtime.percentile(0.99)), seconds(rollup.wait.percentile(0.95))),
                key=name)
        if current is not None and current in page.rows:
            table.move_cursor(row=table.get_row_index(current), animate=False)

    def _draw_plots(self, page: MetricsPage) -> None:
        shown = RANGES[self.range_index]
        slots = range(int(page.since), int(page.until) + 1, page.step)
        xs = [(slot - page.until) / shown.unit_seconds for slot in slots]
        empty = Rollup()
        points = [page.series.get(slot, empty) for slot in slots]
        per = "hour" if page.step >= 3600 else "10 min" if page.step == 600 else "min"

        throughput = self.query_one("#throughput-plot", PlotextPlot)
        plt = throughput.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(f"done / failed per {per}")
        time_axis(plt, shown)
        plt.plot(xs, [p.count("succeeded") + p.count("failed") for p in points], label="done",
                 marker="braille")
        plt.plot(xs, [p.count("failed") for p in points], label="failed", marker="braille",
                 color="red")
        throughput.refresh()

        runtime = self.query_one("#runtime-plot", PlotextPlot)
        plt = runtime.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("runtime p50 / p95 (s)")
        # The same axis as the throughput's, whichever steps had a runtime: left to itself,
        # plotext spans only those (a few minutes of a week, or backwards for one point).
        time_axis(plt, shown)
        for q, label, color in ((0.5, "p50", "green"), (0.95, "p95", "orange")):
            known = [(x, p.runtime.percentile(q)) for x, p in zip(xs, points, strict=True)]
            found = [(x, v) for x, v in known if v is not None]
            if found:
                plt.plot([x for x, _ in found], [v for _, v in found], label=label,
                         marker="braille", color=color)
        runtime.refresh()

    def _draw_origin(self, page: MetricsPage) -> None:
        key = self.selected_key()
        origin = self.query_one("#metrics-origin", Static)
        if key is None:
            origin.update("")
            return
        if self.by == "task":
            queues = sorted({q for t, q in page.pairs if t == key and q})
            line = Text.assemble(safe_text(key or "(unknown)", "bold"), " · queues: ",
                                 safe_text(", ".join(queues) or "?"), " · workers: ",
                                 safe_text(", ".join(page.workers) or "?"))
        else:
            tasks = sorted({t for t, q in page.pairs if q == key and t})
            consumers = self.console.model.workers_consuming(key)
            depth = page.depths.get(key)
            line = Text.assemble(safe_text(key or "(unknown)", "bold"),
                                 "" if depth is None else f" · deepest {depth:,}", " · tasks: ",
                                 safe_text(", ".join(tasks) or "?"), " · consumers: ",
                                 safe_text(", ".join(consumers) or "?"))
        origin.update(line)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """The plots and the origin line follow the selection."""
        if self.page is None:
            return
        self._draw_origin(self.page)
        # Where the cursor is now, not what the event says: redrawing the table moves the
        # cursor too, and those events arrive after it is back on the page's row.
        if self.selected_key() != self.page.key:
            self.reload()

    # keys ----------------------------------------------------------------------------------
    def action_next_range(self) -> None:
        self.range_index = (self.range_index + 1) % len(RANGES)
        self.reload()

    def action_next_grouping(self) -> None:
        self.by = "queue" if self.by == "task" else "task"
        self.table.clear()
        self.reload()

    def action_next_order(self) -> None:
        self.order = ORDERS[(ORDERS.index(self.order) + 1) % len(ORDERS)]
        if self.page is not None:
            self.show(self.page)


def time_axis(plt: Any, shown: TimeRange) -> None:
    """The whole range on the x axis, now at the right, ticks at whole units counted back from
    now (60 45 30 15 now, in minutes ago)."""
    span = shown.span / shown.unit_seconds
    plt.xlim(-span, 0)
    ago = range(shown.span, -1, -shown.tick)
    plt.xticks([-s / shown.unit_seconds for s in ago],
               [f"{s // shown.unit_seconds}" if s else "now" for s in ago])
    plt.xlabel(f"{shown.unit} ago")
