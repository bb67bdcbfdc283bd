"""Text from the cluster is data: never markup, never raw control characters on the terminal.

Hostnames, queue and task names, arguments, results, tracebacks and replies come from anyone who
can publish to the broker. Each view, dialog and notification of the console, and the CLI's
output, is fed crafted values here and must show them literally, without crashing and without
letting an escape sequence through to the terminal.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace

import pytest
from rich.console import Console as RichConsole
from textual.widgets import DataTable, Label, TextArea

from qtui.core.display import clip, printable, safe_text
from qtui.core.peek import WaitingMessage
from qtui.core.protocol import DEAD_QUEUE_HEADER, DEAD_REASON_HEADER
from qtui.tui.arguments import Arguments
from qtui.tui.console import Console
from qtui.tui.rows import QueueRow, WorkerRow
from qtui.tui.views.details import TaskDetailScreen, WorkerDetailScreen
from qtui.tui.views.modals import ChoiceScreen, ConfirmScreen

from .console_data import SNAPSHOT, T0, TASKS, WORKERS, FixedConsole, changed, screen_text

SIZE = (160, 50)
ESC = "\x1b"
CLEAR = f"{ESC}[2J"
OSC52 = f"{ESC}]52;c;b3duZWQ=\x07"  # writes "owned" to the operator's clipboard
MARKUP = ("[/]", "[@click=app.screenshot]shot[/]", " [@click=app.screenshot]", "[ url=http://x]",
          "[b]bold[/b]")
EVIL = f"evil{CLEAR}{OSC52}" + "".join(MARKUP)
#: What the terminal shows for EVIL: the control characters as pictures, the markup as itself.
EVIL_SHOWN = "evil␛[2J␛]52;c;b3duZWQ=␇"

pytestmark = pytest.mark.usefixtures("utc")


def terminal_output(console: Console) -> str:
    """The bytes Textual would write to the terminal for the whole current screen."""
    width, height = console.size
    rich = RichConsole(width=width, height=height, file=io.StringIO(), force_terminal=True,
                       color_system="truecolor", legacy_windows=False, safe_box=False)
    update = console.screen._compositor.render_update(
        full=True, screen_stack=console._background_screens)
    return update.render_segments(rich)


#: What Textual itself writes: SGR styles, cursor moves, and OSC 8 links.
_OWN_SEQUENCES = re.compile(r"\x1b\[[0-9;:]*[mHK]|\x1b\]8;[^\x1b\x07]*(\x1b\\|\x07)")


def assert_no_injected_sequence(console: Console) -> None:
    output = terminal_output(console)
    assert CLEAR not in output and f"{ESC}]52" not in output
    leftover = _OWN_SEQUENCES.sub("", output)
    assert ESC not in leftover and "\x07" not in leftover


EVIL_ID = "fbda8590-0000-4000-8000-00000000e011"
EVIL_HOST = f"celery@{OSC52}[/]"
EVIL_TASK = changed(
    TASKS[3], id=EVIL_ID, name=f"tasks.{CLEAR}[/]", worker=EVIL_HOST, args=f"('{EVIL}',)",
    kwargs="{'x': '[ url=http://x]'}", result=EVIL, exception=f"ValueError('{EVIL}')",
    traceback=f"Traceback (most recent call last):\n  File \"t.py\", line 1\nValueError: {EVIL}\n",
    timeline=("task-failed", T0, EVIL_HOST, EVIL), updated=T0 + 100)
EVIL_SNAPSHOT = replace(
    SNAPSHOT,
    workers=(*WORKERS, WorkerRow(EVIL_HOST, True, 1.0, "prefork", 2, 1, 5, (0.1,),
                                 (f"q{CLEAR}[/]",), f"sw {OSC52}")),
    tasks=(*TASKS, EVIL_TASK),
    queues=(*SNAPSHOT.queues, QueueRow(f"queue{OSC52}[/]", 1, 1, 0.0, (EVIL_HOST,))),
    error=f"broker says {CLEAR}[/]", connected=False)


def evil_console() -> FixedConsole:
    return FixedConsole(snapshot=EVIL_SNAPSHOT)


def test_printable_shows_control_characters_and_keeps_the_rest():
    assert printable(f"a{CLEAR}b\x07\x9b\u202e") == "a␛[2Jb␇\\x9b\\u202e"
    assert printable("[b]x[/b] é ✓") == "[b]x[/b] é ✓"
    assert printable("a\nb\tc") == "a␊b␉c"
    assert printable("a\nb\tc", multiline=True) == "a\nb\tc"
    assert printable(["\x1b"]) == "['\\x1b']"  # not a string: its repr


def test_safe_text_is_never_markup():
    text = safe_text("[@click=app.screenshot]x[/]")
    assert text.plain == "[@click=app.screenshot]x[/]" and not text.spans


def test_clip_marks_what_it_left_out():
    assert clip("abcdef", 10) == "abcdef"
    assert clip("abcdef", 4) == "abcd…[+2 chars]"


async def test_every_view_shows_crafted_cluster_data_literally():
    console = evil_console()
    async with console.run_test(size=SIZE) as pilot:
        for key in "1234":
            await pilot.press(key)
            await pilot.pause()
            text = screen_text(console)
            assert_no_injected_sequence(console)
            assert "␛" in text, key
        await pilot.press("1")
        assert "broker says ␛[2J[/]" in screen_text(console)


async def test_a_crafted_tasks_detail_shows_everything_literally():
    console = evil_console()
    async with console.run_test(size=SIZE) as pilot:
        console.push_screen(TaskDetailScreen(EVIL_ID))
        await pilot.pause()
        text = screen_text(console)
        assert_no_injected_sequence(console)
        for shown in (EVIL_ID, "tasks.␛[2J[/]", "[ url=http://x]", EVIL_SHOWN,
                      "[@click=app.screenshot]shot[/]", "[b]bold[/b]"):
            assert shown in text, shown


async def test_a_crafted_workers_detail_shows_its_name_and_replies_literally(monkeypatch):
    console = evil_console()
    monkeypatch.setattr(console.feed, "inspect",
                        lambda hostname, method, *a, **kw: {"said": EVIL, EVIL: [1]})
    async with console.run_test(size=SIZE) as pilot:
        console.push_screen(WorkerDetailScreen(EVIL_HOST))
        await console.workers.wait_for_complete()
        await pilot.pause()
        assert_no_injected_sequence(console)
        assert str(console.screen.query_one(".summary").render()) \
            == "celery@␛]52;c;b3duZWQ=␇[/]"
        rows = console.screen.query_one("#table-stats", DataTable)
        cells = [[str(c) for c in rows.get_row_at(i)] for i in range(rows.row_count)]
        assert ["said", printable(EVIL)] in cells and [printable(EVIL), "1"] in cells


async def test_the_revoke_dialog_shows_an_id_that_starts_with_a_letter():
    running = changed(EVIL_TASK, state="STARTED")  # a finished task is not offered a revoke
    console = FixedConsole(snapshot=replace(EVIL_SNAPSHOT, tasks=(*TASKS, running)))
    async with console.run_test(size=SIZE) as pilot:
        console.push_screen(TaskDetailScreen(EVIL_ID))
        await pilot.pause()
        await pilot.press("R")
        assert isinstance(console.screen, ConfirmScreen)
        question = str(console.screen.query_one("#question", Label).render())
        assert question == f"Revoke tasks.␛[2J[/] [{EVIL_ID}]?"
        assert_no_injected_sequence(console)
        await pilot.press("n")


async def test_confirm_and_choice_dialogs_take_ids_starting_a_to_f_as_text():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        for task_id in ("abcdef01-1", "b0", "c-[/]", "d]", "e[", "f[@click=app.quit]"):
            console.push_screen(ConfirmScreen(f"Revoke x [{task_id}]?"))
            await pilot.pause()
            assert str(console.screen.query_one("#question", Label).render()) \
                == f"Revoke x [{task_id}]?"
            console.pop_screen()
        console.push_screen(ChoiceScreen(f"Signal for [{EVIL_ID}]", [EVIL_HOST]))
        await pilot.pause()
        assert f"Signal for [{EVIL_ID}]" in screen_text(console)
        assert "celery@␛]52;c;b3duZWQ=␇[/]" in screen_text(console)
        assert_no_injected_sequence(console)


async def test_a_choice_between_two_workers_of_the_same_name_does_not_crash():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        chosen: list[str | None] = []
        console.push_screen(ChoiceScreen("Apply to", ["all workers", "w[/]", "w[/]"]),
                            chosen.append)
        await pilot.pause()
        await pilot.press("down", "enter")
        await pilot.pause()
        assert chosen == ["w[/]"]


async def test_a_notification_is_plain_text_whatever_its_caller_asks():
    console = FixedConsole()
    async with console.run_test(size=SIZE, notifications=True) as pilot:
        console.notify(f"reply: {EVIL}", title=f"t{CLEAR}", markup=True)
        for _ in range(100):  # the toast shows once the app has handled its message
            await pilot.pause(0.1)
            text = screen_text(console)
            if "reply:" in text:
                break
        assert_no_injected_sequence(console)
        assert EVIL_SHOWN in text and "[@click=app.screenshot]shot[/]" in text


async def test_clicking_an_injected_action_link_runs_nothing(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    console = evil_console()
    async with console.run_test(size=SIZE) as pilot:
        console.push_screen(TaskDetailScreen(EVIL_ID))
        await pilot.pause()
        for y in range(SIZE[1]):
            await pilot.click(offset=(12, y))
    assert not list(tmp_path.iterdir())  # app.screenshot would have written an SVG here


def test_events_dump_shows_control_characters_and_survives_a_bad_timestamp():
    from qtui.tui.commands import format_event
    line = format_event({"type": "task-received", "hostname": EVIL_HOST, "timestamp": 1e300,
                         "uuid": EVIL_ID, "args": f"('{EVIL}',)", "name": f"a\nb{ESC}"})
    assert ESC not in line and "\x07" not in line and "\n" not in line
    assert "celery@␛]52" in line and "bad timestamp 1e+300" in line
    assert format_event({"type": "x", "timestamp": "yesterday"}).startswith(
        "? [bad timestamp 'yesterday'] x")


def test_cli_reply_tables_and_lines_show_control_characters():
    from qtui.core.control import Replies
    from qtui.tui.commands import show_replies
    out = io.StringIO()
    rich = RichConsole(file=out, force_terminal=True, width=200, soft_wrap=True)
    replies = Replies([{EVIL_HOST: {"ok": EVIL}}], [])
    show_replies(rich, "ping", replies)
    active = Replies([{EVIL_HOST: [{"id": EVIL_ID, "name": EVIL, "args": [EVIL]}]}], [])
    show_replies(rich, "active", active)
    printed = _OWN_SEQUENCES.sub("", out.getvalue())
    assert ESC not in printed and "\x07" not in printed
    assert "celery@␛]52" in printed and "[@click=app.screenshot]shot[/]" in printed


def test_worker_log_lines_show_control_characters(tmp_path):
    import logging

    from qtui.workers import log
    path = tmp_path / "worker.log"
    root, qtui_logger = logging.getLogger(), logging.getLogger("qtui")
    saved = root.handlers[:], root.level, qtui_logger.level
    try:
        log.setup("INFO", str(path))
        logging.getLogger("qtui.test").info("task %s received: %s", EVIL, "x\ny")
        try:
            raise ValueError(EVIL)
        except ValueError:
            logging.getLogger("qtui.test").exception("failed")
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        qtui_logger.setLevel(saved[2])
    written = path.read_text()
    assert ESC not in written and "\x07" not in written
    assert EVIL_SHOWN in written and "received: x␊y" in written
    assert "Traceback (most recent call last):\n" in written


async def test_huge_arguments_and_replies_are_shown_cut(monkeypatch):
    console = evil_console()
    monkeypatch.setattr(console.feed, "full_arguments",
                        lambda task_id: Arguments(["a" * 1_000_000], {"k": "b" * 1_000_000},
                                                  masked=False))
    monkeypatch.setattr(console.feed, "inspect",
                        lambda hostname, method, *a, **kw: {"big": "c" * 1_000_000})
    async with console.run_test(size=SIZE) as pilot:
        console.push_screen(TaskDetailScreen(EVIL_ID))
        await console.workers.wait_for_complete()
        await pilot.pause()
        shown = console.screen.query_one("#values", TextArea).text
        assert "complete, from the worker" in shown and len(shown) < 30_000
        assert "…[+" in shown
        console.push_screen(WorkerDetailScreen(EVIL_HOST))
        await console.workers.wait_for_complete()
        await pilot.pause()
        big = str(console.screen.query_one("#table-stats", DataTable).get_row_at(0)[1])
        assert len(big) < 1_000 and "…[+" in big


def test_the_worker_banner_shows_names_literally():
    from types import SimpleNamespace

    from kombu import Queue

    from qtui.core import App
    from qtui.workers.banner import print_banner
    out = io.StringIO()
    app = App("banner", broker="redis://127.0.0.1:6379/15")
    app.task(name=f"tasks.{CLEAR}[/]")(lambda: None)
    worker = SimpleNamespace(
        app=app, hostname=EVIL_HOST, pool_name="threads", concurrency=1, base_prefetch=4,
        queues=[Queue(f"q{OSC52}[/]")],
        console=RichConsole(file=out, force_terminal=True, width=200))
    print_banner(worker, worker.console)  # type: ignore[arg-type]
    printed = _OWN_SEQUENCES.sub("", out.getvalue())
    assert ESC not in printed and "\x07" not in printed
    assert "celery@␛]52;c;b3duZWQ=␇[/]" in printed and "tasks.␛[2J[/]" in printed
    assert "q␛]52;c;b3duZWQ=␇[/]" in printed


def evil_dead_letter(priority: object = 3) -> WaitingMessage:
    """A dead letter whose origin queue, reason and priority were written by the cluster."""
    body = json.dumps([[], {}, {}]).encode()
    return WaitingMessage(0, None, body, "application/json", "utf-8",
                          {DEAD_QUEUE_HEADER: f"q{OSC52}{CLEAR}", DEAD_REASON_HEADER: EVIL,
                           "id": EVIL_ID, "task": "t"}, {"priority": priority})


def test_a_dead_letters_origin_queue_shows_literally_in_the_peek_detail():
    from qtui.tui.views.peek import describe
    shown = describe(evil_dead_letter()).plain
    assert ESC not in shown and "\x07" not in shown
    assert "from q␛]52" in shown


def test_dead_list_shows_origin_queue_and_priority_literally():
    from qtui.tui.peek_commands import _details
    out = io.StringIO()
    rich = RichConsole(file=out, force_terminal=True, width=200)
    rich.print(_details(evil_dead_letter(), True))
    rich.print(_details(evil_dead_letter(priority=EVIL), True))
    printed = _OWN_SEQUENCES.sub("", out.getvalue())
    assert ESC not in printed and "\x07" not in printed
    assert "from: q␛]52" in printed and "priority: 3" in printed


def test_dead_list_names_a_listed_dead_letter_queue_literally(monkeypatch):
    """``qtui dead list`` finds the dead-letter queues the broker lists: any client names them."""
    import argparse
    import contextlib

    from qtui.tui import peek_commands
    evil_queue = f"q{OSC52}{CLEAR}[/].dead"
    out = io.StringIO()
    monkeypatch.setattr(peek_commands, "inspector_for", lambda app: contextlib.nullcontext())
    monkeypatch.setattr(peek_commands.dead, "dead_queues", lambda inspector, names: [evil_queue])
    monkeypatch.setattr(peek_commands.dead, "read", lambda inspector, name: [evil_dead_letter()])
    monkeypatch.setattr(peek_commands, "_out",
                        lambda: RichConsole(file=out, force_terminal=True, width=200))

    app = argparse.Namespace(router=argparse.Namespace(queues={}))  # what the command reads
    args = argparse.Namespace(queue=None, filter=None, json=False)
    assert peek_commands.dead_list_command(args, app) == 0  # type: ignore[arg-type]
    printed = _OWN_SEQUENCES.sub("", out.getvalue())
    assert ESC not in printed and "\x07" not in printed
    assert "q␛]52;c;b3duZWQ=␇␛[2J[/].dead: 1 dead letter" in printed


def test_an_alerts_detail_shows_hostnames_and_queues_literally():
    from qtui.core.alerts import FIRING, Rule, RuleStatus
    from qtui.tui.views.alerts import describe
    status = RuleStatus(Rule(name="down", kind="worker_offline", over=0), FIRING, T0, 1.0,
                        EVIL_HOST)
    shown = describe(status).plain
    assert ESC not in shown and "\x07" not in shown and shown.endswith("celery@␛]52;c;b3duZWQ=␇[/]")
