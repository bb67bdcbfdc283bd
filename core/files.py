"""Files qtui creates that hold task arguments, results or secrets: owner-only (0600).

The broker and result databases, the worker's log, statedb and pidfile are created here first,
with mode 0600 whatever the umask, so other local users cannot read them; SQLite then gives its
``-wal`` and ``-shm`` files the mode of the database file. A file that already exists keeps the
mode its owner gave it.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_MODE = 0o600


def create_private(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and its directory) readable and writable by its owner only, unless it
    exists; returns it.

    An existing file is never opened: closing any descriptor of a file drops every POSIX lock
    this process holds on it, which would break the locks of its open SQLite connections.
    """
    file = Path(path).expanduser()
    file.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
    except FileExistsError:
        pass  # it keeps the mode its owner gave it
    return file


def sqlite_file(rest: str) -> Path:
    """The file named by what follows ``sqlite://`` in a broker or result backend URL: any run
    of slashes starts an absolute path (so the SQLAlchemy spelling ``sqlite:////abs`` works
    too), ``~`` is expanded, anything else is relative to the working directory."""
    if rest.startswith("/"):
        rest = "/" + rest.lstrip("/")
    return Path(rest).expanduser().absolute()
