"""The console's data layer stays small per task: what a regression that doubles a task's
footprint (a copy too many, an index, a timeline of objects) would break, without timing.

The tasks are the console bench's (bench/bench_console.py): received, started and succeeded,
as JSON-decoded events, through the feed's own ingest path (State, snapshot rows) into the
console's model. Measured with tracemalloc: the bytes still held per task at the end.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
import uuid
from typing import Any

from qtui.core import App
from qtui.tui.feed import Feed
from qtui.tui.model import ConsoleModel

#: Tasks fed in (half the console bench's 10,000: traced by tracemalloc, those took 21 s in a
#: loaded run of the slow files; fewer tasks spread the fixed costs over less, so the figure is
#: higher: 896 bytes at 5,000 against 880 at 10,000, 997 at 2,000).
TASKS = 5_000
#: Bytes per task held by the state and the model together, with room to spare: 881 when
#: this was written (1,085 while the model kept a copy of each task and the State its LRU in
#: OrderedDicts, 1,500 before timelines were flat, short texts shared in a bounded table and
#: the indexes gone).
MAX_BYTES_PER_TASK = 1_000


def bench_events(n: int, clock: int, now: float) -> list[dict[str, Any]]:
    """One task's events as a worker sends them (the console bench's task)."""
    task_id = str(uuid.uuid4())
    common = {"uuid": task_id, "hostname": "bench@worker", "utcoffset": 0, "pid": 1}
    return [{**common, "type": kind, "clock": clock + step, "timestamp": now + n / 1000 + step,
             "local_received": now + n / 1000 + step, **fields}
            for step, (kind, fields) in enumerate((
                ("task-received", {"name": f"bench.task{n % 20}", "args": f"({n}, {n * 2})",
                                   "kwargs": "{}", "retries": 0, "eta": None, "expires": None,
                                   "root_id": task_id, "parent_id": None}),
                ("task-started", {}),
                ("task-succeeded", {"result": str(n * 3), "runtime": 0.001})))]


def held_per_task(tasks: int) -> float:
    """Bytes the feed's state and the console model hold per task after ``tasks`` tasks."""
    feed = Feed(App("memory", broker="memory://"), max_tasks=tasks)
    model = ConsoleModel(tasks)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for first in range(0, tasks, 100):
            batch = [event for n in range(first, min(first + 100, tasks))
                     for event in bench_events(n, 3 * n, 1.8e9)]
            model.apply(feed.ingest(json.loads(json.dumps(batch))))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(model.tasks) == len(feed.state) == tasks
    return held / tasks


def test_a_task_costs_the_console_about_a_kilobyte():
    assert held_per_task(TASKS) < MAX_BYTES_PER_TASK


def test_the_model_holds_the_states_own_records_not_copies():
    feed = Feed(App("memory", broker="memory://"), max_tasks=10)
    model = ConsoleModel(10)
    received, *finished = json.loads(json.dumps(bench_events(1, 3, 1.8e9)))
    model.apply(feed.ingest([received]))
    [(task_id, row)] = model.tasks.items()
    assert row.task is feed.state.task(task_id)
    model.apply(feed.ingest(finished))
    assert model.tasks[task_id].task is feed.state.task(task_id)
    assert model.tasks[task_id].state == "SUCCESS"
