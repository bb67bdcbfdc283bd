"""The console's behaviour, driven with Textual's Pilot as a user drives it (keys, mouse), on a
fixed cluster: navigation, the filter, drill-downs, help, read-only, confirmations, contexts,
history. The same console against live workers is in test_console_live.py."""

from __future__ import annotations

import json
import os
import stat
from types import SimpleNamespace

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input

from qtui.core import App
from qtui.tui.console import Console
from qtui.tui.feed import Feed
from qtui.tui.history import History
from qtui.tui.views.details import TaskDetailScreen, WorkerDetailScreen
from qtui.tui.views.modals import ChoiceScreen, ConfirmScreen, HelpScreen, PromptScreen
from qtui.tui.views.overview import OverviewScreen
from qtui.tui.views.queues import QueuesScreen
from qtui.tui.views.tasks import TasksScreen
from qtui.tui.views.workers import WorkersScreen

from .console_data import SNAPSHOT, TASKS, FixedConsole, screen_text

SIZE = (140, 40)


pytestmark = pytest.mark.usefixtures("utc")  # times shown the same on every machine


def rows(console: Console, table_id: str) -> list[list[str]]:
    table = console.screen.query_one(f"#{table_id}", DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def test_number_keys_switch_between_the_four_views():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        seen = []
        for key in "2341":
            await pilot.press(key)
            seen.append(type(console.screen))
        assert seen == [WorkersScreen, TasksScreen, QueuesScreen, OverviewScreen]


async def test_overview_shows_workers_queues_and_recent_failures():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.pause()
        summary = str(console.screen.query_one("#summary").render())
        assert "2 online, 1 offline" in summary
        assert [r[0] for r in rows(console, "overview-queues")] == ["reports", "celery", "images"]
        failures = rows(console, "failures")
        assert [r[1] for r in failures] == ["billing.charge", "billing.charge"]


async def test_workers_view_lists_every_worker_alive_first():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        table = rows(console, "workers")
        assert [r[0] for r in table] == ["qtui@alpha", "qtui@beta", "celery@gamma"]
        assert table[0][3:6] == ["prefork", "4", "2"]
        assert "offline" in table[2][1]


async def test_colon_tasks_with_a_query_opens_the_tasks_view_filtered():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("colon", *"tasks state:FAILURE", "enter")
        assert isinstance(console.screen, TasksScreen)
        assert sorted(r[1] for r in rows(console, "tasks")) == ["billing.charge"] * 2


async def test_slash_filters_by_name_and_escape_clears_the_filter():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "slash", *"name:add -state:REVOKED", "enter")
        names = {r[1] for r in rows(console, "tasks")}
        states = {r[2] for r in rows(console, "tasks")}
        assert names == {"tasks.add"} and "REVOKED" not in states
        await pilot.press("escape")
        assert len(rows(console, "tasks")) == len(TASKS)


async def test_a_bad_filter_is_reported_and_leaves_the_table_as_it_was():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "slash", *"/[unclosed/", "enter")
        assert len(rows(console, "tasks")) == len(TASKS)
        assert any(severity == "error" for severity, _ in console.notes)


async def test_state_tabs_narrow_the_table_to_one_state():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "right", "right")  # ALL -> RECEIVED -> STARTED
        assert [r[2] for r in rows(console, "tasks")] == ["STARTED"]


async def test_sorting_by_a_clicked_column_header():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        screen = console.screen
        assert isinstance(screen, TasksScreen)
        await pilot.click("#tasks", offset=(15, 0))  # the "Name" header
        await pilot.pause()
        names = [r[1] for r in rows(console, "tasks")]
        assert screen.sort_column != "Received"
        assert names == sorted(names) or names == sorted(names, reverse=True)


async def test_enter_drills_into_a_task_and_escape_comes_back():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("colon", *"tasks name:billing.charge args:19.99", "enter")
        await pilot.press("enter")
        screen = console.screen
        assert isinstance(screen, TaskDetailScreen)
        text = screen_text(console)
        assert "(4, 19.99)" in text
        assert "card declined for order 4" in text
        assert "task-failed" in text
        await pilot.press("escape")
        assert isinstance(console.screen, TasksScreen)


