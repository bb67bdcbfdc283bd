"""Drill-downs: one task (arguments, result, traceback, timeline) and one worker (its inspect
replies)."""

from __future__ import annotations

import json
from typing import Any

from rich.syntax import Syntax
from rich.table import Table
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Footer, Header, Static, TabbedContent, TabPane

from qtui.core.display import clip, printable
from qtui.core.exceptions import BrokerUnavailable

from ..actions import SIGNALS
from ..rows import TaskEvent, TaskRow
from . import format
from .base import ClusterView

#: Arguments of inspect methods: registered tasks come with the limits that apply to them now.
INSPECT_ARGUMENTS = {"registered": ("rate_limit", "time_limit", "soft_time_limit")}
#: Characters of one inspect reply shown (as JSON): a reply is whatever a worker sent.
REPLY_SHOWN = 100_000
INSPECT_TABS = (
    ("stats", "Stats"), ("active", "Active"), ("reserved", "Reserved"),
    ("scheduled", "Scheduled"), ("revoked", "Revoked"), ("registered", "Registered"),
    ("active_queues", "Queues"), ("conf", "Config"),
)


class TaskDetailScreen(ClusterView):
    BINDINGS = [
        Binding("escape", "app.back", "Back"),
        Binding("R", "revoke", "Revoke"),
        Binding("T", "terminate", "Terminate"),
        Binding("y", "retry", "Retry"),
    ]

    def __init__(self, task_id: str) -> None:
        super().__init__()
        self.task_id = task_id
        self.full_arguments: tuple[list[Any], dict[str, Any]] | None = None
        """The complete args and kwargs, once a worker or the result backend gave them."""

    def on_mount(self) -> None:
        self.load_arguments()

    @work(thread=True, group="arguments")
    def load_arguments(self) -> None:
        found = self.console.feed.full_arguments(self.task_id)
        if found is not None:
            self.app.call_from_thread(self._show_arguments, found)

    def _show_arguments(self, found: tuple[list[Any], dict[str, Any]]) -> None:
        self.full_arguments = found
        if self.is_mounted:
            self.refresh_view()

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="detail"):
            yield Static(id="fields")
            yield Static(id="arguments")
            yield Static(id="outcome")
            yield Static(id="timeline")
            yield Static(id="traceback")
        yield Footer()

    def refresh_view(self) -> None:
        task = self.console.model.tasks.get(self.task_id)
        if task is None:
            self.query_one("#fields", Static).update(
                Content(printable(f"Task {self.task_id} is no longer in memory.")))
            return
        fields = Table.grid(padding=(0, 2))
        fields.add_column(style="bold")
        fields.add_column()
        for label, value in (("ID", task.id), ("Name", task.name),
                             ("State", format.state(task.state)),
                             ("Worker", task.worker), ("Retries", str(task.retries)),
                             ("ETA", task.eta), ("Received", format.clock(task.received)),
                             ("Started", format.clock(task.started)),
                             ("Runtime", format.duration(task.runtime))):
            fields.add_row(*format.cells(label, value))
        self.query_one("#fields", Static).update(fields)
        if self.full_arguments is not None:
            args, kwargs = self.full_arguments
            limit = self.console.cluster.conf.console_max_field
            arguments = Content.assemble(
                ("args", "bold"), "   ", printable(clip(repr(tuple(args)), limit)), "\n",
                ("kwargs", "bold"), " ", printable(clip(repr(kwargs), limit)), "\n",
                ("(complete, from the worker that received it)", "dim"))
        else:
            arguments = Content.assemble(
                ("args", "bold"), "   ", printable(task.args or "()"), "\n",
                ("kwargs", "bold"), " ", printable(task.kwargs or "{}"))
        self.query_one("#arguments", Static).update(arguments)
        outcome = Content()
        if task.result:
            outcome += Content.assemble(("result", "bold"), " ", printable(task.result), "\n")
        if task.exception:
            outcome += Content.assemble(("exception", "bold red"), " ",
                                        printable(task.exception), "\n")
        self.query_one("#outcome", Static).update(outcome)
        self.query_one("#traceback", Static).update(
            Syntax(printable(task.traceback, multiline=True), "pytb", word_wrap=True)
            if task.traceback else "")
        timeline = Table("time", "event", "worker", "detail", title="Timeline", expand=True)
        for step in map(TaskEvent._make, task.timeline):
            timeline.add_row(*format.cells(format.clock(step.timestamp), step.type,
                                           step.hostname, step.detail))
        self.query_one("#timeline", Static).update(timeline)

    def current_task(self) -> TaskRow | None:
        """The task shown, as the model has it now (says so when it is gone). Not ``_task``:
        Textual's message pump keeps its asyncio task under that name."""
        task = self.console.model.tasks.get(self.task_id)
        if task is None:
            self.notify("Task is no longer in memory", severity="warning")
        return task

    def action_revoke(self) -> None:
        if (task := self.current_task()) and self.stoppable(task, "revoke"):
            self.confirm(f"Revoke {task.name} [{task.id}]?", lambda: self.perform(
                lambda: self.console.actions.revoke(task.id, self.console.model.alive_workers())))

    def action_terminate(self) -> None:
        if (task := self.current_task()) and self.stoppable(task, "terminate"):
            def chosen(signal: str) -> None:
                self.confirm(f"Terminate {task.name} [{task.id}] with {signal}?",
                             lambda: self.perform(lambda: self.console.actions.terminate(
                                 task.id, signal, self.console.model.alive_workers())))
            self.choose(f"Signal to terminate {task.name} [{task.id}] with", list(SIGNALS),
                        chosen)

    def action_retry(self) -> None:
        if task := self.current_task():
            self.console.retry_task(task)


class WorkerDetailScreen(ClusterView):
    BINDINGS = [Binding("escape", "app.back", "Back"), Binding("f5,ctrl+r", "reload", "Reload")]

    def __init__(self, hostname: str) -> None:
        super().__init__()
        self.hostname = hostname

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Content.styled(printable(self.hostname), "bold"), classes="summary")
        with TabbedContent(id="inspect"):
            for method, title in INSPECT_TABS:
                with TabPane(title, id=f"tab-{method}"):
                    with VerticalScroll():
                        yield Static("loading…", id=f"body-{method}")
        yield Footer()

    def on_mount(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        for method, _ in INSPECT_TABS:
            self.query_one(f"#body-{method}", Static).update("loading…")
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

    def show_unavailable(self, method: str, reason: str) -> None:
        if self.is_mounted:
            self.query_one(f"#body-{method}", Static).update(
                Content.styled(printable(f"unavailable: {reason}"), "red"))

    def show(self, method: str, reply: Any) -> None:
        if not self.is_mounted:
            return
        body = self.query_one(f"#body-{method}", Static)
        if reply is None:
            body.update(Content.styled(printable(f"{self.hostname} did not reply to {method}"),
                                       "red"))
            return
        # JSON escapes every control character (\u001b); the size is the sender's choice.
        text = clip(json.dumps(reply, indent=2, sort_keys=True, default=str), REPLY_SHOWN)
        body.update(Syntax(text, "json", word_wrap=True))
