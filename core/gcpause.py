"""The cyclic garbage collector paused while a bulk send (``send_many``, a group, ``chunks``, a
chord's header) holds and sends its calls.

Such a send keeps a few container objects per call until its batch goes out; their allocation
sets off the collector's passes, and each pass scans every call held so far (a full one, the
whole heap): a fifth of a call's CPU, for objects that hold no cycles. Automatic collection is
off from the first such send that starts until the last one running ends, then on again as it
was; nothing is lost (cyclic garbage made meanwhile is collected by the next pass). Mercurial's
``util.nogc`` does the same for the same reason.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _Pauses:
    """How many sends hold the collector off, across threads, and whether it was on before."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.was_enabled = False


_pauses = _Pauses()


@contextmanager
def paused() -> Iterator[None]:
    """Automatic garbage collection off within the block (and within any other thread's that
    overlaps it); on again when the last of them ends, if it was on when the first began."""
    pauses = _pauses  # a child forked meanwhile counts its own: this block ends on these
    with pauses.lock:
        if pauses.running == 0:
            pauses.was_enabled = gc.isenabled()
            gc.disable()
        pauses.running += 1
    try:
        yield
    finally:
        with pauses.lock:
            pauses.running -= 1
            if pauses.running == 0 and pauses.was_enabled:
                gc.enable()


def _after_fork_in_child() -> None:
    """A child forked during a pause (a prefork pool, a preloading web server) has not the
    other threads whose sends would end it: its collector goes on again now."""
    global _pauses
    if _pauses.running and _pauses.was_enabled:
        gc.enable()
    _pauses = _Pauses()


os.register_at_fork(after_in_child=_after_fork_in_child)
