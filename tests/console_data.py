"""A fixed cluster for console tests that need no broker: workers, tasks in every state, queues.

Times are fixed (and tests set TZ=UTC) so that snapshots of the layout are the same on every
machine and every day.
"""

from __future__ import annotations

import dataclasses
import html
import re
from pathlib import Path
from typing import Any

from qtui.core import App
from qtui.core.metrics import MINUTE, Rollup
from qtui.core.pauses import Pause
from qtui.core.queue_rates import Rate
from qtui.core.queues import Age
from qtui.core.state import TaskState
from qtui.tui.console import Console
from qtui.tui.rows import QueueRow, Snapshot, TaskRow, ThroughputSeries, WorkerRow

T0 = 1_790_000_000.0  # a fixed instant: 2026-09-21 14:13:20 UTC

WORKERS = (
    WorkerRow("qtui@alpha", True, 1.2, "prefork", 4, 2, 1520, (0.42, 0.38, 0.30),
              ("celery", "images"), "qtui 0.1.0"),
    WorkerRow("qtui@beta", True, 0.4, "threads", 8, 1, 980, (0.10, 0.12, 0.11), ("celery",),
              "qtui 0.1.0"),
    WorkerRow("celery@gamma", False, 42.0, "", None, 0, 311, (1.5, 1.2, 0.9), (),
              "py-celery 5.7.0"),
)


FINAL_EVENTS = {"SUCCESS": "task-succeeded", "FAILURE": "task-failed", "RETRY": "task-retried",
                "REVOKED": "task-revoked"}


def _task(n: int, name: str, state: str, worker: str, **extra: object) -> TaskRow:
    received = T0 + n
    timeline = [("task-received", received, worker, "")]
    if state not in ("RECEIVED",):
        timeline.append(("task-started", received + 0.01, worker, ""))
    if state in FINAL_EVENTS:
        timeline.append((FINAL_EVENTS[state], received + 0.5, worker,
                         str(extra.get("exception", ""))))
    values: dict[str, object] = dict(
        # Ids that differ in their first characters, as real ones do (the table shows those).
        id=f"{n * 2654435761 % 16**8:08x}-0000-4000-8000-{n:012d}", name=name, state=state,
        worker=worker,
        received=received, started=received + 0.01 if state != "RECEIVED" else None,
        runtime=0.49 if state in ("SUCCESS", "FAILURE") else None, args=f"({n}, {n * 2})",
        kwargs="{}", timeline=tuple(item for step in timeline for item in step),
        updated=received + 0.5)
    values.update(extra)
    return row(**values)


def row(**fields: Any) -> TaskRow:
    """A task row over a record of these fields, named as the State names them but for
    ``id`` (the task's ``uuid``)."""
    if "id" in fields:
        fields["uuid"] = fields.pop("id")
    return TaskRow(TaskState(**fields))


def changed(task: TaskRow, **fields: Any) -> TaskRow:
    """``task`` with some of its record's fields changed (``id`` as in :func:`row`)."""
    if "id" in fields:
        fields["uuid"] = fields.pop("id")
    return TaskRow(dataclasses.replace(task.task, **fields))


TASKS = (
    _task(1, "tasks.add", "SUCCESS", "qtui@alpha", result="3"),
    _task(2, "tasks.add", "SUCCESS", "qtui@beta", result="6"),
    _task(3, "images.resize", "STARTED", "qtui@alpha", args="('/photos/3.jpg', 640, 480)"),
    _task(4, "billing.charge", "FAILURE", "qtui@alpha", args="(4, 19.99)", queue="billing",
          routing_key="billing",
          exception="ValueError('card declined for order 4')",
          traceback='Traceback (most recent call last):\n  File "tasks.py", line 12, in charge\n'
                    "    raise ValueError(f'card declined for order {order}')\n"
                    "ValueError: card declined for order 4\n"),
    _task(5, "feeds.fetch", "RETRY", "qtui@beta", args="('https://example.com/feed',)",
          exception="ConnectionError('timed out')", retries=1),
    _task(6, "tasks.add", "RECEIVED", "qtui@beta"),
    _task(7, "tasks.add", "REVOKED", "qtui@alpha"),
    _task(8, "billing.charge", "FAILURE", "qtui@beta", args="(8, 5.0)",
          exception="ValueError('card declined for order 8')"),
)

QUEUES = (
    QueueRow("celery", 12, 2, -3.5, ("qtui@alpha", "qtui@beta"), age=Age(42.0, exact=True),
             inflow=Rate(8.5, exact=True), outflow=Rate(12.0, exact=True)),
    QueueRow("images", 3, 1, 0.0, ("qtui@alpha",), age=Age(8.0, exact=False),
             inflow=Rate(1.2, exact=True), outflow=Rate(1.2, exact=False)),
    QueueRow("reports", 250, 0, 1.0, (), 4, dead=3, outflow=Rate(0.0, exact=True),
             paused=Pause("reports", T0 - 600, "ops@admin", ("qtui@alpha",))),
)

