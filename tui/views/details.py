"""Drill-downs: one task (failure first, arguments, result, family, timeline) and one worker
(its inspect replies as tables)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import (
    DataTable,
    Footer,
    Header,
    Static,
    TabbedContent,
    TabPane,
    TextArea,
    Tree,
)
from textual.widgets.tree import TreeNode

from qtui.core.display import clip, printable, reprs_only, safe_text
from qtui.core.exceptions import BrokerUnavailable

from .. import arguments
from ..family import Member
from ..rows import TaskRow
from . import format
from .base import ClusterView

#: Arguments of inspect methods: registered tasks come with the limits that apply to them now;
#: the task tabs ask in safe mode, for the tasks' argsrepr/kwargsrepr, never arguments their
#: senders masked (Celery's ``active(safe=True)``; qtui's workers honour it for reserved and
#: scheduled too, Celery's ignore it there).
INSPECT_ARGUMENTS: dict[str, tuple[Any, ...]] = {
    "registered": ("rate_limit", "time_limit", "soft_time_limit"),
    "active": (True,), "reserved": (True,), "scheduled": (True,)}
#: The worker detail's tabs; each shows the reply of the inspect method of its name, but for
#: those :data:`TAB_METHOD` maps (the pool is a part of ``stats``).
WORKER_TABS = (
    ("stats", "Stats"), ("pool", "Pool"), ("active", "Active"), ("reserved", "Reserved"),
    ("scheduled", "Scheduled"), ("revoked", "Revoked"), ("registered", "Registered"),
    ("active_queues", "Queues"), ("conf", "Config"),
)
TAB_METHOD = {"pool": "stats"}
#: Tabs whose rows are tasks (Enter opens one).
TASK_TABS = frozenset({"active", "reserved", "scheduled", "revoked"})
#: Rows shown of one reply, and characters of one cell: a reply is whatever a worker sent.
ROWS_SHOWN = 2_000
CELL_SHOWN = 200
#: Levels of nested mappings shown as dotted keys; deeper ones show as JSON.
FLATTEN_DEPTH = 3


class TaskDetailScreen(ClusterView):
    """One task, failure first: its exception and traceback at the top (on screen at 80x24),
    then what it is, its arguments and result, its family and its timeline. Text can be selected
    and copied (mouse, or shift+arrows in the traceback and arguments)."""

    BINDINGS = [
        Binding("escape", "app.back", "Back"),
        Binding("c", "copy_id", "Copy id"),
        Binding("f", "family", "Family"),
        Binding("R", "revoke", "Revoke"),
        Binding("T", "terminate", "Terminate"),
        Binding("y", "retry", "Retry"),
    ]

    def __init__(self, task_id: str) -> None:
        super().__init__()
        self.task_id = task_id
        self.full_arguments: arguments.Arguments | None = None
        """The complete args and kwargs, once a worker or the result backend gave them."""
        self._family_shape: tuple[tuple[str, str, str, int], ...] | None = None
        """What the family tree was drawn from: it is redrawn (losing its cursor) only when
        this changes."""

    def on_mount(self) -> None:  # ClusterView.on_mount runs as well (Textual calls both)
        self.load_arguments()

    @work(thread=True, group="arguments")
    def load_arguments(self) -> None:
        found = self.console.feed.full_arguments(self.task_id)
        if found is not None:
            self.app.call_from_thread(self._show_arguments, found)

    def _show_arguments(self, found: arguments.Arguments) -> None:
        self.full_arguments = found
        if self.is_mounted:
            self.refresh_view()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="headline", classes="summary")
        with VerticalScroll(id="detail"):
            yield Static(id="exception")
            yield TextArea(id="traceback", read_only=True)
            yield Static(id="fields")
            yield TextArea(id="values", read_only=True)
            yield Static("Family (f, then Enter opens a task)", id="family-title",
                         classes="title")
            family: Tree[str] = Tree("", id="family")
            family.auto_expand = False
            yield family
            yield Static(id="timeline")
        yield Footer()

    def refresh_view(self) -> None:
        task = self.console.model.tasks.get(self.task_id)
        if task is None:
            self.query_one("#headline", Static).update(
                Content(printable(f"Task {self.task_id} is no longer in memory.")))
            return
        self.query_one("#headline", Static).update(Content.assemble(
            (task.state, format.STATE_STYLES.get(task.state, "")), "  ",
            (printable(task.name), "bold"), "  ", printable(task.id)))
        exception = self.query_one("#exception", Static)
        exception.display = bool(task.exception)
        exception.update(Content.styled(printable(task.exception), "bold red"))
        traceback = self.query_one("#traceback", TextArea)
        if _show_text(traceback, printable(task.traceback.rstrip("\n"), multiline=True)):
            # Where it failed is at the end: a long traceback opens on its last lines.
            traceback.move_cursor(traceback.document.end)
        self.query_one("#fields", Static).update(self._fields(task))
        _show_text(self.query_one("#values", TextArea), self._values(task))
        self._show_family()
        self.query_one("#timeline", Static).update(_timeline(task))

    @staticmethod
    def _fields(task: TaskRow) -> Content:
        lines = [Content.assemble((f"{label:<9}", "bold"), printable(value))
                 for label, value in (
                     ("Worker", task.worker), ("Queue", task.queue),
                     ("Retries", str(task.retries)), ("ETA", task.eta),
                     ("Received", format.moment(task.received)),
                     ("Started", format.moment(task.started)),
                     ("Runtime", format.duration(task.runtime)),
                     ("Parent", task.parent_id), ("Root", task.root_id))
                 if value]
        return Content("\n").join(lines)

    def _values(self, task: TaskRow) -> str:
        """Arguments and result as plain text, for a TextArea to select from."""
        found = self.full_arguments
        if found is not None and not arguments.hidden(*task.reprs, found):
            limit = self.console.cluster.conf.console_max_field
            lines = [f"args   {clip(repr(tuple(found.args)), limit)}",
                     f"kwargs {clip(repr(found.kwargs), limit)}",
                     "(complete, from the worker that received it)"]
        else:
            args, kwargs = task.reprs
            if found is not None and found.masked:  # the worker's reprs: the events may lack them
                limit = self.console.cluster.conf.console_max_field
                args = clip(found.argsrepr or "", limit)
                kwargs = clip(found.kwargsrepr or "", limit)
            lines = [f"args   {args or '()'}", f"kwargs {kwargs or '{}'}"]
            if found is not None:
                lines.append("(masked by the sender with argsrepr/kwargsrepr)"
                             if found.masked or args is not None or kwargs is not None else
                             "(complete arguments not shown: no event or worker said whether "
                             "the sender masked them)")
        if task.result:
            lines.append(f"result {task.result}")
        return printable("\n".join(lines), multiline=True)

    def _show_family(self) -> None:
        model = self.console.model
        top = model.family.tree(self.task_id, model.tasks)
        tree = self.query_one("#family", Tree)
        self.query_one("#family-title", Static).display = tree.display = top is not None
        shape = () if top is None else tuple(_shape(top, 0))
        if shape == self._family_shape:
            return
        self._family_shape = shape
        tree.clear()
        if top is None:
            return
        tree.root.set_label(self._member_label(top))
        tree.root.data = top.id
        self._grow(tree.root, top)
        tree.root.expand_all()

    def _grow(self, node: TreeNode[str], member: Member) -> None:
        for child in member.children:
            if child.children:
                self._grow(node.add(self._member_label(child), data=child.id), child)
            else:
                node.add_leaf(self._member_label(child), data=child.id)

    def _member_label(self, member: Member) -> Text:
        """A family member as one line: name, state and id, the task shown marked."""
        label = Text()
        if member.task is None:
            label.append_text(safe_text(member.id, "dim"))
            label.append(" (not in memory)", "dim")
        else:
            label.append_text(safe_text(member.task.name or "?", "bold"))
            label.append(" ")
            label.append_text(format.state(member.task.state))
            label.append_text(safe_text(f" {member.id}", "dim"))
        if member.id == self.task_id:
            label.append(" ◀ this task", "reverse")
        return label

    def on_tree_node_selected(self, event: Tree.NodeSelected[str]) -> None:
        task_id = event.node.data
        if task_id is None or task_id == self.task_id:
            return
        if task_id not in self.console.model.tasks:
            self.notify(f"Task {task_id} is not in memory", severity="warning")
            return
        self.app.push_screen(TaskDetailScreen(task_id))

    def action_family(self) -> None:
        tree = self.query_one("#family", Tree)
        if not tree.display:
            self.notify("This task has no parent, root or children in memory",
                        severity="warning")
            return
        tree.focus()
        tree.scroll_visible()

    def action_copy_id(self) -> None:
        copy_id(self, self.task_id)

    def current_task(self) -> TaskRow | None:
        """The task shown, as the model has it now (says so when it is gone). Not ``_task``:
        Textual's message pump keeps its asyncio task under that name."""
        task = self.console.model.tasks.get(self.task_id)
        if task is None:
            self.notify("Task is no longer in memory", severity="warning")
        return task

    def action_revoke(self) -> None:
        if task := self.current_task():
            self.revoke_task(task)

    def action_terminate(self) -> None:
        if task := self.current_task():
            self.terminate_task(task)

    def action_retry(self) -> None:
        if task := self.current_task():
            self.console.retry_task(task)


