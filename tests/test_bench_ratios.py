"""`make bench`'s ratio table, its bulk section's table, its task events settings and its
stalled-drain check (bench/run.py): no broker."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from bench.run import (
    Bench,
    Broker,
    BulkMeasure,
    Case,
    Measure,
    bulk_table,
    each_events_setting,
    ratio_table,
)


def drain(framework: str, pool: str, rate: float, *, events: bool = False, broker: str = "redis",
          worker_cpu: float | None = None, broker_cpu: float | None = None,
          enqueue: float = 1000.0) -> Measure:
    tasks = 20_000
    return Measure(broker, framework, pool, tasks, enqueue, rate, tasks / rate, tasks,
                   events=events, worker_cpu=worker_cpu, broker_cpu=broker_cpu)


def rows(table: str) -> dict[tuple[str, str, str], list[str]]:
    """The table's rows by (path, worker, events): the cells after those three."""
    found = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        found[(cells[0], cells[1], cells[2])] = cells[3:]
    return found


def test_drain_ratios_are_against_celery_in_the_same_pool_its_best_and_dramatiq():
    table = rows(ratio_table([
        drain("qtui", "solo", 6000), drain("celery", "solo", 4000),
        drain("celery", "prefork -c 2", 5000), drain("dramatiq", "-p 2 -t 8", 3000)], []))
    figure, same, best, dramatiq, *_ = table[("drain, redis", "qtui solo", "off")]
    assert (figure, same, best, dramatiq) == ("6,000/s", "1.50x", "1.20x", "2.00x")
    assert table[("drain, redis", "celery solo", "off")][1:4] == ["-", "-", "-"]


def test_cpu_per_thousand_tasks_is_shown_for_worker_and_broker_in_every_row():
    table = rows(ratio_table([
        drain("qtui", "solo", 6000, worker_cpu=2.0, broker_cpu=0.5),
        drain("celery", "solo", 4000, worker_cpu=5.0, broker_cpu=1.0)], []))
    assert table[("drain, redis", "qtui solo", "off")][4:] == ["0.100", "0.025"]
    assert table[("drain, redis", "celery solo", "off")][4:] == ["0.250", "0.050"]


def test_broker_cpu_of_the_embedded_broker_is_counted_in_the_worker():
    table = rows(ratio_table([drain("qtui", "solo", 4000, broker="sqlite", worker_cpu=3.0)], []))
    assert table[("drain, sqlite", "qtui solo", "off")][4:] == ["0.150", "in the worker"]


def test_events_on_and_off_are_compared_each_with_its_own_setting():
    table = rows(ratio_table([
        drain("qtui", "solo", 5000), drain("celery", "solo", 4000),
        drain("qtui", "solo", 4000, events=True), drain("celery", "solo", 2000, events=True),
        drain("dramatiq", "-p 2 -t 8", 2500)], []))
    assert table[("drain, redis", "qtui solo", "off")][1:4] == ["1.25x", "1.25x", "2.00x"]
    # Dramatiq has no task events: its run counts against both settings.
    assert table[("drain, redis", "qtui solo", "on")][1:4] == ["2.00x", "2.00x", "1.60x"]


def test_enqueue_is_compared_framework_to_framework_over_every_case():
    table = rows(ratio_table([
        drain("qtui", "solo", 5000, enqueue=4000), drain("qtui", "threads -c 8", 5000,
                                                         enqueue=6000),
        drain("celery", "solo", 4000, enqueue=2500)], []))
    assert table[("enqueue, redis", "qtui", "off")][:3] == ["5,000/s", "2.00x", "2.00x"]


def test_latency_ratio_is_celerys_p50_over_qtuis():
    latencies = [
        {"framework": "qtui", "pool": "solo", "events": False, "p50": 1.0},
        {"framework": "celery", "pool": "solo", "events": False, "p50": 1.5},
        {"framework": "celery", "pool": "prefork -c 2", "events": False, "p50": 1.2}]
    table = rows(ratio_table([], latencies))
    assert table[("latency p50, redis", "qtui solo", "off")][:3] == ["1.00 ms", "1.50x",
                                                                     "1.20x"]


