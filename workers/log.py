"""Worker logging: Celery's familiar line format; rich on a terminal, plain text otherwise."""

from __future__ import annotations

import logging
import sys

from qtui.core.display import printable
from qtui.core.files import create_private

FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"


class PrintableFormatter(logging.Formatter):
    """Log lines carry task names, arguments, hostnames and exception messages that clients
    chose: their control characters are made visible (an ESC in an argument must not drive the
    terminal of whoever reads the log), and a newline in them cannot forge a log line. The
    traceback keeps its own line breaks."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        return printable(super().formatException(ei), multiline=True)

    def formatStack(self, stack_info: str) -> str:
        return printable(super().formatStack(stack_info), multiline=True)


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
        handler.setFormatter(PrintableFormatter(FORMAT))
    elif sys.stderr.isatty():
        from rich.logging import RichHandler
        handler = RichHandler(show_path=False, rich_tracebacks=False, markup=False)
        handler.setFormatter(PrintableFormatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(PrintableFormatter(FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("qtui").setLevel(level)
