"""A worker says it is ready (the "ready" line, the worker_ready signal, the worker-online event)
only once it listens for remote control: a command broadcast at that instant reaches it, on
Redis (where the pidbox is a PUBLISH subscription), RabbitMQ and the embedded SQLite broker.

The tasks module widens the window: its worker_ready receiver sleeps, so a command the test
sends on seeing "ready" or worker-online arrives while the worker is still in that receiver,
before its first poll of the broker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from qtui.core.events import EventReceiver
from qtui.core.state import State

from .processes import write_module
from .worker_helpers import TASKS, Setup, broker_urls, hostname_of, make_setup, wait_for

#: Seconds the worker_ready receiver holds the worker before its first poll.
READY_PAUSE = 3.0

READY_HOOKS = """
from qtui.core import signals


@signals.worker_ready.connect
def broadcast_then_pause(sender, **_):
    # A command sent from the worker_ready signal itself, then a pause before the first poll.
    app.control.broadcast("revoke", arguments={{"task_id": KEY + "-revoked-on-ready"}},
                          destination=[sender.hostname])
    time.sleep({pause!r})
"""


@pytest.fixture(params=["redis", "rabbitmq", "sqlite"])
def ready_setup(request: pytest.FixtureRequest, tmp_path, unique) -> Iterator[Setup]:
    """A tasks module whose worker_ready receiver broadcasts a revoke, then pauses."""
    url, backend = broker_urls(request.param, tmp_path)
    setup = make_setup(tmp_path, f"qw-{unique}", url, backend)
    write_module(tmp_path, "tasks", TASKS + READY_HOOKS.format(pause=READY_PAUSE))
    yield setup
    setup.cleanup()


def pong(setup: Setup, app: Any) -> bool:
    """Whether the worker answers one ping sent now (waiting past the receiver's pause)."""
    host = hostname_of(setup)
    replies = app.control.broadcast("ping", reply=True, timeout=READY_PAUSE + 15,
                                    destination=[host])
    return host in replies.by_worker()


@pytest.mark.timeout(90)
def test_a_ping_sent_on_the_ready_line_is_answered(ready_setup: Setup):
    app = ready_setup.app()
    try:
        with ready_setup.worker("-P", "solo"):
            assert pong(ready_setup, app)
    finally:
        app.close()


@pytest.mark.timeout(90)
def test_a_command_sent_from_the_worker_ready_signal_is_received(ready_setup: Setup):
    app = ready_setup.app()
    host = hostname_of(ready_setup)
    revoke_id = f"{ready_setup.queue}-revoked-on-ready"

    def revoked() -> bool:
        replies = app.control.broadcast("revoked", reply=True, timeout=5, destination=[host])
        return revoke_id in replies.by_worker().get(host, [])

    try:
        with ready_setup.worker("-P", "solo"):
            assert wait_for(revoked, 30)
    finally:
        app.close()


@pytest.mark.timeout(90)
def test_a_ping_sent_on_worker_online_is_answered(ready_setup: Setup):
    app = ready_setup.app()
    host = hostname_of(ready_setup)
    state = State()
    try:
        with EventReceiver(app, wakeup=False) as receiver:
            with ready_setup.worker("-P", "solo", timeout=60):
                deadline = time.monotonic() + 30
                for batch in receiver.batches(0.05, reconnect=False):
                    state.ingest(batch)
                    if host in state.workers or time.monotonic() > deadline:
                        break
                assert host in state.workers, "no worker-online event"
                assert pong(ready_setup, app)
    finally:
        app.close()
