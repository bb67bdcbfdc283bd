"""The audit trail (issue 16, item 7): what it keeps, actions from the console written to it,
a failed write that neither blocks the action nor goes unsaid, ``:audit`` showing worker replies
as data, and ``qtui audit`` (with --json, --limit, --since) reading what scripted commands wrote.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time

import pytest
from textual.widgets import DataTable, Static

from qtui.core import App
from qtui.core.config import mask_url
from qtui.tui import commands
from qtui.tui.audit import REPLY_MAX, AuditEntry, AuditError, AuditLog, current_user, entry
from qtui.tui.views.audit import AuditScreen
from qtui.tui.views.modals import ConfirmScreen

from .console_data import TASKS, FixedConsole, screen_text
from .test_console_actions import recorded, settle

SIZE = (140, 40)
RECEIVED_ID = sorted(TASKS, key=lambda t: t.received or 0, reverse=True)[2].id
CLUSTER = "redis://127.0.0.1:6379/15"

pytestmark = pytest.mark.usefixtures("utc")


def qtui(app: App, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="qtui")
    commands.add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args, app))


def fixed_entry(n: int, **changes: object) -> AuditEntry:
    values: dict[str, object] = dict(
        time=1_764_496_800.0 + n * 60, who="ops@console-host", cluster=CLUSTER,
        source="console", action="revoke", targets=(f"{n:08x}-0000-4000-8000-000000000000",),
        replies=(("qtui@alpha", "OK tasks flagged as revoked"),), ok=True)
    values.update(changes)
    return AuditEntry(**values)  # type: ignore[arg-type]


# the trail ----------------------------------------------------------------------------------------
def test_entries_come_back_newest_first_of_their_cluster(tmp_path):
    log = AuditLog(tmp_path / "history.sqlite")
    for n in range(3):
        log.record(fixed_entry(n))
    log.record(fixed_entry(9, cluster="amqp://guest:**@rabbit//"))
    assert [e.time for e in log.entries(cluster=CLUSTER)] == [
        fixed_entry(n).time for n in (2, 1, 0)]
    assert len(log.entries()) == 4
    assert log.entries(limit=1, cluster=CLUSTER) == [fixed_entry(2)]
    assert log.entries(since=fixed_entry(1).time, cluster=CLUSTER) == [fixed_entry(2),
                                                                       fixed_entry(1)]


def test_the_history_file_keeps_its_own_tables_and_version(tmp_path):
    from qtui.tui.history import SCHEMA_VERSION, History
    path = tmp_path / "history.sqlite"
    History(path, cluster=CLUSTER).close()
    AuditLog(path).record(fixed_entry(1))
    History(path, cluster=CLUSTER).close()  # the audit table does not upset the history
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("SELECT count(*) FROM audit").fetchone()[0] == 1


def test_a_reply_is_kept_up_to_a_bound_and_the_password_masked():
    app = App("t", broker="redis://:hunter2@127.0.0.1:6379/15")
    made = entry(app, "cli", "control revoke", ["a"], {"w1": "x" * (REPLY_MAX * 3)}, True)
    assert made.cluster == "redis://:**@127.0.0.1:6379/15"
    assert len(made.replies[0][1]) < REPLY_MAX + 40 and "chars]" in made.replies[0][1]
    assert made.who == current_user() and "@" in made.who


def test_only_the_newest_entries_are_kept(tmp_path):
    log = AuditLog(tmp_path / "history.sqlite", keep=100)
    for n in range(300):
        log.record(fixed_entry(n))
    kept = log.entries(limit=1000)
    assert 100 <= len(kept) < 200 and kept[0] == fixed_entry(299)


def test_a_damaged_entry_is_skipped(tmp_path):
    log = AuditLog(tmp_path / "history.sqlite")
    log.record(fixed_entry(1))
    db = sqlite3.connect(tmp_path / "history.sqlite")
    with db:
        db.execute("INSERT INTO audit (time, cluster, data) VALUES (?, ?, ?)",
                   (time.time(), CLUSTER, '{"time": "soon"'))
    assert log.entries() == [fixed_entry(1)]


# the console writes it ---------------------------------------------------------------------------
async def test_a_console_action_is_recorded_with_each_workers_reply(monkeypatch, tmp_path):
    console = FixedConsole()
    recorded(monkeypatch, console)
    console.audit = log = AuditLog(tmp_path / "history.sqlite")
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "down", "down", "space", "space", "R", "y")
        await settle(console, pilot)
    [found] = log.entries()
    assert found.source == "console" and found.action == "revoke" and found.ok
    assert len(found.targets) == 2 and found.cluster == CLUSTER
    assert dict(found.replies) == {"qtui@alpha": "OK done", "qtui@beta": "OK done"}


async def test_a_purge_from_the_console_is_recorded_with_what_it_did(monkeypatch, tmp_path):
    from qtui.tui.actions import ActionResult
    console = FixedConsole()
    monkeypatch.setattr(console.actions, "purge", lambda queue: ActionResult(
        f"purge {queue}", (f"removed 12 message(s) from {queue}",), True, "purge", (queue,)))
    console.audit = log = AuditLog(tmp_path / "history.sqlite")
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("4", "P", "y")
        await settle(console, pilot)
    [found] = log.entries()
    assert (found.action, found.targets) == ("purge", ("celery",))
    assert found.replies == (("-", "removed 12 message(s) from celery"),)


async def test_an_audit_that_cannot_be_written_is_reported_and_the_action_still_done(
        monkeypatch, tmp_path):
    console = FixedConsole()
    calls = recorded(monkeypatch, console)
    (tmp_path / "a-directory").mkdir()
    console.audit = AuditLog(tmp_path / "a-directory")
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "down", "down", "R", "y")
        await settle(console, pilot)
    assert [method for method, _, _ in calls] == ["revoke"]
    assert console.outcomes[-1].ok
    assert any(severity == "warning" and "cannot be used" in text
               for severity, text in console.notes), console.notes


# :audit ------------------------------------------------------------------------------------------
async def test_colon_audit_lists_the_newest_entries_with_replies_as_data(tmp_path):
    console = FixedConsole()
    console.audit = log = AuditLog(tmp_path / "history.sqlite")
    log.record(fixed_entry(1))
    log.record(fixed_entry(2, replies=(("qtui@alpha", "OK \x1b[2J[b]bold[/b]"),), ok=False))
    log.record(fixed_entry(3, cluster="amqp://elsewhere//"))
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("colon", *"audit", "enter")
        assert isinstance(console.screen, AuditScreen)
        await console.workers.wait_for_complete()
        await pilot.pause()
        table = console.screen.query_one("#audit", DataTable)
        assert table.row_count == 2  # this cluster's only
        assert "failed" in screen_text(console)
        shown = str(console.screen.query_one("#entry", Static).render())
        assert "OK ␛[2J[b]bold[/b]" in shown  # the escape made visible, the markup as text
        await pilot.press("escape")
        assert not isinstance(console.screen, AuditScreen)


# qtui audit --------------------------------------------------------------------------------------
@pytest.fixture
def cli_app(tmp_path) -> App:
    """An app on an embedded broker of its own, its audit trail in the test's directory."""
    return App("cli", broker=f"sqlite://{tmp_path}/broker.sqlite",
               console_history_file=str(tmp_path / "history.sqlite"))


