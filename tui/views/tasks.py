"""Tasks: a live table with state tabs, sorting, the filter language, and actions on a task."""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Header, Input, Static, Tab, Tabs

from qtui.core.display import printable, safe_text

from .. import query
from ..bulk import Marks
from ..rows import TaskRow
from . import format
from .base import MARK, MarkingView, mark_sorted
from .history_input import HistoryInput
from .keybar import KeyBar
from .text_table import TextTable

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
#: Characters of a task id shown in the table (the detail and the dialogs show it whole).
SHORT_ID = 8


def name_widths(width: int) -> tuple[int, int]:
    """The most cells a task name and a worker hostname take in a terminal ``width`` columns
    wide: 24 and 16 at 80, so that a long one does not push State and Received off the
    screen (the detail shows them whole); more as the terminal widens."""
    room = max(0, width - 80)
    return 24 + room // 2, 16 + room // 4


class TaskId(Text):
    """A task id cell: its first characters shown, the whole id kept (rows are put in order by
    it, and two ids may start alike). While some rows are marked for a bulk action, the cell
    starts with the mark (:data:`~.base.MARK`) or room for it, so the ids stay aligned."""

    def __init__(self, task_id: str, marked: bool | None = None) -> None:
        short = task_id if len(task_id) <= SHORT_ID + 1 else task_id[:SHORT_ID] + "…"
        mark = "" if marked is None else f"{MARK} " if marked else "  "
        super().__init__(mark + printable(short), style="bold" if marked else "")
        self.task_id = task_id


