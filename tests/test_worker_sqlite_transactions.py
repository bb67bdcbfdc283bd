"""How many write transactions a worker makes in its embedded broker's file per task on a drain:
counted inside the worker with sqlite3's trace callback on every connection it opens to the file,
never timed.

Each start is recorded in the cluster ledger (a table of the broker's file) before its task runs.
That record, the acks of the finished deliveries and the claim of the next messages are one
transaction of the broker's own connection, so a solo drain costs about one write transaction a
task. Before, the record was a transaction of its own on a second connection, the ack another,
and each commit of that second connection made the worker claim its empty due queue again (an
``UPDATE`` that takes nothing, one more write): about four a task.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from .processes import write_module
from .worker_helpers import Setup, make_setup, wait_for

TASKS = 200
#: Write transactions a task may cost on average: 1.0 measured (the fetch's one transaction;
#: the heartbeats and events, which run on a clock, add a few a drain); 313474e, before start
#: records, made 2.3 (an ack and the remote-control poll each a write, a claim every third
#: task); 89ec94c made 4.3. Generous for a loaded machine, where the clock's share grows.
MAX_WRITE_TRANSACTIONS_PER_TASK = 1.6

#: A tasks module whose worker counts what it runs in the broker file: each statement, and each
#: write transaction (a ``BEGIN`` or a write statement outside one). The first task notes the
#: counts, the last one writes the difference to ``counts.json``.
COUNTING_TASKS = """
import json
import os
import sqlite3
import threading

from qtui.core import App

BROKER = os.environ["QTUI_TEST_BROKER"]
app = App("counted", broker=BROKER, backend=None,
          task_default_queue=os.environ["QTUI_TEST_QUEUE"])
counts = {"statements": 0, "write_transactions": 0}
lock = threading.Lock()
first = {}
_connect = sqlite3.connect


def counting(path, *args, **kwargs):
    conn = _connect(path, *args, **kwargs)
    if os.path.basename(str(path)) != "broker.sqlite":
        return conn
    state = {"open": False}

    def trace(statement):
        word = statement.lstrip().split(None, 1)[0].upper()
        with lock:
            counts["statements"] += 1
            if word == "BEGIN":
                state["open"] = True
                counts["write_transactions"] += 1
            elif word in ("COMMIT", "END", "ROLLBACK"):
                state["open"] = False
            elif word in ("INSERT", "UPDATE", "DELETE", "REPLACE") and not state["open"]:
                counts["write_transactions"] += 1
    conn.set_trace_callback(trace)
    return conn


sqlite3.connect = counting


@app.task(name="tasks.counted", ignore_result=True)
def counted(i, last):
    with lock:
        if i == 0:
            first.update(counts)
        elif i == last:
            done = {k: counts[k] - first[k] for k in counts}
            with open("counts.json", "w") as out:
                json.dump(done, out)
"""


@pytest.fixture
def setup(tmp_path: Path, unique: str) -> Iterator[Setup]:
    setup = make_setup(tmp_path, f"qw-{unique}", f"sqlite://{tmp_path}/broker.sqlite", None)
    write_module(tmp_path, "tasks", COUNTING_TASKS)
    yield setup


@pytest.mark.timeout(120)
def test_a_solo_worker_draining_the_embedded_broker_makes_about_one_write_transaction_per_task(
        setup: Setup, tmp_path: Path) -> None:
    app = setup.app()
    with app.sending_batch():
        for i in range(TASKS):
            app.send_task("tasks.counted", (i, TASKS - 1), ignore_result=True)
    app.close()
    result = tmp_path / "counts.json"
    with setup.worker("-P", "solo", "--without-events") as worker:
        assert wait_for(result.exists, 90), worker.log_path.read_text()[-3000:]
    counts = json.loads(result.read_text())
    # The window runs from the first task to the last: TASKS - 1 tasks.
    assert counts["write_transactions"] <= MAX_WRITE_TRANSACTIONS_PER_TASK * (TASKS - 1), counts
