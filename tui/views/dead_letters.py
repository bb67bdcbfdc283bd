"""Dead letters (``:dead``): every message workers moved to a ``<queue>.dead`` queue, with the
queue it came from, why, and how often it was delivered; requeue or delete the marked ones (or
the one under the cursor), or every one the filter matches."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.binding import Binding
from textual.widgets import Static

from qtui.core import deadletters as dead
from qtui.core.display import safe_text
from qtui.core.peek import WaitingMessage
from qtui.core.queues import inspector_for

from .. import equivalents, message_actions
from ..query import QueryError, Term, matches, parse
from . import format
from .peek import MessagesView

#: Characters of a reason in the table (the whole reason is below it).
REASON_SHOWN = 60
#: Dead letters the view reads from each queue, from the head (``qtui dead`` reads them all).
SHOWN_PER_QUEUE = 5_000


class DeadLettersScreen(MessagesView):
    TABLE, NOUN = "dead", "dead letter"
    COLUMNS = ("", "From", "Id", "Task", "Reason", "Del.")
    SHORTENED = {"From": 8, "Task": 12, "Reason": 8}
    BINDINGS: ClassVar = [
        *MessagesView.BINDINGS,
        Binding("slash", "filter", "Filter"),
        Binding("R", "requeue", "Requeue"),
        Binding("A", "requeue_all", "Requeue all"),
        Binding("D", "delete", "Delete"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.filter_text = ""
        self.terms: list[Term] = []
        """The parsed :attr:`filter_text` (a bad filter is refused, never kept)."""
        self.shown: dict[str, WaitingMessage] = {}
        """The dead letters the filter matches, by row key (``<dead queue>:<position>``)."""

    def crumb(self) -> str:
        return "Dead letters"

    @work(thread=True, group="dead", exclusive=True, exit_on_error=False)
    def load(self) -> None:
        known = sorted(self.console.model.queues)
        try:
            with inspector_for(self.console.actions.app) as inspector:
                found = {f"{name}:{m.position}": m
                         for name in dead.dead_queues(inspector, known)
                         for m in dead.read(inspector, name, SHOWN_PER_QUEUE)}
        except Exception as exc:  # noqa: BLE001 - the broker refused or is gone: shown
            self.app.call_from_thread(self._show, {}, f"cannot read dead letters: {exc}")
            return
        self.app.call_from_thread(self._show, found, "")

    def _show(self, found: dict[str, WaitingMessage], problem: str) -> None:
        self.messages, self.problem = found, problem
        self.marks.clear()  # rows are keyed by position: see MessagesView
        self.draw_rows()

    def draw_rows(self) -> None:
        self.shown = {k: m for k, m in self.messages.items()
                      if matches(self.terms, m.filter_values())}
        self.fill((key, format.cells(self.mark(key), dead.origin(key.rpartition(":")[0], m),
                                     m.task_id[:8], m.name, (m.reason or "")[:REASON_SHOWN],
                                     str(m.deliveries)))
                  for key, m in self.shown.items())
        queues = {k.rpartition(":")[0] for k in self.messages}
        summary = Text(f"{len(self.messages)} dead letter(s) in {len(queues)} queue(s)")
        if self.cut_queues():
            summary.append(f" (the first {SHOWN_PER_QUEUE} of each: qtui dead for all)")
        if self.filter_text:
            summary.append(f" · {len(self.shown)} match ")
            summary.append_text(safe_text(self.filter_text))
        if self.marks:
            summary.append(f" · {len(self.marks)} marked", style="bold")
        if self.problem:
            summary.append("\n")
            summary.append_text(safe_text(self.problem, "red"))
        self.query_one("#summary", Static).update(summary)
        self.show_message()

    def action_filter(self) -> None:
        def apply(text: str) -> None:
            # Parsed once, here: a bad filter is reported and the current one stays, as in
            # the Tasks and Scheduled views (were it kept and read as "no filter", "requeue
            # all" would take every dead letter while the summary named the filter).
            try:
                terms = parse(text.strip())
            except QueryError as exc:
                self.notify(str(exc), severity="error")
                return
            self.filter_text, self.terms = text.strip(), terms
            self.draw_rows()
        self.ask("Filter dead letters (name:, id:, args:, result: the reason)", apply,
                 value=self.filter_text)

    def cut_queues(self) -> set[str]:
        """The dead-letter queues of which the view read only the first SHOWN_PER_QUEUE."""
        return {queue for queue, _, position in (k.rpartition(":") for k in self.messages)
                if int(position) + 1 >= SHOWN_PER_QUEUE}

    def by_queue(self, keys: list[str]) -> dict[str, list[WaitingMessage]]:
        grouped: dict[str, list[WaitingMessage]] = {}
        for key in keys:
            if key in self.messages:
                grouped.setdefault(key.rpartition(":")[0], []).append(self.messages[key])
        return grouped

    def _chosen_keys(self) -> list[str]:
        return list(self.marks) or [k for k in [self.selected()] if k is not None]

    def action_requeue(self) -> None:
        self._requeue(self._chosen_keys(), everything=False)

    def action_requeue_all(self) -> None:
        self._requeue(list(self.shown), everything=True)

    def _requeue(self, keys: list[str], everything: bool) -> None:
        letters = self.by_queue(keys)
        plan = self.plan("Requeue", "dead letter", [m for ms in letters.values() for m in ms])
        # --all for a queue the view read whole; the ids where it read only the first
        # SHOWN_PER_QUEUE (--all would requeue the letters past them too).
        whole = set(letters) - self.cut_queues() if everything else set()
        command = equivalents.dead_letters(
            "requeue", {q: [m.task_id for m in ms] for q, ms in letters.items()},
            self.filter_text, whole)
        self.confirm_bulk(plan, "Each goes back to the queue it came from, its delivery count "
                          "started again.", command, self.reloading(
                              lambda ids: message_actions.requeue_dead(
                                  self.console.actions.app, letters)))

    def action_delete(self) -> None:
        letters = self.by_queue(self._chosen_keys())
        plan = self.plan("Delete", "dead letter", [m for ms in letters.values() for m in ms])
        command = equivalents.dead_letters(
            "delete", {q: [m.task_id for m in ms] for q, ms in letters.items()})
        self.confirm_bulk(plan, "They are gone for good.", command, self.reloading(
            lambda ids: message_actions.delete_dead(self.console.actions.app, letters)))
