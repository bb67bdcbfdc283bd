"""The beat's own events (beat-leader, beat-tick) on the celeryev exchange: receivers get
them, and Celery's event State, like qtui's, ignores them (no worker, no task appears)."""

from __future__ import annotations

import time

import pytest
from celery.events.state import State as CeleryState

from qtui.core import App
from qtui.core.beat.service import Beat, tick_task_id
from qtui.core.events import EventReceiver
from qtui.core.state import State

from .services import REDIS_HOST, REDIS_PORT, need


@pytest.mark.timeout(60)
def test_a_leading_beat_announces_itself_and_each_tick(unique: str) -> None:
    need("Redis", REDIS_HOST, REDIS_PORT)
    app = App("t", broker=f"redis://{REDIS_HOST}:{REDIS_PORT}/0", beat_key_prefix=unique,
              beat_schedule={"e": {"task": "t.job", "schedule": 1,
                                   "options": {"queue": f"beat-{unique}"}}})
    beat = Beat(app, node=f"beat-{unique}")
    beat.store.skip_to("e", time.time() - 3)
    with EventReceiver(app, wakeup=False) as receiver:
        beat.step()
        beat.stop()
        beat.run()
        events = [e for e in receiver.events(timeout=2.0) if e["hostname"] == beat.node]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "beat-leader" and events[0]["leader"] is True
    assert kinds[-1] == "beat-leader" and events[-1]["leader"] is False
    ticks = [e for e in events if e["type"] == "beat-tick"]
    assert len(ticks) >= 3
    assert all(e["uuid"] == tick_task_id(unique, "e", e["scheduled"]) for e in ticks)
    assert {e["entry"] for e in ticks} == {"e"} and {e["task"] for e in ticks} == {"t.job"}

    celery_state = CeleryState()
    ours = State()
    for event in events:
        celery_state.event(event)
        ours.event(event)
    assert not celery_state.workers and not celery_state.tasks
    assert not ours.workers and len(ours) == 0 and ours.bad_events == 0
