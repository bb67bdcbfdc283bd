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
    with _pauses.lock:
        if _pauses.running == 0:
            _pauses.was_enabled = gc.isenabled()
            gc.disable()
        _pauses.running += 1
    try:
        yield
    finally:
        with _pauses.lock:
            _pauses.running -= 1
            if _pauses.running == 0 and _pauses.was_enabled:
                gc.enable()