async def test_question_mark_lists_every_key_of_the_view_and_the_console():
    console = FixedConsole()
    async with console.run_test(size=(140, 100)) as pilot:
        await pilot.press("3", "question_mark")
        assert isinstance(console.screen, HelpScreen)
        text = screen_text(console)
        for words in ("Filter", "Revoke", "Terminate", "Retry", "Rate limit type", "Workers",
                      "Queues", "Quit", ":tasks QUERY", "state:A,B", "ctrl+p"):
            assert words in text, words
        await pilot.press("escape")
        assert isinstance(console.screen, TasksScreen)


async def test_revoke_asks_first_and_no_changes_nothing():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "down", "down", "R")  # the third row: RECEIVED
        assert isinstance(console.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(console.screen, TasksScreen)
        assert not console.outcomes


async def test_terminate_offers_a_choice_of_signals():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "down", "down", "T")  # the third row: RECEIVED
        assert isinstance(console.screen, ChoiceScreen)
        await pilot.press("escape")
        assert isinstance(console.screen, TasksScreen)


async def test_read_only_hides_actions_and_refuses_them():
    console = FixedConsole(read_only=True)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        footer_keys = {b.binding.action for b in console.screen.active_bindings.values()}
        assert "revoke" not in footer_keys and "terminate" not in footer_keys
        await pilot.press("R", "T", "y", "L")
        assert isinstance(console.screen, TasksScreen)
        await pilot.press("2", "D", "plus")
        assert isinstance(console.screen, WorkersScreen)
        await pilot.press("4", "P")
        assert isinstance(console.screen, QueuesScreen)
        assert "read-only" in console.sub_title
        console.perform(lambda: pytest.fail("an action ran in read-only mode"))
        await pilot.pause()
        assert ("error", "The console is read-only (--read-only)") in console.notes


async def test_retry_refuses_a_task_whose_arguments_were_truncated(monkeypatch):
    from .console_data import row
    truncated = row(id="t-1", name="tasks.big", state="FAILURE", args="('aaaa...",
                        kwargs="{}")
    console = FixedConsole()
    monkeypatch.setattr(console.feed, "full_arguments", lambda task_id: None)
    async with console.run_test(size=SIZE) as pilot:
        console.retry_task(truncated)
        await console.workers.wait_for_complete()  # refused before asking
        await pilot.pause()
        assert any("cannot be retried" in text for _, text in console.notes)


async def test_rate_limit_asks_for_scope_then_rate():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "L")
        assert isinstance(console.screen, ChoiceScreen)
        await pilot.press("enter")  # all workers
        assert isinstance(console.screen, PromptScreen)
        await pilot.press("escape")
        assert isinstance(console.screen, TasksScreen)


async def test_an_unknown_command_says_what_exists():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("colon", *"frobnicate", "enter")
        assert any("Unknown command :frobnicate" in text for _, text in console.notes)
        assert isinstance(console.screen, OverviewScreen)


async def test_switching_to_an_unknown_context_is_refused():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("colon", *"context nowhere", "enter")
        assert any("Unknown context 'nowhere'" in text for _, text in console.notes)


def test_history_brings_back_the_tasks_of_an_earlier_session(tmp_path):
    from qtui.core.state import State
    path = tmp_path / "history.sqlite"
    state = State(track_changes=True)
    state.ingest([
        {"type": "task-received", "uuid": "a", "name": "tasks.add", "args": "(1, 2)",
         "hostname": "w1", "timestamp": 1.0, "clock": 1},
        {"type": "task-succeeded", "uuid": "a", "result": "3", "runtime": 0.1, "hostname": "w1",
         "timestamp": 2.0, "clock": 2},
        {"type": "task-failed", "uuid": "b", "name": "tasks.div", "exception": "ZeroDivisionError",
         "hostname": "w1", "timestamp": 3.0, "clock": 3},
    ])
    History(path, cluster="redis://h/0").save(state.take_changes().tasks)

    feed = Feed(App("t", broker="redis://h/0"), history=History(path, cluster="redis://h/0"))
    with feed.lock:
        snapshot = feed.snapshot()
    by_id = {t.id: t for t in snapshot.tasks}
    assert by_id["a"].state == "SUCCESS" and by_id["a"].result == "3"
    assert by_id["a"].args == "(1, 2)"
    assert [step.type for step in by_id["a"].steps()] == ["task-received", "task-succeeded"]
    assert by_id["b"].state == "FAILURE"
    other = Feed(App("t"), history=History(path, cluster="redis://elsewhere/0"))
    with other.lock:
        assert other.snapshot().tasks == ()


