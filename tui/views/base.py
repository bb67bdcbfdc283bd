"""What every cluster view shares: refreshing from the console model, and asking for actions."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Static

from .. import equivalents
from ..actions import SIGNALS, not_stoppable
from ..bulk import BulkPlan, Marks, Target
from . import format
from .alert_badge import AlertBadge
from .keybar import KeyBar
from .text_table import TextTable

if TYPE_CHECKING:
    from ..actions import ActionResult
    from ..console import Console
    from ..equivalents import Equivalent
    from ..rows import TaskRow

#: Every view's actions that change the cluster, with the console permissions each needs (as
#: ``console_permissions`` names them); hidden and refused without them, and all in --read-only
#: mode. One table for all views, so an action name means one thing whichever view has it.
PERMISSIONS_OF: dict[str, tuple[str, ...]] = {
    "revoke": ("revoke",), "terminate": ("terminate",), "retry": ("retry",),
    "rate_limit": ("rate_limit",), "time_limit": ("time_limit",), "grow": ("pool_grow",),
    "shrink": ("pool_shrink",), "add_consumer": ("add_consumer",),
    "cancel_consumer": ("cancel_consumer",), "purge": ("purge",), "shutdown": ("shutdown",),
    "pause_queue": ("pause",),
    # Peeked messages and dead letters: deleting, moving and requeueing empty a queue as a purge.
    "delete": ("purge",), "move": ("purge",), "requeue": ("purge",), "requeue_all": ("purge",),
    # The Scheduled view's run now revokes a worker-held task and sends it again.
    "run_now": ("revoke", "retry"),
    # The Schedules view: pausing an entry is a pause; running it now sends a new task.
    "pause_schedule": ("pause",), "resume_schedule": ("pause",), "run_schedule": ("retry",),
}


#: Seconds after a key during which snapshots do not redraw the view.
INPUT_QUIET = 0.3
#: Longest (s) keys hold back a redraw: under a held arrow key (auto-repeat, ~30 keys a second)
#: the data still moves.
INPUT_HOLD_MAX = 1.5


class ClusterView(Screen[None]):
    """A full-screen view of one part of the cluster."""

    # k9s's (and vi's) moves, for whichever table has the focus.
    BINDINGS = [
        Binding("j", "table('cursor_down')", "Down", show=False),
        Binding("k", "table('cursor_up')", "Up", show=False),
        Binding("g", "table('scroll_top')", "First row", show=False),
        Binding("G", "table('scroll_bottom')", "Last row", show=False),
    ]

    @property
    def console(self) -> Console:
        return self.app  # type: ignore[return-value]

    composed = False
    """Set once the view's widgets exist: a snapshot may arrive before that."""
    min_interval = 0.0
    """Seconds between redraws caused by snapshots: a view that is costly to draw skips some
    under a flood of events (the last one is always drawn), so keys stay responsive."""
    _last_redraw = 0.0
    _pending: Timer | None = None
    _held_since: float | None = None
    """When keys first held back the redraw still to come (None: none is held)."""
    drawn_version = -1
    """The model version this view last drew (see :attr:`ConsoleModel.version`)."""

    def refresh_view(self) -> None:
        """Redraw from ``self.console.model``; called after each snapshot while visible."""

    def crumb(self) -> str:
        """This view's part of the breadcrumbs in the header line (``Tasks``)."""
        name = type(self).__name__.removesuffix("Screen")
        return "".join(f" {c.lower()}" if c.isupper() and i else c
                       for i, c in enumerate(name))

    def show_crumbs(self) -> None:
        """Write ``qtui › Tasks › state:FAILURE › a task`` in the header: each view on the way
        here, from the view of the mode to this one."""
        stack = self.app.screen_stack
        below = stack[:stack.index(self)] if self in stack else []
        crumbs = [s.crumb() for s in below if isinstance(s, ClusterView)] + [self.crumb()]
        self.title = " › ".join([self.app.title, *crumbs])

    def action_table(self, action: str) -> None:
        table = self.focused if isinstance(self.focused, DataTable) else None
        if table is None:
            tables = self.query(DataTable)
            table = tables.first() if tables else None
        if table is not None:
            getattr(table, f"action_{action}")()

    def redraw(self) -> None:
        if not self.composed:
            return
        now = time.monotonic()
        # Keys come first: no redraw while the user is typing or moving (the table also stays
        # still under the cursor) unless keys held it for INPUT_HOLD_MAX, and none more often
        # than the view can afford.
        quiet = self.console.last_input + INPUT_QUIET
        if self._held_since is not None and now - self._held_since >= INPUT_HOLD_MAX:
            quiet = now
        wait = max(self._last_redraw + self.min_interval, quiet) - now
        if wait > 0:
            if self._held_since is None and quiet > now:
                self._held_since = now
            if self._pending is None:
                self._pending = self.set_timer(wait, self._redraw_when_quiet)
            return
        self._redraw_now()

    def _redraw_when_quiet(self) -> None:
        """The held-back redraw, unless a key came since it was held: then it waits again, so
        that it lands within INPUT_QUIET of a key only once keys held it for INPUT_HOLD_MAX (a
        redraw of the tasks table takes tens of milliseconds, which the repaint of that key
        would wait for)."""
        self._pending = None
        self.redraw()

    def _redraw_now(self) -> None:
        if self._pending is not None:
            self._pending.stop()
        self._pending = None
        self._held_since = None
        self._last_redraw = time.monotonic()
        self.drawn_version = self.console.model.version
        self.refresh_view()
        self.show_crumbs()
        self.show_alerts()

    def show_alerts(self) -> None:
        """The firing alerts in the header (a badge mounted there by :meth:`on_mount`)."""
        for badge in self.query(AlertBadge):
            badge.show(self.console.model.alerts)

    def on_mount(self) -> None:
        for header in self.query(Header):
            header.mount(AlertBadge())
        for footer in self.query(Footer):  # the most keys in 80 columns; ctrl+p is in the help
            footer.compact, footer.show_command_palette = True, False
        self.composed = True
        self.drawn_version = self.console.model.version
        self.refresh_view()
        self.show_crumbs()
        self.call_after_refresh(self.show_alerts)

    def on_screen_resume(self) -> None:
        self.show_crumbs()
        self.show_alerts()
        if self.composed and self.drawn_version != self.console.model.version:
            # A view coming back shows what it showed when it left, maybe minutes ago: draw
            # the current data in the same frame as the switch. The quiet time after a key is
            # for keys within a view (the row under the cursor stays still), not for this one.
            self._redraw_now()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return all(map(self.console.allows, PERMISSIONS_OF.get(action, ())))

    def perform(self, call: Callable[[], ActionResult]) -> None:
        self.console.perform(call)

    def stoppable(self, task: TaskRow, verb: str) -> bool:
        """Whether ``task`` can still be revoked or terminated; says at once why not when it
        cannot, instead of asking and sending a command no worker would act on."""
        reason = not_stoppable(task.state)
        if reason is not None:
            self.notify(f"Cannot {verb} {task.name or '(unknown)'} [{task.id}]: {reason}.",
                        severity="warning")
        return reason is None

    def terminate_task(self, task: TaskRow) -> None:
        """Terminate ``task`` with the signal the operator picks, once they said yes."""
        if self.stoppable(task, "terminate"):
            def chosen(signal: str) -> None:
                self.confirm(f"Terminate {task.name} [{task.id}] with {signal}?",
                             lambda: self.perform(lambda: self.console.actions.terminate(
                                 [task.id], signal, self.console.model.alive_workers())),
                             equivalents.terminate([task.id], signal))
            self.choose(f"Signal to terminate {task.name} [{task.id}] with", list(SIGNALS),
                        chosen)

    def revoke_task(self, task: TaskRow, consequence: str = "") -> None:
        """Revoke ``task`` once the operator said yes."""
        if self.stoppable(task, "revoke"):
            self.confirm(f"Revoke {task.name} [{task.id}]? {consequence}".rstrip(),
                         lambda: self.perform(lambda: self.console.actions.revoke(
                             [task.id], self.console.model.alive_workers())),
                         equivalents.revoke([task.id]))

    def confirm_bulk(self, plan: BulkPlan, consequence: str, command: Equivalent | None,
                     act: Callable[[list[str]], ActionResult]) -> None:
        """Ask before acting on the plan's targets (the count, a sample, what is skipped and
        why, the scripted command; the count typed above 100 items), then ``act`` on all of
        them at once. Says at once when nothing is left to act on."""
        if not plan.targets:
            self.notify(plan.nothing_left(), severity="warning")
            return
        ids = plan.ids
        self.confirm(plan.question(consequence), lambda: self.perform(lambda: act(ids)),
                     command, details=plan.details(), typed=plan.typed)

    def revoke_tasks(self, tasks: list[TaskRow]) -> None:
        """Revoke several tasks in one broadcast (finished ones skipped, and said so)."""
        plan = BulkPlan.of("Revoke", "task", map(stop_target, tasks))
        self.confirm_bulk(plan, "They will not run.", equivalents.revoke(plan.ids),
                          lambda ids: self.console.actions.revoke(
                              ids, self.console.model.alive_workers()))

    def terminate_tasks(self, tasks: list[TaskRow]) -> None:
        """Terminate several tasks with the signal the operator picks, in one broadcast."""
        def chosen(signal: str) -> None:
            plan = BulkPlan.of(f"Terminate ({signal})", "task", map(stop_target, tasks))
            self.confirm_bulk(plan, "", equivalents.terminate(plan.ids, signal),
                              lambda ids: self.console.actions.terminate(
                                  ids, signal, self.console.model.alive_workers()))
        self.choose(f"Signal to terminate {len(tasks)} marked tasks with", list(SIGNALS),
                    chosen)

    def consumers_of(self, queue: str) -> list[str]:
        """The workers online that consume ``queue``, as their last poll said."""
        model = self.console.model
        return [w for w in model.workers_consuming(queue) if model.workers[w].alive]

    def stop_consuming(self, queue: str, destination: list[str] | None) -> None:
        """Cancel consumers of ``queue`` (on every worker when ``destination`` is None), asking
        first when that leaves the queue with no consumer: its messages would wait unseen."""
        model = self.console.model
        consumers = set(self.consumers_of(queue))
        stopping = consumers if destination is None else consumers & set(destination)
        row = model.queues.get(queue)
        counted = row.consumers if row is not None and row.consumers is not None else 0
        last = destination is None or max(counted, len(consumers)) <= len(stopping)

        def cancel() -> None:
            self.perform(lambda: self.console.actions.cancel_consumer(
                queue, destination, model.alive_workers()))
        if not last:
            cancel()
            return
        who = "every worker" if destination is None else destination[0]
        self.confirm(f"Stop {who} consuming {queue}? {queue} will then have no consumer: its "
                     "messages wait until a worker consumes it again.", cancel,
                     equivalents.cancel_consumer(queue, destination))

    def confirm(self, question: str, then: Callable[[], Any], command: Equivalent | None,
                details: str = "", typed: str | None = None) -> None:
        """Ask ``question``, showing the scripted ``command`` that does the same (None only
        where there is none); ``then`` once the operator said yes."""
        from .modals import ConfirmScreen

        def answered(yes: bool | None) -> None:
            if yes:
                then()
        self.app.push_screen(ConfirmScreen(question, command, details, typed), answered)

    def ask(self, question: str, then: Callable[[str], Any], placeholder: str = "",
            value: str = "") -> None:
        from .modals import PromptScreen

        def answered(text: str | None) -> None:
            if text:
                then(text)
        self.app.push_screen(PromptScreen(question, placeholder, value), answered)

    def choose(self, question: str, choices: list[str], then: Callable[[str], Any]) -> None:
        from .modals import ChoiceScreen

        def answered(choice: str | None) -> None:
            if choice:
                then(choice)
        self.app.push_screen(ChoiceScreen(question, choices), answered)


