"""Brokers: qtui's embedded SQLite transport, registered with kombu, and its default location."""

from __future__ import annotations

import os
from pathlib import Path

from kombu.transport import TRANSPORT_ALIASES

SQLITE_TRANSPORT = "qtui.core.brokers.sqlite:Transport"


def register() -> None:
    """Make ``kombu.Connection('sqlite://PATH')`` use qtui's transport (idempotent)."""
    TRANSPORT_ALIASES["sqlite"] = SQLITE_TRANSPORT


def default_broker_path() -> Path:
    """``$XDG_DATA_HOME/qtui/broker.sqlite`` (``~/.local/share`` when unset): one file per user,
    so a worker and a console started in different terminals meet."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base).absolute() / "qtui" / "broker.sqlite"


def default_broker_url() -> str:
    return f"sqlite://{default_broker_path()}"
