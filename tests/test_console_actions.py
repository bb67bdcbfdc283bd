"""Acting on the right task (issue 20): the selection stays on the task the operator chose, every
action names it and asks first, actions that cannot work are refused at once with the reason,
and the tasks view and its dialogs fit 80x24. Driven with Pilot on the fixed cluster."""

from __future__ import annotations

import dataclasses

import pytest
from textual.widgets import DataTable, Static

from qtui.tui.rows import Snapshot, TaskRow
from qtui.tui.views.modals import ChoiceScreen, ConfirmScreen, PromptScreen
from qtui.tui.views.tasks import TasksScreen

from .console_data import (
    QUEUES,
    SNAPSHOT,
    T0,
    TASKS,
    WORKERS,
    FixedConsole,
    changed,
    row,
    screen_text,
)

SIZE = (140, 40)
SMALL = (80, 24)

pytestmark = pytest.mark.usefixtures("utc")  # times shown the same on every machine

RECEIVED = TASKS[5]  # tasks.add, RECEIVED: the third row of the tasks view (newest first)


def new_tasks(count: int, start: int = 100) -> tuple[TaskRow, ...]:
    """``count`` tasks received after every task of the fixed cluster."""
    return tuple(row(id=f"{n:08x}-1111-4000-8000-{n:012d}", name="tasks.new",
                         state="RECEIVED", worker="qtui@alpha", received=T0 + n)
                 for n in range(start, start + count))


def arrive(console: FixedConsole, *tasks: TaskRow) -> None:
    """Tasks arrive from the feed and the view redraws, as after a snapshot."""
    console.apply(Snapshot(workers=WORKERS, tasks=tasks, queues=QUEUES,
                           throughput=SNAPSHOT.throughput, connected=True))
    screen = console.screen
    assert isinstance(screen, TasksScreen)
    screen.refresh_view()


def cursor_task(console: FixedConsole) -> str:
    screen = console.screen
    assert isinstance(screen, TasksScreen)
    task_id = screen.selected_id()
    assert task_id is not None
    return task_id


async def test_the_selection_follows_its_task_when_new_tasks_push_it_off_the_page():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "down", "down")
        assert cursor_task(console) == RECEIVED.id
        arrive(console, *new_tasks(200))
        await pilot.pause()
        assert cursor_task(console) == RECEIVED.id
        assert "page 3/3" in str(console.screen.query_one("#status", Static).render())
        await pilot.press("R")
        assert isinstance(console.screen, ConfirmScreen)
        assert RECEIVED.id in str(console.screen.question)


async def test_turning_the_page_puts_the_cursor_on_the_pages_first_row():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "down", "down")
        arrive(console, *new_tasks(200))
        await pilot.press("left_square_bracket")
        screen = console.screen
        assert isinstance(screen, TasksScreen) and screen.page == 1
        table = screen.query_one("#tasks", DataTable)
        assert table.cursor_row == 0


async def test_when_the_selected_task_leaves_the_view_the_status_line_says_so():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "right")  # the Received tab: only RECEIVED is there
        assert cursor_task(console) == RECEIVED.id
        arrive(console, changed(RECEIVED, state="STARTED", started=T0 + 7))
        await pilot.pause()
        status = str(console.screen.query_one("#status", Static).render())
        assert f"{RECEIVED.id[:8]}… left this view" in status


async def test_a_state_filter_selects_its_state_tab_instead_of_narrowing_another():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "right")  # the Received tab
        await pilot.press("colon", *"tasks state:FAILURE", "enter")
        await pilot.pause()
        screen = console.screen
        assert isinstance(screen, TasksScreen) and screen.state_tab == "FAILURE"
        table = screen.query_one("#tasks", DataTable)
        assert table.row_count == 2
        assert screen.query_one("#states").active == "FAILURE"  # type: ignore[attr-defined]


async def test_a_filter_of_several_states_shows_them_all_whatever_the_tab():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "right", "slash", *"state:FAILURE,RETRY", "enter")
        await pilot.pause()
        screen = console.screen
        assert isinstance(screen, TasksScreen) and screen.state_tab == "ALL"
        assert screen.query_one("#tasks", DataTable).row_count == 3


