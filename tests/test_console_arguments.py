"""Where the console finds a task's complete arguments (qtui.tui.arguments): the worker that ran
it first, then every worker, then the result backend."""

from __future__ import annotations

import time
from typing import Any

from qtui.core import App
from qtui.tui.feed import Feed


def feed_that_saw_task_on(worker: str) -> Feed:
    """A feed whose state knows task t-1, received by ``worker``."""
    feed = Feed(App("arguments", broker="memory://"))
    feed.state.event({"type": "task-received", "uuid": "t-1", "hostname": worker,
                      "timestamp": time.time(), "name": "tasks.add", "args": "(1,)"})
    return feed


def workers_answering(monkeypatch, feed: Feed, answers: dict[Any, list[dict[str, Any]]]
                      ) -> list[Any]:
    """Fake ``task_arguments`` broadcasts: the reply for each destination (None: all workers);
    returns the destinations asked, in order."""
    asked: list[Any] = []

    def broadcast(command: str, arguments: dict[str, Any], destination: Any = None,
                  **options: Any) -> list[dict[str, Any]]:
        asked.append(destination)
        return answers.get(tuple(destination) if destination else None, [])

    monkeypatch.setattr(feed.app.control, "broadcast", broadcast)
    return asked


def test_a_tasks_arguments_are_asked_of_the_worker_that_ran_it_first(monkeypatch):
    feed = feed_that_saw_task_on("w2")
    asked = workers_answering(monkeypatch, feed, {
        ("w2",): [{"w2": {"t-1": {"args": [1], "kwargs": {"big": "x" * 5000}}}}]})
    found = feed.full_arguments("t-1")
    assert found is not None and (found.args, found.kwargs) == ([1], {"big": "x" * 5000})
    assert asked == [["w2"]]


def test_arguments_its_worker_does_not_have_are_asked_of_every_worker(monkeypatch):
    feed = feed_that_saw_task_on("w2")
    asked = workers_answering(monkeypatch, feed, {
        None: [{"w3": {"t-1": {"args": [1], "kwargs": {}}}}]})
    found = feed.full_arguments("t-1")
    assert found is not None and (found.args, found.kwargs) == ([1], {})
    assert asked == [["w2"], None]
