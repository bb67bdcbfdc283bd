"""Tasks: a live table with state tabs, sorting, the filter language, and actions on a task."""

from __future__ import annotations

import heapq

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Header, Input, Static, Tab, Tabs

from qtui.core.display import printable, safe_text

from .. import query
from ..actions import SIGNALS
from ..rows import TaskRow
from . import format
from .base import ClusterView, mark_sorted
from .history_input import HistoryInput
from .keybar import KeyBar

STATE_TABS = ("ALL", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED")
COLUMNS = ("ID", "Name", "State", "Worker", "Received", "Started", "Runtime", "Args")
SORT_KEYS = {
    "ID": lambda t: t.id, "Name": lambda t: t.name, "State": lambda t: t.state,
    "Worker": lambda t: t.worker, "Received": lambda t: t.received or 0.0,
    "Started": lambda t: t.started or 0.0, "Runtime": lambda t: t.runtime or 0.0,
    "Args": lambda t: t.args,
}
#: Rows drawn per page (`[` and `]` turn pages); the filter narrows what they are drawn from.
#: Small on purpose: the table measures every cell it is given, on the UI thread.
PAGE_SIZE = 100


class TasksScreen(ClusterView):
    min_interval = 1.0
    BINDINGS = [
        Binding("slash", "filter", "Filter"),
        Binding("enter", "drill", "Details"),
        # Out of the footer, so it fits 80 columns: the header's arrow shows the sort, the
        # status line says "[ ] turn pages" when there are pages; the help lists them all.
        Binding("s", "sort", "Sort", show=False),
        Binding("S", "reverse", "Reverse", show=False),
        Binding("right_square_bracket", "page(1)", "Next page", show=False),
        Binding("left_square_bracket", "page(-1)", "Prev page", show=False),
        # Before the table's own keys (it scrolls sideways with the arrows when it is wider
        # than the terminal); not in the filter box: see check_action.
        Binding("left,h", "tab(-1)", "Prev state", show=False, priority=True),
        Binding("right,l", "tab(1)", "Next state", show=False, priority=True),
        Binding("R", "revoke", "Revoke"),
        Binding("T", "terminate", "Terminate"),
        Binding("y", "retry", "Retry"),
        Binding("L", "rate_limit", "Rate limit type"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self, filter_text: str = "") -> None:
        super().__init__()
        self.filter_text = filter_text
        self.terms: list[query.Term] = query.parse(filter_text) if filter_text else []
        self.sort_column = "Received"
        self.sort_reverse = True
        self.state_tab = "ALL"
        self.page = 0
        self._shown: dict[str, TaskRow] = {}
        """What the table holds, by task id."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Tabs(*[Tab(s.title(), id=s) for s in STATE_TABS], id="states")
        yield HistoryInput(self.console.prompt_history["filter"], value=self.filter_text,
                           placeholder="name:add state:FAILURE worker:w1 /regex/  (⏎ applies, "
                           "esc clears)", id="filter")
        table: DataTable[object] = DataTable(id="tasks", cursor_type="row", zebra_stripes=True)
        for column in COLUMNS:
            table.add_column(f"{column}  ", key=column)  # room for the sort arrow
        yield table
        yield Static("", id="status", classes="summary")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = bool(self.filter_text)
        self.query_one("#tasks", DataTable).focus()

    def set_filter(self, text: str) -> bool:
        """Apply a filter; a bad one is reported and leaves the current one in place."""
        try:
            terms = query.parse(text)
        except query.QueryError as exc:
            self.notify(str(exc), title="Filter", severity="error")
            return False
        self.filter_text, self.terms = text, terms
        if self.is_mounted:
            box = self.query_one("#filter", Input)
            box.value, box.display = text, bool(text)
            self.refresh_view()
        return True

    def visible(self) -> tuple[list[TaskRow], int]:
        """The current page of rows, sorted, and how many matched in all. The first page is
        picked with a heap (no full sort), so 100,000 tasks stay cheap while watching live."""
        tasks = self.console.model.tasks.values()
        if self.state_tab != "ALL" or self.terms:
            tasks = [t for t in tasks
                     if (self.state_tab == "ALL" or t.state == self.state_tab)
                     and (not self.terms or query.matches(self.terms, t.filter_values()))]
        key = SORT_KEYS[self.sort_column]
        pages = max(1, -(-len(tasks) // PAGE_SIZE))
        self.page = min(self.page, pages - 1)
        if self.page == 0:
            pick = heapq.nlargest if self.sort_reverse else heapq.nsmallest
            return pick(PAGE_SIZE, tasks, key=key), len(tasks)
        ordered = sorted(tasks, key=key, reverse=self.sort_reverse)
        return ordered[self.page * PAGE_SIZE:(self.page + 1) * PAGE_SIZE], len(tasks)

    def refresh_view(self) -> None:
        table = self.query_one("#tasks", DataTable)
        current = self.selected_id()
        rows, matched = self.visible()
        self._update_table(table, rows)
        if current is not None and current in self._shown:
            table.move_cursor(row=table.get_row_index(current))
        arrow = "▼" if self.sort_reverse else "▲"
        mark_sorted(table, self.sort_column, self.sort_reverse)
        self.show_crumbs()
        first = self.page * PAGE_SIZE
        shown = (f"{first + 1}-{first + len(rows)} of {matched} (page {self.page + 1}; "
                 "[ ] turn pages)" if matched > len(rows) else f"{matched}")
        self.query_one("#status", Static).update(safe_text(
            f"{shown} task(s) · {len(self.console.model.tasks)} in memory · "
            f"sorted by {self.sort_column} {arrow}"
            + (f" · filter: {self.filter_text}" if self.filter_text else "")))

    def _update_table(self, table: DataTable[object], rows: list[TaskRow]) -> None:
        """Change only what changed: remove rows that left, add those that came, rewrite those
        updated, then restore the order. Rebuilding the table each time costs a measure of
        every cell, which under a stream of events would starve the keyboard."""
        wanted = {t.id: t for t in rows}
        leaving = [k for k in self._shown if k not in wanted]
        if len(leaving) * 4 > len(self._shown):  # remove_row is O(rows): start afresh instead
            table.clear()
            self._shown.clear()
        for task_id in leaving if self._shown else ():
            table.remove_row(task_id)
            del self._shown[task_id]
        for task in rows:
            old = self._shown.get(task.id)
            if old is task:
                continue
            if old is None:
                table.add_row(*self._cells(task), key=task.id)
            else:
                for column, value in zip(COLUMNS, self._cells(task)):
                    table.update_cell(task.id, column, value)
            self._shown[task.id] = task
        if [row.key.value for row in table.ordered_rows] != [t.id for t in rows]:
            position = {t.id: i for i, t in enumerate(rows)}
            table.sort("ID", key=lambda cell: position[str(cell)])

    @staticmethod
    def _cells(t: TaskRow) -> list[Text]:
        return format.cells(t.id, t.name, format.state(t.state), t.worker,
                            format.clock(t.received), format.clock(t.started),
                            format.duration(t.runtime), t.args[:60])

    def crumb(self) -> str:
        crumbs = ["Tasks"]
        if self.state_tab != "ALL":
            crumbs.append(self.state_tab)
        if self.filter_text:
            crumbs.append(printable(self.filter_text))
        return " › ".join(crumbs)

    def selected_id(self) -> str | None:
        table = self.query_one("#tasks", DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def selected(self) -> TaskRow | None:
        task_id = self.selected_id()
        task = self.console.model.tasks.get(task_id) if task_id else None
        if task is None:
            self.notify("No task selected", severity="warning")
        return task

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "tab" and isinstance(self.focused, Input):
            return False  # the keys edit the filter
        return super().check_action(action, parameters)

    # events -----------------------------------------------------------------------------------
    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        self.state_tab = event.tab.id or "ALL"
        self.refresh_view()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self.set_filter(event.value.strip()):
            self.query_one("#tasks", DataTable).focus()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        column = str(event.column_key.value)
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        self.sort_column = column
        self.refresh_view()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_drill()

    # actions ----------------------------------------------------------------------------------
    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def action_clear_filter(self) -> None:
        if self.filter_text or self.query_one("#filter", Input).display:
            self.set_filter("")
            self.query_one("#filter", Input).display = False
            self.query_one("#tasks", DataTable).focus()
        else:
            self.app.action_back()

    def action_sort(self) -> None:
        self.sort_column = COLUMNS[(COLUMNS.index(self.sort_column) + 1) % len(COLUMNS)]
        self.refresh_view()

    def action_reverse(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self.refresh_view()

    def action_page(self, step: int) -> None:
        self.page = max(0, self.page + step)
        self.refresh_view()

    def action_tab(self, step: int) -> None:
        tabs = self.query_one("#states", Tabs)
        tabs.action_next_tab() if step > 0 else tabs.action_previous_tab()

    def action_drill(self) -> None:
        from .details import TaskDetailScreen
        if task := self.selected():
            self.app.push_screen(TaskDetailScreen(task.id))

    def action_revoke(self) -> None:
        if task := self.selected():
            self.confirm(f"Revoke {task.name} [{task.id}]? It will not run.",
                         lambda: self.perform(lambda: self.console.actions.revoke(
                             task.id, self.console.model.alive_workers())))

    def action_terminate(self) -> None:
        if task := self.selected():
            def chosen(signal: str) -> None:
                self.confirm(f"Terminate {task.name} [{task.id}] with {signal}?",
                             lambda: self.perform(lambda: self.console.actions.terminate(
                                 task.id, signal, self.console.model.alive_workers())))
            self.choose(f"Signal for {task.name} [{task.id}]", list(SIGNALS), chosen)

    def action_retry(self) -> None:
        if task := self.selected():
            self.console.retry_task(task)

    def action_rate_limit(self) -> None:
        if task := self.selected():
            def chosen(scope: str) -> None:
                destination = None if scope == "all workers" else [scope]
                self.ask(f"Rate limit for {task.name} on {scope} (e.g. 10/s, 5/m, 0 = none)",
                         lambda rate: self.perform(lambda: self.console.actions.rate_limit(
                             task.name, rate, destination,
                             self.console.model.alive_workers())),
                         "10/m")
            self.choose("Apply to", ["all workers", *sorted(self.console.model.workers)], chosen)