def copy_id(view: ClusterView, task_id: str) -> None:
    """Put a task id on the operator's clipboard (OSC 52: the terminal, even over ssh)."""
    view.app.copy_to_clipboard(task_id)
    view.notify(f"Copied {task_id}", title="Clipboard")


def _show_text(area: TextArea, text: str) -> bool:
    """Show ``text`` (hidden when empty), leaving the area alone while it is unchanged so that
    a refresh does not lose the operator's selection; returns whether it changed."""
    area.display = bool(text)
    if area.text == text:
        return False
    area.load_text(text)
    return True


def _shape(member: Member, depth: int) -> Iterator[tuple[str, str, str, int]]:
    yield (member.id, member.task.state if member.task else "",
           member.task.name if member.task else "", depth)
    for child in member.children:
        yield from _shape(child, depth + 1)


def _timeline(task: TaskRow) -> Table:
    """Each event with its time to the millisecond and its distance from the task's first
    receipt (a retried task is received again: ``received`` is the latest)."""
    timeline = Table(title="Timeline", title_justify="left", title_style="bold",
                     box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=True)
    for column in ("time", "+Δ", "event", "worker"):
        timeline.add_column(column, no_wrap=True)
    timeline.add_column("detail", ratio=1)
    steps = task.steps()
    received = [step.timestamp for step in steps if step.type == "task-received"]
    start = min(received, default=steps[0].timestamp if steps else task.received)
    for step in steps:
        timeline.add_row(*format.cells(format.moment(step.timestamp),
                                       format.offset(step.timestamp, start), step.type,
                                       step.hostname, step.detail))
    return timeline


