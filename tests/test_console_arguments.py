"""Where the console finds a task's complete arguments (qtui.tui.arguments): the worker that ran
it first, then every worker, then the result backend."""

from __future__ import annotations

import time
from typing import Any

from qtui.core import App
from qtui.tui.feed import Feed


def test_a_tasks_arguments_are_asked_of_the_worker_that_ran_it_first(monkeypatch):
    feed = Feed(App("arguments", broker="memory://"))
    feed.state.event({"type": "task-received", "uuid": "t-1", "hostname": "w2",
                      "timestamp": time.time(), "name": "tasks.add", "args": "(1,)"})
    asked: list[Any] = []

    def broadcast(command: str, arguments: dict[str, Any], destination: Any = None,
                  **options: Any) -> list[dict[str, Any]]:
        asked.append(destination)
        return [{"w2": {"t-1": {"args": [1], "kwargs": {"big": "x" * 5000}}}}]

    monkeypatch.setattr(feed.app.control, "broadcast", broadcast)
    assert feed.full_arguments("t-1") == ([1], {"big": "x" * 5000})
    assert asked == [["w2"]]


def test_arguments_its_worker_does_not_have_are_asked_of_every_worker(monkeypatch):
    feed = Feed(App("arguments", broker="memory://"))
    feed.state.event({"type": "task-received", "uuid": "t-1", "hostname": "w2",
                      "timestamp": time.time(), "name": "tasks.add", "args": "(1,)"})
    asked: list[Any] = []

    def broadcast(command: str, arguments: dict[str, Any], destination: Any = None,
                  **options: Any) -> list[dict[str, Any]]:
        asked.append(destination)
        return [] if destination else [{"w3": {"t-1": {"args": [1], "kwargs": {}}}}]

    monkeypatch.setattr(feed.app.control, "broadcast", broadcast)
    assert feed.full_arguments("t-1") == ([1], {})
    assert asked == [["w2"], None]
