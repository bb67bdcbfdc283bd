"""The queue operations end to end in a real terminal of 80x24, against a live qtui worker on
Redis (database 12): the Queues view's Oldest and Dead columns for messages nobody consumes, a
peek at them (Enter) and back (Esc), then a pause of the queue the worker consumes (p, confirm)
and its resume (p again); the pause and resume on RabbitMQ too."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection

from qtui.core.queues import inspector_for

from .services import AMQP_HOST, AMQP_PORT, REDIS_HOST, REDIS_PORT, need
from .test_console_tmux import Terminal, terminal  # noqa: F401 - the terminal fixture
from .worker_helpers import Setup, hostname_of, make_setup, wait_for

#: Database 4: test_console_peek.py flushes 2, and counts every dead letter there.
BROKER = f"redis://{REDIS_HOST}:{REDIS_PORT}/12"


@pytest.fixture
def live(tmp_path, unique) -> Iterator[Setup]:
    """A qtui worker consuming ``zz-<unique>`` (the view's last queue but one: rows are sorted
    by name), and ``zz-<unique>-idle`` (the last) that nobody consumes."""
    need("Redis", REDIS_HOST, REDIS_PORT)
    setup = make_setup(tmp_path, f"zz-{unique}", BROKER, BROKER)
    try:
        with setup.worker("-P", "threads", "-c", "2", name="tmuxq"):
            yield setup
    finally:
        with inspector_for(setup.app()) as inspector:
            inspector.resume(setup.queue)  # a test that failed while the queue was paused
        client = redis.Redis.from_url(BROKER)
        for pattern in (f"{setup.queue}*", f"_kombu.binding.{setup.queue}*",
                        f"_kombu.binding_permanent.{setup.queue}*",
                        f"qtui.processing.*{setup.queue}*", "celery-task-meta-*"):
            for key in client.scan_iter(pattern):
                client.delete(key)
        for owner in client.smembers("qtui.owners"):  # the worker's entry in the ledger
            if setup.queue.encode() in owner:
                client.srem("qtui.owners", owner)
        setup.cleanup()


#: Longer than the terminal is wide: the Queues view cuts it, and its Paused column stays.
LONG = "-idle-" + "with-a-name-longer-than-an-80-column-terminal-is-wide" * 2


def row(screen: str, queue: str, *others: str) -> list[str] | None:
    """The cells of the Queues view's row of ``queue`` (split on blanks). The view may cut a
    name (``zz-1a2b…``) that then starts ``others`` too (the test's other queues): rows are in
    name order, so the one of ``queue`` is found by its place among them. None while not
    every one of them is shown."""
    names = sorted({queue, *others})
    lines = [line.split() for line in screen.splitlines() if line.split()[:1]
             and any(shown(line.split()[0], name) for name in names)]
    return lines[names.index(queue)] if len(lines) >= len(names) else None


def shown(cell: str, name: str) -> bool:
    """Whether ``cell`` is ``name``, whole or cut with an ellipsis."""
    return cell == name or (cell.endswith("…") and name.startswith(cell[:-1]))


@pytest.mark.timeout(180)
def test_queue_operations_in_a_real_terminal(terminal: Terminal, live, tmp_path):
    setup = live
    queue, idle = setup.queue, f"{setup.queue}{LONG}"
    app = setup.app()
    hostname = hostname_of(setup, "tmuxq")
    try:
        for name in ("tasks.mark", "tasks.mark", "tasks.add"):
            app.send_task(name, args=["x"] if name == "tasks.mark" else [1, 2], queue=idle)
        with Connection(BROKER) as conn:  # a dead letter of the idle queue
            dead = conn.SimpleQueue(f"{idle}.dead")
            dead.put({"not": "a task"})
            dead.close()
        assert app.send_task("tasks.add", args=[20, 22]).get(timeout=20) == 42  # worker ready

        env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "TERM": "xterm-256color",
               "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        terminal.start([sys.executable, "-m", "qtui.tui.cli", "-b", BROKER, "--no-history"],
                       str(tmp_path), env)
        terminal.wait_for("Overview", "connected")

        # The Queues view: depth 3 with an exact age (qtui's publish time), none scheduled,
        # 1 dead letter, nobody consuming it.
        terminal.keys("4")
        screen = terminal.wait_for("Oldest", "Dead", "Paused", "Workers", "none")
        cells = row(screen, idle, queue)
        assert cells is not None, screen
        assert cells[1] == "3" and cells[2].endswith(("s", "m")) and cells[4] == "1", cells
        terminal.keys("G")  # the line under the table shows the cut name whole
        terminal.wait_for(f"Queue: {idle[:60]}")

        # Enter on the idle queue (the last row): its messages, counted by task name.
        terminal.keys("G")
        terminal.keys("Enter")
        terminal.wait_for("By task name (all 3 waiting): tasks.mark 2, tasks.add 1", "LRANGE")
        terminal.keys("Escape")
        terminal.wait_for("Oldest", "Dead", "Paused")

        # Pause the queue the worker consumes (the row above), then resume it.
        terminal.keys("Up")
        pause_and_resume(terminal, app, hostname, queue, idle)
        terminal.quit()
    finally:
        app.close()


def pause_and_resume(terminal: Terminal, app, hostname: str, queue: str, *others: str) -> None:
    """``p`` on the row under the cursor, which must be ``queue`` (the dialog names it before
    ``y`` is pressed: never another queue of a shared broker), then ``p`` again: the row says
    paused and the worker stops consuming it, then neither."""
    terminal.keys("p")
    terminal.wait_for(f"Pause {queue}")
    terminal.keys("y")
    assert wait_for(lambda: shows_paused(row(terminal.screen(), queue, *others)), timeout=20,
                    interval=0.3), terminal.screen()
    assert not _consumes(app, hostname, queue)
    terminal.keys("p")
    terminal.wait_for(f"Resume {queue}")
    terminal.keys("y")
    assert wait_for(lambda: shows_paused(row(terminal.screen(), queue, *others)) is False,
                    timeout=20, interval=0.3), terminal.screen()
    assert wait_for(lambda: _consumes(app, hostname, queue))


def shows_paused(cells: list[str] | None) -> bool | None:
    """Whether a Queues row says paused, whole: at 80 columns long queue names (this test's,
    other tests' on the shared broker) are cut, never the Paused column."""
    return None if cells is None else "paused" in cells[1:]


def _consumes(app, hostname: str, queue: str) -> bool:
    reply = app.control.inspect(destination=[hostname], timeout=1.0).active_queues() or {}
    return any(q.get("name") == queue for q in reply.get(hostname) or ())


@pytest.fixture
def live_rabbitmq(tmp_path, unique) -> Iterator[Setup]:
    """A qtui worker on RabbitMQ consuming ``zzzz-<unique>``: the Queues view's last row."""
    need("Redis", REDIS_HOST, REDIS_PORT)  # the task records
    need("RabbitMQ", AMQP_HOST, AMQP_PORT)
    setup = make_setup(tmp_path, f"zzzz-{unique}", f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}//",
                       None)
    try:
        with setup.worker("-P", "threads", "-c", "2", name="tmuxr"):
            yield setup
    finally:
        with inspector_for(setup.app()) as inspector:
            inspector.resume(setup.queue)  # a test that failed while the queue was paused
        setup.cleanup()


@pytest.mark.timeout(180)
def test_pause_and_resume_on_rabbitmq_in_a_real_terminal(terminal: Terminal, live_rabbitmq,
                                                         tmp_path):
    setup = live_rabbitmq
    queue, app = setup.queue, setup.app()
    hostname = hostname_of(setup, "tmuxr")
    try:
        assert wait_for(lambda: _consumes(app, hostname, queue))
        env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "TERM": "xterm-256color",
               "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        terminal.start([sys.executable, "-m", "qtui.tui.cli", "-b", setup.broker,
                        "--no-history"], str(tmp_path), env)
        terminal.wait_for("Overview", "connected")
        terminal.keys("4")
        terminal.wait_for("Oldest", "Paused")
        assert wait_for(lambda: row(terminal.screen(), queue) is not None), terminal.screen()
        terminal.keys("G")
        # Nobody consumes it once paused, and RabbitMQ lists only named queues: the pause keeps
        # its row.
        pause_and_resume(terminal, app, hostname, queue)
        terminal.quit()
    finally:
        app.close()
