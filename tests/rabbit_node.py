"""A RabbitMQ node of a test's own (its own name, ports and data directory), so alarms and
restarts never touch the shared node on 5672 that other tests use at the same time."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _spare_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class RabbitNode:
    """``rabbitmq-server`` started in a temporary directory; ``url`` is its AMQP URL."""

    def __init__(self, base: Path, consumer_timeout_ms: int | None = None) -> None:
        self.base = base
        self.name = f"qtui-{uuid.uuid4().hex[:8]}@localhost"
        self.port = _spare_port()
        self.dist_port = _spare_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        (base / "plugins").write_text("[].\n")
        config = ["loopback_users = none"]
        if consumer_timeout_ms is not None:
            config.append(f"consumer_timeout = {consumer_timeout_ms}")
        (base / "rabbitmq.conf").write_text("\n".join(config) + "\n")
        # A channel tick of 0.5 s: a consumer timeout fires when due, not up to a minute late.
        (base / "advanced.config").write_text("[{rabbit, [{channel_tick_interval, 500}]}].\n")
        for sub in ("mnesia", "log"):
            (base / sub).mkdir(exist_ok=True)
        if os.geteuid() == 0:  # the server script drops to the rabbitmq user
            shutil.chown(base, "rabbitmq")
            for path in base.rglob("*"):
                shutil.chown(path, "rabbitmq")
        self.env = {**os.environ, "RABBITMQ_NODENAME": self.name,
                    "RABBITMQ_NODE_PORT": str(self.port),
                    "RABBITMQ_DIST_PORT": str(self.dist_port),
                    "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
                    "RABBITMQ_LOG_BASE": str(base / "log"),
                    "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "plugins"),
                    "RABBITMQ_PID_FILE": str(base / "pid"),
                    "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
                    "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config")}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> None:
        self.proc = subprocess.Popen(["rabbitmq-server"], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not _listening(self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq node {self.name} did not start; see {self.base}/log")
            time.sleep(0.2)

    def ctl(self, *args: str) -> None:
        subprocess.run(["rabbitmqctl", "-n", self.name, *args], env=self.env, check=True,
                       capture_output=True, timeout=60)

    def alarm(self) -> None:
        """Raise a memory alarm: the node blocks every publishing connection."""
        self.ctl("set_vm_memory_high_watermark", "0.0000001")

    def clear_alarm(self) -> None:
        self.ctl("set_vm_memory_high_watermark", "0.4")

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            self.ctl("stop")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass  # the node is gone already, or stuck: the kill below settles it
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        while _listening(self.port):
            time.sleep(0.2)
        self.proc = None

    def restart(self) -> None:
        """Restart the broker application (the Erlang VM stays): every connection drops and
        what is not durable goes, as in a restart of the whole node, in a few seconds."""
        self.ctl("stop_app")
        self.ctl("start_app")
        deadline = time.monotonic() + 60
        while not _listening(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"rabbitmq node {self.name} did not come back")
            time.sleep(0.2)


@contextmanager
def rabbit_node(consumer_timeout_ms: int | None = None) -> Iterator[RabbitNode]:
    """A started node (with RabbitMQ's ``consumer_timeout`` when given), stopped and its
    directory removed afterwards."""
    if shutil.which("rabbitmq-server") is None:
        raise FileNotFoundError("rabbitmq-server is not installed")
    base = Path(tempfile.mkdtemp(prefix="qtui-rabbit-"))
    os.chmod(base, 0o755)
    node = RabbitNode(base, consumer_timeout_ms)
    try:
        node.start()
        yield node
    finally:
        node.stop()
        shutil.rmtree(base, ignore_errors=True)