def test_history_keeps_only_the_newest_tasks(tmp_path):
    from qtui.core.state import TaskState
    history = History(tmp_path / "h.sqlite", cluster="c", limit=10)
    history.save([TaskState(f"t{i}", updated=float(i)) for i in range(50)])
    history.save([TaskState("late", updated=100.0)])
    kept = [t.uuid for t in history.load()]
    assert kept[-1] == "late" and len(kept) == 10


def test_history_stores_only_what_is_known_of_a_task_and_brings_it_back_whole(tmp_path):
    import sqlite3

    from qtui.core.state import TaskState
    path = tmp_path / "h.sqlite"
    task = TaskState("a", state="SUCCESS", name="tasks.add", args="(1, 2)", result="3",
                     received=1.0, updated=2.0, timeline=("task-received", 1.0, "w1", ""))
    history = History(path, cluster="c")
    history.save([task])
    assert history.load() == [task]
    with sqlite3.connect(path) as db:
        (data,), = db.execute("SELECT data FROM tasks").fetchall()
    assert None not in json.loads(data).values()  # unknown fields take no room in the row


def test_the_history_file_syncs_to_disk_at_checkpoints_not_at_every_write(tmp_path):
    """WAL with synchronous NORMAL, as qtui's other SQLite files: a write per snapshot that
    waited for the disk each time held the event thread up under load (lost with the machine,
    not with the process)."""
    history = History(tmp_path / "h.sqlite", cluster="c")
    assert history._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert history._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_file_that_is_not_a_history_is_a_clear_error(tmp_path):
    from qtui.core.exceptions import ConfigError
    bad = tmp_path / "h.sqlite"
    bad.write_text("not a database at all" * 100)
    with pytest.raises(ConfigError, match="console_history"):
        History(bad, cluster="c")


async def test_brackets_turn_pages_of_the_task_table(monkeypatch):
    from qtui.tui.views import tasks
    monkeypatch.setattr(tasks, "PAGE_SIZE", 3)
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        first = [r[0] for r in rows(console, "tasks")]
        await pilot.press("right_square_bracket")
        second = [r[0] for r in rows(console, "tasks")]
        await pilot.press("right_square_bracket", "right_square_bracket", "right_square_bracket")
        last = [r[0] for r in rows(console, "tasks")]
        assert len(first) == len(second) == 3 and not set(first) & set(second)
        assert len(last) == len(TASKS) - 6  # no page past the last one
        await pilot.press("left_square_bracket", "left_square_bracket")
        assert [r[0] for r in rows(console, "tasks")] == first


async def test_an_offline_worker_can_be_forgotten_but_not_an_online_one():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        table = console.screen.query_one("#workers", DataTable)
        table.move_cursor(row=table.get_row_index("qtui@alpha"))
        await pilot.press("delete")
        assert "qtui@alpha" in [r[0] for r in rows(console, "workers")]
        assert any("only offline workers" in text for _, text in console.notes)
        table.move_cursor(row=table.get_row_index("celery@gamma"))
        await pilot.press("delete")
        assert [r[0] for r in rows(console, "workers")] == ["qtui@alpha", "qtui@beta"]


# a task's detail screen ---------------------------------------------------------------------------
FAILED = TASKS[3]  # billing.charge (4, 19.99), sent to the "billing" queue