@pytest.mark.parametrize("key", ["R", "T"])
async def test_revoke_and_terminate_are_refused_on_a_finished_task_with_the_reason(key):
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", key)  # the first row: billing.charge, FAILURE
        await pilot.pause()
        assert isinstance(console.screen, TasksScreen)
        assert any(severity == "warning" and "it is FAILURE: it has finished" in text
                   for severity, text in console.notes), console.notes


async def test_revoke_is_refused_on_a_finished_task_in_its_details():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("colon", *"tasks args:19.99", "enter", "enter", "R")
        await pilot.pause()
        assert not isinstance(console.screen, ConfirmScreen)
        assert any("has finished" in text for _, text in console.notes)


async def test_the_table_shows_a_short_id_and_the_dialog_the_whole_one():
    console = FixedConsole()
    async with console.run_test(size=SMALL) as pilot:
        await pilot.press("3", "down", "down")
        text = screen_text(console)
        assert f"{RECEIVED.id[:8]}…" in text and RECEIVED.id not in text
        await pilot.press("R")
        assert RECEIVED.id in screen_text(console)


async def test_the_terminate_confirmation_and_signal_picker_fit_80x24():
    console = FixedConsole()
    async with console.run_test(size=SMALL) as pilot:
        await pilot.press("3", "down", "down", "T")
        assert isinstance(console.screen, ChoiceScreen)
        text = screen_text(console)
        assert "Signal to terminate tasks.add" in text and RECEIVED.id in text
        await pilot.press("enter")
        assert isinstance(console.screen, ConfirmScreen)
        assert "SIGTERM?" in screen_text(console)  # wrapped, not cut off


async def test_end_goes_to_the_last_row_without_scrolling_sideways():
    console = FixedConsole()
    async with console.run_test(size=SMALL) as pilot:
        await pilot.press("3", "end")
        table = console.screen.query_one("#tasks", DataTable)
        assert table.scroll_x == 0 and table.cursor_row == len(TASKS) - 1
        await pilot.press("home")
        assert table.cursor_row == 0


async def test_the_status_line_names_the_sort_column_at_80x24():
    console = FixedConsole()
    async with console.run_test(size=SMALL) as pilot:
        await pilot.press("3")
        arrive(console, *new_tasks(200))  # three pages: the line says which one
        await pilot.pause()
        assert "sorted by Received" in screen_text(console)


async def test_a_task_without_a_name_shows_as_unknown():
    nameless = row(id="c0ffee00-0000-4000-8000-000000000099", name="", state="STARTED",
                       worker="qtui@alpha", received=T0 + 99)
    console = FixedConsole(snapshot=dataclasses.replace(SNAPSHOT, tasks=(*TASKS, nameless)))
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        assert "c0ffee00…  (unknown)" in screen_text(console)


# workers and queues ------------------------------------------------------------------------------
class Broadcasts(list[tuple[str, dict[str, object], object]]):
    """Stands in for ``app.control.broadcast``: records (method, arguments, destination) and
    has every online worker of the fixed cluster answer 'ok'."""

    def __call__(self, method: str, arguments: dict[str, object],
                 **options: object) -> list[dict[str, object]]:
        self.append((method, arguments, options.get("destination")))
        return [{w.hostname: {"ok": "done"}} for w in WORKERS if w.alive]


def recorded(monkeypatch: pytest.MonkeyPatch, console: FixedConsole) -> Broadcasts:
    calls = Broadcasts()
    monkeypatch.setattr(console.cluster.control, "broadcast", calls)
    return calls


async def settle(console: FixedConsole, pilot) -> None:  # type: ignore[no-untyped-def]
    await console.workers.wait_for_complete()
    await pilot.pause()


@pytest.mark.parametrize("key", ["plus", "underscore", "a", "x", "r", "t", "D"])
async def test_actions_on_an_offline_worker_are_refused_at_once(monkeypatch, key):
    console = FixedConsole()
    calls = recorded(monkeypatch, console)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2", "down", "down", key)  # celery@gamma, offline
        await settle(console, pilot)
        assert console.screen.__class__.__name__ == "WorkersScreen"
        assert any(severity == "error" and "celery@gamma is offline" in text
                   for severity, text in console.notes), console.notes
    assert calls == []


