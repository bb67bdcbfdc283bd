"""Where the real services are, and what a test does when one is missing."""

from __future__ import annotations

import os
import socket
from typing import NoReturn

import pytest

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
AMQP_HOST, AMQP_PORT = "127.0.0.1", 5672
REQUIRE_SERVICES = os.environ.get("QTUI_REQUIRE_SERVICES") == "1"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def unavailable(message: str) -> NoReturn:
    """Skip the test because something it needs is missing (a service, a program, root), or
    fail it under QTUI_REQUIRE_SERVICES=1, where every test must run."""
    if REQUIRE_SERVICES:
        pytest.fail(f"QTUI_REQUIRE_SERVICES=1 and {message}", pytrace=False)
    pytest.skip(message)


def need(name: str, host: str, port: int) -> None:
    if not _reachable(host, port):
        unavailable(f"{name} is not reachable at {host}:{port}; start it (see the README's "
                    "'Services' section)")