async def open_failed_task(pilot: Pilot[None]) -> TaskDetailScreen:
    await pilot.press("colon", *"tasks args:19.99", "enter", "enter")
    screen = pilot.app.screen
    assert isinstance(screen, TaskDetailScreen) and screen.task_id == FAILED.id
    return screen


RUNNING = TASKS[2]  # images.resize, STARTED: revoke and terminate apply to it


async def open_running_task(pilot: Pilot[None]) -> TaskDetailScreen:
    await pilot.press("colon", *"tasks args:/photos", "enter", "enter")
    screen = pilot.app.screen
    assert isinstance(screen, TaskDetailScreen) and screen.task_id == RUNNING.id
    return screen


class SentTasks(list[tuple[str, dict[str, object]]]):
    """Stands in for ``App.send_task``: records each call's name and options."""

    def __call__(self, name: str, **options: object) -> SimpleNamespace:
        self.append((name, options))
        return SimpleNamespace(id="new-task-id")


async def test_R_on_a_task_asks_before_revoking_it():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await open_running_task(pilot)
        await pilot.press("R")
        assert isinstance(console.screen, ConfirmScreen)
        assert RUNNING.id in str(console.screen.question)


async def test_T_on_a_task_offers_the_signals():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await open_running_task(pilot)
        await pilot.press("T")
        assert isinstance(console.screen, ChoiceScreen)
        await pilot.press("escape")
        assert isinstance(console.screen, TaskDetailScreen)


async def test_y_on_a_task_sends_it_again(monkeypatch):
    console = FixedConsole()
    sent = SentTasks()
    monkeypatch.setattr(console.feed, "full_arguments", lambda task_id: None)
    monkeypatch.setattr(console.cluster, "send_task", sent)
    async with console.run_test(size=SIZE) as pilot:
        await open_failed_task(pilot)
        await pilot.press("y")
        await console.workers.wait_for_complete()  # the full arguments are looked up first
        await pilot.pause()
        assert isinstance(console.screen, ConfirmScreen)
        await pilot.press("y")
        await console.workers.wait_for_complete()
        await pilot.pause()
        assert [name for name, _ in sent] == ["billing.charge"]
        assert sent[0][1]["args"] == [4, 19.99] and sent[0][1]["kwargs"] == {}
        assert console.outcomes[-1].ok


async def test_a_retry_goes_to_the_queue_the_task_was_sent_to(monkeypatch):
    console = FixedConsole()
    sent = SentTasks()
    monkeypatch.setattr(console.feed, "full_arguments", lambda task_id: None)
    monkeypatch.setattr(console.cluster, "send_task", sent)
    async with console.run_test(size=SIZE) as pilot:
        console.retry_task(FAILED)
        await console.workers.wait_for_complete()  # the full arguments are looked up first
        await pilot.pause()
        await pilot.press("y")  # retry asks first
        await console.workers.wait_for_complete()
        await pilot.pause()
    options = sent[0][1]
    assert options["queue"] == "billing" and options["routing_key"] == "billing"


def test_a_task_row_keeps_the_queue_its_task_sent_event_named():
    from qtui.core.state import State
    from qtui.tui.rows import TaskRow
    state = State()
    state.ingest([{"type": "task-sent", "uuid": "a", "name": "billing.charge", "args": "(4,)",
                   "queue": "billing", "exchange": "", "routing_key": "billing",
                   "hostname": "client", "timestamp": 1.0, "clock": 1},
                  {"type": "task-failed", "uuid": "a", "exception": "ValueError()",
                   "hostname": "w1", "timestamp": 2.0, "clock": 2}])
    row = TaskRow(state.task("a"))
    assert (row.queue, row.exchange, row.routing_key) == ("billing", "", "billing")


# actions expect replies only from the workers online ----------------------------------------------
def replying(monkeypatch, console: Console, *hostnames: str) -> None:
    """Make the workers named (and no other) answer every remote-control call with 'ok'."""
    def broadcast(method: str, arguments: object, **options: object) -> list[dict[str, object]]:
        return [{hostname: {"ok": "done"}} for hostname in hostnames]
    monkeypatch.setattr(console.cluster.control, "broadcast", broadcast)