def test_qtui_call_is_recorded_and_qtui_audit_json_reads_it(cli_app, capsys):
    assert qtui(cli_app, "call", "tasks.add", "--args", "[2, 2]", "--queue", "q1") == 0
    task_id = capsys.readouterr().out.strip()
    assert qtui(cli_app, "audit", "--json") == 0
    [found] = json.loads(capsys.readouterr().out)
    assert found["action"] == "call" and found["targets"] == ["tasks.add"]
    assert found["replies"] == {"-": f"sent as {task_id}"}
    assert found["source"] == "cli" and found["ok"] is True
    assert found["who"] == current_user()
    assert set(found) == {"time", "who", "cluster", "source", "action", "targets", "replies",
                          "ok"}


def test_qtui_audit_limit_and_since(cli_app, capsys):
    log = AuditLog(cli_app.conf.console_history_file)
    cluster = mask_url(cli_app.broker_url)
    log.record(fixed_entry(1, cluster=cluster, time=time.time() - 7200))
    log.record(fixed_entry(2, cluster=cluster, time=time.time() - 60))
    log.record(fixed_entry(3, cluster=cluster, time=time.time()))
    assert qtui(cli_app, "audit", "--json", "--limit", "2") == 0
    assert [e["targets"] for e in json.loads(capsys.readouterr().out)] == [
        list(fixed_entry(3).targets), list(fixed_entry(2).targets)]
    assert qtui(cli_app, "audit", "--json", "--since", "1h") == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert qtui(cli_app, "audit", "--json", "--since", "2999-01-01T00:00") == 0
    assert json.loads(capsys.readouterr().out) == []
    assert qtui(cli_app, "audit", "--since", "yesterday") == 2
    assert "give an ISO time" in capsys.readouterr().err


