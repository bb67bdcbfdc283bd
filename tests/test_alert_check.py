"""`qtui status --check` against a real qtui worker on Redis (database 8): exit 0 while the
worker runs, 2 naming the rule once it is stopped, 0 again once it is back; `alert_command`
hears the firing and then the clearing. And what `alert_command` does when it fails."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from qtui.core.alerts import FIRING, Alerts, Observation, parse_rules
from qtui.tui.alert_command import AlertCommand

from .processes import stop
from .services import REDIS_HOST, REDIS_PORT, need
from .worker_helpers import Setup, hostname_of, make_setup, wait_for

DB = 8
BROKER = f"redis://{REDIS_HOST}:{REDIS_PORT}/{DB}"
#: Writes each alert it is given (one JSON object on stdin) as a line of the file it names.
RECORDER = """
import sys
with open(sys.argv[1], "a") as out:
    out.write(sys.stdin.read().strip() + "\\n")
"""


@pytest.fixture
def setup(tmp_path, unique) -> Iterator[Setup]:
    need("Redis", REDIS_HOST, REDIS_PORT)
    setup = make_setup(tmp_path, f"ac-{unique}", BROKER, BROKER)
    yield setup
    setup.cleanup()
    client = redis.Redis(REDIS_HOST, REDIS_PORT, db=DB)
    for key in client.scan_iter(f"*{setup.queue}*"):  # its queue, bindings, worker records
        client.delete(key)


def check(setup: Setup, config: Path, *options: str, broker: str | None = None
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qtui.tui.cli", "-A", "tasks", "--config", str(config),
         *(["-b", broker] if broker else []),
         "status", "--check", "--state", str(setup.directory / "state.json"), *options],
        cwd=setup.directory,
        env={**os.environ, **setup.env, "PYTHONPATH": str(setup.directory)},
        capture_output=True, text=True, timeout=60)


def worker_down_config(setup: Setup) -> tuple[Path, Path]:
    """(a config with a worker_offline rule for the test's worker and an alert_command that
    records each alert, the file it records them in)."""
    recorder = setup.directory / "recorder.py"
    recorder.write_text(RECORDER)
    received = setup.directory / "alerts.jsonl"
    config = setup.directory / "qtui.toml"
    config.write_text(
        f'alert_command = {json.dumps([sys.executable, str(recorder), str(received)])}\n'
        f'[[alerts]]\nname = "worker-down"\nkind = "worker_offline"\n'
        f'worker = "w-{setup.queue}@*"\n')
    return config, received


def test_status_check_fires_for_a_stopped_worker_and_clears_when_it_is_back(setup):
    config, received = worker_down_config(setup)
    hostname = hostname_of(setup)

    with setup.worker("-P", "solo"):
        running = check(setup, config)
        assert running.returncode == 0, running.stdout + running.stderr
        assert running.stdout.startswith("OK: no alert firing (1 checked)")
    stopped = check(setup, config)
    assert stopped.returncode == 2, stopped.stdout + stopped.stderr
    assert stopped.stdout.startswith("ALERT: 1 firing: worker-down")
    assert hostname in stopped.stdout
    with setup.worker("-P", "solo"):
        back = check(setup, config, "--json")
    assert back.returncode == 0, back.stdout + back.stderr
    report = json.loads(back.stdout)
    assert report["firing"] == []
    assert [(r["name"], r["state"]) for r in report["rules"]] == [("worker-down", "ok")]

    alerts = [json.loads(line) for line in received.read_text().splitlines()]
    assert [(a["event"], a["name"], a["state"]) for a in alerts] == [
        ("firing", "worker-down", "firing"), ("cleared", "worker-down", "ok")]
    assert alerts[0]["detail"] == hostname and alerts[0]["value"] == 1
    assert alerts[0]["cluster"] == BROKER and alerts[0]["rule"]["worker"] == f"w-{setup.queue}@*"
    assert alerts[1]["value"] == 0


def test_status_check_without_rules_is_an_error(setup):
    config = setup.directory / "qtui.toml"
    config.write_text("")
    result = check(setup, config, "--wait", "0")
    assert result.returncode == 1
    assert "no alert rules to check" in result.stderr


# alert_command ----------------------------------------------------------------------------------
def transition():
    rule = parse_rules([{"name": "silence", "kind": "no_events", "over": 10}])[0]
    [fired] = Alerts([rule]).update(Observation(now=100.0, listening_since=50.0))
    assert fired.event == FIRING
    return fired


def test_alert_command_gets_the_alert_as_json_on_stdin_without_a_shell(tmp_path):
    out = tmp_path / "got.json"
    # A shell would expand $HOME and split on the space; run without one, the argument is as is.
    AlertCommand([sys.executable, "-c", "import sys; open(sys.argv[1], 'w').write("
                  "sys.argv[2] + '|' + sys.stdin.read())", str(out), "$HOME x"],
                 timeout=30, cluster="redis://h/0").run([transition()])
    argument, _, payload = out.read_text().partition("|")
    assert argument == "$HOME x"
    alert = json.loads(payload)
    assert (alert["event"], alert["name"], alert["kind"], alert["value"], alert["threshold"],
            alert["cluster"]) == ("firing", "silence", "no_events", 50.0, 10.0, "redis://h/0")


def test_an_alert_command_that_fails_is_logged_and_the_next_one_still_runs(tmp_path, caplog):
    out = tmp_path / "ran"
    caplog.set_level(logging.WARNING, "qtui.alerts")
    AlertCommand([str(tmp_path / "missing")], timeout=5, cluster="c").run([transition()])
    AlertCommand([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"],
                 timeout=5, cluster="c").run([transition()])
    AlertCommand([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5,
                 cluster="c").run([transition()])
    AlertCommand([sys.executable, "-c", f"open({str(out)!r}, 'w')"], timeout=30,
                 cluster="c").run([transition()])
    messages = [r.getMessage() for r in caplog.records]
    assert "could not run" in messages[0]
    assert "exited with 3: boom" in messages[1]
    assert "was killed after 0.5 s" in messages[2]
    assert out.exists()


def test_alert_command_takes_a_string_split_as_a_shell_would(tmp_path):
    from qtui.core import App
    app = App("t", broker="redis://127.0.0.1:6379/8",
              alert_command="/usr/bin/notify --to 'on call'", alert_command_timeout=4)
    command = AlertCommand.from_app(app)
    assert command is not None
    assert (command.argv, command.timeout) == (["/usr/bin/notify", "--to", "on call"], 4.0)
    assert AlertCommand.from_app(App("t")) is None


def test_the_check_remembers_between_runs_so_for_spans_them(tmp_path):
    from qtui.core.alerts import Rule
    from qtui.tui.alert_check import CheckState
    rule = Rule("slow", "no_events", over=5, hold=60)
    memory = CheckState(tmp_path / "state.json", "redis://h/0")
    first = Alerts([rule])
    first.update(Observation(now=1000.0, listening_since=990.0))
    assert first.statuses()[0].state == "pending"
    memory.save(first.statuses())
    again = CheckState(tmp_path / "state.json", "redis://h/0")
    again.load()
    second = Alerts([rule], again.previous(Alerts([rule])))
    fired = second.update(Observation(now=1061.0, listening_since=1058.0, last_event=1050.0))
    assert [t.event for t in fired] == ["firing"]
    other = CheckState(tmp_path / "state.json", "redis://other/0")
    other.load()
    assert other.previous(Alerts([rule])) == {}


def test_status_check_watch_prints_and_runs_alert_command_when_a_worker_stops_and_returns(
        setup):
    config, received = worker_down_config(setup)
    log = setup.directory / "watch.log"

    def said(text: str) -> bool:
        return text in log.read_text()
    argv = [sys.executable, "-m", "qtui.tui.cli", "-A", "tasks", "--config", str(config),
            "status", "--check", "--watch"]
    env = {**os.environ, **setup.env, "PYTHONPATH": str(setup.directory), "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        watcher = subprocess.Popen(argv, cwd=setup.directory, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with setup.worker("-P", "solo"):
            assert wait_for(lambda: said("worker-down is ok: 1 matching, all alive"),
                            timeout=30), log.read_text()
        # The worker stopped as the block ended: seen (its goodbye, or its heartbeats ending).
        assert wait_for(lambda: said("worker-down fires"), timeout=30), log.read_text()
        with setup.worker("-P", "solo"):
            assert wait_for(lambda: said("worker-down cleared"), timeout=30), log.read_text()
        # At least two: on a loaded machine a late heartbeat may fire and clear it again.
        assert wait_for(lambda: received.exists() and len(
            received.read_text().splitlines()) >= 2, timeout=30), (
            log.read_text(), received.exists() and received.read_text())
    finally:
        stop(watcher)
    assert [json.loads(line)["event"] for line in received.read_text().splitlines()][:2] == [
        "firing", "cleared"]


def test_status_check_with_the_broker_down_is_an_error_not_an_all_clear(setup):
    config = setup.directory / "qtui.toml"
    config.write_text('[[alerts]]\nname = "backlog"\nkind = "queue_depth"\nover = 10\n')
    result = check(setup, config, "--wait", "1", broker="redis://127.0.0.1:1/0")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cannot check the alerts: no events from the broker at redis://127.0.0.1:1/0" \
        in " ".join(result.stderr.split())


def test_a_check_that_never_heard_the_broker_fails_without_polling_its_queues(tmp_path,
                                                                             monkeypatch):
    """The poll would only retry the unreachable broker (6 s) before the same error."""
    from qtui.core import App
    from qtui.core.exceptions import BrokerUnavailable
    from qtui.tui.alert_check import run_check
    from qtui.tui.feed import Feed

    polled: list[Feed] = []
    monkeypatch.setattr(Feed, "poll_once", lambda feed: polled.append(feed))
    app = App("t", broker="redis://127.0.0.1:1/0",
              alerts=[{"name": "backlog", "kind": "queue_depth", "over": 10}])
    with pytest.raises(BrokerUnavailable, match="no events from the broker"):
        run_check(app, wait=0.5, state_path=tmp_path / "state.json")
    assert polled == []
