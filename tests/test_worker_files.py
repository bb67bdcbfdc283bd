"""Files the worker writes: the pidfile is created, never written through a planted link, and
every file holding task data (embedded broker, results, log, statedb, pidfile, SQLite's -wal and
-shm) is owner-only (issue 14.12, 14.13)."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys

import pytest

from qtui.core.exceptions import ConfigError
from qtui.core.files import create_private
from qtui.workers.cli import pidfile

from .worker_helpers import Setup, sqlite_setup, wait_for  # noqa: F401 - fixtures


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_pidfile_is_created_owner_only_and_removed_at_the_end(tmp_path):
    path = tmp_path / "run" / "worker.pid"
    with pidfile(str(path)):
        assert path.read_text() == f"{os.getpid()}\n"
        assert _mode(path) == 0o600
    assert not path.exists()


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symbolic_link_at_the_pidfile_path_is_refused_and_its_target_untouched(tmp_path,
                                                                                 dangling):
    target = tmp_path / "precious.conf"
    if not dangling:
        target.write_text("keep me\n")
    link = tmp_path / "worker.pid"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="symbolic link"):
        with pidfile(str(link)):
            pass
    assert link.is_symlink()
    if dangling:
        assert not target.exists()
    else:
        assert target.read_text() == "keep me\n"


@pytest.mark.parametrize("content", ["", "not a pid\n", None])
def test_a_stale_pidfile_is_replaced(tmp_path, content):
    path = tmp_path / "worker.pid"
    if content is None:  # the pid of a process that has ended
        done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
        content = done.stdout
    path.write_text(content)
    with pidfile(str(path)):
        assert path.read_text() == f"{os.getpid()}\n"
    assert not path.exists()


def test_a_pidfile_of_a_live_process_is_refused_and_kept(tmp_path):
    path = tmp_path / "worker.pid"
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        try:
            path.write_text(f"{other.pid}\n")
            with pytest.raises(ConfigError, match=f"already runs as pid {other.pid}"):
                with pidfile(str(path)):
                    pass
            assert path.read_text() == f"{other.pid}\n"
        finally:
            other.kill()


@pytest.mark.timeout(90)
def test_files_holding_task_data_are_created_owner_only(sqlite_setup: Setup, tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    log, statedb, pid = files / "worker.log", files / "revoked.db", files / "worker.pid"
    previous = os.umask(0o022)
    try:
        with sqlite_setup.worker("-P", "solo", "--logfile", str(log), "--statedb", str(statedb),
                                 "--pidfile", str(pid)):
            app = sqlite_setup.app()
            assert app.send_task("tasks.add", args=[2, 3]).get(timeout=30) == 5
            found = {p.name: _mode(p) for p in [*tmp_path.glob("*.sqlite*"), *files.iterdir()]}
            app.close()
    finally:
        os.umask(previous)
    for name in ("broker.sqlite", "broker.sqlite-wal", "broker.sqlite-shm", "results.sqlite",
                 "results.sqlite-wal", "results.sqlite-shm", "worker.log", "revoked.db",
                 "revoked.db-wal", "revoked.db-shm", "worker.pid"):
        assert found.get(name) == 0o600, (name, found)


def test_an_existing_file_keeps_its_mode_and_this_process_keeps_its_sqlite_locks(tmp_path):
    """Closing any descriptor of a file drops the process's POSIX locks on it: a file that
    exists must not be opened at all (a threads worker on the embedded broker froze)."""
    path = tmp_path / "broker.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE t (x)")
    path.chmod(0o640)
    conn.execute("BEGIN IMMEDIATE")  # a write lock, held by this process
    try:
        create_private(path)
        other = subprocess.run(
            [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], "
             "timeout=0, isolation_level=None); c.execute('BEGIN IMMEDIATE')", str(path)],
            capture_output=True, text=True, timeout=30)
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    assert other.returncode != 0 and "database is locked" in other.stderr
    assert _mode(path) == 0o640
