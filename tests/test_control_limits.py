"""Limits on what a remote-control command may set: the pool never grows past
``worker_max_concurrency``, and rate and time limits that would stop a task type or that
timers cannot hold are refused with an error reply. One threads worker on Redis (two slots, at
most three) serves the module; each test undoes what it changes."""

from __future__ import annotations

from typing import Any

import pytest

from qtui.core import App

from .worker_helpers import (  # noqa: F401 - fixtures
    ModuleWorkers,
    hostname_of,
    module_workers,
    wait_for,
)


class Limited:
    """The shared worker and a client aimed at it."""

    def __init__(self, module_workers: ModuleWorkers) -> None:
        setup, _ = module_workers.get("redis", "-P", "threads", "-c", "2",
                                      worker_max_concurrency=3)
        self.hostname = hostname_of(setup)
        self.app: App = setup.app()

    def ask(self, method: str, **arguments: Any) -> Any:
        replies = self.app.control.broadcast(method, arguments=arguments, reply=True,
                                             destination=[self.hostname], timeout=10)
        assert replies, f"{self.hostname} did not answer {method}"
        return replies.by_worker()[self.hostname]

    def slots(self) -> int:
        return int(self.ask("stats")["pool"]["max-concurrency"])


@pytest.fixture(scope="module")
def limited(module_workers: ModuleWorkers):
    node = Limited(module_workers)
    yield node
    node.app.close()


@pytest.mark.timeout(60)
def test_pool_grow_stops_at_worker_max_concurrency(limited):
    reply = limited.ask("pool_grow", n=2)
    assert "would exceed worker_max_concurrency (3)" in reply["error"]
    assert limited.ask("pool_grow", n=1) == {"ok": "pool will grow"}
    assert wait_for(lambda: limited.slots() == 3, 20)
    try:
        assert "worker_max_concurrency (3)" in limited.ask("pool_grow", n=1)["error"]
    finally:
        limited.ask("pool_shrink", n=1)
        assert wait_for(lambda: limited.slots() == 2, 20)


@pytest.mark.timeout(60)
def test_autoscale_above_worker_max_concurrency_is_refused(limited):
    assert "max 2000 exceeds worker_max_concurrency (3)" in \
        limited.ask("autoscale", max=2000, min=1)["error"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("rate", ["0.5/h", "0.0001/s", 0.0001])
def test_a_rate_limit_that_stops_a_task_type_is_refused(limited, rate):
    reply = limited.ask("rate_limit", task_name="tasks.add", rate_limit=rate)
    assert "below 1/h" in reply["error"]
    assert "tasks.add" in limited.ask("registered", taskinfoitems=["rate_limit"])  # no limit


@pytest.mark.timeout(60)
@pytest.mark.parametrize("soft, hard, message", [
    (None, 1e9, "above 31536000 s"),
    (1e300, None, "above 31536000 s"),
    (10, 5, "soft time limit (10 s) must not exceed the hard one (5 s)"),
])
def test_time_limits_timers_cannot_hold_or_that_contradict_are_refused(limited, soft, hard,
                                                                       message):
    reply = limited.ask("time_limit", task_name="tasks.add", soft=soft, hard=hard)
    assert message in reply["error"]
    assert "tasks.add [" not in " ".join(
        limited.ask("registered", taskinfoitems=["time_limit", "soft_time_limit"]))