def test_qtui_audit_shows_a_table_for_people(cli_app, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    qtui(cli_app, "call", "tasks.add")
    capsys.readouterr()
    assert qtui(cli_app, "audit") == 0
    out = capsys.readouterr().out
    assert "audit trail: 1 entry" in out and "call" in out and "tasks.add" in out


def test_a_scripted_command_says_when_the_audit_cannot_be_written(tmp_path, capsys):
    (tmp_path / "a-directory").mkdir()
    app = App("cli", broker=f"sqlite://{tmp_path}/broker.sqlite",
              console_history_file=str(tmp_path / "a-directory"))
    assert qtui(app, "call", "tasks.add") == 0  # sent all the same
    captured = capsys.readouterr()
    assert captured.out.strip() and "warning: audit trail" in captured.err


def test_audit_false_records_nothing(tmp_path, capsys):
    app = App("cli", broker=f"sqlite://{tmp_path}/broker.sqlite", audit=False,
              console_history_file=str(tmp_path / "history.sqlite"))
    assert qtui(app, "call", "tasks.add") == 0
    assert not (tmp_path / "history.sqlite").exists()
    assert qtui(app, "audit") == 1
    assert "audit = false" in capsys.readouterr().err


def test_a_trail_that_cannot_be_created_raises_audit_error():
    with pytest.raises(AuditError, match="cannot be used"):
        AuditLog("/proc/no-such-place/history.sqlite").record(fixed_entry(1))


async def test_a_confirmation_shows_its_scripted_command(monkeypatch):
    console = FixedConsole()
    recorded(monkeypatch, console)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("3", "down", "down", "R")
        assert isinstance(console.screen, ConfirmScreen)
        await pilot.pause()
        text = screen_text(console)
        assert "c copies it: qtui control revoke" in text and RECEIVED_ID in text


def test_qtui_purge_is_recorded_with_what_each_queue_lost(cli_app, capsys):
    cli_app.send_task("tasks.add", args=[1, 1], queue="q1")
    assert qtui(cli_app, "purge", "-Q", "q1,q2", "-f") == 0
    assert qtui(cli_app, "audit", "--json") == 0
    [found] = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (found["action"], found["targets"]) == ("purge", ["q1", "q2"])
    assert found["replies"] == {"q1": "purged 1 message", "q2": "purged 0 messages"}


def test_qtui_schedule_pause_is_recorded(tmp_path, unique, capsys):
    from qtui.tui.cli import main

    from .beat_helpers import write_config
    config = write_config(tmp_path, f"sqlite://{tmp_path / 'broker.sqlite'}", "cli", unique,
                          every=300)
    # A top-level key goes before the file's [beat_schedule...] tables.
    config.write_text(f'console_history_file = "{tmp_path / "history.sqlite"}"\n'
                      + config.read_text())
    assert main(["--config", str(config), "schedule", "pause", "tick"]) == 0
    assert main(["--config", str(config), "audit", "--json"]) == 0
    [found] = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (found["action"], found["targets"], found["replies"]) == (
        "schedule pause", ["tick"], {"-": "paused"})



def pause_and_resume(app: App, *verbs: str) -> list[AuditEntry]:
    """Run ``qtui pause q1`` / ``qtui resume q1`` in turn; the audit entries, newest first."""
    from qtui.tui import queue_commands
    for verb in verbs:
        command = getattr(queue_commands, f"{verb}_command")
        command(argparse.Namespace(queue="q1", timeout=0.2, watch=False), app)
    log = AuditLog(app.conf.console_history_file)
    try:
        return log.entries()
    finally:
        log.close()


def test_qtui_pause_and_resume_record_a_worker_that_did_not_answer_as_not_ok(
        cli_app, monkeypatch):
    from qtui.core import pauses
    monkeypatch.setattr(pauses, "consumers_of", lambda app, queue, timeout: {"gone@h"})
    found = pause_and_resume(cli_app, "pause", "resume")
    assert [(f.action, f.replies, f.ok) for f in found] == [
        ("resume", (("gone@h", "no reply"),), False), ("pause", (("gone@h", "no reply"),), False)]


def test_qtui_pause_with_no_worker_to_tell_is_recorded_as_ok(cli_app):
    [found] = pause_and_resume(cli_app, "pause")
    assert (found.action, found.replies, found.ok) == ("pause", (("-", "no worker to tell"),), True)
