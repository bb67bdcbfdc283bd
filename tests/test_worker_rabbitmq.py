"""The worker on RabbitMQ in production: heartbeats that notice a silent broker."""

from __future__ import annotations

import pytest

from .services import AMQP_HOST, AMQP_PORT
from .tcp_proxy import SilentProxy
from .worker_helpers import REDIS_URL, make_setup, wait_for


@pytest.mark.timeout(90)
def test_a_silent_broker_is_noticed_by_the_heartbeat_and_the_worker_reconnects(
        tmp_path, unique, amqp_url):
    proxy = SilentProxy((AMQP_HOST, AMQP_PORT))
    setup = make_setup(tmp_path, f"qw-{unique}", f"amqp://guest:guest@127.0.0.1:{proxy.port}//",
                       REDIS_URL, broker_heartbeat=1)
    try:
        with setup.worker("-P", "solo") as worker:
            proxy.silence()  # the worker's connection stays open and carries nothing any more
            assert wait_for(lambda: "Reconnected" in worker.log_path.read_text(), 30), \
                worker.log_path.read_text()[-3000:]
            app = setup.app(broker_url=amqp_url)
            app.send_task("tasks.mark", args=["after"])
            app.close()
            assert wait_for(lambda: setup.records("mark"), 20), \
                worker.log_path.read_text()[-3000:]
            proxy.close()  # the events connection is silenced too: let the worker close it
    finally:
        setup.broker = amqp_url
        setup.cleanup()
        proxy.close()
