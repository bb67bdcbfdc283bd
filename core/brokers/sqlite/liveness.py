"""Who holds a message or owns a transient queue in the embedded broker, and whether that process
still runs: a random token per process, checked on the same host and pid namespace with
``os.kill(pid, 0)`` plus the process start time from ``/proc`` (so a reused pid or an unreaped
zombie does not pass for the holder)."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

_HAS_PROC = os.path.exists("/proc/self/stat")


@dataclass(frozen=True)
class ProcessIdentity:
    """Who holds a message or owns a transient queue: a random token per process."""

    token: str
    host: str
    pid: int
    started: str | None


_identity: ProcessIdentity | None = None


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process from /proc, or None when it has no entry."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return fields[0], fields[19]


def _host() -> str:
    """Where a pid means this process table: the host name plus, on Linux, the pid namespace
    (containers sharing the file and the host name must not judge each other's pids)."""
    try:
        return f"{socket.gethostname()}/pidns:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return socket.gethostname()


def current_process() -> ProcessIdentity:
    """This process's identity, made anew after a fork."""
    global _identity
    pid = os.getpid()
    if _identity is None or _identity.pid != pid:
        stat = _proc_stat(pid)
        _identity = ProcessIdentity(uuid.uuid4().hex, _host(), pid, stat[1] if stat else None)
    return _identity


def process_alive(pid: int, started: str | None) -> bool:
    """Whether the same-host process ``pid`` that started at ``started`` still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if not _HAS_PROC:
        return True
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, start = stat
    return state not in ("Z", "X") and (started is None or start == started)
