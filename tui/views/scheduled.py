"""Scheduled: every ETA/countdown task not yet due, broker-held and worker-held, soonest first,
with where it waits. Run now, revoke and delete, on the row under the cursor or on the marked
rows. Read by a thread worker every few seconds while shown (:mod:`qtui.core.scheduled`)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.binding import Binding
from textual.widgets import Static

from qtui.core import scheduled as store
from qtui.core.display import UNSHOWN, safe_text
from qtui.core.scheduled import Scheduled, ScheduledTask

from .. import equivalents, query, scheduled_actions
from ..actions import ActionResult
from ..bulk import BulkPlan, Marks, Target
from . import format
from .base import MARK, MarkingView, PolledView, TableView

COLUMNS = ("Due in", "Held by", "Name", "Args", "Queue", "Id", "ETA")
#: Seconds workers have to answer ``inspect scheduled``.
REPLY_TIMEOUT = 1.0


def now() -> float:
    """The clock the view counts down with (tests fix it)."""
    return time.time()


class ScheduledScreen(TableView, MarkingView, PolledView):
    TABLE, COLUMNS, NOUN = "scheduled", COLUMNS, "task"
    SHORTENED = {"Held by": 8, "Name": 12, "Args": 4, "Queue": 6, "Id": 9}
    POLL_INTERVAL = 3.0  # each read asks the workers and the broker
    BINDINGS: ClassVar = [
        Binding("n", "run_now", "Run now"),
        Binding("R", "revoke", "Revoke"),
        Binding("D", "delete", "Delete"),
        Binding("slash", "filter", "Filter"),
        Binding("space", "toggle_mark", "Mark / unmark", show=False),
        Binding("asterisk", "mark_all", "Mark all matching", show=False),
        Binding("u", "clear_marks", "Clear marks", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]
    loaded: Scheduled | None = None
    error = ""
    filter_text = ""

    def __init__(self) -> None:
        super().__init__()
        self.marks = Marks()
        self.terms: list[query.Term] = []

    @work(thread=True, group="scheduled", exclusive=True, exit_on_error=False)
    def load(self) -> None:
        cluster = self.console.cluster
        try:
            found, error = store.read(cluster, list(self.console.model.queues),
                                      timeout=REPLY_TIMEOUT), ""
        except Exception as exc:  # noqa: BLE001 - the broker is unreachable: say so, poll on
            found, error = None, f"cannot read scheduled tasks: {type(exc).__name__}: {exc}"
        self.app.call_from_thread(self.show, found, error)

    def show(self, found: Scheduled | None, error: str = "") -> None:
        if found is not None:
            self.loaded = dataclasses.replace(found, tasks=[self.with_event_reprs(t)
                                                            for t in found.tasks])
        self.error = error
        self.redraw()

    def with_event_reprs(self, task: ScheduledTask) -> ScheduledTask:
        """A task whose worker sent its arguments instead of their reprs (a Celery worker) with
        the reprs its ``task-received`` event carried, where the console saw it: what its
        sender let monitors show, and the mask a copy run now keeps."""
        seen = self.console.model.tasks.get(task.id)
        if task.args != UNSHOWN or seen is None or None in seen.reprs:
            return task
        args, kwargs = seen.reprs
        return dataclasses.replace(task, args=args or "", kwargs=kwargs or "")

    # drawing ------------------------------------------------------------------------------------
    def matching(self) -> list[ScheduledTask]:
        tasks = self.loaded.tasks if self.loaded is not None else []
        return [t for t in tasks if query.matches(self.terms, t.filter_values())]

    def refresh_view(self) -> None:
        summary = self.query_one("#summary", Static)
        if self.loaded is None:
            summary.update(safe_text(self.error or "Asking the workers and the broker…"))
            return
        tasks = self.matching()
        self.marks.keep(t.id for t in self.loaded.tasks)
        clock = now()
        self.fill((task.id, format.cells(
            ((f"{MARK} " if task.id in self.marks else "  ") if self.marks else "")
            + format.time_left(task.due, clock), task.holder, task.name,
            f"{task.args} {task.kwargs}".strip(), task.queue, task.id,
            format.date_time(task.due))) for task in tasks)
        summary.update(self.summary(tasks))

    def summary(self, shown: list[ScheduledTask]) -> Text:
        loaded = self.loaded
        assert loaded is not None
        stored = sum(t.broker_held for t in loaded.tasks)
        text = Text.assemble((f"{len(loaded.tasks)}", "bold"), " scheduled: ",
                             f"{stored} in the broker, {len(loaded.tasks) - stored} in workers")
        # RabbitMQ counts its held tasks but cannot show them without taking them.
        if self.filter_text:
            text.append(f" · {len(shown)} match ")
            text.append_text(safe_text(self.filter_text))
        for queue, count in sorted(loaded.unlisted.items()):
            text.append_text(safe_text(f" · {queue}: +{count} unlisted"))
        if loaded.no_reply:
            text.append_text(safe_text(f" · no reply: {', '.join(loaded.no_reply)}"))
        if self.marks:
            text.append(f" · {len(self.marks)} marked (n R D act on them, u clears)")
        if self.error:
            text.append_text(safe_text(f" · {self.error}"))
        return text

    # selection and marks --------------------------------------------------------------------------
    def chosen(self) -> list[ScheduledTask]:
        """The marked tasks, or the one under the cursor."""
        by_id = {t.id: t for t in (self.loaded.tasks if self.loaded else [])}
        if self.marks:
            return [by_id[i] for i in self.marks if i in by_id]
        key = self.selected()
        return [by_id[key]] if key in by_id else []

    def show_marks(self) -> None:
        self.refresh_view()

    def markable(self) -> Iterable[str]:
        return (t.id for t in self.matching())

    def action_filter(self) -> None:
        self.ask("Filter scheduled tasks (name:… worker:broker args:… or free text)",
                 self.set_filter, "worker:broker", self.filter_text)

    def action_clear_filter(self) -> None:
        if self.filter_text:
            self.set_filter("")

    def set_filter(self, text: str) -> bool:
        try:
            self.terms = query.parse(text)
        except query.QueryError as exc:
            self.notify(str(exc), severity="error")
            return False
        self.filter_text = text
        if self.composed:
            self.refresh_view()
        return True

    # actions ----------------------------------------------------------------------------------
    def action_run_now(self) -> None:
        tasks = self.chosen()
        plan = BulkPlan.of("Run now", "task", map(scheduled_actions.run_now_target, tasks))
        ids = set(plan.ids)
        chosen = [t for t in tasks if t.id in ids]
        held = sum(not t.broker_held for t in chosen)
        consequence = "Each goes to its queue without its ETA and runs at once." + (
            f" {held} held by a worker: revoked there and sent again as a new task (new id)."
            if held else "")
        self._confirm(plan, consequence, scheduled_actions.run_now_command(chosen),
                      lambda: scheduled_actions.run_now(self.console.cluster, chosen,
                                                        self.console.model.alive_workers()))

    def action_revoke(self) -> None:
        tasks = self.chosen()
        plan = BulkPlan.of("Revoke", "task", (Target(t.id, t.name) for t in tasks))
        self._confirm(plan, "They will not run (a broker-held one is dropped when due).",
                      equivalents.revoke(plan.ids),
                      lambda: self.console.actions.revoke(plan.ids,
                                                          self.console.model.alive_workers()))

    def action_delete(self) -> None:
        tasks = self.chosen()
        plan = BulkPlan.of("Delete", "task", map(scheduled_actions.delete_target, tasks))
        ids = set(plan.ids)
        chosen = [t for t in tasks if t.id in ids]
        self._confirm(plan, "They are removed from the broker and will not run.",
                      scheduled_actions.delete_command(chosen),
                      lambda: scheduled_actions.delete(self.console.cluster, chosen))

    def _confirm(self, plan: BulkPlan, consequence: str, command: equivalents.Equivalent | None,
                 act: Callable[[], ActionResult]) -> None:
        """Ask (a bulk plan's sample, the scripted command), then act and read again."""
        if not plan.targets and not plan.skipped:
            return

        def then(ids: list[str]) -> ActionResult:
            outcome = act()
            self.app.call_from_thread(self.marks.clear)
            self.app.call_from_thread(self.load)
            return outcome
        self.confirm_bulk(plan, consequence, command, then)

