"""Bulk actions on the tasks view (issue 16, item 6): marking rows (space, shift+arrows, the
range key, every task matching the filter, clearing), one broadcast for every id, the count
typed above 100 items, finished tasks skipped and said so, and the scripted command each
confirmation shows doing what the console does. Driven with Pilot on the fixed cluster."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from textual.widgets import Input, Static

from qtui.core import App
from qtui.tui import commands
from qtui.tui.arguments import Arguments
from qtui.tui.views.modals import ChoiceScreen, ConfirmScreen
from qtui.tui.views.tasks import TasksScreen

from .console_data import TASKS, FixedConsole, screen_text
from .test_console_actions import arrive, new_tasks, recorded, settle

SIZE = (140, 40)

pytestmark = pytest.mark.usefixtures("utc")

# The tasks view, newest first: 8 FAILURE, 7 REVOKED, 6 RECEIVED, 5 RETRY, 4 FAILURE, 3 STARTED,
# 2 SUCCESS, 1 SUCCESS.
BY_ROW = sorted(TASKS, key=lambda t: t.received or 0, reverse=True)
RECEIVED, RETRY, STARTED = BY_ROW[2], BY_ROW[3], BY_ROW[5]


def tasks_view(console: FixedConsole) -> TasksScreen:
    screen = console.screen
    assert isinstance(screen, TasksScreen)
    return screen


def marks(console: FixedConsole) -> list[str]:
    return list(tasks_view(console).marks)


def status(console: FixedConsole) -> str:
    return str(tasks_view(console).query_one("#status", Static).render())


def qtui(app: App, argv: tuple[str, ...]) -> int:
    """Run a scripted command (the words after ``qtui``) in-process, on ``app``."""
    parser = argparse.ArgumentParser(prog="qtui")
    commands.add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args, app))


async def show_new_tasks(console: FixedConsole, pilot: Any, count: int) -> None:
    """``count`` new tasks arrive; the tasks view is filtered to them."""
    await pilot.press("3")
    arrive(console, *new_tasks(count))
    await pilot.pause()
    tasks_view(console).set_filter("name:tasks.new")
    await pilot.pause()


# marking ---------------------------------------------------------------------------------------
async def test_space_marks_the_row_and_moves_down_and_again_unmarks_it():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "down", "down", "space")
        assert marks(console) == [RECEIVED.id]
        assert tasks_view(console).selected_id() == RETRY.id
        assert f"✓ {RECEIVED.id[:8]}…" in screen_text(console)
        assert "1 marked" in status(console)
        await pilot.press("up", "space")
        assert marks(console) == []
        assert "✓" not in screen_text(console) and "marked" not in status(console)


async def test_shift_down_marks_a_range_as_the_cursor_moves():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "down", "down", "shift+down", "shift+down")
        assert marks(console) == [RECEIVED.id, RETRY.id, BY_ROW[4].id]
        await pilot.press("shift+up")
        assert len(marks(console)) == 3  # moving back keeps what was marked


async def test_ctrl_space_marks_every_row_from_the_last_mark_to_the_cursor():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "down", "space", "down", "down", "down", "ctrl+space")
        assert sorted(marks(console)) == sorted(t.id for t in BY_ROW[1:6])


async def test_star_marks_every_task_matching_the_filter_on_every_page_and_u_clears():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await show_new_tasks(console, pilot, 150)  # two pages
        await pilot.press("asterisk")
        assert len(marks(console)) == 150
        assert "150 marked" in status(console)
        await pilot.press("u")
        assert marks(console) == [] and "marked" not in status(console)


# acting on the marks -----------------------------------------------------------------------------
async def test_a_bulk_revoke_is_one_broadcast_with_every_id_and_skips_finished_tasks(
        monkeypatch):
    console = FixedConsole()
    calls = recorded(monkeypatch, console)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "down", "shift+down", "shift+down")  # REVOKED, RECEIVED, RETRY
        await pilot.press("R")
        dialog = console.screen
        assert isinstance(dialog, ConfirmScreen)
        assert dialog.question == "Revoke 2 tasks? They will not run."
        assert "1 task skipped: finished as REVOKED (1)." in dialog.details
        assert f"{RECEIVED.id}  tasks.add" in dialog.details
        assert dialog.command is not None
        assert dialog.command.argv == ("control", "revoke", RECEIVED.id, RETRY.id)
        await pilot.press("y")
        await settle(console, pilot)
    assert calls == [("revoke", {"task_id": [RECEIVED.id, RETRY.id], "terminate": False,
                                 "signal": "SIGTERM"}, None)]


async def test_a_bulk_terminate_asks_the_signal_then_sends_one_broadcast(monkeypatch):
    console = FixedConsole()
    calls = recorded(monkeypatch, console)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "down", "down", "space", "space", "T")
        assert isinstance(console.screen, ChoiceScreen)
        await pilot.press("down", "enter")  # SIGKILL
        assert isinstance(console.screen, ConfirmScreen)
        assert console.screen.question == "Terminate (SIGKILL) 2 tasks?"
        await pilot.press("y")
        await settle(console, pilot)
    assert calls == [("revoke", {"task_id": [RECEIVED.id, RETRY.id], "terminate": True,
                                 "signal": "SIGKILL"}, None)]


async def test_only_finished_tasks_marked_is_refused_at_once_with_the_reason(monkeypatch):
    console = FixedConsole()
    calls = recorded(monkeypatch, console)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "end", "space", "up", "space", "R")  # the last row stays
        assert isinstance(console.screen, TasksScreen)
        assert any("Nothing to revoke: 2 tasks skipped: finished as SUCCESS (2)." in text
                   for _, text in console.notes), console.notes
    assert calls == []


async def test_above_100_items_the_count_must_be_typed(monkeypatch):
    console = FixedConsole()
    calls = recorded(monkeypatch, console)
    async with console.run_test(size=SIZE) as pilot:
        await show_new_tasks(console, pilot, 150)
        await pilot.press("asterisk", "R")
        dialog = console.screen
        assert isinstance(dialog, ConfirmScreen) and dialog.typed == "150"
        await pilot.press("y", "enter")  # a stray y is typed into the box, not taken as yes
        assert console.screen is dialog
        await pilot.press("backspace", *"149", "enter")
        assert console.screen is dialog
        box = dialog.query_one("#typed", Input)
        box.value = ""
        await pilot.press(*"150", "enter")
        assert isinstance(console.screen, TasksScreen)
        await settle(console, pilot)
    assert len(calls) == 1
    method, arguments, _ = calls[0]
    assert method == "revoke" and len(arguments["task_id"]) == 150  # type: ignore[arg-type]


async def test_at_100_items_y_is_enough(monkeypatch):
    console = FixedConsole()
    recorded(monkeypatch, console)
    async with console.run_test(size=SIZE) as pilot:
        await show_new_tasks(console, pilot, 100)
        await pilot.press("asterisk", "R")
        assert isinstance(console.screen, ConfirmScreen) and console.screen.typed is None


async def test_escape_in_the_count_box_cancels(monkeypatch):
    console = FixedConsole()
    calls = recorded(monkeypatch, console)
    async with console.run_test(size=SIZE) as pilot:
        await show_new_tasks(console, pilot, 101)
        await pilot.press("asterisk", "R", "escape")
        assert isinstance(console.screen, TasksScreen)
        await settle(console, pilot)
    assert calls == []


async def test_a_bulk_retry_looks_up_every_arguments_at_once_and_sends_each(monkeypatch):
    console = FixedConsole()
    sent: list[tuple[str, dict[str, Any]]] = []
    looked_up: list[list[str]] = []

    def full_arguments_of(ids: list[str]) -> dict[str, Any]:
        looked_up.append(list(ids))
        return {RECEIVED.id: Arguments([1, 2], {"x": 3}, masked=False)}
    monkeypatch.setattr(console.feed, "full_arguments_of", full_arguments_of)
    monkeypatch.setattr(console.cluster, "send_task",
                        lambda name, **options: sent.append((name, options)) or
                        type("R", (), {"id": "new-id"})())
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "down", "down", "space", "space", "y")
        await settle(console, pilot)
        dialog = console.screen
        assert isinstance(dialog, ConfirmScreen)
        # RETRY's repr "('https://example.com/feed',)" is a complete literal: it goes too.
        assert dialog.question.startswith("Retry 2 tasks?")
        assert dialog.command is not None
        assert dialog.command.commands[0] == ("call", "tasks.add", "--args", "[1, 2]",
                                              "--kwargs", '{"x": 3}')
        await pilot.press("y")
        await settle(console, pilot)
    assert looked_up == [[RECEIVED.id, RETRY.id]]
    assert [(name, o["args"], o["kwargs"]) for name, o in sent] == [
        ("tasks.add", [1, 2], {"x": 3}), ("feeds.fetch", ["https://example.com/feed"], {})]
    assert console.outcomes[-1].title == "retry 2 tasks" and console.outcomes[-1].ok


async def test_bulk_revoke_needs_the_revoke_permission(monkeypatch):
    console = FixedConsole(app=App("console-tests", broker="redis://127.0.0.1:6379/15",
                                   console_permissions=["retry"]))
    calls = recorded(monkeypatch, console)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "down", "down", "space", "space", "R", "T")
        assert isinstance(console.screen, TasksScreen)
        await settle(console, pilot)
    assert calls == []


# the scripted command each confirmation shows ---------------------------------------------------
class Sent:
    """Stands in for ``app.control.broadcast`` in the scripted command: records what it sends
    and gives Celery's reply shape."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, object], object]] = []

    def __call__(self, method: str, arguments: dict[str, object], **options: Any) -> Any:
        from qtui.core.control import Replies
        self.calls.append((method, arguments, options.get("destination")))
        return Replies([{"qtui@alpha": {"ok": "done"}}])


