"""The embedded broker under lock contention: workers wait the lock out or reconnect, but never
give back a task that is still running, so no other worker starts it meanwhile."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from bench.faults import lock_storm

from .worker_helpers import Setup, make_setup, wait_for

#: The storm holds the write lock longer than a worker's whole retry budget at this busy timeout
#: (5 attempts of 0.1 s plus 0.75 s of backoff), so the workers do give up and reconnect.
BUSY_TIMEOUT = 0.1
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
    tasks, seconds = 8, 8.0  # one per slot, running through several storm rounds
    with ExitStack() as stack:
        for n in range(4):
            stack.enter_context(setup.worker("-P", "threads", "-c", "2", name=f"w{n}"))
        app = setup.app()
        for i in range(tasks):
            app.send_task("tasks.slow", args=[seconds, f"t{i}"])
        app.close()
        setup.wait_records("started", tasks)
        with lock_storm(Path(f"{setup.directory}/broker.sqlite"), HOLD, GAP) as held:
            assert wait_for(lambda: len({r["tag"] for r in setup.records("done")}) == tasks,
                            timeout=120)
        assert held[0] >= 3  # it did storm
        started, done = setup.records("started"), setup.records("done")
    assert overlapping_runs(started, done) == []
    assert {r["tag"] for r in done} == {f"t{i}" for i in range(tasks)}
    # Each worker does reconnect (its retries ran out): the storm was past the bound.
    logs = "".join(Path(p).read_text() for p in setup.directory.glob("process-*.log"))
    assert "stayed locked" in logs
