"""Brokers: qtui's embedded SQLite transport, registered with kombu, and its default location."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from kombu.exceptions import OperationalError
from kombu.transport import TRANSPORT_ALIASES

if TYPE_CHECKING:
    from kombu import Connection

SQLITE_TRANSPORT = "qtui.core.brokers.sqlite:Transport"


def register() -> None:
    """Make ``kombu.Connection('sqlite://PATH')`` use qtui's transport (idempotent)."""
    TRANSPORT_ALIASES["sqlite"] = SQLITE_TRANSPORT


def broker_errors(connection: Connection) -> tuple[type[BaseException], ...]:
    """What ``connection``'s transport raises when its broker is unreachable or refuses an
    operation (the connection need not be open: only its transport is asked)."""
    return (*connection.connection_errors, *connection.channel_errors, OSError,
            OperationalError)


def data_dir() -> Path:
    """``$XDG_DATA_HOME/qtui`` (``~/.local/share/qtui`` when unset): qtui's per-user files."""
    base = (os.environ.get("XDG_DATA_HOME")
            or os.path.join(os.path.expanduser("~"), ".local", "share"))
    return Path(base).absolute() / "qtui"


def default_broker_path() -> Path:
    """``<data dir>/broker.sqlite``: one file per user, so a worker and a console started in
    different terminals meet."""
    return data_dir() / "broker.sqlite"


def default_broker_url() -> str:
    """``sqlite://`` + the absolute :func:`default_broker_path` (so ``sqlite:///home/...``)."""
    return f"sqlite://{default_broker_path()}"
