"""Broker families: each transport maps to the family that answers for it, and nothing outside
``core/brokers/family.py`` chooses by the transport's name."""

from __future__ import annotations

from pathlib import Path

import pytest
from kombu import Connection

from qtui.core import brokers
from qtui.core.backends import results_path
from qtui.core.brokers import broker_path
from qtui.core.brokers.amqp.delayed import AmqpDelayed
from qtui.core.brokers.amqp.family import AMQP
from qtui.core.brokers.family import KOMBU, family_for
from qtui.core.brokers.redis.family import REDIS
from qtui.core.brokers.sqlite.family import SQLITE
from qtui.core.delayed import delayed_for, due_queue
from qtui.core.events import event_exchange
from qtui.core.exceptions import ImproperlyConfigured

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("url", "family"), [
    ("redis://127.0.0.1:6379/0", REDIS), ("rediss://127.0.0.1:6379/0", REDIS),
    ("amqp://guest:guest@127.0.0.1//", AMQP), ("pyamqp://127.0.0.1//", AMQP),
    ("sqlite:///tmp/qtui-family-test.sqlite", SQLITE), ("memory://", KOMBU),
])
def test_each_transport_maps_to_its_family(url: str, family: object) -> None:
    assert family_for(Connection(url)) is family


def test_events_use_a_fanout_exchange_on_redis_and_a_topic_exchange_elsewhere() -> None:
    assert event_exchange(Connection("redis://127.0.0.1:6379/0")).type == "fanout"
    assert event_exchange(Connection("amqp://127.0.0.1//")).type == "topic"
    assert event_exchange(Connection("memory://")).type == "topic"


def test_a_transport_without_a_family_has_no_delayed_store_and_no_due_queue() -> None:
    assert delayed_for(Connection("memory://")) is None
    assert due_queue(Connection("memory://"), "celery") is None
    assert isinstance(delayed_for(Connection("amqp://127.0.0.1//")), AmqpDelayed)
    assert due_queue(Connection("amqp://127.0.0.1//"), "celery").name == "qtui.due.celery"


def test_only_the_family_module_reads_the_transport_name() -> None:
    readers = sorted(
        str(path.relative_to(ROOT)) for folder in ("core", "workers", "tui")
        for path in (ROOT / folder).rglob("*.py")
        if any("driver_type" in line and not line.strip().startswith(("driver_type =", "#"))
               for line in path.read_text().splitlines()))
    assert readers == ["core/brokers/family.py"]


def test_the_broker_url_may_leave_the_file_out_and_the_results_url_may_not(data_home) -> None:
    assert broker_path("sqlite://") == brokers.default_broker_path()
    with pytest.raises(ImproperlyConfigured):
        results_path("sqlite://")
    assert broker_path("sqlite:////tmp/a.db") == results_path("sqlite:////tmp/a.db") \
        == Path("/tmp/a.db")
