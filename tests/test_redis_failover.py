"""A failover list of Redis brokers (``redis://h1/5;redis://h2/5``): the worker keeps qtui's
channel on the entry it reaches, and its liveness keys live beside its queues."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from qtui.core.brokers import check_url
from qtui.core.exceptions import ConfigError

from .redis_server import redis_server, spare_port
from .test_redis_unix_socket import live_worker_runs_once
from .worker_helpers import make_setup


@pytest.fixture(scope="module")
def live_url() -> Iterator[str]:
    """A private redis-server's database 5."""
    port = spare_port()
    with tempfile.TemporaryDirectory(prefix="qtui-failover-") as directory:
        with redis_server(Path(directory), port, durable=False):
            yield f"redis://127.0.0.1:{port}/5"


@pytest.mark.timeout(90)
def test_a_live_workers_task_on_a_failover_list_runs_once_with_its_keys_in_its_database(
        tmp_path, unique, live_url):
    url = f"{live_url};redis://127.0.0.1:{spare_port()}/5"
    setup = make_setup(tmp_path, f"qf-{unique}", url, None,
                       broker_transport_options={"visibility_timeout": 2})
    try:
        live_worker_runs_once(setup)
        client = redis.Redis.from_url(live_url.rpartition("/")[0] + "/0")
        assert not client.keys("qtui.*")
    finally:
        setup.cleanup()


@pytest.mark.timeout(90)
def test_a_worker_whose_first_failover_entry_is_down_runs_tasks_on_the_next(tmp_path, unique,
                                                                            live_url):
    url = f"redis://127.0.0.1:{spare_port()}/5;{live_url}"
    setup = make_setup(tmp_path, f"qf-{unique}", url, None)
    try:
        with setup.worker("-P", "solo"):
            setup.app().send_task("tasks.mark", args=["ran"])
            assert setup.wait_records("mark", 1)
    finally:
        setup.cleanup()


def test_a_failover_list_with_a_unix_socket_is_refused():
    with pytest.raises(ConfigError, match="one redis\\+socket://"):
        check_url("redis+socket:///a.sock;redis+socket:///b.sock")
