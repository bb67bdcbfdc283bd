"""The worker's hook points (qtui.workers.hooks): observers are told, gates may stop a job."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from qtui.workers.hooks import Hooks, Observer

JOB: Any = SimpleNamespace(name="tasks.add", task_id="t-1")


class Gate(Observer):
    def __init__(self, stops: bool, asked: list[str], name: str) -> None:
        self.stops, self.asked, self.name = stops, asked, name

    def refuse_task(self, job: Any) -> bool:
        self.asked.append(self.name)
        return self.stops


def test_the_first_gate_that_stops_a_job_ends_the_ask():
    hooks, asked = Hooks(), []
    for name, stops in (("a", False), ("b", True), ("c", True)):
        hooks.add(Gate(stops, asked, name))
    assert hooks.refuse_task(JOB) is True
    assert asked == ["a", "b"]
    assert hooks.delay_task(JOB) is False and hooks.throttle_task(JOB) is False


def test_an_observer_that_raises_is_logged_and_the_next_one_is_still_told(caplog):
    told = []

    class Broken(Observer):
        def on_task_received(self, job: Any) -> None:
            raise RuntimeError("boom")

    class Listening(Observer):
        def on_task_received(self, job: Any) -> None:
            told.append(job)

    hooks = Hooks()
    hooks.add(Broken())
    hooks.add(Listening())
    with caplog.at_level(logging.ERROR, logger="qtui.worker"):
        hooks.on_task_received(JOB)
    assert told == [JOB]
    assert "worker hook on_task_received failed" in caplog.text and "boom" in caplog.text


def test_a_gate_that_raises_stops_the_worker_loop_as_any_error_there_would():
    class Lost(Observer):
        def refuse_task(self, job: Any) -> bool:
            raise ConnectionError("the broker went away")

    hooks = Hooks()
    hooks.add(Lost())
    with pytest.raises(ConnectionError):  # it may mean: reconnect
        hooks.refuse_task(JOB)