class WorkerDetailScreen(ClusterView):
    """One worker's inspect replies, each as a table (Enter on a task opens its detail, ``c``
    copies the row under the cursor)."""

    BINDINGS = [Binding("escape", "app.back", "Back"), Binding("f5,ctrl+r", "reload", "Reload"),
                Binding("c", "copy_row", "Copy row")]

    def __init__(self, hostname: str) -> None:
        super().__init__()
        self.hostname = hostname

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Content.styled(printable(self.hostname), "bold"), classes="summary")
        with TabbedContent(id="inspect"):
            for tab, title in WORKER_TABS:
                with TabPane(title, id=f"tab-{tab}"):
                    yield Static("loading…", id=f"note-{tab}", classes="note")
                    yield DataTable(id=f"table-{tab}", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        for tab, _ in WORKER_TABS:
            self.query_one(f"#note-{tab}", Static).update("loading…")
        for method in dict.fromkeys(TAB_METHOD.get(tab, tab) for tab, _ in WORKER_TABS):
            self.load(method)

    @work(thread=True, group="inspect", exit_on_error=False)
    def load(self, method: str) -> None:
        try:
            reply = self.console.inspect(self.hostname, method,
                                         *INSPECT_ARGUMENTS.get(method, ()))
        except BrokerUnavailable as exc:
            self.app.call_from_thread(self.show_unavailable, method, str(exc))
            return
        self.app.call_from_thread(self.show, method, reply)

    def _tabs_of(self, method: str) -> list[str]:
        return [tab for tab, _ in WORKER_TABS if TAB_METHOD.get(tab, tab) == method]

    def show_unavailable(self, method: str, reason: str) -> None:
        if self.is_mounted:
            for tab in self._tabs_of(method):
                self._note(tab, f"unavailable: {reason}", "red")

    def show(self, method: str, reply: Any) -> None:
        if not self.is_mounted:
            return
        for tab in self._tabs_of(method):
            table = self.query_one(f"#table-{tab}", DataTable)
            table.clear(columns=True)
            if reply is None:
                self._note(tab, f"{self.hostname} did not reply to {method}", "red")
                continue
            if isinstance(reply, Mapping) and set(reply) == {"error"}:
                self._note(tab, f"{self.hostname} answered {method} with an error: "
                           f"{clip(str(reply['error']), 500)}", "red")
                continue
            columns, rows = worker_table(tab, reply)
            table.add_columns(*columns)
            seen: set[str] = set()
            for key, cells in rows[:ROWS_SHOWN]:
                if key in seen:  # a reply may name a task twice; a row key must be unique
                    key = None
                elif key is not None:
                    seen.add(key)
                table.add_row(*format.cells(*cells), key=key)
            more = f", the first {ROWS_SHOWN} shown" if len(rows) > ROWS_SHOWN else ""
            self._note(tab, f"{len(rows)} {'row' if len(rows) == 1 else 'rows'}{more}", "dim")

    def _note(self, tab: str, text: str, style: str) -> None:
        self.query_one(f"#note-{tab}", Static).update(Content.styled(printable(text), style))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        table = event.data_table.id or ""
        task_id = event.row_key.value
        if table.removeprefix("table-") not in TASK_TABS or task_id is None:
            return
        if task_id in self.console.model.tasks:
            self.app.push_screen(TaskDetailScreen(task_id))
        else:
            self.notify(f"Task {task_id} is not in memory (no event about it seen)",
                        severity="warning")


    def action_copy_row(self) -> None:
        """A task row's id, or any other row's values separated by tabs (as a spreadsheet
        pastes them), onto the clipboard."""
        tab = self.query_one("#inspect", TabbedContent).active.removeprefix("tab-")
        table = self.query_one(f"#table-{tab}", DataTable)
        if not table.row_count:
            self.notify("Nothing to copy", severity="warning")
            return
        row = table.cursor_row
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        if tab in TASK_TABS and key is not None:
            copy_id(self, key)
            return
        text = "\t".join(str(cell) for cell in table.get_row_at(row))
        self.app.copy_to_clipboard(text)
        self.notify(f"Copied {text}", title="Clipboard")


Rows = list[tuple[str | None, list[str]]]


def worker_table(tab: str, reply: Any) -> tuple[tuple[str, ...], Rows]:
    """A worker's reply as (columns, rows of (key, cells)): the keys of task rows are task ids.
    A reply of an unexpected shape is shown as key and value, whatever it holds."""
    if tab in ("active", "reserved") and _records(reply):
        return ("ID", "Name", "Args", "Started", "PID"), [
            (_key(t.get("id")), [_cell(t.get("id")), _cell(t.get("name")),
                                 _cell(reprs_only(t.get("args"))),
                                 format.moment(_time(t.get("time_start"))),
                                 _cell(t.get("worker_pid"))])
            for t in reply]
    if tab == "scheduled" and _records(reply):
        rows: Rows = []
        for entry in reply:
            request = entry.get("request")
            request = request if isinstance(request, Mapping) else {}
            rows.append((_key(request.get("id")), [
                _cell(entry.get("eta")), _cell(entry.get("priority")), _cell(request.get("id")),
                _cell(request.get("name")), _cell(reprs_only(request.get("args")))]))
        return ("ETA", "Priority", "ID", "Name", "Args"), rows
    if tab == "revoked" and isinstance(reply, list):
        return ("ID",), [(_key(task_id), [_cell(task_id)]) for task_id in reply]
    if tab == "registered" and isinstance(reply, list):
        return ("Task", "Limits"), [
            (None, [_cell(name).partition(" [")[0],
                    _cell(name).partition(" [")[2].rstrip("]")]) for name in reply]
    if tab == "active_queues" and _records(reply):
        return ("Queue", "Exchange", "Type", "Routing key"), [
            (None, [_cell(q.get("name")), _cell(_field(q.get("exchange"), "name")),
                    _cell(_field(q.get("exchange"), "type")), _cell(q.get("routing_key"))])
            for q in reply]
    if tab == "stats" and isinstance(reply, Mapping):
        reply = {k: v for k, v in reply.items() if k != "pool"}
    if tab == "pool" and isinstance(reply, Mapping):
        reply = reply.get("pool")
    return ("Key", "Value"), [(None, [key, value]) for key, value in _flatten(reply)]


def _records(reply: Any) -> bool:
    return isinstance(reply, list) and all(isinstance(item, Mapping) for item in reply)


def _key(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _field(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, Mapping) else value


def _time(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _cell(value: Any) -> str:
    """One value as a short line: lists of plain values joined, anything nested as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return clip(value, CELL_SHOWN)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return clip(", ".join(map(str, value)), CELL_SHOWN)
    if isinstance(value, (int, float, bool)):
        return str(value)
    return clip(json.dumps(value, sort_keys=True, default=str), CELL_SHOWN)


def _flatten(value: Any, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, str]]:
    """Nested mappings as dotted keys (``pool.max-concurrency``), a few levels deep."""
    if isinstance(value, Mapping) and value and depth < FLATTEN_DEPTH:
        for key in sorted(value, key=str):
            yield from _flatten(value[key], f"{prefix}.{key}" if prefix else str(key), depth + 1)
    else:
        yield prefix, _cell(value)