#: How a row marked for a bulk action shows, in every view that marks rows.
MARK = "✓"


class MarkingView(ClusterView):
    """A view whose rows can be marked for a bulk action (as k9s): space marks or unmarks the
    row under the cursor and moves down, ``*`` marks every row the filter lets through, ``u``
    clears. The view has one table; it says how to redraw the marks and what ``*`` marks."""

    marks: Marks
    MARKED_NOUN: ClassVar[str] = "task"

    def show_marks(self) -> None:
        """Redraw the rows' marks and the line that counts them."""
        raise NotImplementedError

    def markable(self) -> Iterable[str]:
        """The row keys ``*`` marks: every row the filter lets through, on every page."""
        raise NotImplementedError

    def action_toggle_mark(self) -> None:
        table = self.query_one(DataTable)
        if table.row_count:
            self.marks.toggle(str(table.coordinate_to_cell_key(
                table.cursor_coordinate).row_key.value))
            self.show_marks()
            table.action_cursor_down()

    def action_mark_all(self) -> None:
        added = self.marks.add(self.markable())
        self.show_marks()
        self.notify(f"{len(self.marks)} {self.MARKED_NOUN}(s) marked ({added} new)",
                    title="Marks")

    def action_clear_marks(self) -> None:
        if self.marks:
            self.marks.clear()
            self.show_marks()


