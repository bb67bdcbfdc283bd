"""Starting real worker processes for tests, and always stopping them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def write_module(directory: Path, name: str, source: str) -> Path:
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


@contextmanager
def running(argv: list[str], cwd: Path, ready: str, timeout: float = 30.0,
            env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """Run a process until the block ends; wait for ``ready`` in its output first.

    Output goes to a log file next to ``cwd`` so a failure shows what the process said.
    """
    log_path = cwd / f"process-{os.getpid()}-{time.monotonic_ns()}.log"
    full_env = {**os.environ, "PYTHONPATH": str(cwd), "PYTHONUNBUFFERED": "1", **(env or {})}
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True,
                                env=full_env, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while ready not in log_path.read_text():
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {proc.returncode} before it was "
                                   f"ready:\n{log_path.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} not ready after {timeout}s:\n"
                                   f"{log_path.read_text()[-4000:]}")
            time.sleep(0.1)
        proc.log_path = log_path  # type: ignore[attr-defined]
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[str], grace: float = 10.0) -> None:
    """TERM the process group, then KILL whatever is left."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(5)


@contextmanager
def celery_worker(cwd: Path, module: str, queue: str, pool: str = "solo",
                  extra: list[str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """A real Celery worker (the test-only dependency) consuming one queue."""
    argv = [sys.executable, "-m", "celery", "-A", module, "worker", "--pool", pool,
            "-Q", queue, "-n", f"celery-{queue}@%h", "--loglevel", "INFO",
            "--without-mingle", "--without-gossip", *(extra or [])]
    with running(argv, cwd, ready="ready.", timeout=60.0) as proc:
        yield proc