async def test_revoking_a_task_expects_no_reply_from_an_offline_worker(monkeypatch):
    console = FixedConsole()  # celery@gamma is offline
    replying(monkeypatch, console, "qtui@alpha", "qtui@beta")
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "down", "down", "R", "y")  # the third row: RECEIVED
        await console.workers.wait_for_complete()
        await pilot.pause()
    outcome = console.outcomes[-1]
    assert outcome.ok and "no reply" not in outcome.message


async def test_terminating_from_a_tasks_details_expects_no_reply_from_an_offline_worker(
        monkeypatch):
    console = FixedConsole()
    replying(monkeypatch, console, "qtui@alpha", "qtui@beta")
    async with console.run_test(size=SIZE) as pilot:
        await open_running_task(pilot)
        await pilot.press("T", "enter", "y")  # SIGTERM, yes
        await console.workers.wait_for_complete()
        await pilot.pause()
    outcome = console.outcomes[-1]
    assert outcome.title.startswith("terminate") and outcome.ok, outcome


async def test_adding_a_consumer_on_all_workers_expects_no_reply_from_an_offline_worker(
        monkeypatch):
    console = FixedConsole()
    replying(monkeypatch, console, "qtui@alpha", "qtui@beta")
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("4", "a", "enter")  # all workers
        await console.workers.wait_for_complete()
        await pilot.pause()
    outcome = console.outcomes[-1]
    assert outcome.title.startswith("add consumer") and outcome.ok, outcome


def test_the_workers_expected_to_answer_are_those_online():
    from qtui.tui.model import ConsoleModel
    model = ConsoleModel()
    model.apply(SNAPSHOT)
    assert model.alive_workers() == ["qtui@alpha", "qtui@beta"]


# narrow terminals, vanishing queues, an unreachable broker ----------------------------------------
async def test_arrows_switch_state_tabs_on_a_narrow_terminal():
    console = FixedConsole()
    async with console.run_test(size=(80, 24)) as pilot:
        await pilot.press("3")
        assert console.screen.query_one("#tasks", DataTable).max_scroll_x > 0
        await pilot.press("right", "right")  # ALL -> RECEIVED -> STARTED
        assert [r[2] for r in rows(console, "tasks")] == ["STARTED"]
        await pilot.press("left")
        assert [r[2] for r in rows(console, "tasks")] == ["RECEIVED"]


async def test_the_filter_box_keeps_the_arrows_and_the_letters_h_and_l():
    console = FixedConsole()
    async with console.run_test(size=(80, 24)) as pilot:
        await pilot.press("3", "slash", *"hl", "left", "X")
        screen = console.screen
        assert isinstance(screen, TasksScreen) and screen.state_tab == "ALL"
        assert screen.query_one("#filter", Input).value == "hXl"


async def test_purging_a_queue_that_just_left_the_broker_still_asks_first():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        del console.model.queues["celery"]  # the first row; the table has not redrawn yet
        await pilot.press("P")
        assert isinstance(console.screen, ConfirmScreen)
        assert "Purge celery? All waiting" in str(console.screen.question)


async def test_a_workers_details_say_when_the_broker_is_unreachable():
    app = App("t", broker="redis://127.0.0.1:1/0", broker_connection_timeout=0.2)
    console = FixedConsole(app=app)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2", "enter")
        assert isinstance(console.screen, WorkerDetailScreen)
        await console.workers.wait_for_complete()
        await pilot.pause()
        assert "unavailable: cannot send 'stats'" in screen_text(console)
        assert isinstance(console.screen, WorkerDetailScreen)


def test_the_history_file_is_readable_by_its_owner_only(tmp_path):
    from qtui.core.state import TaskState
    path = tmp_path / "history.sqlite"
    umask = os.umask(0o022)  # the usual one, under which files come out world-readable
    history = History(path, cluster="c")
    try:
        history.save([TaskState("t1", args="('secret',)", updated=1.0)])
        for name in (path, tmp_path / "history.sqlite-wal"):
            assert stat.S_IMODE(name.stat().st_mode) == 0o600, name
    finally:
        history.close()
        os.umask(umask)
