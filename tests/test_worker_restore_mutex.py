"""A worker SIGKILLed in the middle of restoring a dead worker's messages on Redis leaves kombu's
restore mutex behind; the other workers' restores must not wait kombu's five minutes for it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import redis
from kombu import Connection

from .services import REDIS_HOST, REDIS_PORT
from .worker_helpers import make_setup, wait_for

#: A database of this test's own (no other test or benchmark uses it; this test flushes it):
#: kombu's unacked index and restore mutex are per database.
BROKER = f"redis://{REDIS_HOST}:{REDIS_PORT}/2"
MESSAGES = 300


@pytest.mark.timeout(60)
def test_a_worker_killed_while_restoring_does_not_hold_back_restores(tmp_path, unique, redis_url):
    client = redis.Redis.from_url(BROKER)
    client.flushdb()
    setup = make_setup(tmp_path, f"qw-{unique}", BROKER, None,
                       broker_transport_options={"visibility_timeout": 1})
    try:
        app = setup.app()
        for i in range(MESSAGES):
            app.send_task("tasks.mark", args=[i])
        app.close()
        with Connection(BROKER, transport_options={"visibility_timeout": 1}) as conn:
            channel = conn.channel()
            channel.do_restore = False  # a consumer that died holding them all
            for _ in range(MESSAGES):
                assert channel.basic_get(setup.queue, no_ack=False) is not None
        time.sleep(1.2)  # past their visibility timeout: the next worker restores them

        argv = [sys.executable, "-m", "qtui.tui.cli", "-A", "tasks", "run-worker",
                "-n", f"a-{setup.queue}", "-P", "threads", "-c", "4"]
        first = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True,
                                 env={**os.environ, "PYTHONPATH": str(tmp_path), **setup.env})
        try:
            caught = wait_for(lambda: client.exists("unacked_mutex"), 20, interval=0.0005)
        finally:
            first.kill()
            first.wait(10)
        assert caught and client.exists("unacked_mutex"), "the first worker never restored"

        with setup.worker("-P", "threads", "-c", "4", name="b"):
            ran = wait_for(lambda: len(setup.records("mark")) >= MESSAGES, 8)
        assert ran, (f"{len(setup.records('mark'))} of {MESSAGES} ran; restore mutex "
                     f"TTL {client.ttl('unacked_mutex')} s")
        assert {r["tag"] for r in setup.records("mark")} == set(range(MESSAGES))
    finally:
        setup.cleanup()
        client.flushdb()
