"""The cluster ledger: records with an expiry on Redis and in an SQLite file, and which store
a cluster gets for its broker and result backend."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from qtui.core import App
from qtui.core.brokers.redis.ledger import RedisLedger
from qtui.core.ledger import Ledger, SQLiteLedger, ledger_for

from .services import REDIS_HOST, REDIS_PORT, need
from .worker_helpers import wait_for

REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture(params=["redis", "sqlite"])
def ledger(request, tmp_path) -> Iterator[Ledger]:
    if request.param == "redis":
        need("Redis", REDIS_HOST, REDIS_PORT)
        made: Ledger = RedisLedger(REDIS_URL)
    else:
        made = SQLiteLedger(tmp_path / "broker.sqlite")
    yield made
    made.close()


def test_records_are_present_until_they_expire_or_are_discarded(ledger: Ledger, unique):
    now = time.time()
    ledger.put(unique, {"kept": now + 60, "gone": now + 60, "old": now - 1})
    assert ledger.present(unique, ["kept", "gone", "old", "never"]) == {"kept", "gone"}
    ledger.put(unique, {}, discard=["gone"])
    assert set(ledger.load(unique)) == {"kept"}
    assert ledger.load(unique)["kept"] == pytest.approx(now + 60)
    ledger.put(unique, {}, discard=["kept"])
    assert ledger.load(unique) == {}


def test_a_put_that_does_not_wait_is_kept_and_its_answer_read_with_the_next(ledger: Ledger,
                                                                            unique):
    ledger.put(unique, {"sent": time.time() + 60}, wait=False)
    ledger.put(unique, {"next": time.time() + 60}, wait=False)
    assert wait_for(lambda: ledger.present(unique, ["sent", "next"]) == {"sent", "next"}, 5)
    ledger.put(unique, {}, discard=["sent", "next"])
    assert ledger.load(unique) == {}


@pytest.mark.timeout(30)
def test_a_redis_put_drops_the_expired_records_unless_told_not_to_trim(unique):
    """Starts.record trims once a second, not with every record (issue 19)."""
    need("Redis", REDIS_HOST, REDIS_PORT)
    ledger = RedisLedger(REDIS_URL)
    stored = ledger.key(unique)
    try:
        now = time.time()
        ledger.put(unique, {"old": now + 0.2})
        time.sleep(0.3)
        ledger.put(unique, {"kept": now + 60}, trim=False)
        ledger.put(unique, {"sent": now + 60}, wait=False, trim=False)
        assert wait_for(lambda: ledger.present(unique, ["sent"]) == {"sent"}, 5)
        assert ledger.client.zscore(stored, "old") is not None  # expired, still stored
        ledger.put(unique, {"newest": now + 60})
        assert ledger.client.zscore(stored, "old") is None
        assert set(ledger.load(unique)) == {"kept", "sent", "newest"}
    finally:
        ledger.client.delete(stored)
        ledger.close()


def test_the_ledger_is_the_broker_else_a_redis_or_sqlite_result_backend(tmp_path):
    def kind(broker: str, backend: str | None) -> str | None:
        found = ledger_for(App("t", broker=broker, backend=backend))
        if found is None:
            return None
        found.close()
        return type(found).__name__

    amqp = "amqp://guest:guest@127.0.0.1:5672//"
    assert kind(REDIS_URL, None) == "RedisLedger"
    assert kind(f"sqlite://{tmp_path}/b.sqlite", None) == "SQLiteLedger"
    assert kind(amqp, REDIS_URL) == "RedisLedger"
    assert kind(amqp, f"sqlite://{tmp_path}/r.sqlite") == "SQLiteLedger"
    assert kind(amqp, "rpc://") is None
    assert kind(amqp, None) is None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("drop", ["idle timeout", "client kill"])
def test_a_put_that_does_not_wait_reaches_redis_after_the_server_dropped_its_connection(
        tmp_path, drop):
    """The connection of ``put(wait=False)`` is kept from one put to the next, and the server
    can drop it in between (its ``timeout`` for idle clients, CLIENT KILL, a proxy). The next
    put reaches Redis all the same, before it returns: written into the dead socket, it was
    lost without an error, and a worker lost in the task it recorded then had its redelivery
    not counted (a task that kills its worker ran again and again, never dead-lettered)."""
    from .redis_server import redis_server, spare_port
    port = spare_port()
    extra = ("--timeout", "1") if drop == "idle timeout" else ()
    with redis_server(tmp_path, port, durable=False, extra=extra):
        url = f"redis://127.0.0.1:{port}/0"
        ledger = RedisLedger(url)
        try:
            ledger.put("started", {"before": time.time() + 60}, wait=False)
            if drop == "idle timeout":
                time.sleep(2.5)  # idle for more than 1 s: the server closes the connection
            else:
                assert ledger.client.client_kill_filter(_type="normal", skipme=True) >= 1
            ledger.put("started", {"after": time.time() + 60}, wait=False)
            # Read by a connection of its own: the ledger's next put is not needed to send it.
            assert "after" in RedisLedger(url).load("started")
        finally:
            ledger.close()


@pytest.mark.timeout(60)
def test_a_put_whose_answer_never_comes_is_sent_again_on_a_new_connection_with_the_next(
        tmp_path):
    """The connection goes silent after a put was written (a network cut: the check before the
    write saw nothing wrong): the next put, once the answer timed out, sends it once more on a
    new connection, rather than only raising with the record lost."""
    from .redis_server import redis_server, spare_port
    from .tcp_proxy import SilentProxy
    port = spare_port()
    with redis_server(tmp_path, port, durable=False):
        proxy = SilentProxy(("127.0.0.1", port))
        ledger = RedisLedger(f"redis://127.0.0.1:{proxy.port}/0")
        other = RedisLedger(f"redis://127.0.0.1:{port}/0")
        try:
            ledger.put("started", {"first": time.time() + 60}, wait=False)
            ledger.put("started", {}, discard=["none"], wait=False)  # the first's answer is read
            assert wait_for(lambda: other.present("started", ["first"]) == {"first"}, 5)
            proxy.silence()
            ledger.put("started", {"second": time.time() + 60}, wait=False)  # dropped
            ledger.put("started", {"third": time.time() + 60}, wait=False)
            assert wait_for(lambda: set(other.load("started")) == {"first", "second", "third"}, 5)
        finally:
            ledger.close()
            other.close()
            proxy.close()
