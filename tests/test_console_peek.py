"""The peek view (Enter on a queue) and the dead-letters view (``:dead``), driven with Pilot on
the fixed cluster whose app points at Redis database 2 (this module's own: flushed before and
after each test), and their layout at 80x24 against the accepted SVGs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Producer, Queue

from qtui.core import App
from qtui.core.protocol import DEAD_QUEUE_HEADER, DEAD_REASON_HEADER, DELIVERIES_HEADER
from qtui.core.queues import inspector_for
from qtui.tui import equivalents
from qtui.tui.views.base import MARK
from qtui.tui.views.dead_letters import DeadLettersScreen
from qtui.tui.views.modals import ChoiceScreen, ConfirmScreen
from qtui.tui.views.peek import PeekScreen

from .console_data import FixedConsole, screen_text
from .services import REDIS_HOST, REDIS_PORT, need
from .still import settle, typed

#: A database of this file's own, flushed before and after each test (the views count every
#: dead letter in it): test_peek.py uses 2, test_worker_acks.py flushes 4.
URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/14"
SIZE = (100, 30)
IDS = [f"0000000{i}-aaaa-bbbb-cccc-dddddddddddd" for i in range(3)]

pytestmark = pytest.mark.usefixtures("utc")


@pytest.fixture
def app() -> Iterator[App]:
    need("Redis", REDIS_HOST, REDIS_PORT)
    client = redis.Redis.from_url(URL)
    client.flushdb()
    made = App("console-tests", broker=URL)
    yield made
    made.close()
    client.flushdb()


def fill_reports(app: App) -> None:
    """Three tasks in ``reports`` (a queue of the fixed cluster), ids fixed for the snapshots."""
    for i, task_id in enumerate(IDS):
        app.send_task("reports.build", args=[i, "pdf"], kwargs={"pages": i + 1},
                      queue="reports", task_id=task_id)


def dead_letter(app: App, task_id: str, reason: str, queue: str = "images") -> None:
    """A dead letter as a worker writes it: the task, with reason, origin and deliveries."""
    app.send_task("images.resize", args=[task_id[:2]], queue=f"{queue}.tmp", task_id=task_id)
    with Connection(URL) as conn:
        message = Queue(f"{queue}.tmp", Exchange(""), routing_key=f"{queue}.tmp")(
            conn.default_channel).get(no_ack=True)
        Producer(conn.default_channel).publish(
            message.body, exchange="", routing_key=f"{queue}.dead",
            content_type=message.content_type, content_encoding=message.content_encoding,
            headers={**message.headers, DEAD_REASON_HEADER: reason, DEAD_QUEUE_HEADER: queue,
                     DELIVERIES_HEADER: 3})


def waiting(app: App, queue: str) -> list[str]:
    with inspector_for(app) as inspector:
        return [m.task_id for m in inspector.peek(queue).messages]


async def settled(pilot: Any) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


# peek ---------------------------------------------------------------------------------------
async def test_enter_on_a_queue_peeks_at_its_messages_from_the_head(app):
    fill_reports(app)
    console = FixedConsole(app=app)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("4", "down", "down", "enter")
        assert isinstance(console.screen, PeekScreen) and console.screen.queue == "reports"
        await settled(pilot)
        text = screen_text(console)
        assert "By task name (all 3 waiting): reports.build 3" in text
        assert "LRANGE" in text  # says what the peek did to the queue: nothing
        assert [k for k in console.screen.messages] == ["0", "1", "2"]
        assert "(0, 'pdf') {'pages': 1}" in text  # the message under the cursor, in full
    assert waiting(app, "reports") == IDS  # nothing taken


async def test_delete_the_marked_messages_after_asking(app):
    fill_reports(app)
    console = FixedConsole(app=app)
    async with console.run_test(size=SIZE) as pilot:
        console.push_screen(PeekScreen("reports"))
        await settled(pilot)
        await pilot.press("space", "space", "D")  # space marks and moves down
        assert isinstance(console.screen, ConfirmScreen)
        assert "Delete 2 messages?" in screen_text(console)
        await pilot.press("y")
        await settled(pilot)
        await settled(pilot)
        assert "deleted 2 messages from reports" in console.outcomes[-1].message
    assert waiting(app, "reports") == IDS[2:]


async def test_move_a_message_to_a_queue_picked_from_the_known_ones(app):
    fill_reports(app)
    console = FixedConsole(app=app)
    async with console.run_test(size=SIZE) as pilot:
        console.push_screen(PeekScreen("reports"))
        await settled(pilot)
        await pilot.press("down", "m")
        assert isinstance(console.screen, ChoiceScreen)
        await pilot.press("down", "enter")  # celery, images: the second
        await pilot.press("y")
        await settled(pilot)
    assert waiting(app, "reports") == [IDS[0], IDS[2]]
    assert waiting(app, "images") == [IDS[1]]


# dead letters -------------------------------------------------------------------------------
async def test_the_dead_letters_view_shows_reason_origin_and_deliveries(app):
    dead_letter(app, IDS[0], "failed: ValueError('bad size')")
    console = FixedConsole(app=app)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("colon", *"dead", "enter")
        assert isinstance(console.screen, DeadLettersScreen)
        await settled(pilot)
        text = screen_text(console)
        assert "1 dead letter(s) in 1 queue(s)" in text
        assert "failed: ValueError('bad size')" in text and "deliveries 3  from images" in text


async def test_requeue_all_matching_the_filter_shows_the_scripted_command(app):
    dead_letter(app, IDS[0], "failed: ValueError('bad size')")
    dead_letter(app, IDS[1], "unknown task 'images.old'")
    console = FixedConsole(app=app)
    async with console.run_test(size=SIZE) as pilot:
        console.push_screen(DeadLettersScreen())
        await settled(pilot)
        await pilot.press("slash", *"result:ValueError", "enter", "A")
        await pilot.pause()
        assert isinstance(console.screen, ConfirmScreen)
        text = screen_text(console)
        assert "Requeue 1 dead letter?" in text
        assert console.screen.command == equivalents.dead_letters(
            "requeue", {"images.dead": [IDS[0]]}, "result:ValueError", {"images.dead"})
        assert "qtui dead requeue images.dead --all --filter" in text
        await pilot.press("y")
        await settled(pilot)
        await settled(pilot)
        assert "images.dead: requeued 1 dead letter" in console.outcomes[-1].message
    assert waiting(app, "images") == [IDS[0]]
    assert waiting(app, "images.dead") == [IDS[1]]


async def test_a_bad_filter_is_refused_and_requeue_all_keeps_to_the_filter_before_it(app):
    dead_letter(app, IDS[0], "failed: ValueError('bad size')")
    dead_letter(app, IDS[1], "unknown task 'images.old'")
    console = FixedConsole(app=app)
    async with console.run_test(size=SIZE) as pilot:
        console.push_screen(DeadLettersScreen())
        await settled(pilot)
        await pilot.press("slash", *"result:ValueError", "enter")
        await pilot.press("slash", "ctrl+u", *"state:", "enter", "A")  # a value is missing
        await pilot.pause()
        assert isinstance(console.screen, ConfirmScreen)
        assert "Requeue 1 dead letter?" in screen_text(console)
        assert console.screen.command == equivalents.dead_letters(
            "requeue", {"images.dead": [IDS[0]]}, "result:ValueError", {"images.dead"})


def test_the_confirmations_command_does_what_the_console_does(app, capsys):
    """``qtui dead requeue images.dead --all --filter ...``, as the dialog shows it, run."""
    from qtui.tui.cli import main
    dead_letter(app, IDS[0], "failed: ValueError('bad size')")
    dead_letter(app, IDS[1], "unknown task 'images.old'")
    command = equivalents.dead_letters("requeue", {"images.dead": [IDS[0]]},
                                       "result:ValueError", {"images.dead"})
    assert main(["-b", URL, *command.argv]) == 0
    assert waiting(app, "images") == [IDS[0]]
    assert "requeued 1 of 1 dead letter" in capsys.readouterr().out


# layout -------------------------------------------------------------------------------------
def test_peek_view_layout(snap_compare, app):
    fill_reports(app)

    async def open_peek(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("4", "down", "down", "enter")
        await settled(pilot)

    assert snap_compare(FixedConsole(app=app), run_before=open_peek, terminal_size=(80, 24))


def test_dead_letters_view_layout(snap_compare, app):
    dead_letter(app, IDS[0], "failed: ValueError('bad size')")
    dead_letter(app, IDS[1], "unknown task 'images.old'")

    async def open_dead(pilot) -> None:  # type: ignore[no-untyped-def]
        await pilot.press("colon")
        await typed(pilot, "dead", "the command box focused")
        await pilot.press("enter")
        await settle(pilot, lambda: isinstance(pilot.app.screen, DeadLettersScreen),
                     "the dead letters view")
        await settled(pilot)

    assert snap_compare(FixedConsole(app=app), run_before=open_dead, terminal_size=(80, 24))


async def test_the_peek_views_commands_do_what_its_actions_do(app):
    """``qtui peek reports --delete ID`` and ``--move-to Q --ids ID``, as the dialogs show."""
    from qtui.tui.cli import main
    fill_reports(app)
    console = FixedConsole(app=app)
    async with console.run_test(size=SIZE) as pilot:
        console.push_screen(PeekScreen("reports"))
        await settled(pilot)
        await pilot.press("D")
        assert isinstance(console.screen, ConfirmScreen)
        delete = console.screen.command
        assert delete == equivalents.peek_delete("reports", [IDS[0]])
        await pilot.press("n", "down", "m", "down", "enter")
        assert isinstance(console.screen, ConfirmScreen)
        move = console.screen.command
        assert move == equivalents.peek_move("reports", "images", [IDS[1]])
        await pilot.press("n")
    assert waiting(app, "reports") == IDS  # both cancelled
    assert main(["-b", URL, *delete.argv]) == 0
    assert main(["-b", URL, *move.argv]) == 0
    assert waiting(app, "reports") == [IDS[2]]
    assert waiting(app, "images") == [IDS[1]]


def test_qtui_dead_requeue_is_audited(app, tmp_path, capsys):
    import json

    from qtui.tui.cli import main
    dead_letter(app, IDS[0], "failed: ValueError('bad size')")
    config = tmp_path / "qtui.toml"
    config.write_text(f'broker_url = "{URL}"\n'
                      f'console_history_file = "{tmp_path / "history.sqlite"}"\n')
    assert main(["--config", str(config), "dead", "requeue", "images", "--all"]) == 0
    assert main(["--config", str(config), "audit", "--json"]) == 0
    [found] = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (found["action"], found["targets"], found["ok"]) == (
        "dead requeue", ["images.dead", IDS[0]], True)
    assert found["replies"] == {"-": "requeued 1 of 1 dead letter"}


async def test_requeueing_more_than_100_dead_letters_asks_for_the_count(app):
    for i in range(101):
        dead_letter(app, f"{i:08d}-aaaa-bbbb-cccc-dddddddddddd", "failed")
    console = FixedConsole(app=app)
    async with console.run_test(size=SIZE) as pilot:
        console.push_screen(DeadLettersScreen())
        await settled(pilot)
        await pilot.press("A")
        assert isinstance(console.screen, ConfirmScreen)
        assert console.screen.typed == "101"


def take_head(app: App, queue: str) -> None:
    """What a worker does: take the message at the head of ``queue``."""
    with Connection(URL) as conn:
        assert Queue(queue, Exchange(""), routing_key=queue)(conn.default_channel).get(
            no_ack=True) is not None


async def test_a_reload_after_the_head_moved_leaves_no_mark_on_another_message(app):
    fill_reports(app)
    console = FixedConsole(app=app)
    async with console.run_test(size=SIZE) as pilot:
        console.push_screen(PeekScreen("reports"))
        await settled(pilot)
        await pilot.press("down", "space")
        peek = console.screen
        assert [peek.messages[k].task_id for k in peek.marks] == [IDS[1]]
        assert [str(peek.table.get_row_at(i)[0]) for i in range(3)] == [" ", MARK, " "]
        take_head(app, "reports")
        await pilot.press("r")
        await settled(pilot)
        assert [m.task_id for m in peek.messages.values()] == IDS[1:]
        assert not peek.marks


async def test_a_dead_letters_reload_after_the_head_moved_leaves_no_mark(app):
    dead_letter(app, IDS[0], "first")
    dead_letter(app, IDS[1], "second")
    console = FixedConsole(app=app)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("colon", *"dead", "enter")
        await settled(pilot)
        dead_view = console.screen
        await pilot.press("down", "space")
        assert [dead_view.messages[k].task_id for k in dead_view.marks] == [IDS[1]]
        take_head(app, "images.dead")
        await pilot.press("r")
        await settled(pilot)
        assert [m.task_id for m in dead_view.messages.values()] == [IDS[1]]
        assert not dead_view.marks


async def test_requeue_all_shows_ids_for_a_queue_the_view_read_only_part_of(app, monkeypatch):
    from qtui.tui.views import dead_letters
    monkeypatch.setattr(dead_letters, "SHOWN_PER_QUEUE", 2)
    for task_id in IDS:
        dead_letter(app, task_id, "failed")
    dead_letter(app, "ffffffff-aaaa-bbbb-cccc-dddddddddddd", "failed", queue="reports")
    console = FixedConsole(app=app)
    async with console.run_test(size=SIZE) as pilot:
        console.push_screen(DeadLettersScreen())
        await settled(pilot)
        await pilot.press("A")
        await pilot.pause()
        assert isinstance(console.screen, ConfirmScreen)
        assert console.screen.command.commands == (
            ("dead", "requeue", "images.dead", *IDS[:2]),
            ("dead", "requeue", "reports.dead", "--all"))


# masked arguments -------------------------------------------------------------------------
async def test_a_peeked_message_whose_sender_masked_its_arguments_shows_the_mask(app):
    """In the table, in full below it and to the filter: the sender's reprs, never the secret
    (a filter on it would tell that it is there)."""
    app.send_task("reports.login", args=["s3cret"], kwargs={"token": "t0ken"}, queue="reports",
                  task_id=IDS[0], argsrepr="('***',)", kwargsrepr="{'token': '***'}")
    console = FixedConsole(app=app)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("4", "down", "down", "enter")
        await settled(pilot)
        text = screen_text(console)
        assert "('***',) {'token': '***'}" in text
        assert "s3cret" not in text and "t0ken" not in text
        [message] = console.screen.messages.values()
        assert "s3cret" not in message.filter_values()["args"]


async def test_a_dead_letter_whose_sender_masked_its_arguments_shows_the_mask(app):
    app.send_task("images.resize", args=["s3cret"], queue="images.tmp", task_id=IDS[1],
                  argsrepr="('***',)")
    with Connection(URL) as conn:
        message = Queue("images.tmp", Exchange(""), routing_key="images.tmp")(
            conn.default_channel).get(no_ack=True)
        Producer(conn.default_channel).publish(
            message.body, exchange="", routing_key="images.dead",
            content_type=message.content_type, content_encoding=message.content_encoding,
            headers={**message.headers, DEAD_REASON_HEADER: "failed", DEAD_QUEUE_HEADER: "images",
                     DELIVERIES_HEADER: 1})
    console = FixedConsole(app=app)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("colon", *"dead", "enter")
        await settled(pilot)
        text = screen_text(console)
        assert "1 dead letter(s)" in text and "s3cret" not in text