async def test_cancelling_a_workers_consumer_picks_from_the_queues_it_consumes(monkeypatch):
    console = FixedConsole()
    calls = recorded(monkeypatch, console)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2", "x")  # qtui@alpha consumes celery and images
        assert isinstance(console.screen, ChoiceScreen)
        assert console.screen.choices == ["celery", "images"]
        await pilot.press("enter")  # celery: qtui@beta consumes it too, so no question
        await settle(console, pilot)
    assert calls == [("cancel_consumer", {"queue": "celery"}, ["qtui@alpha"])]


async def test_cancelling_a_queues_last_consumer_asks_first_and_says_so(monkeypatch):
    console = FixedConsole()
    calls = recorded(monkeypatch, console)
    async with console.run_test(size=SMALL) as pilot:
        await pilot.press("2", "x", "down", "enter")  # images: qtui@alpha is its only consumer
        assert isinstance(console.screen, ConfirmScreen)
        assert "images will then have no consumer" in str(console.screen.question)
        assert "consumes it again." in screen_text(console)  # the whole question, wrapped
        await pilot.press("y")
        await settle(console, pilot)
    assert calls == [("cancel_consumer", {"queue": "images"}, ["qtui@alpha"])]


async def test_the_queues_view_offers_the_queues_consumers_and_asks_before_the_last(
        monkeypatch):
    console = FixedConsole()
    calls = recorded(monkeypatch, console)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("4", "down", "x")  # images
        assert isinstance(console.screen, ChoiceScreen)
        assert console.screen.choices == ["all workers", "qtui@alpha"]
        await pilot.press("down", "enter")
        assert isinstance(console.screen, ConfirmScreen)
        assert "no consumer" in str(console.screen.question)
        await pilot.press("n")
        await settle(console, pilot)
    assert calls == []


async def test_a_queue_with_no_consumer_is_marked_in_the_queues_view():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        table = console.screen.query_one("#queues", DataTable)
        column = [str(c.label) for c in table.columns.values()].index("Cons")
        consumers = {str(table.get_row_at(i)[0]): str(table.get_cell_at((i, column)))
                     for i in range(table.row_count)}
        assert consumers == {"celery": "2", "images": "1", "reports": "none"}


async def test_the_purge_dialog_says_its_count_is_approximate():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("4", "P")  # celery: 12 at the last poll
        assert isinstance(console.screen, ConfirmScreen)
        question = str(console.screen.question)
        assert "About 12 waiting" in question and "number removed is reported" in question


async def test_rate_limit_on_a_worker_picks_a_task_type_showing_its_current_limit(monkeypatch):
    console = FixedConsole()
    calls = recorded(monkeypatch, console)
    asked: list[tuple[str, str, tuple[str, ...]]] = []

    def inspect(hostname: str, method: str, *arguments: str) -> object:
        asked.append((hostname, method, arguments))
        return ["tasks.add [rate_limit=10/m]", "tasks.mul"]
    monkeypatch.setattr(console, "inspect", inspect)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2", "r")
        await settle(console, pilot)
        assert isinstance(console.screen, ChoiceScreen)
        assert console.screen.choices == ["tasks.add  (now 10/m)", "tasks.mul  (now no limit)"]
        await pilot.press("enter")
        answer = console.screen.query_one("#answer")
        assert answer.value == "10/m"  # type: ignore[attr-defined]
        answer.value = "5/m"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await settle(console, pilot)
    assert asked == [("qtui@alpha", "registered", ("rate_limit",))]
    assert calls == [("rate_limit", {"task_name": "tasks.add", "rate_limit": "5/m"},
                      ["qtui@alpha"])]


async def test_rate_limit_offers_the_task_types_seen_when_the_worker_does_not_answer(
        monkeypatch):
    console = FixedConsole()
    monkeypatch.setattr(console, "inspect", lambda *args: None)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2", "r")
        await settle(console, pilot)
        assert isinstance(console.screen, ChoiceScreen)
        assert "billing.charge  (seen in events; limit unknown)" in console.screen.choices


async def test_a_state_filter_from_another_view_opens_the_tasks_view_on_its_tab():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("colon", *"tasks state:retry", "enter")  # from the overview
        await pilot.pause()
        screen = console.screen
        assert isinstance(screen, TasksScreen) and screen.state_tab == "RETRY"
        assert screen.query_one("#states").active == "RETRY"  # type: ignore[attr-defined]
        assert screen.query_one("#tasks", DataTable).row_count == 1


