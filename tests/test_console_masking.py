"""Arguments a sender masked with Celery's ``argsrepr``/``kwargsrepr`` stay masked in the console:
the task detail (whatever the events carried), the retry's confirmation and what it copies, the
retried task's own reprs, and the worker detail's task tabs; a retry that could only send the
mask as arguments is refused."""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

import pytest
import redis
from textual.widgets import TextArea

from qtui.core import App
from qtui.tui import arguments
from qtui.tui.actions import Actions
from qtui.tui.arguments import Arguments
from qtui.tui.feed import Feed
from qtui.tui.views.details import TaskDetailScreen, WorkerDetailScreen
from qtui.tui.views.modals import ConfirmScreen

from .console_data import SNAPSHOT, TASKS, FixedConsole, changed, screen_text

SIZE = (140, 36)
REAL = (["hunter2"], {"token": "s3cr3t"})
#: What a qtui worker answers ``task_arguments`` with for a task its sender masked.
WORD = dict(masked=True, argsrepr="('***',)", kwargsrepr="{'token': '***'}",
            name="billing.charge", shadow="charge.masked")


def console_on(task: Any, found: Arguments | None, monkeypatch: pytest.MonkeyPatch
               ) -> FixedConsole:
    """A console showing ``task`` whose lookup of its complete arguments gives ``found``."""
    console = FixedConsole(snapshot=dataclasses.replace(
        SNAPSHOT, tasks=(*TASKS[:3], task, *TASKS[4:])))
    monkeypatch.setattr(console.feed, "full_arguments", lambda task_id: found)
    return console


async def detail_values(console: FixedConsole, task_id: str, pilot: Any) -> str:
    console.push_screen(TaskDetailScreen(task_id))
    await pilot.pause()
    await console.workers.wait_for_complete()
    await pilot.pause()
    return console.screen.query_one("#values", TextArea).text


@pytest.mark.parametrize("shown", [("", ""), (None, None)],
                         ids=["empty-reprs", "task-received-missed"])
async def test_the_detail_hides_arguments_the_worker_says_are_masked(monkeypatch, shown):
    task = changed(TASKS[3], args=shown[0], kwargs=shown[1])
    console = console_on(task, Arguments(*REAL, **WORD), monkeypatch)
    async with console.run_test(size=SIZE) as pilot:
        values = await detail_values(console, task.id, pilot)
    assert "hunter2" not in values and "s3cr3t" not in values
    assert "args   ('***',)" in values and "masked by the sender" in values


async def test_the_detail_hides_backend_arguments_when_no_event_said_what_was_shown(monkeypatch):
    task = changed(TASKS[3], args=None, kwargs=None)
    console = console_on(task, Arguments(*REAL), monkeypatch)  # the result backend's: no word
    async with console.run_test(size=SIZE) as pilot:
        values = await detail_values(console, task.id, pilot)
    assert "hunter2" not in values and "no event or worker said" in values


async def test_the_detail_shows_arguments_the_worker_says_are_not_masked(monkeypatch):
    task = changed(TASKS[3], args=None, kwargs=None)
    console = console_on(task, Arguments([4, 19.99], {}, masked=False), monkeypatch)
    async with console.run_test(size=SIZE) as pilot:
        values = await detail_values(console, task.id, pilot)
    assert "args   (4, 19.99)" in values and "(complete, from the worker" in values


async def retry_dialog(console: FixedConsole, task: Any, pilot: Any) -> ConfirmScreen:
    console.retry_task(task)
    await console.workers.wait_for_complete()
    await pilot.pause()
    assert isinstance(console.screen, ConfirmScreen), console.notes
    return console.screen


async def test_the_retry_confirmation_shows_the_masks_and_no_command_with_the_secret(
        monkeypatch):
    task = changed(TASKS[3], args="('***',)", kwargs="{'token': '***'}")
    console = console_on(task, Arguments(*REAL, **WORD), monkeypatch)
    async with console.run_test(size=SIZE) as pilot:
        dialog = await retry_dialog(console, task, pilot)
        shown = screen_text(console)
        await pilot.press("c")
    assert "hunter2" not in shown and "s3cr3t" not in shown
    assert "masked the arguments" in shown and "('***',)" in shown
    assert dialog.command is None  # c copies nothing that carries the real arguments
    assert "hunter2" not in str(console.clipboard)


