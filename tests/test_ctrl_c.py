"""Ctrl+C (SIGINT) stops every long-running ``qtui`` command, and starts a worker's warm
shutdown, whatever SIGINT state the command inherited: a shell without job control starts a
command run with ``&`` with SIGINT ignored, and a supervisor may start it with the signal
blocked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

#: A port of this suite's own allotment for the exporter.
EXPORTER_PORT = 6427


def ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def block_sigint() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


INHERITED = pytest.mark.parametrize("inherited", [ignore_sigint, block_sigint],
                                    ids=["ignored", "blocked"])


def said(text: str) -> Callable[[subprocess.Popen[bytes], str], bool]:
    """Ready once the command printed ``text``."""
    return lambda command, output: text in output


def broker_open(command: subprocess.Popen[bytes], output: str) -> bool:
    """Ready once the command has the embedded broker's file open (``events --dump`` prints
    nothing until an event comes)."""
    links = []
    for fd in Path(f"/proc/{command.pid}/fd").iterdir():
        try:
            links.append(os.readlink(fd))
        except FileNotFoundError:  # closed meanwhile
            continue
    return any(link.endswith("broker.sqlite") for link in links)


def ctrl_c(tmp_path: Path, argv: list[str],
           ready: Callable[[subprocess.Popen[bytes], str], bool],
           inherited: Callable[[], None]) -> tuple[int, str]:
    """Start ``qtui ARGV`` on an embedded broker of its own with ``inherited`` applied, wait
    until it is ``ready``, send it SIGINT; its exit code and output. A command that ignores
    the signal is killed after 20 s and shows as -9."""
    (tmp_path / "qtui.toml").write_text(
        '[[alerts]]\nname = "backlog"\nkind = "queue_depth"\nqueue = "celery"\nover = 1000\n')
    log = tmp_path / "output.log"
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg"), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(tmp_path)}
    with log.open("w") as out:
        command = subprocess.Popen([sys.executable, "-m", "qtui.tui.cli", *argv], cwd=tmp_path,
                                   env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=inherited)
    try:
        deadline = time.monotonic() + 45
        while not ready(command, log.read_text()):
            assert command.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        command.send_signal(signal.SIGINT)
        try:
            command.wait(20)
        except subprocess.TimeoutExpired:
            command.kill()
            command.wait()
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)
            command.wait()
    return command.returncode, log.read_text()


@pytest.mark.timeout(90)
@INHERITED
@pytest.mark.parametrize(("argv", "ready"), [
    (["pause", "celery", "--watch"], said("watching for workers")),
    (["events", "--dump"], broker_open),
    (["status", "--check", "--watch"], said("Ctrl+C stops")),
    (["exporter", "--port", str(EXPORTER_PORT), "--addr", "127.0.0.1"], said("serving http://")),
], ids=["pause-watch", "events-dump", "status-check-watch", "exporter"])
def test_ctrl_c_stops_a_long_running_command_whatever_sigint_state_it_inherited(
        tmp_path, inherited, argv, ready):
    code, output = ctrl_c(tmp_path, argv, ready, inherited)
    assert code == 0, output
    assert "Traceback" not in output, output


@pytest.mark.timeout(90)
@INHERITED
def test_ctrl_c_starts_a_workers_warm_shutdown_whatever_sigint_state_it_inherited(
        tmp_path, inherited):
    (tmp_path / "ctrlc_tasks.py").write_text(
        "from qtui.core import App\napp = App('ctrlc_tasks')\n")
    code, output = ctrl_c(tmp_path, ["-A", "ctrlc_tasks", "run-worker", "-P", "solo"],
                          said("ready"), inherited)
    assert code == 0, output
    assert "Warm shutdown (SIGINT)" in output, output
    assert "Traceback" not in output, output
