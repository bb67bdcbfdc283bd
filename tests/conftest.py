"""Shared fixtures: real Redis and RabbitMQ (skipped, or failed under QTUI_REQUIRE_SERVICES=1),
unique names per test, and real worker processes that are always cleaned up."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator

import pytest

from .services import AMQP_HOST, AMQP_PORT, REDIS_HOST, REDIS_PORT, need

# No test writes the user's own files (the console's history and audit trail, the embedded
# broker's default file): qtui's per-user data directory is a temporary one for the whole run,
# inherited by the processes tests start; a test that needs its own sets it again (data_home).
_DATA_HOME = tempfile.mkdtemp(prefix="qtui-tests-data-")
os.environ["XDG_DATA_HOME"] = _DATA_HOME
atexit.register(shutil.rmtree, _DATA_HOME, ignore_errors=True)


#: Records the test RabbitMQ's pause stream may hold before a test run starts it again. Every
#: run appends some (pause and resume tests share qtui's own stream, since the workers they start
#: read that one); about 270 bytes each, so a stream reset at this count never reaches its first
#: segment roll, even one made with the 100 kB segments of earlier qtui versions. A roll, or a
#: stream deleted just after one, crashed RabbitMQ 3.10.8's stream retention, and after a few
#: crashes the node (see the README's pause section).
PAUSE_STREAM_RESET_AT = 150


def pytest_configure(config: pytest.Config) -> None:
    """Once per run (in the controller, before any test worker starts): keep the collection's
    file order for pytest-xdist; start the test RabbitMQ's ``qtui.paused`` again when earlier
    runs have grown it, before it can roll, and only while no run using the same RabbitMQ at
    the same time has a queue paused in it."""
    if hasattr(config, "workerinput"):
        return
    # pytest-xdist's loadfile sorts files by test count unless told not to: the order
    # pytest_collection_modifyitems gives (the known-slow files first) replaces it.
    config.option.loadscopereorder = False
    from .services import reset_pause_stream
    reset_pause_stream(f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}//", PAUSE_STREAM_RESET_AT)


@pytest.fixture
def unique() -> str:
    """A short unique token for queue names, task names and keys owned by one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def redis_url() -> str:
    need("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture
def amqp_url() -> str:
    need("RabbitMQ", AMQP_HOST, AMQP_PORT)
    return f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}//"


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(broker_url, result_backend) for each real broker, as the Celery tutorial pairs them."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        return url, url
    return request.getfixturevalue("amqp_url"), "rpc://"


@pytest.fixture
def data_home(tmp_path, monkeypatch) -> Iterator[str]:
    """Point the embedded broker's default location at a temporary directory."""
    path = tmp_path / "xdg-data"
    monkeypatch.setenv("XDG_DATA_HOME", str(path))
    yield str(path)


@pytest.fixture
def utc(monkeypatch) -> Iterator[None]:
    """Local time is UTC for the test (the console shows local times)."""
    import time
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


#: Seconds each of the slowest files took in a loaded suite run (summed from --durations=0 of the
#: whole suite in six processes, 2026-12-01 23:40-23:51, load 7.5 to 14.6; every file of 40 s or
#: more). With --dist loadfile a file runs in one pytest process, so a long file started last is
#: the run's tail: these start first, longest first.
SLOW_FILES = {
    "test_worker_redis_ownership.py": 146, "test_worker_recovery.py": 114,
    "test_console_live.py": 114, "test_queue_pause.py": 104, "test_console.py": 103,
    "test_console_actions.py": 91, "test_scheduled_actions.py": 86, "test_console_detail.py": 86,
    "test_worker_eta.py": 75, "test_faults.py": 75, "test_worker_redis_refusals.py": 73,
    "test_eta_store.py": 71, "test_worker_redelivery_accounting.py": 64,
    "test_scheduled_listing.py": 60, "test_console_layout.py": 60, "test_redis_unix_socket.py": 54,
    "test_celery_project.py": 53, "test_commands.py": 49, "test_worker_compressed_resend.py": 47,
    "test_console_actions_live.py": 44, "test_worker_control.py": 44, "test_worker_ready.py": 42,
    "test_beat_processes.py": 41,
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Known-slow files first (longest first), then the rest with the most tests first (the
    order pytest-xdist's loadfile gives by itself, which put these few-test files last)."""
    files: dict[str, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.path.name, []).append(item)
    order = sorted(files, key=lambda name: (-SLOW_FILES.get(name, 0), -len(files[name])))
    items[:] = [item for name in order for item in files[name]]
