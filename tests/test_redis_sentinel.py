"""A Redis broker reached through Redis Sentinel (``sentinel://``): clients and workers use qtui's
channels on the master the sentinel names, and follow it through a failover.

Each test runs its own master, replica and sentinel (private ports), stopped when it ends.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from qtui.core.canvas import signature

from .worker_helpers import Setup, make_setup, wait_for

MASTER_PORT, REPLICA_PORT, SENTINEL_PORT = 16470, 16471, 16472
MASTER_NAME = "mymaster"

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="needs redis-server to run a master, replica and sentinel")


@dataclass
class SentinelGroup:
    sentinel: redis.Redis

    @property
    def url(self) -> str:
        return f"sentinel://127.0.0.1:{SENTINEL_PORT}"

    def master_port(self) -> int:
        return int(self.sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)[1])

    def fail_over(self) -> None:
        """Make the replica the master (SENTINEL FAILOVER), and wait until both servers agree."""
        old = self.master_port()
        new = REPLICA_PORT if old == MASTER_PORT else MASTER_PORT
        self.sentinel.execute_command("SENTINEL FAILOVER", MASTER_NAME)
        assert wait_for(lambda: self.master_port() == new, timeout=20)
        assert wait_for(lambda: _role(new) == "master" and _role(old) == "slave", timeout=20)


def _role(port: int) -> str:
    try:
        return str(redis.Redis(port=port, socket_timeout=1).info("replication")["role"])
    except redis.RedisError:
        return "down"


def _server(argv: list[str], directory: Path) -> subprocess.Popen[bytes]:
    log = (directory / f"redis-{argv[1].rsplit('/', 1)[-1]}.log").open("wb")
    return subprocess.Popen(["redis-server", *argv], cwd=directory, stdout=log,
                            stderr=subprocess.STDOUT)


@pytest.fixture
def sentinel_group(tmp_path) -> Iterator[SentinelGroup]:
    """A master, its replica and one sentinel watching them, on this file's private ports."""
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {SENTINEL_PORT}\nbind 127.0.0.1\n"
                    f"sentinel monitor {MASTER_NAME} 127.0.0.1 {MASTER_PORT} 1\n"
                    f"sentinel down-after-milliseconds {MASTER_NAME} 2000\n"
                    f"sentinel failover-timeout {MASTER_NAME} 10000\n")
    plain = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    processes = []
    try:
        processes.append(_server(["--port", str(MASTER_PORT), *plain], tmp_path))
        processes.append(_server(["--port", str(REPLICA_PORT), *plain,
                                  "--replicaof", "127.0.0.1", str(MASTER_PORT)], tmp_path))
        processes.append(_server([str(conf), "--sentinel"], tmp_path))
        sentinel = redis.Redis(port=SENTINEL_PORT, socket_timeout=2, decode_responses=True)
        assert wait_for(lambda: _role(REPLICA_PORT) == "slave" and redis.Redis(
            port=REPLICA_PORT).info("replication")["master_link_status"] == "up", timeout=15)
        assert wait_for(lambda: _sentinel_ready(sentinel), timeout=15)
        yield SentinelGroup(sentinel)
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait(10)


def _sentinel_ready(sentinel: redis.Redis) -> bool:
    """Whether the sentinel knows the master and its replica (a failover needs the replica)."""
    try:
        master = sentinel.sentinel_master(MASTER_NAME)
        return bool(master) and int(master["num-slaves"]) >= 1
    except redis.RedisError:
        return False


@pytest.fixture
def sentinel_setup(tmp_path, unique, redis_url, sentinel_group) -> Iterator[Setup]:
    """Tasks on the Sentinel-named broker, results on the first master (the task records, as
    every worker test's, on the shared Redis)."""
    setup = make_setup(tmp_path, f"qw-{unique}", sentinel_group.url,
                       f"redis://127.0.0.1:{MASTER_PORT}/0",
                       broker_transport_options={"master_name": MASTER_NAME})
    yield setup
    setup.cleanup()


def test_a_task_sent_through_sentinel_is_stored_on_the_master(sentinel_setup):
    app = sentinel_setup.app()
    try:
        app.send_task("tasks.add", args=[1, 1])
        app.send_many([signature("tasks.add", i, i, app=app) for i in range(3)])
    finally:
        app.close()
    assert redis.Redis(port=MASTER_PORT).llen(sentinel_setup.queue) == 4


def test_tasks_sent_through_sentinel_run_on_a_worker_and_their_results_come_back(sentinel_setup):
    """One at a time and send_many; the worker's fetch and wait, results and remote control."""
    app = sentinel_setup.app()
    try:
        with sentinel_setup.worker():
            one = app.send_task("tasks.add", args=[2, 3])
            many = app.send_many([signature("tasks.add", i, i, app=app) for i in range(20)])
            assert one.get(timeout=30) == 5
            assert [result.get(timeout=30) for result in many] == [i + i for i in range(20)]
            hostname = f"w-{sentinel_setup.queue}"
            assert wait_for(lambda: app.control.ping(destination=[_full(hostname)], timeout=1.0),
                            timeout=15)
        # the worker's liveness helper reached the master: stopped, it deleted the alive key
        assert not redis.Redis(port=MASTER_PORT).keys("qtui.alive.*")
    finally:
        app.close()


def _full(hostname: str) -> str:
    import socket

    return f"{hostname}@{socket.gethostname()}"


def test_a_worker_and_a_client_follow_the_master_through_a_failover(sentinel_setup,
                                                                   sentinel_group):
    """Tasks sent before and after SENTINEL FAILOVER all run, each once. A batch is the first
    send after it: its push, without retries, finds the connection it kept to the old master
    (now a replica, READONLY) and is pushed again on the new one."""
    sentinel_setup.backend = None
    app = sentinel_setup.app()
    try:
        with sentinel_setup.worker():
            for tag in range(10):
                app.send_task("tasks.mark", args=[tag])
            assert len(sentinel_setup.wait_records("mark", 10)) == 10
            sentinel_group.fail_over()
            app.send_many([signature("tasks.mark", tag, app=app) for tag in range(10, 20)])
            for tag in range(20, 40):
                app.send_task("tasks.mark", args=[tag])
            marks = sentinel_setup.wait_records("mark", 40, timeout=60)
        assert sorted(mark["tag"] for mark in marks) == list(range(40))
    finally:
        app.close()
