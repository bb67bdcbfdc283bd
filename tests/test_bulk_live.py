"""Bulk actions and the audit trail against a live qtui worker on Redis (database 11, its own):
a bulk revoke from the console reaches the worker as one revoke naming every id, the tasks never
run, and the console and the scripted command each leave an audit entry with the worker's
reply."""

from __future__ import annotations

import argparse
import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from qtui.core import App
from qtui.tui import commands
from qtui.tui.audit import AuditLog
from qtui.tui.console import Console
from qtui.tui.views.modals import ConfirmScreen

from .services import REDIS_HOST, REDIS_PORT, need
from .test_console_live import table_rows, until
from .worker_helpers import Setup, make_setup

SIZE = (160, 45)
BROKER = f"redis://{REDIS_HOST}:{REDIS_PORT}/11"


@pytest.fixture
def live(tmp_path) -> Iterator[tuple[Setup, str]]:
    need("Redis", REDIS_HOST, REDIS_PORT)
    setup = make_setup(tmp_path, f"bk-{uuid.uuid4().hex[:8]}", BROKER, BROKER)
    try:
        with setup.worker("-P", "solo", name="bk"):
            yield setup, f"bk-{setup.queue}@{socket.gethostname()}"
    finally:
        setup.cleanup()


class Counting:
    """Passes broadcasts through to the real one, keeping (method, arguments) of each."""

    def __init__(self, real: Any) -> None:
        self.real, self.sent = real, []

    def __call__(self, method: str, arguments: dict[str, Any], **options: Any) -> Any:
        self.sent.append((method, arguments))
        return self.real(method, arguments, **options)


async def test_a_bulk_revoke_is_one_revoke_the_worker_acts_on_and_is_audited(live, tmp_path):
    setup, hostname = live
    app = setup.app(console_history_file=str(tmp_path / "history.sqlite"))
    console = Console(app, history=True)
    counting = Counting(app.control.broadcast)
    app.control.broadcast = counting  # type: ignore[method-assign]
    tag = uuid.uuid4().hex[:8]
    async with console.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: console.model.connected, what="connected")
        await pilot.press("colon", *f"tasks args:{tag}", "enter")
        later = [app.send_task("tasks.mark", args=[f"{tag}-{n}"], countdown=5) for n in range(3)]
        await until(pilot, lambda: len(table_rows(console, "tasks")) == 3
                    and all(r[2] == "RECEIVED" for r in table_rows(console, "tasks")),
                    what="three held tasks")
        await pilot.press("asterisk", "R")
        assert isinstance(console.screen, ConfirmScreen)
        assert console.screen.question == "Revoke 3 tasks? They will not run."
        await pilot.press("y")
        await until(pilot, lambda: console.outcomes, what="the revoke's outcome")
        assert console.outcomes[-1].ok, console.outcomes[-1]
        await until(pilot, lambda: all(r[2] == "REVOKED" for r in table_rows(console, "tasks")),
                    what="the tasks revoked (reported when their countdown ends)")
    assert [r for r in setup.records("mark") if tag in r["tag"]] == []  # none ran
    ids = {r.id for r in later}
    revokes = [arguments for method, arguments in counting.sent if method == "revoke"]
    assert len(revokes) == 1 and set(revokes[0]["task_id"]) == ids
    inspect = app.control.inspect(destination=[hostname], timeout=5)
    assert ids <= set((inspect.revoked() or {}).get(hostname, []))
    [found] = [e for e in AuditLog(tmp_path / "history.sqlite").entries()
               if e.action == "revoke"]
    assert set(found.targets) == ids and found.source == "console"
    assert "flagged as revoked" in dict(found.replies)[hostname]
    app.close()


def test_qtui_control_revoke_is_audited_with_the_workers_reply(live, tmp_path, capsys):
    setup, hostname = live
    app = setup.app(console_history_file=str(tmp_path / "history.sqlite"))
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    parser = argparse.ArgumentParser(prog="qtui")
    commands.add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["control", "revoke", *ids, "--terminate", "--signal", "SIGKILL",
                              "-d", hostname, "-t", "10"])
    assert args.func(args, app) == 0
    args = parser.parse_args(["audit", "--json"])
    started = time.time()
    assert args.func(args, app) == 0
    [found] = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert found["action"] == "control revoke" and found["targets"] == ids
    assert found["source"] == "cli" and found["time"] <= started
    assert hostname in found["replies"] and "terminate" in found["replies"][hostname]
    app.close()


def test_the_scripted_call_runs_the_task(live, tmp_path, capsys):
    setup, _ = live
    app: App = setup.app(console_history_file=str(tmp_path / "history.sqlite"))
    parser = argparse.ArgumentParser(prog="qtui")
    commands.add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["call", "tasks.add", "--args", "[2, 3]", "--queue", setup.queue])
    assert args.func(args, app) == 0
    task_id = capsys.readouterr().out.strip()
    assert app.AsyncResult(task_id).get(timeout=20) == 5
    app.close()
