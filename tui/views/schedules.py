"""Schedules: the periodic tasks of ``beat_schedule`` with their schedule in words, next and last
run (and that run's state from the events), pauses, and the beat processes leading or standing
by. Read from the beat's store (:mod:`qtui.core.beat`) by a thread worker every few seconds."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from qtui.core import App
from qtui.core.beat.service import run_now
from qtui.core.beat.status import ScheduleStatus, find_entry, status
from qtui.core.beat.store import BeatStore, Run, store_for
from qtui.core.display import safe_text
from qtui.core.exceptions import QtuiError

from .. import equivalents
from ..actions import ActionResult
from ..rows import TaskRow
from . import format
from .base import PolledView, TableView

COLUMNS = ("Entry", "Task", "Schedule", "Next run", "Last run", "Last task id", "State")
RUNS_SHOWN = 10


@dataclass(frozen=True)
class Loaded:
    """One read of the store: the status, each entry's recent runs, or why it failed."""

    status: ScheduleStatus | None
    runs: dict[str, list[Run]]
    error: str = ""


def _clock(stamp: float | None) -> str:
    if not stamp:
        return "-"
    return datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


class SchedulesScreen(TableView, PolledView):
    TABLE, COLUMNS, NOUN = "schedules", COLUMNS, "entry"
    POLL_INTERVAL = 2.0  # reads of the beat's store
    BINDINGS: ClassVar = [
        Binding("enter", "runs", "Recent runs"),
        Binding("p", "pause_schedule", "Pause"),
        Binding("r", "resume_schedule", "Resume"),
        Binding("n", "run_schedule", "Run now"),
    ]
    loaded: Loaded | None = None
    _store: tuple[App, BeatStore] | None = None
    """The store of the cluster last read (a context switch changes the cluster)."""

    @work(thread=True, group="schedules", exclusive=True, exit_on_error=False)
    def load(self) -> None:
        cluster = self.console.cluster
        try:
            store = self._store_of(cluster)
            found = status(cluster, store)
            runs = {item.entry.name: store.runs(item.entry.name, RUNS_SHOWN)
                    for item in found.entries}
            loaded = Loaded(found, runs)
        except QtuiError as exc:
            loaded = Loaded(None, {}, str(exc))
        except Exception as exc:  # noqa: BLE001 - the store is unreachable: say so, poll on
            loaded = Loaded(None, {}, f"cannot read the schedule: {type(exc).__name__}: {exc}")
        self.app.call_from_thread(self.show, loaded)

    def _store_of(self, cluster: App) -> BeatStore:
        if self._store is None or self._store[0] is not cluster:
            if self._store is not None:
                self._store[1].close()
            self._store = (cluster, store_for(cluster))
        return self._store[1]

    def show(self, loaded: Loaded) -> None:
        self.loaded = loaded
        self.redraw()

    def refresh_view(self) -> None:
        summary = self.query_one("#summary", Static)
        loaded = self.loaded
        if loaded is None:
            summary.update("Reading the schedule…")
            return
        if loaded.status is None:
            summary.update(safe_text(loaded.error))
            return
        table, current = self.table, self.cursor_key()
        table.clear()
        tasks = self.console.model.tasks
        for item in loaded.status.entries:
            last = item.last_run
            task = tasks.get(last.task_id) if last else None
            table.add_row(*format.cells(
                item.entry.name, item.entry.task, item.words,
                "paused" if item.paused else _clock(item.next_run),
                _clock(last.sent) if last else "-", last.task_id if last else "-",
                format.state(task.state) if task else "-"), key=item.entry.name)
        names = [item.entry.name for item in loaded.status.entries]
        if current in names:
            table.move_cursor(row=names.index(current))
        checked = loaded.status.checked
        beats = ", ".join(f"{n.name} {'leader' if n.leader else 'standby'} "
                          f"({checked - n.seen:.1f}s ago)" for n in loaded.status.beats)
        summary.update(safe_text(f"{len(names)} periodic task(s) · beat: "
                                 f"{beats or 'none running (start one with `qtui beat`)'}"))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_runs()

    def action_runs(self) -> None:
        if (name := self.selected()) and self.loaded is not None:
            self.app.push_screen(RunsScreen(name, self.loaded.runs.get(name, []),
                                            self.console.model.tasks))

    def action_pause_schedule(self) -> None:
        self._steer("Pause", "pause", lambda store, name: store.set_paused(name, True))

    def action_resume_schedule(self) -> None:
        self._steer("Resume", "resume", lambda store, name: store.set_paused(name, False))

    def action_run_schedule(self) -> None:
        app = self.console.cluster
        self._steer("Run now", "run", lambda store, name: run_now(
            app, store, find_entry(app, name), by="qtui console").task_id)

    def _steer(self, verb: str, command: str,
               change: Callable[[BeatStore, str], str | None]) -> None:
        """``verb`` an entry (``qtui schedule COMMAND ENTRY`` does the same) once the operator
        said yes."""
        name = self.selected()
        if name is None:
            return
        app = self.console.cluster

        def call() -> ActionResult:
            store = store_for(app)
            try:
                done = change(store, name)
            except Exception as exc:  # noqa: BLE001 - shown to the user as the outcome
                return ActionResult(verb, (f"{name}: {exc}",), False, f"schedule {command}",
                                    (name,))
            finally:
                store.close()
            self.app.call_from_thread(self.load)
            return ActionResult(verb, (f"{name}: {'sent ' + done if done else 'done'}",), True,
                                f"schedule {command}", (name,))
        self.confirm(f"{verb} {name}?", lambda: self.perform(call),
                     equivalents.schedule(command, name))


class RunsScreen(ModalScreen[None]):
    """An entry's recent runs, newest first, with each task's state from the events."""

    BINDINGS = [Binding("escape,q", "dismiss", "Close")]
    DEFAULT_CSS = """
    RunsScreen { align: center middle; }
    RunsScreen #dialog { width: 110; }
    RunsScreen DataTable { height: auto; max-height: 16; }
    """

    def __init__(self, entry: str, runs: list[Run], tasks: Mapping[str, TaskRow]) -> None:
        super().__init__()
        self.entry, self.runs, self.tasks = entry, runs, tasks

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(safe_text(f"Recent runs of {self.entry} ({time.strftime('%H:%M:%S')})"))
            table: DataTable[object] = DataTable(id="runs", cursor_type="row")
            for column in ("Sent", "Scheduled", "Task id", "State", "By"):
                table.add_column(column)
            for run in self.runs:
                task = self.tasks.get(run.task_id)
                table.add_row(*format.cells(
                    _clock(run.sent), "by hand" if run.manual else _clock(run.scheduled),
                    run.task_id, format.state(task.state) if task else "-", run.by))
            yield table
