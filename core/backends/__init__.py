"""Result backends, chosen by the scheme of ``result_backend``."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from ..exceptions import ImproperlyConfigured
from ..files import sqlite_file
from .base import DisabledBackend, ResultBackend, exception_from_meta, exception_to_meta

if TYPE_CHECKING:
    from ..app import App

__all__ = [
    "DisabledBackend",
    "ResultBackend",
    "backend_for",
    "exception_from_meta",
    "exception_to_meta",
    "results_path",
]

BACKENDS = {
    "redis": "redis:RedisBackend",
    "rediss": "redis:RedisBackend",
    "unix": "redis:RedisBackend",
    "redis+socket": "redis:RedisBackend",
    "rpc": "rpc:RPCBackend",
    "sqlite": "sqlite:SQLiteBackend",
}


def backend_for(app: App, url: str | None) -> ResultBackend:
    """The backend for a URL; no URL means results are disabled."""
    if not url or url.startswith("disabled"):
        return DisabledBackend(app)
    scheme = url.partition("://")[0].lower()
    if scheme not in BACKENDS:
        raise ImproperlyConfigured(
            f"result_backend {scheme!r}:// is not supported; use one of "
            f"{', '.join(s + '://' for s in sorted(BACKENDS))}")
    module, _, name = BACKENDS[scheme].partition(":")
    cls: type[ResultBackend] = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    return cls(app, url)


def results_path(url: str) -> Path:
    """The SQLite results file a ``sqlite://PATH`` URL names
    (:func:`~qtui.core.files.sqlite_file`); unlike the broker's URL, it must name one."""
    rest = url.partition("://")[2]
    if not rest:
        raise ImproperlyConfigured(f"{url!r} names no file: use sqlite://PATH")
    return sqlite_file(rest)
