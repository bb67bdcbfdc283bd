"""The cluster ledger: records with an expiry on Redis and in an SQLite file, and which store
a cluster gets for its broker and result backend."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from qtui.core import App
from qtui.core.ledger import Ledger, RedisLedger, SQLiteLedger, ledger_for

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
