"""The fast part of the fault suite (``make faults`` runs it all, at full counts): the same
scenario code, small counts, real processes and brokers."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection

from bench import faults

from .services import AMQP_HOST, AMQP_PORT, REDIS_PORT, need, unavailable


@pytest.fixture(autouse=True, scope="module")
def _own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[faults.Databases]:
    """The scenarios' broker and records on a redis-server of their own, as ``make faults``
    runs them: their FLUSHDB never reaches the databases other test files use."""
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed")
    with faults.on_redis(tmp_path_factory.mktemp("redis")) as databases:
        yield databases


@pytest.mark.timeout(120)
def test_the_scenarios_flush_and_record_on_their_own_redis_never_the_shared_one(
        tmp_path, monkeypatch):
    flushed: list[int] = []
    workers: list[dict[str, str]] = []
    flushdb, running = redis.Redis.flushdb, faults.running

    def spied_flushdb(client, *args, **options):
        flushed.append(client.connection_pool.connection_kwargs["port"])
        return flushdb(client, *args, **options)

    def spied_running(argv, cwd, *args, env, **options):
        workers.append(env)
        return running(argv, cwd, *args, env=env, **options)

    monkeypatch.setattr(redis.Redis, "flushdb", spied_flushdb)
    monkeypatch.setattr(faults, "running", spied_running)
    outcome = faults.malformed(tmp_path, bad=20, good=20)  # flushes its broker database
    assert outcome.passed, outcome
    assert flushed and REDIS_PORT not in flushed
    urls = [env[name] for env in workers for name in ("FAULTS_BROKER", "FAULTS_RECORDS")]
    assert urls and not any(f":{REDIS_PORT}/" in url for url in urls), urls


@pytest.mark.timeout(120)
def test_malformed_messages_among_valid_ones_are_dead_lettered_with_reasons(tmp_path):
    outcome = faults.malformed(tmp_path, bad=300, good=100)
    assert outcome.passed, outcome
    assert outcome.figures["dead_lettered"] == 300 and outcome.lost == 0


@pytest.mark.timeout(120)
def test_a_full_disk_under_the_embedded_broker_is_a_clear_error_and_loses_nothing(tmp_path):
    if os.geteuid() != 0:
        unavailable("mounting a small tmpfs needs root")
    outcome = faults.disk_full(tmp_path, batch=20)
    if any(note.startswith("not run") for note in outcome.notes):
        unavailable(outcome.notes[0])
    assert outcome.passed, outcome
    assert "has no space left on its disk" in " ".join(outcome.notes)


@pytest.mark.timeout(120)
def test_tasks_longer_than_the_embedded_brokers_visibility_timeout_leave_the_rest_run_once(
        tmp_path):
    """What each pool claimed and has not run yet stays under its lease (on main, the solo
    workers' fetches read after a 3 s task were run by the others too: 7 and 8 duplicates in
    400 in two runs of the --quick scenario)."""
    outcome = faults.sqlite_short_lease(tmp_path, 4)
    assert outcome.passed, outcome


@pytest.mark.timeout(120)
def test_a_busy_solo_worker_runs_each_task_once_while_its_restore_timer_runs(tmp_path):
    outcome = faults.busy_solo(tmp_path, 1_500)
    assert outcome.passed, outcome
    assert outcome.figures["put_back_unheld"] == 0


@pytest.mark.timeout(120)
def test_bad_compression_headers_are_dead_lettered_on_redis_and_sqlite(tmp_path):
    outcome = faults.compression(tmp_path, bad=20, good=20)
    assert outcome.passed, outcome
    assert outcome.figures["dead_lettered"] == 40 and outcome.lost == 0


@pytest.mark.timeout(120)
def test_raw_non_envelopes_on_redis_are_dead_lettered_with_reasons(tmp_path):
    outcome = faults.malformed_redis(tmp_path, bad=60, good=40)
    assert outcome.passed, outcome
    assert outcome.figures["dead_lettered"] == 60 and outcome.lost == 0


@pytest.mark.timeout(120)
def test_hostile_broadcasts_on_redis_leave_the_worker_answering_and_the_events_flowing(tmp_path):
    outcome = faults.hostile_broadcast(tmp_path, bad=60, good=40)
    assert outcome.passed, outcome
    assert outcome.figures["ping_answered"] and outcome.lost == 0


@pytest.mark.timeout(120)
def test_amqp_messages_not_utf8_are_dead_lettered_with_reasons_and_the_worker_stays_up(
        tmp_path):
    need("RabbitMQ", AMQP_HOST, AMQP_PORT)
    outcome = faults.malformed_amqp(tmp_path, bad=60, good=40)
    assert outcome.passed, outcome
    assert outcome.figures["dead_lettered"] == 60 and outcome.lost == 0


@pytest.mark.timeout(300)
def test_the_rabbitmq_restart_scenario_restarts_a_node_of_its_own_not_the_shared_one(
        tmp_path, monkeypatch):
    need("RabbitMQ", AMQP_HOST, AMQP_PORT)
    if shutil.which("rabbitmq-server") is None:
        unavailable("rabbitmq-server is not installed")
    run = subprocess.run

    def named_nodes_only(args, *more, **options):
        if args[0] == "rabbitmqctl" and "-n" not in args:
            raise AssertionError(f"rabbitmqctl aimed at the shared node: {args}")
        return run(args, *more, **options)

    monkeypatch.setattr(subprocess, "run", named_nodes_only)
    with Connection(f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}//") as shared:
        shared.connect()
        outcome = faults.broker_restart(tmp_path, 600, "rabbitmq")  # --quick's count
        shared.default_channel.basic_qos(0, 1, False)  # the shared node never dropped us
    assert outcome.passed, outcome
    assert outcome.lost == 0 and outcome.figures["reconnected"]