async def test_time_limits_on_a_worker_pick_a_task_type_showing_its_current_limits(monkeypatch):
    console = FixedConsole()
    calls = recorded(monkeypatch, console)
    monkeypatch.setattr(console, "inspect", lambda *args: [
        "tasks.add", "tasks.slow [soft_time_limit=10.0 time_limit=20.0]"])
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2", "t")
        await settle(console, pilot)
        assert isinstance(console.screen, ChoiceScreen)
        assert console.screen.choices == ["tasks.add  (now no limit)",
                                          "tasks.slow  (now soft 10.0, hard 20.0)"]
        await pilot.press("down", "enter")
        answer = console.screen.query_one("#answer")
        assert answer.value == "10.0 20.0"  # type: ignore[attr-defined]
        answer.value = "30 60"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await settle(console, pilot)
    assert calls == [("time_limit", {"task_name": "tasks.slow", "soft": 30.0, "hard": 60.0},
                      ["qtui@alpha"])]


async def test_adding_a_consumer_picks_a_queue_the_worker_does_not_consume_yet(monkeypatch):
    console = FixedConsole()
    calls = recorded(monkeypatch, console)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2", "down", "a")  # qtui@beta consumes celery only
        assert isinstance(console.screen, ChoiceScreen)
        assert console.screen.choices == ["images", "reports", "another queue (type its name)…"]
        await pilot.press("down", "enter")
        await settle(console, pilot)
        await pilot.press("a", "end", "enter")
        assert isinstance(console.screen, PromptScreen)
        await pilot.press(*"urgent", "enter")
        await settle(console, pilot)
    assert calls == [("add_consumer", {"queue": "reports"}, ["qtui@beta"]),
                     ("add_consumer", {"queue": "urgent"}, ["qtui@beta"])]


async def test_a_filter_without_a_state_leaves_the_tab_a_state_filter_had_picked():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "slash", *"state:FAILURE", "enter")
        await pilot.press("colon", *f"tasks id:{RECEIVED.id[:12]}", "enter")
        await pilot.pause()
        screen = console.screen
        assert isinstance(screen, TasksScreen) and screen.state_tab == "ALL"
        assert cursor_task(console) == RECEIVED.id


async def test_a_filter_keeps_the_tab_the_operator_chose():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "slash", *"state:FAILURE", "enter", "right")  # Retry, by hand
        await pilot.press("slash", *"feeds", "enter")
        await pilot.pause()
        screen = console.screen
        assert isinstance(screen, TasksScreen) and screen.state_tab == "RETRY"
        assert screen.query_one("#tasks", DataTable).row_count == 1


def with_pid(pid: int) -> Snapshot:
    """The fixed cluster, qtui@alpha's process known by its pid."""
    return dataclasses.replace(SNAPSHOT, workers=tuple(
        dataclasses.replace(w, pid=pid) if w.hostname == "qtui@alpha" else w for w in WORKERS))


@pytest.mark.parametrize("keys, answer", [
    (("r", "enter"), "5/m"),  # rate limit of tasks.add: the rate asked
    (("t", "enter"), "30 60"),  # time limits of tasks.add: the limits asked
    (("a",), None),  # add consumer: the queue asked
    (("x",), None),  # cancel consumer: the queue asked
], ids=["rate_limit", "time_limit", "add_consumer", "cancel_consumer"])
async def test_a_worker_action_answered_after_the_worker_restarted_is_not_sent(
        monkeypatch, keys, answer):
    """Remote control addresses a hostname: an action whose last question is answered once
    a new process took the chosen worker's name would reach the new one. Nothing is sent."""
    console = FixedConsole(snapshot=with_pid(100))
    calls = recorded(monkeypatch, console)
    monkeypatch.setattr(console, "inspect", lambda *args: ["tasks.add", "tasks.mul"])
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2", keys[0])
        await settle(console, pilot)
        await pilot.press(*keys[1:])
        assert isinstance(console.screen, PromptScreen if answer else ChoiceScreen)
        if answer:
            console.screen.query_one("#answer").value = answer  # type: ignore[attr-defined]
        alpha = console.model.workers["qtui@alpha"]
        console.model.workers["qtui@alpha"] = dataclasses.replace(alpha, pid=200)
        await pilot.press("enter")
        await settle(console, pilot)
    assert calls == []
    assert any(severity == "error" and "qtui@alpha restarted since you chose it (pid 100, now "
               "200)" in text for severity, text in console.notes), console.notes
