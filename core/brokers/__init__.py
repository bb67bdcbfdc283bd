"""Brokers: qtui's embedded SQLite transport, registered with kombu, and its default location.

Each kind of broker is one package here (``redis/``, ``amqp/``, ``sqlite/``), and what the rest
of qtui asks of a broker goes through its family (:mod:`.family`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kombu import Connection
from kombu.exceptions import OperationalError
from kombu.transport import TRANSPORT_ALIASES

from ..config import mask_url
from ..exceptions import ConfigError
from ..files import sqlite_file

SQLITE_TRANSPORT = "qtui.core.brokers.sqlite.transport:Transport"


def register() -> None:
    """Make ``kombu.Connection('sqlite://PATH')`` use qtui's transport (idempotent)."""
    TRANSPORT_ALIASES["sqlite"] = SQLITE_TRANSPORT


def broker_errors(connection: Connection) -> tuple[type[BaseException], ...]:
    """What ``connection``'s transport raises when its broker is unreachable or refuses an
    operation (the connection need not be open: only its transport is asked)."""
    return (*connection.connection_errors, *connection.channel_errors, OSError,
            OperationalError)


def check_url(url: str, transport_options: Mapping[str, Any] | None = None) -> None:
    """Raise ConfigError, in one line, for a broker URL kombu cannot use (an unknown scheme, a
    bad port or host, a virtual host the transport refuses, a Sentinel URL without its master's
    name), before anything connects: kombu would raise a bare KeyError or ValueError deep inside
    the first connection."""
    if ";" in url and any(part.strip().lower().startswith("redis+socket://")
                          for part in url.split(";")):
        raise ConfigError(f"broker URL {mask_url(url)!r} is a failover list with a unix socket, "
                          f"which kombu cannot switch to: give one redis+socket:// URL")
    for part in url.split(";"):
        if (part.strip().startswith("sentinel://")
                and not (transport_options or {}).get("master_name")):
            raise ConfigError(f"broker URL {mask_url(url)!r} needs the Sentinel master's name: "
                              f"set broker_transport_options = {{ master_name = \"...\" }}")
        try:
            connection = Connection(part.strip())
            # What the transport does with the virtual host when it connects (a Redis DB number).
            channel_type = getattr(connection.transport, "Channel", None)  # kombu's virtual ones
            prepare = getattr(channel_type, "_prepare_virtual_host", None)
            if prepare is not None:
                prepare(None, connection.virtual_host)
        except KeyError as exc:  # kombu's "No such transport"
            raise ConfigError(f"broker URL {mask_url(url)!r} is not valid: {exc.args[0]}; "
                              f"known schemes include redis, amqp, sqlite") from None
        except ValueError as exc:  # urllib's port and host checks, the transport's own
            raise ConfigError(f"broker URL {mask_url(url)!r} is not valid: {exc}") from None
        except (ImportError, NameError) as exc:
            # A kombu transport whose client library is missing: most raise ImportError, some
            # (confluentkafka) a NameError from the module that failed to import it.
            raise ConfigError(f"broker URL {mask_url(url)!r} needs a library that is not "
                              f"installed: {exc}") from None


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


def broker_path(url: str | None) -> Path:
    """The embedded broker's file a ``sqlite://`` URL (or a bare path) names; plain ``sqlite://``
    is qtui's default file (:mod:`.sqlite` says how the path is read)."""
    rest = (url or "").partition("://")[2] if "://" in (url or "") else (url or "")
    return sqlite_file(rest) if rest else default_broker_path()
