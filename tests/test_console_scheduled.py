"""The console's Scheduled view (7, :scheduled): every ETA task not yet due, broker-held and
worker-held, soonest first with where it waits; run now, revoke and delete ask first (showing
the scripted command) and act on the marked rows or the one under the cursor. The reads are
fixed here (the live tests in test_scheduled_listing.py, test_scheduled_actions.py and
test_console_scheduled_live.py read real brokers); the layout is compared with the accepted
SVGs in ``tests/__snapshots__/``."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from textual.widgets import DataTable

from qtui.core import scheduled as store
from qtui.core.display import UNSHOWN
from qtui.core.scheduled import BROKER, Scheduled, ScheduledTask
from qtui.tui import scheduled_actions
from qtui.tui.actions import ActionResult
from qtui.tui.views import scheduled as view
from qtui.tui.views.modals import ConfirmScreen
from qtui.tui.views.scheduled import ScheduledScreen

from .console_data import SNAPSHOT, T0, FixedConsole, row, screen_text
from .still import settle

pytestmark = pytest.mark.usefixtures("utc")

SMALL = (80, 24)
TASKS = [
    ScheduledTask("5b1e0c2a-0000-4000-8000-000000000001", "tasks.report", T0 + 42, "celery",
                  "['daily']", "{}", "qtui@alpha", ["daily"], {}),
    ScheduledTask("5b1e0c2a-0000-4000-8000-000000000002", "tasks.cleanup", T0 + 3600 + 300,
                  "celery", "[]", "{'deep': True}", BROKER),
    ScheduledTask("5b1e0c2a-0000-4000-8000-000000000003", "tasks.mail", T0 + 3 * 86400,
                  "mail", "['bob@example.com']", "{}", BROKER),
    ScheduledTask("5b1e0c2a-0000-4000-8000-000000000004", "tasks.pickle", T0 + 90, "celery",
                  "{1, 2}", "{}", "celery@beta"),
]


@pytest.fixture
def fixed_reads(monkeypatch) -> list[Any]:
    """Every read returns TASKS (and 3 unlistable ones on a RabbitMQ queue); the view's clock
    stands at T0. Returns the list of calls the view made."""
    calls: list[Any] = []

    def read(app, queues=(), timeout=1.0, destination=None):  # type: ignore[no-untyped-def]
        calls.append(queues)
        return Scheduled(store.by_due(TASKS), {"slow": 3}, [])
    monkeypatch.setattr(store, "read", read)
    monkeypatch.setattr(view, "now", lambda: T0)
    return calls


@pytest.fixture
def acted(monkeypatch) -> list[tuple[str, list[str]]]:
    """The run-now and delete calls the view made, instead of touching a broker."""
    done: list[tuple[str, list[str]]] = []

    def record(verb: str):  # type: ignore[no-untyped-def]
        def act(app, tasks, workers=()):  # type: ignore[no-untyped-def]
            done.append((verb, [t.id for t in tasks]))
            return ActionResult(verb, ("done",), True, verb, tuple(t.id for t in tasks))
        return act
    monkeypatch.setattr(scheduled_actions, "run_now", record("run now"))
    monkeypatch.setattr(scheduled_actions, "delete", record("delete"))
    return done


async def _until(pilot: Any, done: Any) -> None:
    """Let the console run until ``done()`` (an action runs in a thread worker)."""
    for _ in range(200):
        if done():
            return
        await pilot.pause(0.05)


async def _rows(console: FixedConsole, pilot: Any, count: int) -> list[list[str]]:
    await settle(pilot, lambda: isinstance(console.screen, ScheduledScreen),
                 "the Scheduled view")
    table = console.screen.query_one("#scheduled", DataTable)
    for _ in range(100):
        if table.row_count >= count:
            break
        await pilot.pause(0.05)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_the_view_lists_every_scheduled_task_with_where_it_waits(fixed_reads) -> None:
    console = FixedConsole()
    async with console.run_test(size=(200, 30)) as pilot:
        await pilot.press("7")
        assert isinstance(console.screen, ScheduledScreen)
        rows = await _rows(console, pilot, 4)
        assert [r[:3] for r in rows] == [
            ["42s", "qtui@alpha", "tasks.report"], ["1m30s", "celery@beta", "tasks.pickle"],
            ["1h05m", "broker", "tasks.cleanup"], ["3d00h", "broker", "tasks.mail"]]
        text = screen_text(console)
        assert "scheduled: 2 in the broker, 2 in workers" in text
        assert "slow: +3 unlisted" in text


async def test_a_filter_from_the_command_line_narrows_the_rows(fixed_reads) -> None:
    console = FixedConsole()
    async with console.run_test(size=(200, 30)) as pilot:
        await pilot.press("colon", *"scheduled worker:broker", "enter")
        rows = await _rows(console, pilot, 2)
        assert [r[2] for r in rows] == ["tasks.cleanup", "tasks.mail"]


async def test_run_now_on_marked_rows_asks_with_the_scripted_commands(fixed_reads,
                                                                      acted) -> None:
    console = FixedConsole()
    async with console.run_test(size=(200, 40)) as pilot:
        await pilot.press("7")
        await _rows(console, pilot, 4)
        await pilot.press("space", "down", "space", "n")  # report, cleanup
        dialog = console.screen
        assert isinstance(dialog, ConfirmScreen)
        assert dialog.question.startswith("Run now 2 tasks?")
        assert "1 held by a worker: revoked there and sent again as a new task" \
            in dialog.question
        command = dialog.command
        assert command is not None
        assert command.commands == (
            ("eta", "run", TASKS[1].id, "-Q", "celery"),
            ("control", "revoke", TASKS[0].id),
            ("call", "tasks.report", "--args", '["daily"]', "--kwargs", "{}",
             "--queue", "celery"))
        await pilot.press("y")
        await _until(pilot, lambda: acted)
    assert acted == [("run now", [TASKS[0].id, TASKS[1].id])]


async def test_delete_refuses_worker_held_tasks_and_deletes_broker_held_ones(fixed_reads,
                                                                             acted) -> None:
    console = FixedConsole()
    async with console.run_test(size=(200, 40)) as pilot:
        await pilot.press("7")
        await _rows(console, pilot, 4)
        await pilot.press("D")  # the cursor is on the worker-held report
        assert not isinstance(console.screen, ConfirmScreen)
        assert any("held by a worker, in memory: revoke it" in m for _, m in console.notes)
        await pilot.press("down", "down", "D")
        assert isinstance(console.screen, ConfirmScreen)
        assert console.screen.command is not None
        assert console.screen.command.argv == ("eta", "delete", TASKS[1].id, "-Q", "celery")
        await pilot.press("y")
        await _until(pilot, lambda: acted)
    assert acted == [("delete", [TASKS[1].id])]


async def test_revoke_sends_one_broadcast_for_every_marked_task(fixed_reads,
                                                               monkeypatch) -> None:
    console = FixedConsole()
    sent: list[list[str]] = []

    def revoke(ids, workers=()):  # type: ignore[no-untyped-def]
        sent.append(list(ids))
        return ActionResult("revoke", ("ok",), True, "revoke", tuple(ids))
    monkeypatch.setattr(console.actions, "revoke", revoke)
    async with console.run_test(size=(200, 40)) as pilot:
        await pilot.press("7")
        await _rows(console, pilot, 4)
        await pilot.press("asterisk", "R")
        assert isinstance(console.screen, ConfirmScreen)
        assert console.screen.command is not None
        assert console.screen.command.argv == ("control", "revoke", *(t.id for t in [
            TASKS[0], TASKS[3], TASKS[1], TASKS[2]]))
        await pilot.press("y")
        await _until(pilot, lambda: sent)
    assert sent == [[TASKS[0].id, TASKS[3].id, TASKS[1].id, TASKS[2].id]]


async def test_read_only_hides_run_now_and_delete(fixed_reads) -> None:
    console = FixedConsole(read_only=True)
    async with console.run_test(size=(200, 40)) as pilot:
        await pilot.press("7")
        await _rows(console, pilot, 4)
        await pilot.press("n", "D")
        assert not isinstance(console.screen, ConfirmScreen)


def test_scheduled_view_layout(snap_compare, fixed_reads):
    console = FixedConsole()

    async def open_view(pilot):  # type: ignore[no-untyped-def]
        await pilot.press("7")
        await _rows(console, pilot, 4)
        await pilot.pause()

    assert snap_compare(console, run_before=open_view, terminal_size=SMALL)


def test_scheduled_run_now_confirmation_layout(snap_compare, fixed_reads):
    console = FixedConsole()

    async def ask(pilot):  # type: ignore[no-untyped-def]
        await pilot.press("7")
        await _rows(console, pilot, 4)
        await pilot.press("n")
        await pilot.pause()

    assert snap_compare(console, run_before=ask, terminal_size=SMALL)


async def test_run_now_needs_revoke_and_retry_and_delete_needs_purge(fixed_reads) -> None:
    from qtui.core import App
    console = FixedConsole(app=App("t", broker="redis://127.0.0.1:6379/15",
                                   console_permissions=["revoke"]))
    async with console.run_test(size=(200, 40)) as pilot:
        await pilot.press("7")
        await _rows(console, pilot, 4)
        await pilot.press("n")
        assert not isinstance(console.screen, ConfirmScreen)
        await pilot.press("down", "down", "D")
        assert not isinstance(console.screen, ConfirmScreen)
        await pilot.press("R")
        assert isinstance(console.screen, ConfirmScreen)


# masked arguments -----------------------------------------------------------------------------
SECRET_ID = "5b1e0c2a-0000-4000-8000-0000000000ff"
#: A Celery worker's reply to ``scheduled``: the arguments themselves, not their reprs.
CELERY_REPLY = {"celery@beta": [{"eta": "2026-09-21T14:14:20", "priority": 0, "request": {
    "id": SECRET_ID, "name": "tasks.login", "args": ["s3cret"], "kwargs": {},
    "delivery_info": {"routing_key": "celery"}}}]}


def test_a_worker_held_task_run_now_keeps_its_senders_mask_and_shows_no_call_line():
    masked = ScheduledTask(SECRET_ID, "tasks.login", T0 + 60, "celery", "('***',)", "{}",
                           "qtui@alpha", ["s3cret"], {})
    assert scheduled_actions.run_now_command([masked]) is None  # a call line would carry it
    copy = scheduled_actions.resend(masked)
    assert (copy.args, copy.argsrepr, copy.kwargsrepr) == (["s3cret"], "('***',)", "{}")
    plain = dataclasses.replace(masked, args="('s3cret',)")
    assert scheduled_actions.resend(plain).argsrepr is None  # not masked: the client's reprs


def test_a_celery_held_task_whose_reprs_are_unknown_is_run_now_with_a_neutral_mask():
    """Its worker sent the arguments (Celery's ``scheduled`` ignores ``safe``) and no event
    carried the reprs: the copy runs with the real arguments and shows a neutral mask, neither
    the arguments nor the sentence the view shows for them."""
    [held] = store.from_workers(CELERY_REPLY)
    copy = scheduled_actions.resend(held)
    assert copy.args == ["s3cret"]
    assert (copy.argsrepr, copy.kwargsrepr) == (scheduled_actions.UNKNOWN_REPRS,) * 2
    assert scheduled_actions.run_now_command([held]) is None


async def test_a_celery_held_task_shows_its_events_reprs_never_its_arguments(monkeypatch):
    def read(app, queues=(), timeout=1.0, destination=None):  # type: ignore[no-untyped-def]
        return Scheduled(store.from_workers(CELERY_REPLY), {}, [])
    monkeypatch.setattr(store, "read", read)
    monkeypatch.setattr(view, "now", lambda: T0)
    seen = row(id=SECRET_ID, name="tasks.login", state="RECEIVED", args="('***',)",
               kwargs="{}", received=T0)
    console = FixedConsole(snapshot=dataclasses.replace(SNAPSHOT, tasks=(seen,)))
    async with console.run_test(size=(200, 30)) as pilot:
        await pilot.press("7")
        rows = await _rows(console, pilot, 1)
        assert rows[0][3] == "('***',) {}"
        assert "s3cret" not in screen_text(console)


async def test_a_celery_held_task_the_console_did_not_see_shows_no_arguments(monkeypatch):
    def read(app, queues=(), timeout=1.0, destination=None):  # type: ignore[no-untyped-def]
        return Scheduled(store.from_workers(CELERY_REPLY), {}, [])
    monkeypatch.setattr(store, "read", read)
    console = FixedConsole()
    async with console.run_test(size=(200, 30)) as pilot:
        await pilot.press("7")
        rows = await _rows(console, pilot, 1)
        assert rows[0][3] == UNSHOWN
        assert "s3cret" not in screen_text(console)
