"""The Queues view's pause key: ``p`` asks, showing ``qtui pause QUEUE``, then pauses the queue
in the broker (audited); on a paused queue it offers ``qtui resume QUEUE``. The embedded broker
and RabbitMQ, no worker."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from qtui.core import App
from qtui.core.pauses import paused_queues, resume_queue
from qtui.tui.audit import AuditLog
from qtui.tui.rows import QueueRow
from qtui.tui.views.modals import ConfirmScreen

from .console_data import SNAPSHOT, FixedConsole, screen_text
from .test_console_actions import settle

SIZE = (140, 36)
pytestmark = pytest.mark.usefixtures("utc")


async def test_p_pauses_the_queue_under_the_cursor_after_showing_the_command(tmp_path):
    app = App("console-tests", broker=f"sqlite://{tmp_path}/broker.sqlite")
    console = FixedConsole(app=app)
    console.actions.timeout = 0.2  # no worker answers: do not wait long for them
    console.audit = log = AuditLog(tmp_path / "history.sqlite")
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("4", "p")
        assert isinstance(console.screen, ConfirmScreen)
        assert "qtui pause celery" in screen_text(console)
        await pilot.press("y")
        await settle(console, pilot)
    assert list(paused_queues(app)) == ["celery"]
    [found] = log.entries()
    assert (found.action, found.targets, found.ok) == ("pause", ("celery",), True)


async def test_p_pauses_a_queue_on_rabbitmq_in_its_pause_stream(tmp_path, amqp_url, unique):
    queue = f"cp-{unique}"  # a queue of this test's own: the pause is told to every worker
    app = App("console-tests", broker=amqp_url)
    console = FixedConsole(app=app, snapshot=replace(
        SNAPSHOT, queues=(QueueRow(queue, 3, 0, 0.0),)))
    console.actions.timeout = 0.2
    console.audit = log = AuditLog(tmp_path / "history.sqlite")
    try:
        async with console.run_test(size=SIZE) as pilot:
            await pilot.press("4", "p")
            assert f"qtui pause {queue}" in screen_text(console)
            await pilot.press("y")
            await settle(console, pilot)
        assert queue in paused_queues(app)  # other tests may have paused their own queues
        [found] = log.entries()
        assert (found.action, found.targets, found.ok) == ("pause", (queue,), True)
    finally:
        resume_queue(app, queue, timeout=0.2)
        app.close()


async def test_p_on_a_paused_queue_offers_to_resume_it(tmp_path):
    console = FixedConsole()
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("4", "G", "p")  # the last row: reports, paused
        assert isinstance(console.screen, ConfirmScreen)
        shown = screen_text(console)
        assert "Resume reports?" in shown and "qtui resume reports" in shown
        assert "qtui@alpha" in shown
        await pilot.press("n")


async def test_a_read_only_console_has_no_pause_key():
    console = FixedConsole(read_only=True)
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("4", "p")
        assert not isinstance(console.screen, ConfirmScreen)


def test_the_feed_tells_a_worker_that_comes_online_about_the_pauses(monkeypatch):
    from qtui.tui import feed as feed_module

    told = []
    monkeypatch.setattr(feed_module, "reapply", lambda app, host: told.append(host) or {})
    acting = feed_module.Feed(App("console-tests", broker="memory://"), reapply_pauses=True)
    acting._reapply_pauses([{"type": "worker-heartbeat", "hostname": "w1@h"},
                            {"type": "worker-online", "hostname": "w2@h"}])
    for thread in threading.enumerate():
        if thread.name.startswith("qtui-reapply-"):
            thread.join(5)
    assert told == ["w2@h"]


async def test_a_read_only_console_does_not_tell_workers_about_pauses():
    assert FixedConsole(read_only=True).feed.reapply_pauses is False
    assert FixedConsole().feed.reapply_pauses is True


def test_the_feed_re_pausing_a_worker_that_came_online_is_in_the_audit_trail(
        tmp_path, monkeypatch):
    from qtui.tui import feed as feed_module

    replies = {"celery": {"ok": "no longer consuming from celery"}, "reports": None}
    monkeypatch.setattr(feed_module, "reapply", lambda app, host: replies)
    console = FixedConsole()
    console.audit = log = AuditLog(tmp_path / "history.sqlite")
    console.feed._reapply("w2@h")
    [found] = log.entries()
    assert (found.source, found.action, found.targets, found.ok) == (
        "console", "pause", ("celery", "reports"), False)
    assert found.replies == (
        ("w2@h", "celery: OK no longer consuming from celery; reports: no reply"),)
    log.close()


async def test_the_queues_view_says_why_the_pauses_are_unknown_and_keeps_its_rows():
    console = FixedConsole(snapshot=replace(
        SNAPSHOT, queue_notice="pauses unknown: \x1b[2J(403) ACCESS_REFUSED"))
    async with console.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        summary = str(console.screen.query_one("#summary").render())
        assert "pauses unknown: ␛[2J(403) ACCESS_REFUSED" in summary  # data, made visible
        assert console.screen.query_one("#queues").row_count == len(SNAPSHOT.queues)


def test_the_feed_keeps_the_queue_depths_when_the_pauses_cannot_be_read(
        amqp_url, unique, monkeypatch):
    from kombu import Connection

    from qtui.core.brokers.amqp import pauses as amqp_pauses
    from qtui.core.brokers.amqp.queues import AmqpQueues
    from qtui.tui.feed import Feed

    stream = f"cp-stream-{unique}"
    monkeypatch.setattr(AmqpQueues, "pause_stream", stream)
    monkeypatch.setattr(amqp_pauses, "READ_TIMEOUT", 0.3)
    with Connection(amqp_url) as conn:
        empty = amqp_pauses.PauseStream(conn, stream)  # its writer died before its record
        conn.channel().queue_declare(queue=stream, durable=True, auto_delete=False,
                                     arguments=empty.arguments)
        try:
            feed = Feed(App("console-tests", broker=amqp_url))
            feed._poll_queues()
            with feed.lock:
                snapshot = feed.snapshot()
        finally:
            empty.delete()
    assert snapshot.error == "" and "sent no record" in snapshot.queue_notice