async def test_a_retry_sends_the_real_arguments_with_the_senders_masks_and_shadow(monkeypatch):
    task = changed(TASKS[3], args="('***',)", kwargs="{'token': '***'}")
    console = console_on(task, Arguments(*REAL, **WORD), monkeypatch)
    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(console.cluster, "send_task", lambda name, **options: sent.append(
        (name, options)) or type("R", (), {"id": "new-id"})())
    async with console.run_test(size=SIZE) as pilot:
        await retry_dialog(console, task, pilot)
        await pilot.press("y")
        await console.workers.wait_for_complete()
        await pilot.pause()
    [(name, options)] = sent
    assert (name, options["args"], options["kwargs"]) == ("billing.charge", *REAL)
    assert (options["argsrepr"], options["kwargsrepr"], options["shadow"]) == \
        ("('***',)", "{'token': '***'}", "charge.masked")


async def test_a_retry_of_a_task_whose_real_arguments_nobody_has_is_refused(monkeypatch):
    task = changed(TASKS[3], args="('***',)", kwargs="{'token': '***'}")
    console = console_on(task, Arguments([], {}, complete=False, **WORD), monkeypatch)
    async with console.run_test(size=SIZE) as pilot:
        console.retry_task(task)
        await console.workers.wait_for_complete()
        await pilot.pause()
        assert not isinstance(console.screen, ConfirmScreen)
    [(severity, message)] = [note for note in console.notes if "cannot be retried" in note[1]]
    assert severity == "error" and "masked the arguments" in message


def test_a_retried_tasks_message_carries_the_senders_reprs():
    client = redis.Redis(port=6379, db=3)
    queue = f"mask-{uuid.uuid4().hex[:10]}"
    app = App("mask-tests", broker="redis://127.0.0.1:6379/3", task_default_queue=queue)
    try:
        Actions(app).retry("billing.charge", *REAL, queue=queue, argsrepr="('***',)",
                           kwargsrepr="{'token': '***'}", shadow="charge.masked")
        headers = json.loads(client.lrange(queue, 0, -1)[0])["headers"]
    finally:
        app.close()
        client.delete(queue)
    assert (headers["argsrepr"], headers["kwargsrepr"], headers["shadow"]) == \
        ("('***',)", "{'token': '***'}", "charge.masked")


def test_a_workers_word_that_the_reprs_mask_goes_with_the_backends_arguments(monkeypatch):
    feed = Feed(App("masking", broker="memory://"))
    monkeypatch.setattr(feed.app.control, "broadcast", lambda *a, **kw: [
        {"w1": {"t-1": {"name": "billing.charge", "queue": "billing", **WORD}}}])
    monkeypatch.setattr(feed.app.backend, "get_task_meta",
                        lambda task_id: {"args": REAL[0], "kwargs": REAL[1]})
    found = arguments.lookup(feed.app, "t-1")
    assert found is not None and found.complete and found.masked
    assert (found.args, found.kwargs, found.argsrepr) == (*REAL, "('***',)")


@pytest.mark.parametrize("method", ["active", "reserved", "scheduled"])
async def test_the_worker_detail_asks_for_the_task_tabs_in_safe_mode(monkeypatch, method):
    console = FixedConsole()
    asked: dict[str, tuple[Any, ...]] = {}

    def inspect(hostname: str, name: str, *args: Any) -> Any:
        asked[name] = args
        return []
    monkeypatch.setattr(console, "inspect", inspect)
    async with console.run_test(size=SIZE) as pilot:
        console.push_screen(WorkerDetailScreen("qtui@alpha"))
        await pilot.pause()
        await console.workers.wait_for_complete()
    assert asked[method] == (True,)
