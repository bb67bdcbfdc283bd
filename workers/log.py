"""Worker logging: Celery's familiar line format; rich on a terminal, plain text otherwise."""

from __future__ import annotations

import logging
import sys

from qtui.core.files import create_private

FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"


def setup(level: str | int = "WARNING", logfile: str | None = None) -> None:
    """Send the worker's log to ``logfile`` (or stderr) at ``level``."""
    if isinstance(level, str):
        name = level.upper()
        numeric = logging.getLevelName(name)
        if not isinstance(numeric, int):
            raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING, ERROR "
                             "or CRITICAL")
        level = numeric
    handler: logging.Handler
    if logfile:
        handler = logging.FileHandler(create_private(logfile))
        handler.setFormatter(logging.Formatter(FORMAT))
    elif sys.stderr.isatty():
        from rich.logging import RichHandler
        handler = RichHandler(show_path=False, rich_tracebacks=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("qtui").setLevel(level)