class TasksScreen(MarkingView):
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
        Binding("c", "copy_id", "Copy id", show=False),
        Binding("y", "retry", "Retry"),
        Binding("L", "rate_limit", "Rate limit type"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        # Marks for bulk actions, as k9s: R T y then act on every marked task.
        Binding("space", "toggle_mark", "Mark / unmark", show=False),
        Binding("shift+down", "extend_mark(1)", "Mark and move down", show=False),
        Binding("shift+up", "extend_mark(-1)", "Mark and move up", show=False),
        Binding("ctrl+space", "mark_range", "Mark from the last mark", show=False),
        Binding("asterisk", "mark_all", "Mark all matching", show=False),
        Binding("u,ctrl+backslash", "clear_marks", "Clear marks", show=False),
        # The table's own Home/End scroll sideways, taking the id and name off the screen.
        Binding("home", "first_row", "First row", show=False, priority=True),
        Binding("end", "last_row", "Last row", show=False, priority=True),
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
        self._filter_tab: str | None = None
        """The state tab the current filter's state term selected, while it is still shown: a
        filter without one then goes back to All instead of staying narrowed by it."""
        self._left: tuple[str, str] | None = None
        """(the selected task that left this view, the task the cursor fell on) until the
        operator moves the cursor: the status line says so."""
        self.marks = Marks()
        """Task ids marked for a bulk action (kept across pages, tabs and filters)."""
        self.widths = name_widths(80)
        """What :func:`name_widths` gave for the terminal, when the rows shown were drawn."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Tabs(*[Tab(s.title(), id=s) for s in STATE_TABS], active=self.state_tab,
                   id="states")
        yield HistoryInput(self.console.prompt_history["filter"], value=self.filter_text,
                           placeholder="name:add state:FAILURE worker:w1 /regex/  (⏎ applies, "
                           "esc clears)", id="filter")
        table: DataTable[object] = TextTable(id="tasks", cursor_type="row", zebra_stripes=True)
        for column in COLUMNS:
            table.add_column(f"{column}  ", key=column)  # room for the sort arrow
        yield table
        yield Static("", id="status", classes="summary")
        yield KeyBar()

    def on_mount(self) -> None:
        self.widths = name_widths(self.app.size.width)
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
        asked = state_tab_for(terms)
        tab = asked if asked is not None else ("ALL" if self._filter_tab is not None else None)
        self._filter_tab = asked
        if tab is not None:
            self.state_tab = tab
        if self.is_mounted:
            box = self.query_one("#filter", Input)
            box.value, box.display = text, bool(text)
            if tab is not None:
                self.query_one("#states", Tabs).active = tab
            self.page = 0
            self._redraw(self.selected_id(), lost_is_news=False)
        return True

    def _wanted(self, task: TaskRow) -> bool:
        return ((self.state_tab == "ALL" or task.state == self.state_tab)
                and (not self.terms or query.matches(self.terms, task.filter_values())))

    def matching(self) -> Collection[TaskRow]:
        """Every task the tab and the filter let through, on every page, in no order."""
        tasks: Collection[TaskRow] = self.console.model.tasks.values()
        if self.state_tab != "ALL" or self.terms:
            tasks = [t for t in tasks if self._wanted(t)]
        return tasks

    def current_page(self, chosen: str | None = None) -> tuple[list[TaskRow], int]:
        """The current page of rows, sorted, and how many matched in all. The first page is
        picked with a heap (no full sort), so 100,000 tasks stay cheap while watching live.
        With ``chosen`` (a task id) the page is the one that task is on, if it still matches."""
        tasks = self.matching()
        key = SORT_KEYS[self.sort_column]
        pages = max(1, -(-len(tasks) // PAGE_SIZE))
        self.page = min(self.page, pages - 1)
        task = self.console.model.tasks.get(chosen) if chosen else None
        if task is not None and not self._wanted(task):
            task = None
        if self.page == 0:
            pick = heapq.nlargest if self.sort_reverse else heapq.nsmallest
            rows = pick(PAGE_SIZE, tasks, key=key)
            if task is None or any(t is task for t in rows):
                return rows, len(tasks)
        ordered = sorted(tasks, key=key, reverse=self.sort_reverse)
        if task is not None:
            self.page = next(i for i, t in enumerate(ordered) if t is task) // PAGE_SIZE
        return ordered[self.page * PAGE_SIZE:(self.page + 1) * PAGE_SIZE], len(tasks)

    def refresh_view(self) -> None:
        """Redraw for new data: the cursor stays on the task the operator chose, turning to the
        page it is pushed onto, so an action never lands on a task that slid under the cursor."""
        self._redraw(self.selected_id(), lost_is_news=True)

    def _redraw(self, chosen: str | None, lost_is_news: bool) -> None:
        """Redraw keeping the cursor on ``chosen``. When it left the view, a redraw caused by
        data says so on the status line (``lost_is_news``); one caused by the operator (a new
        filter, tab or page) puts the cursor on the first row."""
        table = self.query_one("#tasks", DataTable)
        rows, matched = self.current_page(chosen)
        widths = name_widths(self.app.size.width)
        if widths != self.widths:  # the terminal was resized: every row is cut anew
            self.widths = widths
            table.clear()
            self._shown.clear()
        self._update_table(table, rows)
        if chosen is not None and chosen in self._shown:
            table.move_cursor(row=table.get_row_index(chosen))
        elif lost_is_news and chosen is not None:
            self._left = (chosen, self.selected_id() or "")
        else:
            table.move_cursor(row=0)
        if self._left is not None and self._left[1] != (self.selected_id() or ""):
            self._left = None  # the operator has moved on
        arrow = "▼" if self.sort_reverse else "▲"
        mark_sorted(table, self.sort_column, self.sort_reverse)
        self.show_crumbs()
        first = self.page * PAGE_SIZE
        pages = max(1, -(-matched // PAGE_SIZE))
        shown = (f"{first + 1}-{first + len(rows)} of {matched} (page {self.page + 1}/{pages}, "
                 "[ ])" if matched > len(rows) else f"{matched}")
        status = Text(f"sorted by {self.sort_column} {arrow} · {shown} task(s) · "
                      f"{len(self.console.model.tasks)} in memory")
        if self._left is not None:
            status.append(f" · {TaskId(self._left[0])} left this view", style="bold yellow")
        if self.filter_text:
            status.append(" · filter: ")
            status.append_text(safe_text(self.filter_text))
        if self.marks:
            status.append(f" · {len(self.marks)} marked (R T y act on them, u clears)",
                          style="bold")
        self.query_one("#status", Static).update(status)

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
                for column, value in zip(COLUMNS, self._cells(task), strict=True):
                    table.update_cell(task.id, column, value)
            self._shown[task.id] = task
        if [row.key.value for row in table.ordered_rows] != [t.id for t in rows]:
            position = {t.id: i for i, t in enumerate(rows)}
            table.sort("ID", key=lambda cell: position[cell.task_id])

    def _task_id(self, task_id: str) -> TaskId:
        return TaskId(task_id, task_id in self.marks if self.marks else None)

    def show_marks(self) -> None:
        """Redraw the marks (in the id cells of the rows shown) and the status line."""
        table = self.query_one("#tasks", DataTable)
        for task_id in self._shown:
            table.update_cell(task_id, "ID", self._task_id(task_id), update_width=True)
        self._redraw(self.selected_id(), lost_is_news=False)

    def _cells(self, t: TaskRow) -> list[Text]:
        # No name: only later events were seen (task-received was missed); Flower keeps such
        # tasks too, and the operator may still need to act on them.
        name = safe_text(t.name) if t.name else Text("(unknown)", style="dim italic")
        name_width, worker_width = self.widths
        return format.cells(self._task_id(t.id), format.cut(name, name_width),
                            format.state(t.state), format.cut(safe_text(t.worker), worker_width),
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
        if action in ("tab", "first_row", "last_row", "extend_mark", "mark_range") \
                and isinstance(self.focused, Input):
            return False  # the keys edit the filter
        return super().check_action(action, parameters)

    # events -----------------------------------------------------------------------------------
    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        self.state_tab = event.tab.id or "ALL"
        if self.state_tab != self._filter_tab:
            self._filter_tab = None  # the operator chose this tab: later filters keep it
        self.page = 0
        self._redraw(self.selected_id(), lost_is_news=False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self.set_filter(event.value.strip()):
            self.query_one("#tasks", DataTable).focus()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        column = str(event.column_key.value)
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        self.sort_column = column
        self._redraw(self.selected_id(), lost_is_news=False)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_drill()

    # actions ----------------------------------------------------------------------------------
    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    async def action_clear_filter(self) -> None:
        if self.filter_text or self.query_one("#filter", Input).display:
            self.set_filter("")
            self.query_one("#filter", Input).display = False
            self.query_one("#tasks", DataTable).focus()
        else:
            await self.app.action_back()

    def action_sort(self) -> None:
        self.sort_column = COLUMNS[(COLUMNS.index(self.sort_column) + 1) % len(COLUMNS)]
        self._redraw(self.selected_id(), lost_is_news=False)

    def action_reverse(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self._redraw(self.selected_id(), lost_is_news=False)

    def action_page(self, step: int) -> None:
        self.page = max(0, self.page + step)
        self._redraw(None, lost_is_news=False)

    def action_first_row(self) -> None:
        self.query_one("#tasks", DataTable).action_scroll_top()

    def action_last_row(self) -> None:
        self.query_one("#tasks", DataTable).action_scroll_bottom()

    def action_tab(self, step: int) -> None:
        tabs = self.query_one("#states", Tabs)
        tabs.action_next_tab() if step > 0 else tabs.action_previous_tab()

    def action_drill(self) -> None:
        from .details import TaskDetailScreen
        if task := self.selected():
            self.app.push_screen(TaskDetailScreen(task.id))

    def action_copy_id(self) -> None:
        from .details import copy_id
        if task := self.selected():
            copy_id(self, task.id)

    def marked(self) -> list[TaskRow]:
        """The marked tasks the console still has, in the order they were marked (forgotten
        ones are unmarked)."""
        tasks = self.console.model.tasks
        self.marks.keep(tasks)
        return [tasks[i] for i in self.marks]

    def action_extend_mark(self, step: int) -> None:
        """shift+↓ / shift+↑: mark the row under the cursor and the next one (a range grows
        as the cursor moves)."""
        table = self.query_one("#tasks", DataTable)
        task_id = self.selected_id()
        if task_id is None:
            return
        self.marks.add([task_id])
        table.move_cursor(row=table.cursor_row + step)
        following = self.selected_id() or task_id
        self.marks.add([following])
        self.marks.anchor = following
        self.show_marks()

    def action_mark_range(self) -> None:
        """k9s's ctrl+space: mark every row from the last one marked to the cursor."""
        if task_id := self.selected_id():
            rows = [str(row.key.value) for row in self.query_one("#tasks", DataTable).ordered_rows]
            self.marks.extend(rows, task_id)
            self.show_marks()

    def markable(self) -> Iterable[str]:
        """Every task the tab and the filter let through, on every page: * R T y then act on
        everything matching the filter."""
        return (t.id for t in self.matching())

    def action_revoke(self) -> None:
        if marked := self.marked():
            self.revoke_tasks(marked)
        elif task := self.selected():
            self.revoke_task(task, "It will not run.")

    def action_terminate(self) -> None:
        if marked := self.marked():
            self.terminate_tasks(marked)
        elif task := self.selected():
            self.terminate_task(task)

    def action_retry(self) -> None:
        if marked := self.marked():
            self.console.retry_tasks(marked)
        elif task := self.selected():
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
            self.choose(f"Rate-limit {task.name} on", ["all workers",
                                                       *self.console.model.alive_workers()],
                        chosen)


def state_tab_for(terms: list[query.Term]) -> str | None:
    """The state tab a filter asks for: the tab of its one state (``state:FAILURE``), "ALL" for
    several (``state:FAILURE,RETRY``) so that no tab narrows them further, None when it names
    none."""
    states = [t for t in terms if t.field == "state" and not t.negate]
    if not states:
        return None
    if len(states) == 1 and len(states[0].values) == 1 and states[0].values[0] in STATE_TABS:
        return states[0].values[0]
    return "ALL"
