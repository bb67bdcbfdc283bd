"""How a qtui command takes back the stop signals it inherited.

A shell without job control starts a command run with ``&`` with SIGINT ignored (Python then
installs no KeyboardInterrupt handler), and a supervisor may start it with the stop signals
blocked; either way Ctrl+C would do nothing. Every command's entry point calls
:func:`honour_stop_signals` once its arguments are parsed, before any thread or child starts, so
they inherit the unblocked mask too.
"""

from __future__ import annotations

import signal

#: The signals that stop a qtui command (a worker: that start its warm shutdown).
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def honour_stop_signals() -> None:
    """Unblock :data:`STOP_SIGNALS` and make SIGINT raise KeyboardInterrupt (the worker installs
    its own handlers over this one later)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    signal.signal(signal.SIGINT, signal.default_int_handler)
