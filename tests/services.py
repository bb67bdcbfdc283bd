"""Where the real services are, and what a test does when one is missing."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import NoReturn

import pytest

#: The Redis the tests share; QTUI_TEST_REDIS_PORT points the suites built on it at another one
#: (a private server, when the shared one holds what a test must not meet).
REDIS_HOST, REDIS_PORT = "127.0.0.1", int(os.environ.get("QTUI_TEST_REDIS_PORT") or 6379)
AMQP_HOST, AMQP_PORT = "127.0.0.1", 5672
REQUIRE_SERVICES = os.environ.get("QTUI_REQUIRE_SERVICES") == "1"


#: Where the server logs of this machine's services are, to say why one went away mid-run.
SERVICE_LOGS = {"RabbitMQ": "/var/log/rabbitmq", "Redis": "/var/log/redis"}
#: Lines of a server log worth showing when its service is gone (a client's channel error, which
#: RabbitMQ logs at error level, tells nothing about the server's health).
_TELLING = ("crash", "supervisor", "osiris_retention", "stopping", "stopped", "alarm", "shutdown",
            "[critical]", "# oom", "signal")
_ROUTINE = ("channel error", "channel exception", "closing amqp connection",
            "client unexpectedly closed", "reason: shutdown")


def _unreachable_because(host: str, port: int) -> str | None:
    """Why a connection to the service fails ("Connection refused", "timed out"), or None."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return None
    except OSError as exc:
        return str(exc) or type(exc).__name__


def _last_log_lines(name: str, count: int = 6) -> str:
    """The last telling lines of the service's own log, when this machine keeps it readable:
    the failure then says why the service went away (a crash, an alarm), not only that it did."""
    folder = Path(SERVICE_LOGS.get(name, ""))
    if not folder.is_dir():
        return ""
    lines: list[str] = []
    for log in sorted(folder.glob("*.log")):
        try:
            tail = log.read_bytes()[-200_000:].decode("utf-8", "replace").splitlines()
        except OSError:
            continue
        lines += [f"{log.name}: {line[:300]}" for line in tail
                  if any(word in line.lower() for word in _TELLING)
                  and not any(word in line.lower() for word in _ROUTINE)]
    return "\n".join(lines[-count:])


def unavailable(message: str) -> NoReturn:
    """Skip the test because something it needs is missing (a service, a program, root), or
    fail it under QTUI_REQUIRE_SERVICES=1, where every test must run."""
    if REQUIRE_SERVICES:
        pytest.fail(f"QTUI_REQUIRE_SERVICES=1 and {message}", pytrace=False)
    pytest.skip(message)


def need(name: str, host: str, port: int) -> None:
    reason = _unreachable_because(host, port)
    if reason is not None:
        message = (f"{name} is not reachable at {host}:{port} ({reason}); start it (see the "
                   "README's 'Services' section)")
        if REQUIRE_SERVICES and (log := _last_log_lines(name)):
            message += f"\nthe end of its log:\n{log}"
        unavailable(message)


#: Seconds after which a pause in the shared pause stream is taken as one left by a run that
#: died: no test keeps a queue paused longer than its timeout (240 s at most).
STALE_PAUSE = 900.0


def reset_pause_stream(url: str, reset_at: int, name: str | None = None) -> None:
    """Delete the RabbitMQ pause stream ``name`` (qtui's own by default) at ``url`` when it holds
    ``reset_at`` records or more and no pause in it is younger than :data:`STALE_PAUSE`. Other
    runs (other checkouts on this machine) use the same RabbitMQ at the same time: a stream
    deleted under one of their tests drops its pause, and the worker it starts next consumes
    the paused queue. The check and the delete hold the writers' lock, so no pause is written
    in between; a lock held elsewhere (a writer at work) leaves the stream for a later run, and
    so does a RabbitMQ that is not there (the tests that need it say so)."""
    from kombu import Connection

    from qtui.core.brokers.amqp.pauses import PAUSE_STREAM, PauseStream, lock_name

    name = name or PAUSE_STREAM
    try:
        with Connection(url, connect_timeout=2) as conn:
            channel = conn.channel()
            try:
                declared = channel.queue_declare(queue=name, passive=True)
            except Exception:  # noqa: BLE001 - no stream yet (404 closes the channel): nothing to do
                return
            if declared.message_count < reset_at:
                return
            # Held until the connection closes; a writer holding it raises ResourceLocked.
            conn.channel().queue_declare(queue=lock_name(name), exclusive=True, auto_delete=True)
            stream = PauseStream(conn, name)
            if all(pause.since < time.time() - STALE_PAUSE for pause in stream.read().values()):
                stream.delete()
    except Exception:  # noqa: BLE001 - no RabbitMQ, the lock held, the stream unreadable: later
        return
