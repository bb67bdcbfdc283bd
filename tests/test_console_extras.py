"""The console's contexts, the command palette, a worker that does not answer, and `qtui demo`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qtui.core import App
from qtui.core.exceptions import ConfigError
from qtui.tui.contexts import context_app, context_apps
from qtui.tui.feed import Feed
from qtui.tui.views.details import WorkerDetailScreen

from .console_data import FixedConsole, screen_text

SIZE = (140, 40)


def test_a_context_is_the_config_with_its_table_on_top():
    app = App("t", broker="redis://base:6379/0", task_default_queue="work")
    app.conf.update(contexts={"prod": {"broker_url": "amqp://u:secret@prod//"},
                              "staging": {"broker_url": "redis://staging:6379/1"}})
    prod = context_app(app, "prod")
    assert prod.broker_url == "amqp://u:secret@prod//"
    assert prod.conf.task_default_queue == "work"
    assert sorted(context_apps(app)) == ["prod", "staging"]


def test_an_unknown_context_names_the_known_ones():
    app = App("t")
    app.conf.update(contexts={"prod": {"broker_url": "redis://p:6379/0"}})
    with pytest.raises(ConfigError, match="unknown context 'nope'; known: prod"):
        context_app(app, "nope")


def test_a_context_with_a_misspelt_setting_warns_at_start():
    app = App("t")
    app.conf.update(contexts={"prod": {"broker_ulr": "redis://p:6379/0"}})
    with pytest.warns(UserWarning, match="broker_url"):
        context_apps(app)


async def test_colon_context_switches_the_console_to_another_cluster():
    console = FixedConsole()
    console.contexts = {"staging": App("s", broker="redis://127.0.0.1:6379/13")}
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("colon", *"context staging", "enter")
        assert console.context == "staging"
        assert console.sub_title.startswith("staging · redis://127.0.0.1:6379/13")
        assert console.feed.app is console.contexts["staging"]
        assert console.actions.app is console.contexts["staging"]
        assert any("Switched to staging" in text for _, text in console.notes)


async def test_the_command_palette_offers_the_views():
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p", *"queues view")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert type(console.screen).__name__ == "QueuesScreen"


async def test_a_worker_that_does_not_answer_is_shown_as_such(monkeypatch):
    console = FixedConsole()
    monkeypatch.setattr(console.feed, "inspect",
                        lambda hostname, method, *arguments, **options: None)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("2", "enter")
        assert isinstance(console.screen, WorkerDetailScreen)
        await pilot.pause(0.5)
        assert "qtui@alpha did not reply to stats" in screen_text(console)


def started_at(pid: int) -> str | None:
    """When process ``pid`` started (a reused pid starts later); None once it has ended (gone,
    or a zombie)."""
    try:
        state, *fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return None if state == "Z" else fields[18]


def children(pid: int) -> dict[int, str]:
    """The running processes ``pid`` started, each with its start time."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=10)
    return {child: start for child in map(int, found.stdout.split())
            if (start := started_at(child)) is not None}


@pytest.mark.timeout(90)
def test_qtui_demo_brings_up_a_live_cluster_and_takes_it_down(tmp_path):
    """`make run` runs `qtui demo`: within seconds a worker is online and tasks of every kind
    flow; Ctrl+C stops the worker too."""
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    broker = f"sqlite://{tmp_path}/xdg/qtui/broker.sqlite"
    demo = subprocess.Popen([sys.executable, "-m", "qtui.tui.cli", "demo", "--no-console"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    feed = Feed(App("watcher", broker=broker))
    thread = threading.Thread(target=feed.run, args=(lambda snapshot: None, 0.2), daemon=True)
    started: dict[int, str] = {}
    try:
        thread.start()
        deadline = time.monotonic() + 45
        wanted = {"SUCCESS", "FAILURE", "RETRY"}
        while time.monotonic() < deadline:
            with feed.lock:
                seen = {t.state for t in feed.state.tasks()}
                alive = [w.hostname for w in feed.state.alive_workers()]
                names = {t.name for t in feed.state.tasks()}
            if wanted <= seen and alive:
                break
            time.sleep(0.2)
        assert wanted <= seen, seen
        assert alive and alive[0].startswith("demo@")
        assert {"demo.add", "demo.charge_card", "demo.fetch_feed"} <= names
        started = children(demo.pid)
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in started]
        assert any(b"qtui.workers.cli" in command for command in commands), commands
    finally:
        feed.stop()
        os.killpg(demo.pid, signal.SIGINT)
        try:
            output, _ = demo.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            output, _ = demo.communicate()
        thread.join(5)
    assert demo.returncode == 0, output
    leftover = [pid for pid, start in started.items() if started_at(pid) == start]
    assert leftover == [], f"the demo left {leftover} running"
