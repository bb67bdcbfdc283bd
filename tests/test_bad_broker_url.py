"""A broker URL kombu cannot use is one clear line from every command, never a traceback; and a
worker stopped while it still tries to reach its broker exits cleanly (issue 14.16)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from qtui.core.brokers import check_url
from qtui.core.exceptions import ConfigError

from .redis_server import spare_port

BAD_URLS = {
    "redis://:hunter2@localhost:notaport/0": "Port could not be cast to integer",
    "redis://localhost:99999/0": "Port out of range",
    "amqp://[::1": "Invalid IPv6 URL",
    "nosuch://host": "No such transport: nosuch",
    "redis://localhost/abc": "not abc",
}


@pytest.mark.parametrize("url", BAD_URLS)
def test_check_url_names_the_problem_and_masks_the_password(url):
    with pytest.raises(ConfigError, match="is not valid") as caught:
        check_url(url)
    assert BAD_URLS[url] in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_a_transport_whose_library_is_missing_is_named():
    import importlib.util

    if importlib.util.find_spec("pymongo") is not None:
        pytest.skip("pymongo is installed here")
    with pytest.raises(ConfigError, match="needs a library that is not installed"):
        check_url("mongodb://h/db")


def test_a_transport_whose_module_breaks_on_import_is_named():
    import importlib.util

    if importlib.util.find_spec("confluent_kafka") is not None:
        pytest.skip("confluent_kafka is installed here")
    # kombu's confluentkafka module raises NameError, not ImportError, without its library.
    with pytest.raises(ConfigError, match="needs a library that is not installed"):
        check_url("confluentkafka://h:9092")


def test_a_sentinel_url_without_the_master_name_says_where_it_goes():
    with pytest.raises(ConfigError, match="master_name"):
        check_url("sentinel://:hunter2@h:26379;sentinel://h2:26379")
    check_url("sentinel://h:26379", {"master_name": "mymaster"})


@pytest.mark.timeout(60)
def test_a_sentinel_url_without_master_name_is_one_line_from_the_cli(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "qtui.tui.cli", "-b", "sentinel://h:26379",
                           "status"], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 1
    out = " ".join((proc.stdout + proc.stderr).split())
    assert "Traceback" not in out and "master_name" in out


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/3", "amqp://guest:guest@h:5672//",
                                 "sqlite:///tmp/broker.sqlite", "memory://",
                                 "redis://a:1/0;redis://b:2/0"])
def test_check_url_accepts_good_urls(url):
    check_url(url)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", [["run-worker", "-P", "solo"], ["status"], ["purge", "-f"]])
def test_a_bad_broker_url_is_one_line_from_the_cli(tmp_path, command):
    proc = subprocess.run(
        [sys.executable, "-m", "qtui.tui.cli", "-b", "redis://:hunter2@localhost:99999/0",
         *command], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 1
    out = " ".join((proc.stdout + proc.stderr).split())  # rich wraps at the terminal's width
    assert "Traceback" not in out and "hunter2" not in out
    assert out.startswith("error: broker URL 'redis://:**@localhost:99999/0' is not valid")
    assert "Port out of range" in out


@pytest.mark.timeout(60)
def test_the_worker_on_its_own_says_it_in_one_line_too(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "qtui.workers.cli", "-b", "nosuch://x"],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: broker URL 'nosuch://x' is not valid: No such transport: nosuch; known schemes "
        "include redis, amqp, sqlite"]


@pytest.mark.timeout(60)
def test_a_worker_stopped_while_its_broker_is_unreachable_exits_cleanly(tmp_path):
    url = f"redis://127.0.0.1:{spare_port()}/0"
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "qtui.tui.cli", "-b", url, "run-worker",
                                 "-P", "solo"], stdout=out, stderr=subprocess.STDOUT,
                                cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while "Cannot connect" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "Cannot connect" in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    text = log.read_text()
    assert "Traceback" not in text and "Stopped before the broker was reached" in text
