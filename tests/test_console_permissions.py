"""Console permissions: ``console_permissions`` lists the actions a console may take; the others
are hidden from the footer and the help screen and refused, as in --read-only mode. Retry asks
first, like every other action. Driven with Textual's Pilot on the fixed cluster."""

from __future__ import annotations

from typing import Any

import pytest

from qtui.core import App
from qtui.core.exceptions import ConfigError
from qtui.tui.actions import ActionResult
from qtui.tui.arguments import Arguments
from qtui.tui.views.modals import ConfirmScreen, HelpScreen
from qtui.tui.views.queues import QueuesScreen
from qtui.tui.views.schedules import SchedulesScreen
from qtui.tui.views.tasks import TasksScreen
from qtui.tui.views.workers import WorkersScreen

from .console_data import FixedConsole, screen_text

SIZE = (140, 40)

pytestmark = pytest.mark.usefixtures("utc")


def console_allowing(*permissions: str) -> FixedConsole:
    return FixedConsole(app=App("console-tests", broker="redis://127.0.0.1:6379/15",
                                console_permissions=list(permissions)))


def shown_actions(console: FixedConsole) -> set[str]:
    return {b.binding.action for b in console.screen.active_bindings.values()}


async def test_only_the_permitted_actions_are_shown():
    console = console_allowing("revoke", "retry")
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        shown = shown_actions(console)
        assert {"revoke", "retry"} <= shown
        assert not {"terminate", "rate_limit"} & shown
        await pilot.press("2")
        assert not {"grow", "shrink", "shutdown", "rate_limit", "time_limit", "add_consumer",
                    "cancel_consumer"} & shown_actions(console)
        await pilot.press("4")
        assert not {"purge", "add_consumer", "cancel_consumer"} & shown_actions(console)
        assert "may retry, revoke" in console.sub_title


async def test_the_help_screen_lists_only_the_permitted_actions():
    console = console_allowing("revoke")
    async with console.run_test(size=(140, 100)) as pilot:
        await pilot.press("3", "question_mark")
        help_screen = console.screen
        assert isinstance(help_screen, HelpScreen)
        view_keys = dict(help_screen.sections)["This view"]
        described = {text for _, text in view_keys}
        assert "Revoke" in described
        assert not {"Terminate", "Retry", "Rate limit type"} & described


async def test_actions_not_permitted_are_refused():
    console = console_allowing("revoke")
    ran: list[str] = []
    for name in ("terminate", "rate_limit", "time_limit", "pool_grow", "pool_shrink",
                 "add_consumer", "cancel_consumer", "purge", "shutdown"):
        setattr(console.actions, name, lambda *a, _name=name, **k: ran.append(_name))
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "T", "L", "y")
        assert isinstance(console.screen, TasksScreen)
        await pilot.press("2", "D", "plus", "underscore", "a", "x", "r", "t")
        assert isinstance(console.screen, WorkersScreen)
        await pilot.press("4", "P", "a", "x")
        assert isinstance(console.screen, QueuesScreen)
        await console.workers.wait_for_complete()
    assert ran == []


async def test_retry_is_refused_without_its_permission_even_when_called():
    console = console_allowing("revoke")
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        console.retry_task(console.model.tasks[next(iter(console.model.tasks))])
        await pilot.pause()
        assert not isinstance(console.screen, ConfirmScreen)
        assert ("error", "Retry is not in console_permissions") in console.notes


@pytest.mark.parametrize("answer, retried", [("n", 0), ("y", 1)])
async def test_retry_asks_first(monkeypatch, answer, retried):
    console = FixedConsole()
    sent: list[tuple[str, Any, Any]] = []
    monkeypatch.setattr(console.feed, "full_arguments", lambda task_id: Arguments([1, 2], {}))
    monkeypatch.setattr(console.actions, "retry", lambda name, args, kwargs, **routing: (
        sent.append((name, args, kwargs)) or ActionResult(f"retry {name}", ("sent",), True)))
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "y")
        await console.workers.wait_for_complete()  # the full arguments are looked up first
        await pilot.pause()
        assert isinstance(console.screen, ConfirmScreen)
        assert "Retry" in screen_text(console)
        await pilot.press(answer)
        await console.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(console.screen, TasksScreen)
    assert len(sent) == retried


def test_an_unknown_permission_is_a_clear_error():
    with pytest.raises(ConfigError, match="console_permissions"):
        App("t", broker="memory://", console_permissions=["revoke", "nuke"])


async def test_read_only_wins_over_permissions():
    console = FixedConsole(read_only=True, app=App(
        "console-tests", broker="redis://127.0.0.1:6379/15", console_permissions=["revoke"]))
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        assert "revoke" not in shown_actions(console)
        assert "read-only" in console.sub_title


def shown_descriptions(console: FixedConsole) -> set[str]:
    return {b.binding.description for b in console.screen.active_bindings.values()}


@pytest.mark.parametrize(("permissions", "allowed", "refused"), [
    (("revoke", "retry"), {"Run now"}, {"Pause", "Resume"}),
    (("pause",), {"Pause", "Resume"}, {"Run now"}),
])
async def test_schedule_pause_and_resume_need_pause_and_run_now_needs_retry(
        permissions, allowed, refused):
    console = console_allowing(*permissions)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        assert isinstance(console.screen, SchedulesScreen)
        shown = shown_descriptions(console)
        assert allowed <= shown and not refused & shown


async def test_a_queue_pause_needs_pause_and_nothing_else_does():
    console = console_allowing("pause")
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        assert isinstance(console.screen, QueuesScreen)
        assert shown_descriptions(console) >= {"Pause/resume"}
        assert not {"Purge", "Add consumer"} & shown_descriptions(console)
    console = console_allowing("revoke", "retry")
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        assert "Pause/resume" not in shown_descriptions(console)
