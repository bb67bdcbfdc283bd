"""Closing a channel of the embedded broker while its disk is full still gives back what the
channel delivered and did not ack (found by ``make faults``: a worker reconnecting on a full disk
left messages held until their one-hour visibility timeout)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Consumer, Producer, Queue

from qtui.core import brokers

from .services import unavailable

brokers.register()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs of the test's own."""
    if os.geteuid() != 0:
        unavailable("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        unavailable(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], capture_output=True)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:
        chunk = 1 << 16
        while chunk >= 512:
            try:
                f.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                chunk //= 2
    return filler


@pytest.mark.timeout(30)
def test_a_channel_closed_on_a_full_disk_gives_back_its_unacked_messages(small_disk: Path):
    url = f"sqlite://{small_disk}/broker.sqlite"
    tasks = Queue("tasks", routing_key="tasks", durable=True)
    # Like a worker's remote-control queue: cancelling its consumer deletes it (a write).
    mailbox = Queue("mailbox", routing_key="mailbox", auto_delete=True)
    received: list[Any] = []
    with Connection(url) as conn:
        Producer(conn).publish([1, 2, 3], routing_key="tasks", declare=[tasks])
        Producer(conn).publish("a", routing_key="tasks")
        Producer(conn).publish("b", routing_key="tasks")
        channel = conn.channel()
        Consumer(channel, [tasks, mailbox], callbacks=[lambda body, m: received.append(body)],
                 no_ack=False).consume()
        while len(received) < 3:
            conn.drain_events(timeout=5)
        filler = fill(small_disk)
    # The connection closed on the full disk, its three deliveries unacked; space returns.
    filler.unlink()
    with Connection(url) as conn:
        queue = conn.SimpleQueue(tasks)
        again = [queue.get(timeout=5).payload for _ in range(3)]
        queue.close()
    assert sorted(map(str, again)) == sorted(map(str, received))
