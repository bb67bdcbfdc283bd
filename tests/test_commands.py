"""The scripted commands (inspect, control, status, purge, events) against a real Celery worker
on Redis and RabbitMQ: what people read, what scripts read (--json), and the exit status."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from kombu import Connection

from qtui.core import App
from qtui.core.events import EventDispatcher
from qtui.core.exceptions import BrokerUnavailable
from qtui.tui import commands
from qtui.tui.commands import NO_REPLY, format_event

from .processes import write_module
from .test_control import (
    BROKERS,
    NOBODY,
    Cluster,
    delete_queues,
    eventually,
    is_active,
    need_broker,
    start_celery,
)


def qtui(app: App, *argv: str) -> int:
    """Run one scripted command in-process, as ``qtui`` would after loading the app."""
    parser = argparse.ArgumentParser(prog="qtui")
    commands.add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args, app)


@pytest.fixture(scope="module", params=sorted(BROKERS))
def cluster(request, tmp_path_factory):
    """A Celery worker on its own queue, and a qtui app whose default queue is that queue."""
    broker = need_broker(request.param)
    queue = f"cmd-{uuid.uuid4().hex[:8]}"
    directory = tmp_path_factory.mktemp("celery")
    try:
        with start_celery(directory, broker, queue):
            cluster = Cluster(broker, queue)
            yield cluster
            cluster.app.close()
    finally:
        delete_queues(broker, queue)


# inspect and control -----------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_the_tutorials_rate_limit_line(cluster, capsys):
    assert qtui(cluster.app, "control", "rate_limit", "tasks.add", "10/m", "-d", cluster.hostname,
                "-t", "10") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{cluster.hostname}: OK", "    new rate limit set successfully"]


@pytest.mark.timeout(120)
def test_inspect_ping_as_json(cluster, capsys):
    assert qtui(cluster.app, "inspect", "ping", "-d", cluster.hostname, "-t", "10", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {cluster.hostname: {"ok": "pong"}}


@pytest.mark.timeout(120)
def test_inspect_registered_lists_the_tasks(cluster, capsys):
    assert qtui(cluster.app, "inspect", "registered", "-d", cluster.hostname, "-t", "10") == 0
    out = capsys.readouterr().out
    assert f"{cluster.hostname}: OK" in out and "* tasks.add" in out and "* tasks.sleep" in out


@pytest.mark.timeout(120)
def test_inspect_active_is_a_table_of_tasks(cluster, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # a terminal wide enough for whole task ids
    result = cluster.app.send_task("tasks.sleep", args=[3])
    inspect = cluster.app.control.inspect(destination=[cluster.hostname], timeout=5)
    eventually(lambda: is_active(inspect, cluster, result.id), f"{result.id} active")
    assert qtui(cluster.app, "inspect", "active", "-d", cluster.hostname, "-t", "10") == 0
    out = capsys.readouterr().out
    assert "active tasks" in out and result.id in out and "tasks.sleep" in out


@pytest.mark.timeout(120)
def test_inspect_stats_shows_the_reply_as_json(cluster, capsys):
    assert qtui(cluster.app, "inspect", "stats", "-d", cluster.hostname, "-t", "10") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{cluster.hostname}: OK\n") and '"max-concurrency": 1' in out


@pytest.mark.timeout(120)
def test_a_worker_that_does_not_answer_is_named_and_the_others_shown(cluster, capsys):
    status = qtui(cluster.app, "inspect", "ping", "-d", f"{cluster.hostname},{NOBODY}", "-t", "2")
    captured = capsys.readouterr()
    assert status == 1
    assert f"{cluster.hostname}: OK" in captured.out
    assert f"{NOBODY}: no reply within 2 s" in captured.err


@pytest.mark.timeout(120)
def test_nothing_replied_exits_unavailable(cluster, capsys):
    assert qtui(cluster.app, "inspect", "ping", "-d", NOBODY, "-t", "1") == NO_REPLY
    assert "No worker replied within 1 s." in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_an_error_reply_is_shown_and_fails_the_command(cluster, capsys):
    assert qtui(cluster.app, "control", "autoscale", "2", "1", "-d", cluster.hostname,
                "-t", "10") == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{cluster.hostname}: ERROR", "    ValueError('Autoscale not enabled')"]


@pytest.mark.timeout(120)
def test_control_revoke_takes_several_ids(cluster, capsys):
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    assert qtui(cluster.app, "control", "revoke", *ids, "-d", cluster.hostname, "-t", "10",
                "--json") == 0
    reply = json.loads(capsys.readouterr().out)[cluster.hostname]["ok"]
    assert all(task_id in reply for task_id in ids)


@pytest.mark.timeout(60)
def test_missing_arguments_are_a_usage_error_before_anything_is_sent(cluster, capsys):
    assert qtui(cluster.app, "control", "rate_limit", "tasks.add") == 2
    assert "rate_limit takes <task_name> <rate_limit" in capsys.readouterr().err


def test_unknown_commands_are_refused_by_the_parser():
    with pytest.raises(SystemExit) as exit_:
        qtui(App("t", broker="memory://"), "inspect", "rate_limit")
    assert exit_.value.code == 2


# status, purge, events ---------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_status_shows_the_worker_the_broker_and_the_queue_it_consumes(cluster, capsys,
                                                                     monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # other tests' long queue names must not squeeze ours
    assert qtui(cluster.app, "status", "-t", "2") == 0
    out = capsys.readouterr().out
    assert cluster.hostname in out and "worker" in out
    queue = cluster.app.conf.task_default_queue
    assert any(line.split("│")[1].strip() == queue and cluster.hostname in line
               for line in out.splitlines() if line.count("│") > 3)


@pytest.mark.timeout(120)
def test_status_as_json(cluster, capsys):
    assert qtui(cluster.app, "status", "-t", "2", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["workers"][cluster.hostname] == {"ok": "pong"}
    assert status["embedded_broker"] is None
    queue = next(q for q in status["queues"] if q["name"] == cluster.app.conf.task_default_queue)
    assert queue["workers"] == [cluster.hostname]


@pytest.mark.timeout(120)
def test_status_masks_the_brokers_password(capsys, monkeypatch):
    url = need_broker("rabbitmq")
    app = App("t", broker=url, task_default_queue=f"st-{uuid.uuid4().hex[:8]}")
    monkeypatch.setattr(app.control, "ping", lambda timeout: commands.Replies())
    try:
        assert qtui(app, "status", "--json") == NO_REPLY
    finally:
        app.close()
    status = json.loads(capsys.readouterr().out)
    assert status["broker"] == "amqp://guest:**@127.0.0.1:5672//"


def test_status_names_the_embedded_brokers_file(capsys, monkeypatch, data_home):
    app = App("t", task_default_queue="st-embedded")
    monkeypatch.setattr(app.control, "ping", lambda timeout: commands.Replies())
    try:
        assert qtui(app, "status") == NO_REPLY
    finally:
        app.close()
    out = capsys.readouterr().out
    assert f"embedded broker file: {data_home}/qtui/broker.sqlite" in out


@pytest.fixture
def waiting(unique):
    """An app on Redis whose own queue holds three tasks nobody consumes."""
    broker = need_broker("redis")
    app = App("t", broker=broker, task_default_queue=f"purge-{unique}")
    for n in range(3):
        app.send_task("tasks.add", args=[n, n])
    yield app
    app.close()
    delete_queues(broker, f"purge-{unique}")


@pytest.mark.timeout(60)
def test_purge_asks_first_and_no_keeps_everything(waiting, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    assert qtui(waiting, "purge") == 1
    out = capsys.readouterr().out
    assert f"({waiting.conf.task_default_queue})" in out and "[y/N]" in out
    assert waiting.control.purge() == 3


@pytest.mark.timeout(60)
def test_purge_after_yes(waiting, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    assert qtui(waiting, "purge") == 0
    assert "Purged 3 messages from 1 queue." in capsys.readouterr().out


@pytest.mark.timeout(60)
def test_purge_named_queues_without_asking(waiting, capsys, unique):
    queue = waiting.conf.task_default_queue
    assert qtui(waiting, "purge", "-f", "-Q", f"{queue},other-{unique}") == 0
    out = capsys.readouterr().out
    assert f"{queue}: purged 3 messages" in out and f"other-{unique}: purged 0 messages" in out


@pytest.mark.timeout(120)
def test_events_dump_prints_events_until_the_count(cluster, capsys):
    assert qtui(cluster.app, "events", "--dump", "--count", "2") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    # Any hostname and any event group: the broker's celeryev exchange is shared with other
    # tests, whose events (a hostname without "@" too; a beat's beat-tick) may be the first two.
    assert all(re.match(r"\S+ \[\d{4}-\d\d-\d\d [\d:.]+\] (worker|task|beat)-\w+", line)
               for line in lines), lines


@pytest.mark.timeout(120)
def test_events_dump_as_json_lines(cluster, capsys):
    assert qtui(cluster.app, "events", "--dump", "--count", "1", "--json") == 0
    event = json.loads(capsys.readouterr().out)
    assert {"type", "hostname", "timestamp", "clock", "local_received"} <= set(event)


def test_an_event_line_reads_like_celerys_dump():
    line = format_event({"type": "task-succeeded", "hostname": "celery@vm", "uuid": "t1",
                         "result": "3", "runtime": 0.5, "clock": 7, "pid": 1, "utcoffset": 0,
                         "timestamp": 0.0, "local_received": 0.1})
    assert line.startswith("celery@vm [")
    assert line.endswith("] task-succeeded result=3 runtime=0.5 uuid=t1")


@pytest.mark.timeout(60)
def test_an_unreachable_broker_is_an_error_naming_it():
    app = App("t", broker="redis://127.0.0.1:1/0",
              broker_transport_options={"max_retries": 1})  # give up at once
    with pytest.raises(BrokerUnavailable, match=r"127.0.0.1:1"):
        qtui(app, "inspect", "ping")


UNREACHABLE = "redis://:hunter2@127.0.0.1:1/0"


def run_qtui(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """The real ``qtui`` command, its error lines unwrapped."""
    return subprocess.run([sys.executable, "-m", "qtui.tui.cli", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=50,
                          env={**os.environ, "COLUMNS": "300"})


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argv", [("purge", "-f"), ("events", "--dump")])
def test_an_unreachable_broker_is_one_error_line_with_the_password_masked(argv, tmp_path):
    out = run_qtui(tmp_path, "-b", UNREACHABLE, *argv)
    assert out.returncode == 1
    assert out.stderr.startswith("error: ") and "Traceback" not in out.stderr, out.stderr
    assert "redis://:**@127.0.0.1:1/0" in out.stderr and "hunter2" not in out.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argv", [("--dump",), ("--dump", "--json")])
def test_events_dump_ends_quietly_when_its_reader_leaves(argv, tmp_path):
    """``qtui events --dump | head -1``."""
    broker = need_broker("redis")
    proc = subprocess.Popen([sys.executable, "-m", "qtui.tui.cli", "-b", broker, "events",
                             *argv], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    stop = threading.Event()

    def send_events() -> None:
        with Connection(broker) as conn:
            dispatcher = EventDispatcher(conn, "pipe@test")
            while not stop.wait(0.1):
                dispatcher.send("worker-heartbeat", {"freq": 2.0})
    sender = threading.Thread(target=send_events, daemon=True)
    sender.start()
    try:
        assert proc.stdout is not None and proc.stdout.readline()
        proc.stdout.close()  # head has read its line
        assert proc.wait(30) == 0
        assert proc.stderr is not None and proc.stderr.read() == ""
    finally:
        stop.set()
        sender.join(5)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# the real command --------------------------------------------------------------------------------
QTUI_TASKS = """
from qtui.core import App

app = App("tasks", broker={broker!r}, task_default_queue={queue!r})
"""


@pytest.mark.timeout(120)
def test_the_qtui_command_line_reads_right(cluster, tmp_path):
    """``qtui -A tasks control rate_limit tasks.add 10/m``, as the tutorial says."""
    write_module(tmp_path, "tasks", QTUI_TASKS.format(broker=cluster.app.conf.broker_url,
                                                      queue=cluster.app.conf.task_default_queue))
    out = subprocess.run(
        [sys.executable, "-m", "qtui.tui.cli", "-A", "tasks", "control", "rate_limit",
         "tasks.add", "10/m", "-d", cluster.hostname, "-t", "10"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"{cluster.hostname}: OK",
                                       "    new rate limit set successfully"]


@pytest.mark.timeout(60)
def test_shutdown_needs_no_reply(capsys):
    app = App("t", broker=need_broker("redis"))
    try:
        assert qtui(app, "control", "shutdown", "-d", NOBODY, "--json") == 0
    finally:
        app.close()
    captured = capsys.readouterr()
    assert captured.out == "{}\n" and f"shutdown sent to {NOBODY}" in captured.err
