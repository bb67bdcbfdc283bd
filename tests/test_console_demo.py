"""`qtui demo` cleans up after itself: the demo worker's log file leaves the temporary directory
when the demo stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest


@pytest.mark.timeout(90)
def test_the_demo_removes_its_worker_log_when_it_stops(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg"), "TMPDIR": str(temp)}
    demo = subprocess.Popen([sys.executable, "-m", "qtui.tui.cli", "demo", "--no-console"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
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
    assert demo.returncode == 0, output
    assert list(temp.glob("qtui-demo-worker-*.log")) == [], output
