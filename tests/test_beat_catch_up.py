"""What a beat sends after downtime (beat_catch_up) and for a new entry, driven one step at a
time in the test's process on the embedded broker; and on RabbitMQ, with its state in the
Redis result backend."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest
from kombu import Connection

from qtui.core import App
from qtui.core.beat.redis_store import RedisBeatStore
from qtui.core.beat.service import Beat
from qtui.core.schedules import schedule, ticks

from .beat_helpers import sent_ticks

UTC = timezone.utc
EVERY, GRACE, DOWN = 10, 15, 120


def _beat(tmp_path, queue: str, catch_up: str) -> tuple[Beat, str]:
    broker = f"sqlite://{tmp_path / 'broker.sqlite'}"
    app = App("t", broker=broker, beat_catch_up=catch_up, beat_grace=GRACE,
              beat_schedule={"e": {"task": "t.job", "schedule": EVERY,
                                   "options": {"queue": queue}}})
    return Beat(app, node="test-beat", send_events=False), broker


@pytest.mark.parametrize("catch_up", ["none", "once", "all"])
def test_ticks_missed_while_down_follow_beat_catch_up(tmp_path, unique: str,
                                                      catch_up: str) -> None:
    beat, broker = _beat(tmp_path, unique, catch_up)
    down_since = time.time() - DOWN
    beat.store.skip_to("e", down_since)
    started = time.time()
    beat.step()
    beat.stop()
    beat.run()  # returns at once: gives the lease up and closes the store
    missed_line = started - GRACE
    missed = [t.timestamp() for t in ticks(schedule(EVERY), datetime.fromtimestamp(
        down_since, UTC), datetime.fromtimestamp(missed_line, UTC), limit=100)]
    counts = sent_ticks(broker, unique)
    sent_missed = sorted(s for s in counts if s <= missed_line)
    assert all(n == 1 for n in counts.values())
    assert len(missed) >= 9
    expected = {"none": [], "once": missed[-1:], "all": missed}[catch_up]
    assert sent_missed == expected
    assert [s for s in counts if s > missed_line], "on-time ticks (a takeover) are sent"


def test_a_new_entry_starts_at_its_next_tick_instead_of_catching_up(tmp_path,
                                                                    unique: str) -> None:
    beat, broker = _beat(tmp_path, unique, "all")
    beat.step()
    assert beat.store.position("e") is not None
    beat.stop()
    beat.run()
    assert not sent_ticks(broker, unique)


@pytest.mark.timeout(60)
def test_on_rabbitmq_the_beat_keeps_its_state_in_the_redis_result_backend(amqp_url, redis_url,
                                                                          unique: str) -> None:
    app = App("t", broker=amqp_url, backend=redis_url, beat_key_prefix=f"beat-amqp-{unique}",
              beat_schedule={"e": {"task": "t.job", "schedule": 1,
                                   "options": {"queue": unique}}})
    beat = Beat(app, node="amqp-beat", send_events=False)
    assert isinstance(beat.store, RedisBeatStore)
    beat.store.skip_to("e", time.time() - 3)
    beat.step()
    beat.stop()
    beat.run()
    try:
        counts = sent_ticks(amqp_url, unique)
        assert len(counts) >= 3 and set(counts.values()) == {1}
    finally:
        with Connection(amqp_url) as conn:
            conn.default_channel.queue_delete(unique)
        app.close()
