"""How a qtui program ends once its work is done.

Python's teardown scans every object for reference cycles before it frees the modules: with
kombu, redis and a worker loaded that scan was a third of a worker's exit CPU (0.25 s of
0.75 s, bench/RESULTS.md), paid by every worker and command. Frozen first, the objects are
skipped; atexit handlers and finalizers still run, and only garbage in cycles, which goes with
the process, is not collected.
"""

from __future__ import annotations

import gc
import sys
from typing import NoReturn


def exit_program(status: int) -> NoReturn:
    """Exit with ``status``, the cycle scan skipped (only from a program's entry point: a
    process that goes on would keep what the scan frees)."""
    gc.freeze()
    sys.exit(status)