@pytest.mark.parametrize("keys", [
    ("3", "down", "down", "R"),                       # revoke one
    ("3", "down", "down", "T", "down", "enter"),      # terminate one with SIGKILL
    ("3", "down", "down", "space", "space", "R"),     # revoke two
    ("3", "down", "down", "space", "space", "T", "enter"),  # terminate two with SIGTERM
    ("2", "D"),                                       # shut a worker down
    ("2", "x", "down", "enter"),                      # cancel images' last consumer
], ids=["revoke", "terminate", "bulk-revoke", "bulk-terminate", "shutdown", "cancel-consumer"])
async def test_the_command_a_confirmation_shows_sends_what_the_console_sends(
        monkeypatch, tmp_path, keys):
    console = FixedConsole()
    calls = recorded(monkeypatch, console)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press(*keys)
        dialog = console.screen
        assert isinstance(dialog, ConfirmScreen) and dialog.command is not None
        command = dialog.command
        await pilot.press("y")
        await settle(console, pilot)
    app = App("cli", broker="redis://127.0.0.1:6379/15",
              console_history_file=str(tmp_path / "history.sqlite"))
    sent = Sent()
    monkeypatch.setattr(app.control, "broadcast", sent)
    qtui(app, command.argv)
    assert [(m, a, d) for m, a, d in calls] == sent.calls


