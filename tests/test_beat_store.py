"""The beat's shared store, on Redis and on SQLite: one lease holder at a time, tick claims
that tell new, orphaned, sent and mine apart, runs and positions, pauses, live beat processes;
and where the store lives for each broker and backend."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from qtui.core import App
from qtui.core.beat.redis_store import RedisBeatStore
from qtui.core.beat.sqlite_store import SQLiteBeatStore
from qtui.core.beat.store import BeatStore, Claim, Node, Run, store_for
from qtui.core.exceptions import ConfigError

from .services import REDIS_HOST, REDIS_PORT, need


@pytest.fixture(params=["redis", "sqlite"])
def store(request, tmp_path, unique: str) -> Iterator[BeatStore]:
    if request.param == "redis":
        need("Redis", REDIS_HOST, REDIS_PORT)
        found: BeatStore = RedisBeatStore(f"redis://{REDIS_HOST}:{REDIS_PORT}/0",
                                          f"beat-store-{unique}")
    else:
        found = SQLiteBeatStore(tmp_path / "broker.sqlite", f"beat-store-{unique}")
    yield found
    found.close()


def test_one_beat_holds_the_lease_until_it_expires(store: BeatStore) -> None:
    assert store.hold_lease("a", ttl=1.0)
    assert not store.hold_lease("b", ttl=1.0)
    assert store.hold_lease("a", ttl=1.0)  # renewing
    deadline = time.monotonic() + 10
    while not store.hold_lease("b", ttl=1.0):
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.1)
    assert not store.hold_lease("a", ttl=1.0)


def test_a_released_lease_is_free_at_once_and_only_its_holder_releases_it(store) -> None:
    assert store.hold_lease("a", ttl=30.0)
    store.release_lease("b")
    assert not store.hold_lease("b", ttl=30.0)
    store.release_lease("a")
    assert store.hold_lease("b", ttl=30.0)


def test_a_tick_is_new_once_then_mine_orphaned_for_another_and_sent_once_recorded(
        store: BeatStore) -> None:
    assert store.claim_tick("e", 100.0, "a", fresh=0) is Claim.NEW
    assert store.claim_tick("e", 100.0, "a", fresh=0) is Claim.MINE
    assert store.claim_tick("e", 100.0, "b", fresh=0) is Claim.ORPHANED
    assert store.claim_tick("e", 100.0, "b", fresh=0) is Claim.MINE
    store.record_run("e", Run(100.0, 101.0, "id-1", "b"))
    assert store.claim_tick("e", 100.0, "c", fresh=0) is Claim.SENT
    assert store.claim_tick("e", 101.0, "c", fresh=0) is Claim.NEW


def test_another_beats_claim_is_pending_until_it_is_fresh_seconds_old(store: BeatStore) -> None:
    assert store.claim_tick("e", 100.0, "a", fresh=30) is Claim.NEW
    assert store.claim_tick("e", 100.0, "b", fresh=30) is Claim.PENDING
    assert store.claim_tick("e", 100.0, "a", fresh=30) is Claim.MINE  # still a's
    time.sleep(0.3)
    assert store.claim_tick("e", 100.0, "b", fresh=0.2) is Claim.ORPHANED


def test_runs_move_the_position_and_are_kept_newest_first(store: BeatStore) -> None:
    assert store.position("e") is None
    store.record_run("e", Run(100.0, 100.5, "id-1", "a"))
    store.record_run("e", Run(0.0, 102.0, "id-2", "cli", manual=True))
    assert store.position("e") == 100.0  # a manual run is outside the schedule
    assert [r.task_id for r in store.runs("e")] == ["id-2", "id-1"]
    store.skip_to("e", 200.0)
    assert store.position("e") == 200.0


def test_pauses_are_kept_until_resumed(store: BeatStore) -> None:
    store.set_paused("e", True)
    store.set_paused("f", True)
    store.set_paused("f", False)
    assert store.paused() == {"e"}


def test_beat_processes_are_listed_while_they_report(store: BeatStore) -> None:
    now = time.time()
    store.report_node(Node("a", True, now), ttl=30)
    store.report_node(Node("b", False, now), ttl=30)
    assert [(n.name, n.leader) for n in store.nodes()] == [("a", True), ("b", False)]
    store.report_node(Node("b", False, now), ttl=0)
    assert [n.name for n in store.nodes()] == ["a"]


def test_the_store_lives_in_the_redis_or_sqlite_broker_else_the_result_backend(tmp_path) -> None:
    app = App("t", broker=f"sqlite://{tmp_path / 'b.sqlite'}")
    assert isinstance(store_for(app), SQLiteBeatStore)
    app = App("t", broker="amqp://guest:guest@127.0.0.1:5672//",
              backend=f"sqlite://{tmp_path / 'r.sqlite'}")
    found = store_for(app)
    assert isinstance(found, SQLiteBeatStore) and found.path == tmp_path / "r.sqlite"
    app = App("t", broker="amqp://guest:guest@127.0.0.1:5672//", backend="redis://127.0.0.1/3")
    assert isinstance(store_for(app), RedisBeatStore)


def test_rabbitmq_with_rpc_results_has_no_shared_store_and_says_what_to_set() -> None:
    app = App("t", broker="amqp://guest:guest@127.0.0.1:5672//", backend="rpc://")
    with pytest.raises(ConfigError, match="Set result_backend to a redis:// or sqlite://"):
        store_for(app)
