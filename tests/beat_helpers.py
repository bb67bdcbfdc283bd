"""Test helpers for periodic tasks: a config file with one entry, real ``qtui beat``
processes, and counting what they sent by scheduled time (read back from the queue)."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path

from kombu import Connection, Queue

from qtui.core import App
from qtui.core.beat.store import BeatStore, store_for

from .processes import running


def write_config(directory: Path, broker: str, prefix: str, queue: str, every: float = 1,
                 extra: str = "", lease: float = 3.0) -> Path:
    path = directory / "qtui.toml"
    path.write_text(f"""
broker_url = {json.dumps(broker)}
beat_key_prefix = {json.dumps(prefix)}
beat_lease_ttl = {lease}
{extra}
[beat_schedule.tick]
task = "tasks.tick"
schedule = {every}
options = {{ queue = {json.dumps(queue)} }}
""")
    return path


def app_for(config: Path) -> App:
    app = App("beat-test")
    app.config_from_file(config)
    return app


@contextmanager
def beats(config: Path, names: list[str]) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """``qtui beat`` processes named ``names``, all ready, stopped at the end."""
    with ExitStack() as stack:
        procs = {}
        for name in names:
            argv = [sys.executable, "-m", "qtui.tui.cli", "--config", str(config), "beat",
                    "-n", name]
            procs[name] = stack.enter_context(running(argv, config.parent, ready="ready"))
        yield procs


def leader(store: BeatStore, timeout: float = 30.0, other_than: str | None = None) -> str:
    """The name of the leading beat, once there is one (and it is not ``other_than``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [n.name for n in store.nodes() if n.leader and n.name != other_than]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no beat leads after {timeout}s: {store.nodes()}")


def kill(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def sent_ticks(broker: str, queue: str) -> collections.Counter[float]:
    """How often each scheduled time was sent to ``queue`` (drains it)."""
    counts: collections.Counter[float] = collections.Counter()
    with Connection(broker) as conn:
        with conn.SimpleQueue(Queue(queue, routing_key=queue)) as simple:
            while True:
                try:
                    message = simple.get(timeout=1.0)
                except simple.Empty:
                    return counts
                stamp = datetime.fromisoformat(message.headers["beat_scheduled"]).timestamp()
                counts[stamp] += 1
                message.ack()


def wait_for_tick_after(store: BeatStore, entry: str, after: float, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(run.scheduled > after for run in store.runs(entry, limit=3)):
            return
        time.sleep(0.2)
    raise AssertionError(f"no tick of {entry} scheduled after {after} within {timeout}s")


def store_of(config: Path) -> BeatStore:
    return store_for(app_for(config))
