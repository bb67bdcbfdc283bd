"""The embedded broker under lock contention: workers wait the lock out or reconnect, but never
give back a task that is still running, so no other worker starts it meanwhile."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from bench.faults import lock_storm
from qtui.core.brokers.sqlite.database import BUSY_BACKOFF, BUSY_RETRIES, SWEEP_INTERVAL

from .worker_helpers import Setup, make_setup, wait_for

BUSY_TIMEOUT = 0.1
#: How long a write waits for the lock before it gives up: 5 attempts of 0.1 s and 0.75 s of
#: backoff. Past it the worker's connection counts as lost and it reconnects.
RETRY_BUDGET = BUSY_RETRIES * BUSY_TIMEOUT + BUSY_BACKOFF * (2 ** (BUSY_RETRIES - 1) - 1)
#: The storm's first hold outlasts every worker's retries whatever its timing: a worker with free
#: slots claims again at each sweep tick (every SWEEP_INTERVAL), after at most one heartbeat that
#: waited out its own retries in the same loop, and the claim gives up one budget later; the
#: rest is margin for a loaded machine. The shorter holds after it are waited out or not, by
#: chance. The visibility timeout (3600 s) is far longer than any hold.
FIRST_HOLD = SWEEP_INTERVAL + 2 * RETRY_BUDGET + 2.5
HOLD, GAP = 1.6, 0.3


def overlapping_runs(started: list[dict[str, Any]], done: list[dict[str, Any]]
                     ) -> list[str]:
    """Tags of tasks started again (by another process) while an earlier run still ran."""
    ends = {(d["tag"], d["pid"]): d["t"] for d in done}
    twice = []
    by_tag: dict[str, list[dict[str, Any]]] = {}
    for run in sorted(started, key=lambda r: r["t"]):
        for earlier in by_tag.get(run["tag"], []):
            if ends.get((run["tag"], earlier["pid"]), float("inf")) > run["t"]:
                twice.append(run["tag"])
        by_tag.setdefault(run["tag"], []).append(run)
    return twice


@pytest.fixture
def setup(tmp_path: Path, unique: str, redis_url: str) -> Iterator[Setup]:
    setup = make_setup(tmp_path, f"qw-{unique}", f"sqlite://{tmp_path}/broker.sqlite",
                       f"sqlite://{tmp_path}/results.sqlite",
                       broker_transport_options={"busy_timeout": BUSY_TIMEOUT})
    yield setup
    setup.cleanup()


@pytest.mark.timeout(150)
def test_four_workers_under_a_lock_storm_never_start_a_running_task_twice(setup: Setup):
    # More slots than tasks: every task starts at once wherever it lands, and every worker keeps
    # free slots, so each claims during the first hold and takes whatever is given back.
    tasks, seconds = 8, FIRST_HOLD + 3 * (HOLD + GAP)
    with ExitStack() as stack:
        workers = [stack.enter_context(setup.worker("-P", "threads", "-c", str(tasks),
                                                    name=f"w{n}"))
                   for n in range(4)]
        app = setup.app()
        for i in range(tasks):
            app.send_task("tasks.slow", args=[seconds, f"t{i}"])
        app.close()
        assert len(setup.wait_records("started", tasks)) == tasks
        with lock_storm(Path(f"{setup.directory}/broker.sqlite"), HOLD, GAP,
                        first_hold=FIRST_HOLD) as held:
            assert wait_for(lambda: len({r["tag"] for r in setup.records("done")}) == tasks,
                            timeout=120)
        assert held[0] >= 3  # it did storm
        started, done = setup.records("started"), setup.records("done")
    assert overlapping_runs(started, done) == []
    assert {r["tag"] for r in done} == {f"t{i}" for i in range(tasks)}
    # Every worker's retries ran out in the first hold, while the tasks ran, and it reconnected.
    for worker in workers:
        log = worker.log_path.read_text()
        assert "Broker connection lost: the SQLite broker" in log and "stayed locked" in log
        assert "Reconnected to" in log
