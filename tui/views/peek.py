"""Peek (Enter on a queue): the messages waiting in one queue from its head, a page at a time,
with a count by task name over the first 10,000 and the message under the cursor in full;
delete or move the marked messages (or the one under the cursor). The first line says what the
broker does to show them (on RabbitMQ each message read is taken and requeued)."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from qtui.core.display import safe_text
from qtui.core.peek import PAGE, Summary, WaitingMessage
from qtui.core.queues import inspector_for

from .. import equivalents, message_actions
from ..actions import ActionResult
from ..bulk import BulkPlan, Marks, Target
from . import format
from .base import MARK, MarkingView, TableView
from .keybar import KeyBar

#: Actions on messages need the permission to discard them (``purge``).


class MessagesView(TableView, MarkingView):
    """A table of messages read from the broker (not from the event model), with marks, the
    message under the cursor in full below it, and a reload after each action.

    Rows are keyed by position from the head, so a reload clears the marks: once workers took
    from the head, a kept mark would point at another message."""

    BINDINGS: ClassVar = [
        Binding("escape", "app.back", "Back"),
        Binding("r", "reload", "Reload"),
        Binding("space", "toggle_mark", "Mark", show=False),
        Binding("u", "clear_marks", "Clear marks", show=False),
    ]
    messages: dict[str, WaitingMessage]
    WHOLE_LINE = False  # the message under the cursor is shown in full below the table

    def __init__(self) -> None:
        super().__init__()
        self.messages = {}
        self.marks = Marks()
        self.problem = ""

    def compose(self) -> ComposeResult:
        for widget in super().compose():  # the message in full between the table and the keys
            if isinstance(widget, KeyBar):
                yield Static("", id="message")
            yield widget

    def on_mount(self) -> None:
        super().on_mount()
        self.action_reload()

    def action_reload(self) -> None:
        self.load()

    def load(self) -> object:
        """Read the messages again (a thread worker: the broker may be slow)."""
        raise NotImplementedError

    def chosen(self) -> list[WaitingMessage]:
        """The marked messages, else the one under the cursor."""
        keys = list(self.marks) or [k for k in [self.selected()] if k is not None]
        return [self.messages[k] for k in keys if k in self.messages]

    def reloading(self, act: Callable[[list[str]], ActionResult]
                  ) -> Callable[[list[str]], ActionResult]:
        """``act``, then read the messages again (they changed)."""
        def then(ids: list[str]) -> ActionResult:
            outcome = act(ids)
            self.app.call_from_thread(self._after_action)
            return outcome
        return then

    def _after_action(self) -> None:
        self.marks.clear()
        self.action_reload()

    def show_marks(self) -> None:
        self.draw_rows()

    def mark(self, key: str) -> Text:
        return Text(MARK if key in self.marks else " ", style="bold yellow")

    def draw_rows(self) -> None:
        """Fill the table from :attr:`messages` (keeping the cursor's row)."""

    def on_data_table_row_highlighted(self) -> None:
        self.show_message()

    def show_message(self) -> None:
        """The message under the cursor in full: headers, args and kwargs, as data."""
        key = self.cursor_key()
        message = self.messages.get(key) if key is not None else None
        self.query_one("#message", Static).update(
            Text("") if message is None else describe(message))

    def plan(self, verb: str, noun: str, messages: list[WaitingMessage]) -> BulkPlan:
        return BulkPlan.of(verb, noun, [Target(m.task_id, m.name) for m in messages])


def describe(message: WaitingMessage) -> Text:
    """A message in a few lines: what it runs with, when, and where it was."""
    task = message.task
    text = Text.assemble(("id ", "bold"), safe_text(message.task_id or "(none)"), "  ",
                         ("task ", "bold"), safe_text(message.name or "(not a task)"))
    if message.reason is not None:
        text.append("\nreason ", style="bold")
        text.append_text(safe_text(message.reason))
        text.append(f"  deliveries {message.deliveries}  from ")
        text.append_text(safe_text(message.origin_queue or "(unknown)"))
    if task is None:
        text.append("\nunreadable ", style="bold")
        text.append_text(safe_text(message.problem or ""))
        return text
    args, kwargs = message.shown_arguments
    text.append("\nargs ", style="bold")
    text.append_text(safe_text(args))
    text.append("  ")
    text.append("kwargs ", style="bold")
    text.append_text(safe_text(kwargs))
    facts = [f"retries {task.retries}",
             f"eta {task.eta.isoformat(timespec='seconds') if task.eta else '-'}",
             f"published {format.moment(message.published_at) or 'unknown'}"]
    text.append("\n" + "  ".join(facts))
    if task.headers:
        text.append("\nheaders ", style="bold")
        text.append_text(safe_text(repr(task.headers)))
    return text


class PeekScreen(MessagesView):
    TABLE, NOUN = "peek", "message"
    COLUMNS = ("", "#", "Id", "Task", "Args", "ETA", "Retries")
    SHORTENED = {"Task": 12, "Args": 6}
    BINDINGS: ClassVar = [
        *MessagesView.BINDINGS,
        Binding("right_square_bracket", "page(1)", "Next page"),
        Binding("left_square_bracket", "page(-1)", "Prev page", show=False),
        Binding("D", "delete", "Delete"),
        Binding("m", "move", "Move"),
    ]

    def __init__(self, queue: str) -> None:
        super().__init__()
        self.queue = queue
        self.start = 0
        self.method = ""
        self.summary: Summary | None = None

    def crumb(self) -> str:
        return f"Peek {self.queue}"

    @work(thread=True, group="peek", exclusive=True, exit_on_error=False)
    def load(self) -> None:
        try:
            with inspector_for(self.console.actions.app) as inspector:
                page = inspector.peek(self.queue, self.start, PAGE)
                summary = inspector.summary(self.queue) if self.summary is None else self.summary
        except Exception as exc:  # noqa: BLE001 - the broker refused or is gone: shown
            self.app.call_from_thread(self._show, [], None, "", f"cannot peek: {exc}")
            return
        self.app.call_from_thread(self._show, page.messages, summary, page.method, "")

    def _show(self, messages: list[WaitingMessage], summary: Summary | None, method: str,
              problem: str) -> None:
        self.messages = {str(m.position): m for m in messages}
        self.summary, self.method, self.problem = summary, method, problem
        self.marks.clear()  # rows are keyed by position: see MessagesView
        self.draw_rows()

    def draw_rows(self) -> None:
        rows = []
        for key, m in self.messages.items():
            task = m.task
            args = " ".join(m.shown_arguments) if task is not None else ""
            eta = task.eta.isoformat(timespec="seconds") if task and task.eta else ""
            rows.append((key, format.cells(self.mark(key), key, m.task_id[:8], m.name,
                                           args[:60], eta,
                                           "" if task is None else str(task.retries))))
        self.fill(rows)
        last = self.start + len(self.messages)
        # A long queue name is cut, so that the line of what the broker did stays on screen.
        summary = Text.assemble(
            format.cut(safe_text(self.queue, "bold"), max(20, self.app.size.width - 45)),
            f"  · messages {self.start + 1 if self.messages else 0}-{last}"
            f" from the head ([ ] pages)", f" · {len(self.marks)} marked" if self.marks else "")
        if self.summary is not None:
            summary.append("\n")
            summary.append_text(safe_text(self.summary.words()))
        summary.append("\n")
        summary.append_text(safe_text(self.problem or f"How: {self.method}", "dim"))
        self.query_one("#summary", Static).update(summary)
        self.show_message()

    def action_page(self, step: int) -> None:
        start = max(0, self.start + step * PAGE)
        if step > 0 and len(self.messages) < PAGE:
            return  # the last page
        self.start = start
        self.marks.clear()
        self.action_reload()

    def action_delete(self) -> None:
        messages = self.chosen()
        plan = self.plan("Delete", "message", messages)
        self.confirm_bulk(plan, f"They leave {self.queue} for good.",
                          equivalents.peek_delete(self.queue, plan.ids),
                          self.reloading(lambda ids: message_actions.delete(
                              self.console.actions.app, self.queue, messages)))

    def action_move(self) -> None:
        messages = self.chosen()
        if not messages:
            return
        others = sorted(q for q in self.console.model.queues if q != self.queue)
        if not others:
            self.notify("No other queue is known to move to", severity="warning")
            return

        def to(queue: str) -> None:
            plan = self.plan(f"Move to {queue}", "message", messages)
            self.confirm_bulk(plan, f"They go to the back of {queue}.",
                              equivalents.peek_move(self.queue, queue, plan.ids),
                              self.reloading(lambda ids: message_actions.move(
                                  self.console.actions.app, self.queue, messages, queue)))
        self.choose(f"Move {len(messages)} message(s) from {self.queue} to", others, to)