async def test_the_retry_command_a_confirmation_shows_sends_what_the_console_sends(
        monkeypatch, tmp_path):
    console = FixedConsole()
    from_console: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(console.feed, "full_arguments", lambda task_id: None)
    monkeypatch.setattr(console.cluster, "send_task",
                        lambda name, **options: from_console.append((name, options)) or
                        type("R", (), {"id": "new-id"})())
    failed = next(t for t in TASKS if t.queue == "billing")
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        tasks_view(console).set_filter(f"id:{failed.id}")
        await pilot.press("y")
        await settle(console, pilot)
        dialog = console.screen
        assert isinstance(dialog, ConfirmScreen) and dialog.command is not None
        command = dialog.command
        assert "qtui call billing.charge --args '[4, 19.99]'" in command.shown()
        await pilot.press("y")
        await settle(console, pilot)
    app = App("cli", broker="redis://127.0.0.1:6379/15",
              console_history_file=str(tmp_path / "history.sqlite"))
    from_command: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(app, "send_task", lambda name, **options: from_command.append(
        (name, options)) or type("R", (), {"id": "other-id"})())
    assert qtui(app, command.argv) == 0
    assert from_command == from_console


async def test_c_in_a_confirmation_copies_the_whole_command(monkeypatch):
    console = FixedConsole()
    copied: list[str] = []
    monkeypatch.setattr(console, "copy_to_clipboard", copied.append)
    async with console.run_test(size=SIZE) as pilot:
        await show_new_tasks(console, pilot, 150)
        await pilot.press("asterisk", "R")
        dialog = console.screen
        assert isinstance(dialog, ConfirmScreen) and dialog.command is not None
        assert "more words" in dialog.command.shown()  # 150 ids do not fit the dialog
        dialog.action_copy_command()
    assert len(copied) == 1 and copied[0].startswith("qtui control revoke ")
    assert len(copied[0].split()) == 3 + 150


def test_revoke_signal_without_terminate_is_a_usage_error(capsys):
    app = App("cli", broker="redis://127.0.0.1:6379/15")
    assert qtui(app, ("control", "revoke", "an-id", "--signal", "SIGKILL")) == 2
    assert "--signal needs --terminate" in capsys.readouterr().err
    assert qtui(app, ("control", "rate_limit", "tasks.add", "1/s", "--terminate")) == 2
    assert "go with revoke only" in capsys.readouterr().err



def test_a_huge_reply_is_cut_in_the_outcome():
    from qtui.tui.actions import REPLY_SHOWN, outcome_from_replies
    ids = ", ".join(f"'{n:036d}'" for n in range(10_000))
    outcome = outcome_from_replies("revoke 10000 tasks",
                                   [{"w1": {"ok": f"tasks {{{ids}}} flagged as revoked"}}])
    assert outcome.ok and len(outcome.message) < REPLY_SHOWN + 60
    assert outcome.message.startswith("w1: OK tasks {'0000") and "chars]" in outcome.message


async def test_a_bulk_terminate_of_finished_tasks_only_says_there_is_nothing_to_terminate(
        monkeypatch):
    console = FixedConsole()
    calls = recorded(monkeypatch, console)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "end", "space", "T", "down", "enter")
        assert isinstance(console.screen, TasksScreen)
        assert any("Nothing to terminate: 1 task skipped: finished as SUCCESS (1)." in text
                   for _, text in console.notes), console.notes
    assert calls == []
