"""`qtui demo` cleans up after itself: the demo worker's log file leaves the temporary directory
when the demo stops; and Ctrl+C stops it whatever SIGINT state it inherited."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest


def run_demo_until_ctrl_c(tmp_path, preexec_fn: Callable[[], None] | None = None,
                          ) -> tuple[subprocess.Popen[str], str, list[os.PathLike[str]]]:
    """Start `qtui demo --no-console`, wait for its worker's log, SIGINT its process group;
    the demo, its output and what is left of the worker's log."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg"), "TMPDIR": str(temp)}
    demo = subprocess.Popen([sys.executable, "-m", "qtui.tui.cli", "demo", "--no-console"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=preexec_fn)
    try:
        deadline = time.monotonic() + 45
        logs: list[os.PathLike[str]] = []
        while time.monotonic() < deadline:
            logs = [p for p in temp.glob("qtui-demo-worker-*.log") if p.stat().st_size]
            if logs:
                break
            time.sleep(0.2)
        assert logs, "the demo worker wrote no log"
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        try:
            output, _ = demo.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            output, _ = demo.communicate()
    return demo, output, list(temp.glob("qtui-demo-worker-*.log"))


@pytest.mark.timeout(90)
def test_the_demo_removes_its_worker_log_when_it_stops(tmp_path):
    demo, output, logs = run_demo_until_ctrl_c(tmp_path)
    assert demo.returncode == 0, output
    assert logs == [], output


def ignore_sigint() -> None:
    """What a shell without job control does to a command run with `&`; a test run started
    that way hands it on to every process it starts."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def block_sigint() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


@pytest.mark.timeout(90)
@pytest.mark.parametrize("inherited", [ignore_sigint, block_sigint], ids=["ignored", "blocked"])
def test_ctrl_c_stops_the_demo_even_when_its_parent_ignored_or_blocked_sigint(tmp_path,
                                                                              inherited):
    demo, output, logs = run_demo_until_ctrl_c(tmp_path, preexec_fn=inherited)
    assert demo.returncode == 0, output
    assert logs == [], output
