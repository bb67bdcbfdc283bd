"""``qtui beat`` processes for real: one leads, the others stand by; SIGKILL the leader and a
standby takes over, and every scheduled second is sent exactly once (counted by scheduled
time). Pauses stop an entry until it is resumed, across a beat restart."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from .beat_helpers import (
    beats,
    kill,
    leader,
    sent_ticks,
    store_of,
    wait_for_tick_after,
    write_config,
)
from .services import REDIS_HOST, REDIS_PORT, need

#: Seconds the entry runs before the leader is killed (ticks from at least 3 s before the kill
#: are checked), and after (more than twice the 3 s lease the standbys wait out).
BEFORE_KILL, AFTER_KILL = 5.0, 7.0


def _broker(kind: str, tmp_path: Path) -> str:
    if kind == "redis":
        need("Redis", REDIS_HOST, REDIS_PORT)
        return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
    return f"sqlite://{tmp_path / 'broker.sqlite'}"


#: Beats on one store: two standbys race for the lease the leader leaves. Two beats (one
#: standby) are ``make faults``'s beat-redis-2 and beat-sqlite-2, on longer runs.
BEATS = 3


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["redis", "sqlite"])
def test_every_second_is_sent_once_when_the_leader_is_killed(kind: str, tmp_path,
                                                             unique: str) -> None:
    broker = _broker(kind, tmp_path)
    queue = f"beat-{unique}"
    config = write_config(tmp_path, broker, prefix=f"beat-test-{unique}", queue=queue)
    store = store_of(config)
    names = [f"beat{i}-{unique}" for i in range(BEATS)]
    with beats(config, names) as procs:
        first = leader(store)
        time.sleep(BEFORE_KILL)
        killed_at = time.time()
        kill(procs[first])
        second = leader(store, other_than=first)
        assert second != first
        wait_for_tick_after(store, "tick", killed_at + AFTER_KILL)
    store.close()
    counts = sent_ticks(broker, queue)
    seconds = sorted(counts)
    assert [s for s, n in counts.items() if n > 1] == [], "a tick was sent twice"
    assert seconds == [seconds[0] + i for i in range(len(seconds))], "a tick was skipped"
    assert seconds[0] < killed_at - 3 and seconds[-1] > killed_at + AFTER_KILL


def _schedule(config: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "qtui.tui.cli", "--config", str(config), "schedule",
                    *args], check=True, capture_output=True, timeout=60)


@pytest.mark.timeout(120)
def test_a_paused_entry_sends_nothing_until_resumed_across_a_beat_restart(tmp_path,
                                                                          unique: str) -> None:
    broker = f"sqlite://{tmp_path / 'broker.sqlite'}"
    queue = f"beat-{unique}"
    config = write_config(tmp_path, broker, prefix="paused", queue=queue)
    store = store_of(config)
    with beats(config, [f"first-{unique}"]):
        wait_for_tick_after(store, "tick", time.time())
        _schedule(config, "pause", "tick")
        paused_at = time.time()
    assert store.paused() == {"tick"}
    with beats(config, [f"second-{unique}"]):
        leader(store)
        time.sleep(3)
        assert not [s for s in sent_ticks(broker, queue) if s > paused_at], \
            "a paused entry was sent"
        # Taken before the command starts: the resume takes effect while it runs (its start
        # alone can take seconds on a loaded machine), and ticks from then on are due ones.
        resumed_at = time.time()
        _schedule(config, "resume", "tick")
        wait_for_tick_after(store, "tick", resumed_at)
    store.close()
    after = sorted(sent_ticks(broker, queue))
    # The first drain can stop early on a loaded machine (one empty read of a second), leaving
    # ticks of before the pause for this one: only ticks of the paused time must not be there.
    assert [s for s in after if s > resumed_at - 1], "nothing was sent after the resume"
    assert not [s for s in after if paused_at < s <= resumed_at - 1], \
        f"ticks of the paused time were sent on resume: {after}, paused at {paused_at}, " \
        f"resumed at {resumed_at}"


@pytest.mark.timeout(90)
def test_a_beat_stopped_cleanly_gives_the_lease_up_and_leaves_the_list(tmp_path,
                                                                        unique: str) -> None:
    broker = f"sqlite://{tmp_path / 'broker.sqlite'}"
    config = write_config(tmp_path, broker, prefix="clean", queue=f"beat-{unique}",
                          lease=60.0)
    store = store_of(config)
    with beats(config, [f"only-{unique}"]) as procs:
        assert leader(store) == f"only-{unique}"
        procs[f"only-{unique}"].terminate()
        assert procs[f"only-{unique}"].wait(30) == 0
        assert store.nodes() == []
        assert store.hold_lease("probe", ttl=60.0), "the lease is still held (60 s)"
    store.close()
