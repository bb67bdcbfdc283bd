"""The liveness helper says so on the worker's stderr when it cannot refresh its alive key."""

from __future__ import annotations

import os
import select
import subprocess
import sys

import pytest

from .redis_server import spare_port


@pytest.mark.timeout(60)
def test_the_liveness_helper_warns_when_it_cannot_refresh_the_alive_key():
    keys = ["qtui.alive.o", "qtui.owned.o", "qtui.owners", "unacked_index"]
    helper = subprocess.Popen(
        [sys.executable, "-m", "qtui.workers.liveness", "o", "2", str(os.getpid()), *keys],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert helper.stdin is not None and helper.stderr is not None
        helper.stdin.write(f"redis://127.0.0.1:{spare_port()}/0\n".encode())
        helper.stdin.flush()
        readable, _, _ = select.select([helper.stderr], [], [], 30)
        line = helper.stderr.readline().decode() if readable else ""
        assert "WARNING: cannot refresh qtui.alive.o (ConnectionError" in line
    finally:
        helper.kill()
        helper.wait()