def test_events_both_runs_every_case_each_way_with_celery_given_dash_E_when_on():
    args = argparse.Namespace(events="both", concurrency=2, threads=8)
    cases = each_events_setting("redis", args)
    celery_solo = [c for c in cases if c.label == "celery solo"]
    assert [c.events for c in celery_solo] == [False, True]
    argv = {c.events: c.argv("tasks", "q") for c in celery_solo}
    assert "-E" in argv[True] and "-E" not in argv[False]
    qtui = {c.events: c.argv("tasks", "q") for c in cases if c.label == "qtui solo"}
    assert "--without-events" in qtui[False] and "--without-events" not in qtui[True]
    assert [c.label for c in cases].count("dramatiq -p 2 -t 8") == 1


def bulk(framework: str, way: str, calls_rate: float, *, broker: str = "redis",
         client_cpu_us: float = 20.0, broker_cpu: float | None = 0.04) -> BulkMeasure:
    calls = 20_000
    messages = calls // 10 if way == "chunks" else calls
    return BulkMeasure(broker, framework, way, calls, messages, calls_rate,
                       calls_rate * messages / calls, client_cpu_us, broker_cpu, 0)


BULK_RUN = [bulk("qtui", "send_many", 60_000), bulk("qtui", "group", 40_000),
            bulk("qtui", "chunks", 200_000), bulk("celery", "group", 2_000),
            bulk("celery", "chunks", 20_000), bulk("dramatiq", "group", 4_000)]


def test_bulk_paths_are_compared_with_celerys_same_way_its_best_and_dramatiqs_group():
    table = rows(ratio_table([], [], BULK_RUN))
    figure, same, best, dramatiq, *_ = table[("bulk group, redis", "qtui (client)", "-")]
    assert (figure, same, best, dramatiq) == ("40,000 tasks/s", "20.00x", "2.00x", "10.00x")
    assert table[("bulk chunks, redis", "qtui (client)", "-")][:2] == [
        "200,000 tasks/s (20,000 messages/s)", "10.00x"]
    assert table[("bulk group, redis", "celery (client)", "-")][1:4] == ["-", "-", "-"]


def test_send_many_says_celery_has_none_and_is_compared_with_celerys_best():
    table = rows(ratio_table([], [], BULK_RUN))
    assert table[("bulk send_many, redis", "qtui (client)", "-")][1:4] == [
        "Celery has no send_many", "3.00x", "15.00x"]


def test_bulk_rows_show_the_clients_cpu_and_the_brokers_per_thousand_calls():
    table = rows(ratio_table([], [], [bulk("qtui", "group", 40_000, broker_cpu=0.04),
                                      bulk("qtui", "group", 40_000, broker="sqlite",
                                           broker_cpu=None)]))
    assert table[("bulk group, redis", "qtui (client)", "-")][4:] == ["client 0.020", "0.002"]
    assert table[("bulk group, sqlite", "qtui (client)", "-")][4:] == ["client 0.020",
                                                                       "in the client"]


def test_bulk_table_says_per_qtui_path_whether_the_median_reaches_30000_tasks_a_second():
    table = bulk_table([bulk("qtui", "send_many", 25_000), bulk("qtui", "send_many", 31_000),
                        bulk("qtui", "send_many", 32_000), bulk("qtui", "group", 29_000),
                        bulk("celery", "group", 2_000)], "redis")
    found = rows(table.partition("\n\n")[0])
    assert found[("qtui send_many", "31,000 (25,000-32,000)", "31,000 (25,000-32,000)")][-1] \
        == "met"
    assert found[("qtui group", "29,000", "29,000")][-1] == "not met"
    assert found[("celery group", "2,000", "2,000")][-1] == "-"


class _Waiting(Broker):
    """A broker whose queue never empties (what a stuck worker leaves)."""

    name = "redis"

    def count(self, framework: str, queue: str) -> tuple[int, int | None]:
        return 10, 0

    def cpu_seconds(self) -> float | None:
        return None


@pytest.mark.timeout(30)
def test_a_drain_that_runs_no_task_for_the_stall_timeout_fails_its_case(tmp_path):
    # A worker alive but stuck (Celery's threads pool with -E on RabbitMQ here) must cost the
    # stall timeout, not the whole drain timeout.
    counter = tmp_path / "ran"
    counter.write_bytes(b"x" * 5)
    bench = Bench(tmp_path, verbose=False, drain_timeout=600, stall_timeout=0.3)
    case = Case("redis", "qtui", "solo", lambda module, queue: [], False)
    stuck = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    log = tmp_path / "worker.log"
    log.write_text("warm shutdown\n")
    try:
        with pytest.raises(RuntimeError, match=r"ran no task for 0 s with 10 messages left"):
            bench._drain(case, _Waiting(), "q", 15, counter, stuck, log)
    finally:
        stuck.kill()
        stuck.wait()