class PolledView(ClusterView):
    """A view that reads what it shows itself, in a thread worker (``load``), instead of from
    the feed: when it is first shown and each time it comes back, then every
    ``POLL_INTERVAL`` seconds while it is the current screen (another view does not need it)."""

    POLL_INTERVAL: ClassVar[float]
    load: Callable[[], object]
    """Reads and shows the view's data (a ``@work(thread=True)`` method of the view)."""

    def on_mount(self) -> None:
        super().on_mount()
        self.load()
        self.set_interval(self.POLL_INTERVAL, self._poll)

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self.load()

    def _poll(self) -> None:
        if self.is_current:
            self.load()


class TableView(ClusterView):
    """A view that is one table (one row per ``NOUN``) under a summary line."""

    TABLE: ClassVar[str]
    COLUMNS: ClassVar[tuple[str, ...]]
    NOUN: ClassVar[str]
    SHORTENED: ClassVar[dict[str, int]] = {}
    """Columns :meth:`fill` cuts with "…" so that every column fits the terminal (column: the
    fewest cells it keeps)."""
    WHOLE_LINE: ClassVar[bool] = True
    """Whether a line below the table shows the cut cells of the row under the cursor whole
    (views that show that row in full elsewhere leave it out)."""
    whole: dict[str, list[Text]] = {}
    """The cells :meth:`fill` was given, uncut, by row key."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="summary", classes="summary")
        table: DataTable[object] = TextTable(id=self.TABLE, cursor_type="row", zebra_stripes=True)
        for column in self.COLUMNS:
            table.add_column(column, key=column)
        yield table
        if self.SHORTENED and self.WHOLE_LINE:
            yield Static("", id="whole", classes="summary")
        yield KeyBar()

    def fill(self, rows: Iterable[tuple[str, list[Text]]]) -> None:
        """Replace the table's rows (key, cells), the SHORTENED columns cut to fit the
        terminal; the cursor stays on its row while that row is still there."""
        table = self.table
        current = self.cursor_key()
        table.clear()
        self.whole = dict(rows)
        least = {self.COLUMNS.index(column): n for column, n in self.SHORTENED.items()}
        room = self.app.size.width - table.styles.scrollbar_size_vertical
        fitted = format.fit(list(self.whole.values()), self.COLUMNS, least, room,
                            table.cell_padding)
        for key, cells in zip(self.whole, fitted, strict=True):
            table.add_row(*cells, key=key)
        if current in self.whole:
            table.move_cursor(row=table.get_row_index(current))
        self.show_whole()

    def show_whole(self) -> None:
        """The cut cells of the row under the cursor, whole (``Queue: <its full name>``)."""
        lines = self.query("#whole")
        if not lines:
            return
        key = self.cursor_key()
        text = Text()
        if key is not None and key in self.whole:
            whole, row = self.whole[key], self.table.get_row(key)
            for index, (cell, shown) in enumerate(zip(whole, row, strict=True)):
                if isinstance(shown, Text) and cell.cell_len > shown.cell_len:
                    text.append(f"{' · ' if text else ''}{self.COLUMNS[index]}: ", "bold")
                    text.append_text(cell)
        lines.first(Static).update(text)

    @on(DataTable.RowHighlighted)
    def _show_whole_under_cursor(self) -> None:
        self.show_whole()

    def on_resize(self) -> None:
        if self.composed:
            self._redraw_now()

    @property
    def table(self) -> DataTable[object]:
        return self.query_one(f"#{self.TABLE}", DataTable)

    def cursor_key(self) -> str | None:
        """The key of the row under the cursor, if any."""
        table = self.table
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def selected(self) -> str | None:
        """The row an action applies to; says so when there is none."""
        key = self.cursor_key()
        if key is None:
            self.notify(f"No {self.NOUN} selected", severity="warning")
        return key


def stop_target(task: TaskRow) -> Target:
    """A task as the target of a revoke or terminate: refused once it has finished."""
    refusal = f"finished as {task.state}" if not_stoppable(task.state) else None
    return Target(task.id, task.name, refusal)


def mark_sorted(table: DataTable[object], column: str, reverse: bool) -> None:
    """Put the sort arrow (▼ descending, ▲ ascending) in the sorted column's header, and only
    there. Column keys are the column names; headers keep two cells for the arrow, so columns
    do not change width when the sort moves."""
    changed = False
    for key, col in table.columns.items():
        name = str(key.value)
        label = f"{name} {'▼' if reverse else '▲'}" if name == column else f"{name}  "
        if col.label.plain != label:
            col.label = Text(label)
            changed = True
    if changed:
        # DataTable has no public way to relabel a column, and its render cache holds the old
        # header row.
        table._clear_caches()
        table.refresh()
