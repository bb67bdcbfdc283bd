"""A task's family from a real canvas run: a qtui worker runs a chain and a chord sent with
qtui's canvas, the console follows their events, and the task detail draws each workflow as a
tree and moves along it. The embedded broker in the test's own directory: no shared Redis DB."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from textual.widgets import Tree

from qtui.core import App, chord
from qtui.tui.console import Console
from qtui.tui.views.details import TaskDetailScreen

from .processes import write_module
from .test_canvas_interop import QTUI_TASKS
from .test_console_live import until
from .worker_helpers import Setup, broker_urls

SIZE = (120, 40)


def tree_ids(screen: Any) -> list[tuple[int, str]]:
    """(depth, task id) of each node of the family tree, top down."""
    found: list[tuple[int, str]] = []

    def walk(node: Any, depth: int) -> None:
        found.append((depth, node.data))
        for child in node.children:
            walk(child, depth + 1)
    walk(screen.query_one("#family", Tree).root, 0)
    return found


@pytest.mark.timeout(120)
async def test_a_real_chain_and_chord_show_as_family_trees(tmp_path):
    url, backend = broker_urls("sqlite", tmp_path)
    setup = Setup(tmp_path, f"qf-{uuid.uuid4().hex[:10]}", url, backend)
    write_module(tmp_path, "tasks", QTUI_TASKS)
    app = App("tasks", broker=url, backend=backend, task_default_queue=setup.queue)
    add = app.task(name="tasks.add")(lambda x, y: x + y)
    mul = app.task(name="tasks.mul")(lambda x, y: x * y)
    part = app.task(name="tasks.part")(lambda i: None)
    collect = app.task(name="tasks.collect")(lambda values: None)
    console = Console(app, history=False)
    try:
        with setup.worker("-P", "threads", "-c", "3"):
            async with console.run_test(size=SIZE) as pilot:
                await until(pilot, lambda: console.model.connected, timeout=30.0, what="connected")
                last = (add.s(1, 2) | mul.s(4) | add.s(1)).delay()
                body = chord([part.s(i) for i in range(3)], collect.s()).delay()
                assert last.get(timeout=30) == 13 and body.get(timeout=30) == [0, 10, 20]
                first, middle = last.parent.parent.id, last.parent.id
                parts = [r.id for r in body.parent]
                everyone = [first, middle, last.id, *parts, body.id]
                await until(pilot, lambda: all(
                    (t := console.model.tasks.get(i)) is not None and t.state == "SUCCESS"
                    for i in everyone), timeout=30.0, what="every task's success event")

                console.push_screen(TaskDetailScreen(middle))
                await pilot.pause()
                assert tree_ids(console.screen) == [(0, first), (1, middle), (2, last.id)]

                await pilot.press("f", "down", "down", "enter")  # the chain's last step
                await pilot.pause()
                assert console.screen.task_id == last.id

                console.push_screen(TaskDetailScreen(body.id))
                await pilot.pause()
                family = tree_ids(console.screen)
                # As on a Celery worker, the part that completes the header sends the body.
                body_row = console.model.tasks[body.id]
                assert body_row.parent_id in parts
                assert family == [(0, body_row.parent_id), (1, body.id)]
    finally:
        app.close()
        setup.cleanup()
