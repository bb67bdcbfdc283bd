"""The console's full garbage collections wait for a pause in the user's input."""

from __future__ import annotations

import gc
import time

from qtui.tui.idle_gc import IdleCollector


def full_collections_during(action) -> int:  # type: ignore[no-untyped-def]
    seen = []

    def callback(phase: str, info: dict) -> None:
        if phase == "stop" and info["generation"] == 2:
            seen.append(info)

    gc.callbacks.append(callback)
    try:
        action()
    finally:
        gc.callbacks.remove(callback)
    return len(seen)


def test_automatic_full_collections_are_off_while_it_runs_and_back_after():
    before = gc.get_threshold()
    collector = IdleCollector()
    collector.start()
    try:
        assert gc.get_threshold()[:2] == before[:2]
        assert gc.get_threshold()[2] > 10**9
    finally:
        collector.stop()
    assert gc.get_threshold() == before


def test_it_waits_for_the_user_to_pause_then_collects_once_per_interval():
    collector = IdleCollector(idle_after=1.0, interval=0.0, force_after=3600)
    collector.start()
    try:
        typing = time.monotonic()
        assert full_collections_during(lambda: collector.tick(last_input=typing)) == 0
        idle = time.monotonic() - 2.0
        assert full_collections_during(lambda: collector.tick(last_input=idle)) == 1
        collector.interval = 3600
        assert full_collections_during(lambda: collector.tick(last_input=idle)) == 0
    finally:
        collector.stop()


def test_it_collects_anyway_when_the_user_never_pauses():
    collector = IdleCollector(idle_after=1.0, interval=0.0, force_after=0.0)
    collector.start()
    try:
        assert full_collections_during(lambda: collector.tick(last_input=time.monotonic())) == 1
        assert collector.collections == 1
    finally:
        collector.stop()


def test_freed_memory_is_handed_back_after_each_full_collection_only():
    released = []
    collector = IdleCollector(idle_after=1.0, interval=0.0, force_after=3600,
                              release=lambda: released.append(True))
    collector.start()
    try:
        assert not collector.tick(last_input=time.monotonic())  # typing: no collection
        assert released == []
        assert collector.tick(last_input=time.monotonic() - 5)
        assert released == [True]
    finally:
        collector.stop()