THROUGHPUT = ThroughputSeries(1.0, {
    "SUCCESS": [3, 5, 8, 6, 9, 12, 10, 7, 11, 14, 9, 8],
    "FAILURE": [0, 1, 0, 0, 2, 0, 1, 0, 0, 3, 0, 1],
    "RETRY": [0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0],
    "RECEIVED": [4, 6, 9, 7, 10, 13, 11, 8, 12, 15, 10, 9],
})

SNAPSHOT = Snapshot(workers=WORKERS, tasks=TASKS, queues=QUEUES, throughput=THROUGHPUT,
                    task_count=len(TASKS), events_seen=1234, connected=True)


class FixedConsole(Console):
    """The console showing the fixed cluster, with no feed and no history."""

    def __init__(self, read_only: bool = False, snapshot: Snapshot = SNAPSHOT,
                 app: App | None = None) -> None:
        super().__init__(app or App("console-tests", broker="redis://127.0.0.1:6379/15"),
                         read_only=read_only, start_feed=False, history=False)
        self.fixed = snapshot
        self.notes: list[tuple[str, str]] = []
        """(severity, message) of every notification shown."""

    def notify(self, message: str, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        self.notes.append((str(kwargs.get("severity", "information")), message))
        super().notify(message, *args, **kwargs)  # type: ignore[arg-type]

    def initial_snapshot(self) -> Snapshot:
        return self.fixed


def screen_text(console: Console) -> str:
    """What the terminal shows, as plain text (from Textual's own screenshot)."""
    svg = console.export_screenshot()
    lines = re.findall(r"<text[^>]*>(.*?)</text>", svg)
    return html.unescape(" ".join(lines)).replace("\xa0", " ")


# The Metrics view's data ------------------------------------------------------------------
NOW = 1_790_006_400.0  # a fixed instant, the start of an hour


def _rollup(done: int, failed: int, runtime: float) -> Rollup:
    made = Rollup()
    made.counts[1] = made.counts[2] = done + failed  # received, started
    made.counts[3], made.counts[4] = done, failed
    for _ in range(done + failed):
        made.runtime.add(runtime)
        made.wait.add(runtime / 10)
    return made


class MetricsConsole(FixedConsole):
    """The fixed cluster, with a history file holding an hour, a day and a week of rollups:
    ``tasks.add`` fast and busy, ``billing.charge`` failing, ``images.resize`` slow (only in the
    last day), ``reports.build`` slowest of all (only in the last week)."""

    def __init__(self, path: Path) -> None:
        app = App("console-tests", broker="redis://127.0.0.1:6379/15",
                  console_history_file=str(path))
        super().__init__(app=app)
        self.use_history = True
        self._attach_cluster(app, None)
        history = self.feed.history
        assert history is not None
        history.clock = lambda: NOW
        rollups = {}
        for m in range(1, 60):
            start = int(NOW) - m * MINUTE
            rollups[(start, "tasks.add", "celery")] = _rollup(20 + m % 7, 0, 0.004)
            rollups[(start, "billing.charge", "billing")] = _rollup(5, 2 + m % 3, 0.2)
        for hour in range(2, 20):
            rollups[(int(NOW) - hour * 3600, "images.resize", "images")] = _rollup(30, 1, 3.0)
        for day in range(2, 6):
            rollups[(int(NOW) - day * 86400, "reports.build", "reports")] = _rollup(2, 0, 400.0)
        history.save_metrics(rollups)
        history.save_queue_depths(NOW - 300, {"billing": (12, None), "celery": (3, None)})
        history.save_queue_depths(NOW - 240, {"billing": (40, None)})
        self.fixed = SNAPSHOT
        # The tasks in memory say which workers ran a task name.
        self.feed.state.ingest([
            {"type": "task-received", "uuid": f"t{n}", "name": "tasks.add", "hostname": worker,
             "timestamp": NOW - n, "clock": n} for n, worker in enumerate(
                 ("qtui@alpha", "qtui@beta", "qtui@alpha"))])


# Long names, as real clusters have them: for the layout at 80 columns -----------------------
LONG_QUEUE = "reports.monthly-accounting-reconciliation.eu-west-1.priority-high"
LONG_HOST = "celery@worker-0123.production.eu-west-1.internal.example.com"
LONG_TASK = "billing.invoices.generate_monthly_invoice_pdf_for_enterprise_customers"

LONG_NAMES = dataclasses.replace(
    SNAPSHOT,
    workers=(*WORKERS, WorkerRow(LONG_HOST, True, 1.0, "prefork", 16, 3, 12345,
                                 (1.0, 0.9, 0.8), ("celery", LONG_QUEUE), "qtui 0.1.0")),
    tasks=(*TASKS, _task(9, LONG_TASK, "STARTED", LONG_HOST, queue=LONG_QUEUE)),
    queues=(*QUEUES, QueueRow(LONG_QUEUE, 7, 1, 0.0, (LONG_HOST,), 2, dead=1,
                              paused=Pause(LONG_QUEUE, T0 - 60, "ops@admin", (LONG_HOST,)))),
    task_count=len(TASKS) + 1)
