"""The cluster state model, fed synthetic events (Celery's event dicts): workers' liveness,
tasks merged from events in any order, the memory bound, the indexes and throughput."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qtui.core import states
from qtui.core.state import TIMELINE_MAX, State, Throughput, timeline_steps

W1, W2, CLIENT = "celery@w1", "celery@w2", "gen42@client"


class Events:
    """Builds events as a worker or client would send them: a Lamport clock per host and
    timestamps one second apart, received one tenth of a second later."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.clocks: dict[str, itertools.count[int]] = {}
        self.now = start

    def __call__(self, type_: str, hostname: str = W1, **fields: object) -> dict[str, object]:
        self.now += 1.0
        clock = self.clocks.setdefault(hostname, itertools.count(1))
        return {"type": type_, "hostname": hostname, "clock": next(clock), "pid": 1,
                "utcoffset": 0, "timestamp": self.now, "local_received": self.now + 0.1,
                **fields}

    def lifecycle(self, uuid: str, name: str = "tasks.add", hostname: str = W1,
                  final: str = "task-succeeded", **final_fields: object) -> list[dict[str, object]]:
        return [self("task-received", hostname, uuid=uuid, name=name, args="(1, 2)",
                     kwargs="{}", retries=0),
                self("task-started", hostname, uuid=uuid),
                self(final, hostname, uuid=uuid, **final_fields)]


@pytest.fixture
def ev() -> Events:
    return Events()


# workers --------------------------------------------------------------------------------------
def test_a_worker_is_alive_until_two_heartbeat_periods_pass(ev):
    state = State()
    state.event(ev("worker-online", freq=2.0, sw_ident="py-celery", sw_ver="5.7.0"))
    worker = state.workers[W1]
    seen = worker.last_heartbeat
    assert worker.alive(now=seen + 3.9)
    assert not worker.alive(now=seen + 4.1)
    assert worker.sw_ident == "py-celery" and worker.freq == 2.0


def test_heartbeats_keep_a_worker_alive_and_carry_its_load(ev):
    state = State()
    state.event(ev("worker-online", freq=2.0))
    state.event(ev("worker-heartbeat", freq=2.0, active=3, processed=10, loadavg=[0.5, 0.4, 0.3]))
    worker = state.workers[W1]
    assert worker.alive(now=ev.now + 1)
    assert (worker.active, worker.processed, worker.loadavg) == (3, 10, [0.5, 0.4, 0.3])
    assert [w.hostname for w in state.alive_workers(now=ev.now + 1)] == [W1]
    assert state.alive_workers(now=ev.now + 60) == []


def test_worker_offline_is_offline_at_once(ev):
    state = State()
    state.event(ev("worker-online", freq=2.0))
    state.event(ev("worker-offline"))
    assert not state.workers[W1].alive(now=ev.now)


def test_a_late_heartbeat_from_before_going_offline_does_not_revive(ev):
    state = State()
    state.event(ev("worker-online", freq=2.0))
    late = ev("worker-heartbeat", freq=2.0)
    state.event(ev("worker-offline"))
    state.event(late)
    assert not state.workers[W1].alive(now=ev.now)
    state.event(ev("worker-online", freq=2.0))
    assert state.workers[W1].alive(now=ev.now)


def test_a_worker_restarted_after_going_offline_is_alive_again(ev):
    """A restarted worker starts a new Lamport clock, far below the one it went offline with."""
    state = State()
    state.event(ev("worker-online", freq=2.0, pid=100))
    for _ in range(50):
        state.event(ev("worker-heartbeat", freq=2.0, pid=100))
    state.event(ev("worker-offline", pid=100))
    assert not state.workers[W1].alive(now=ev.now)
    state.event({**ev("worker-heartbeat", freq=2.0, pid=200), "clock": 2})  # online missed
    assert state.workers[W1].alive(now=ev.now)
    state.event(ev("worker-offline", pid=200))
    state.event({**ev("worker-online", freq=2.0, pid=300), "clock": 1})
    assert state.workers[W1].alive(now=ev.now)
    assert state.workers[W1].pid == 300


def test_a_worker_can_be_removed(ev):
    state = State()
    state.event(ev("worker-online"))
    assert state.remove_worker(W1)
    assert W1 not in state.workers
    assert not state.remove_worker(W1)


def test_task_events_are_signs_of_life(ev):
    state = State()
    state.event(ev("task-received", uuid="t1", name="tasks.add"))
    assert state.workers[W1].alive(now=ev.now)


# tasks: in order and out of order ------------------------------------------------------------
def test_a_task_follows_its_events(ev):
    state = State()
    state.ingest([ev("task-sent", CLIENT, uuid="t1", name="tasks.add", args="(1, 2)",
                     kwargs="{}", queue="celery", routing_key="celery"),
                  *ev.lifecycle("t1", result="3", runtime=0.01)])
    task = state.task("t1")
    assert task.state == states.SUCCESS and task.ready
    assert (task.name, task.args, task.result, task.runtime) == ("tasks.add", "(1, 2)", "3", 0.01)
    assert (task.worker, task.client, task.queue) == (W1, CLIENT, "celery")
    assert task.sent < task.received < task.started < task.succeeded
    assert [e[0] for e in timeline_steps(task.timeline)] == [
        "task-sent", "task-received", "task-started", "task-succeeded"]


def test_a_late_received_event_fills_in_without_undoing_success(ev):
    state = State()
    received, started, succeeded = ev.lifecycle("t1", result="3")
    state.ingest([succeeded, started, received])
    task = state.task("t1")
    assert task.state == states.SUCCESS
    assert (task.name, task.args, task.result) == ("tasks.add", "(1, 2)", "3")
    assert task.received is not None and task.started is not None


def test_failure_keeps_exception_and_traceback_whatever_the_order(ev):
    state = State()
    received, started, failed = ev.lifecycle("t1", final="task-failed",
                                             exception="ValueError('boom')",
                                             traceback="Traceback ...")
    state.ingest([failed, received, started])
    task = state.task("t1")
    assert task.state == states.FAILURE
    assert task.exception == "ValueError('boom')" and task.traceback == "Traceback ..."


def test_task_sent_after_the_worker_received_it_does_not_go_back_to_pending(ev):
    state = State()
    sent = ev("task-sent", CLIENT, uuid="t1", name="tasks.add", queue="hipri")
    state.event(ev("task-received", uuid="t1", name="tasks.add"))
    state.event(sent)
    task = state.task("t1")
    assert task.state == states.RECEIVED
    assert task.client == CLIENT and task.queue == "hipri"


def test_a_retried_task_cycles_and_ends_with_its_last_run(ev):
    state = State()
    state.ingest([*ev.lifecycle("t1", final="task-retried", exception="Retry in 1s"),
                  ev("task-received", uuid="t1", name="tasks.add", retries=1),
                  ev("task-started", uuid="t1"),
                  ev("task-succeeded", uuid="t1", result="3")])
    task = state.task("t1")
    assert task.state == states.SUCCESS and task.retries == 1


def test_a_retry_event_arriving_after_the_next_run_started_is_older(ev):
    state = State()
    received, started, retried = ev.lifecycle("t1", final="task-retried")
    again = ev("task-received", uuid="t1", name="tasks.add", retries=1)
    running = ev("task-started", uuid="t1")
    state.ingest([received, started, again, running, retried])
    assert state.task("t1").state == states.STARTED
    assert state.task("t1").retries == 1


def test_a_task_retried_on_another_worker_moves_to_it(ev):
    state = State()
    state.ingest(ev.lifecycle("t1", name="tasks.add", final="task-retried"))
    received_elsewhere = ev("task-received", W2, uuid="t1", name="tasks.add", retries=1)
    state.event(received_elsewhere)
    task = state.task("t1")
    assert task.state == states.RECEIVED and task.worker == W2
    assert state.tasks_by_worker(W2) == [task]
    assert state.tasks_by_worker(W1) == []


@given(st.permutations(range(4)))
@settings(max_examples=60, deadline=None)
def test_any_arrival_order_of_one_run_ends_in_its_final_state(order):
    ev = Events()
    run = [ev("task-sent", CLIENT, uuid="t1", name="tasks.add", args="(1, 2)"),
           *ev.lifecycle("t1", result="1")]
    state = State()
    state.ingest(run[i] for i in order)
    task = state.task("t1")
    assert task.state == states.SUCCESS
    assert (task.name, task.args, task.result, task.worker) == ("tasks.add", "(1, 2)", "1", W1)


def test_the_timeline_is_bounded(ev):
    state = State()
    for _ in range(TIMELINE_MAX + 10):
        state.event(ev("task-retried", uuid="t1"))
    assert len(timeline_steps(state.task("t1").timeline)) == TIMELINE_MAX


def test_events_that_are_not_about_workers_or_tasks_are_counted_and_ignored(ev):
    state = State()
    state.ingest([ev("custom-thing"), ev("task-received"), {"no": "type"}])
    assert state.event_count == 3
    assert len(state) == 0 and state.workers == {}


# indexes and the memory bound ------------------------------------------------------------------
def test_tasks_by_type_and_by_worker(ev):
    state = State()
    state.ingest([*ev.lifecycle("a1", name="tasks.add"), *ev.lifecycle("a2", name="tasks.add"),
                  *ev.lifecycle("m1", name="tasks.mul", hostname=W2)])
    assert {t.uuid for t in state.tasks_by_type("tasks.add")} == {"a1", "a2"}
    assert [t.uuid for t in state.tasks_by_worker(W2)] == ["m1"]
    assert state.task_types() == {"tasks.add": 2, "tasks.mul": 1}


def test_a_name_learned_late_is_indexed(ev):
    state = State()
    state.event(ev("task-started", uuid="t1"))
    assert state.task_types() == {}
    state.event(ev("task-received", uuid="t1", name="tasks.add"))
    assert [t.uuid for t in state.tasks_by_type("tasks.add")] == ["t1"]


def test_memory_is_bounded_and_finished_tasks_go_first(ev):
    state = State(max_tasks=3, track_changes=True)
    state.event(ev("task-started", uuid="running", name="tasks.slow"))
    state.ingest(ev.lifecycle("done1"))
    state.ingest(ev.lifecycle("done2"))
    state.ingest(ev.lifecycle("done3"))
    assert len(state) == 3
    assert state.task("running") is not None and state.task("done1") is None
    assert state.take_changes().removed == ["done1"]
    assert {t.uuid for t in state.tasks_by_type("tasks.add")} == {"done2", "done3"}


def test_the_least_recently_updated_task_is_forgotten_first(ev):
    state = State(max_tasks=2)
    state.ingest(ev.lifecycle("old"))
    state.ingest(ev.lifecycle("newer"))
    state.event(ev("task-succeeded", uuid="old", result="again"))  # touched: now the youngest
    state.ingest(ev.lifecycle("newest"))
    assert {t.uuid for t in state.tasks()} == {"old", "newest"}


def test_past_the_bound_a_hundredth_of_the_tasks_goes_at_once_finished_ones_first(ev):
    """Plain dicts keep the LRU orders: forgetting in batches walks their holes once a batch."""
    state = State(max_tasks=300, track_changes=True)
    state.event(ev("task-started", uuid="running"))
    for n in range(300):
        state.ingest(ev.lifecycle(f"t{n}"))
    assert len(state) == 297  # 301 tasks: down to 300 less 3
    assert state.task("running") is not None
    assert state.take_changes().removed == sorted(["t0", "t1", "t2", "t3"])
    assert state.task("t4") is not None and state.task("t3") is None


def test_a_flood_of_tasks_stays_within_the_bound_and_indexes_stay_consistent(ev):
    state = State(max_tasks=500)
    for n in range(5_000):
        state.ingest(ev.lifecycle(f"t{n}", name=f"tasks.t{n % 7}",
                                  hostname=W1 if n % 2 else W2))
    assert len(state) == 500
    assert sum(state.task_types().values()) == 500
    assert len(state.tasks_by_worker(W1)) + len(state.tasks_by_worker(W2)) == 500
    assert state.event_count == 15_000


def test_changes_list_updated_tasks_once_then_start_over(ev):
    state = State(track_changes=True)
    state.ingest(ev.lifecycle("t1"))
    state.event(ev("task-received", uuid="t2"))
    changes = state.take_changes()
    assert sorted(t.uuid for t in changes.tasks) == ["t1", "t2"] and changes.removed == []
    assert state.take_changes().tasks == []


def test_a_task_handed_out_as_a_change_is_never_changed_again(ev):
    """Another thread (the console's UI) reads the records it was handed without a lock: later
    events change a copy that takes the record's place."""
    state = State(track_changes=True)
    received, started, succeeded = ev.lifecycle("t1")
    state.event(received)
    [handed] = state.take_changes().tasks
    state.ingest([started, succeeded])
    assert (handed.state, handed.started, len(timeline_steps(handed.timeline))) \
        == (states.RECEIVED, None, 1)
    current = state.task("t1")
    assert current is not handed and current.state == states.SUCCESS
    assert current.args == handed.args == "(1, 2)"
    assert state.take_changes().tasks == [current]


def test_a_task_not_yet_handed_out_changes_in_place(ev):
    state = State(track_changes=True)
    received, started, succeeded = ev.lifecycle("t1")
    state.event(received)
    first = state.task("t1")
    state.ingest([started, succeeded])
    assert state.task("t1") is first and first.state == states.SUCCESS


# throughput --------------------------------------------------------------------------------------
def test_throughput_counts_each_state_per_time_bucket(ev):
    state = State(throughput_interval=1.0, throughput_slots=10)
    state.ingest(ev.lifecycle("t1"))
    state.ingest(ev.lifecycle("t2", final="task-failed"))
    now = ev.now + 1
    assert sum(state.throughput.series(states.SUCCESS, now)) == 1
    assert sum(state.throughput.series(states.FAILURE, now)) == 1
    assert sum(state.throughput.series(states.RECEIVED, now)) == 2
    assert len(state.throughput.series(states.SUCCESS, now)) == 10
    assert set(state.throughput.keys()) >= {states.RECEIVED, states.STARTED, states.SUCCESS}


def test_throughput_forgets_what_is_older_than_its_window():
    throughput = Throughput(interval=1.0, slots=5)
    throughput.add("SUCCESS", 100.0, n=4)
    throughput.add("SUCCESS", 102.5)
    assert throughput.series("SUCCESS", now=102.9) == [0, 0, 4, 0, 1]
    assert throughput.series("SUCCESS", now=106.0) == [1, 0, 0, 0, 0]
    throughput.add("SUCCESS", 90.0)  # too old to count
    assert sum(throughput.series("SUCCESS", now=106.0)) == 1
    assert throughput.series("SUCCESS", now=200.0) == [0] * 5


def test_throughput_rate_is_per_second():
    throughput = Throughput(interval=1.0, slots=60)
    for second in range(10):
        throughput.add("SUCCESS", 1000.0 + second, n=5)
    assert throughput.rate("SUCCESS", window=10, now=1009.5) == pytest.approx(5.0)


def test_a_late_event_from_the_previous_worker_does_not_move_the_task_back(ev):
    state = State()
    received, started, retried = ev.lifecycle("t1", final="task-retried")
    state.ingest([received, retried])
    state.event(ev("task-received", W2, uuid="t1", name="tasks.add", retries=1))
    state.event(started)  # W1's, delayed
    task = state.task("t1")
    assert task.state == states.RECEIVED and task.worker == W2


def test_small_clock_differences_between_hosts_cannot_undo_a_success(ev):
    state = State()
    succeeded = ev("task-succeeded", W2, uuid="t1", result="3")
    started = ev("task-started", W1, uuid="t1")
    started["timestamp"] = succeeded["timestamp"] + 0.5  # W1's clock runs a little ahead
    state.ingest([succeeded, started])
    assert state.task("t1").state == states.SUCCESS


def test_a_client_with_a_fast_clock_cannot_make_a_task_pending_again(ev):
    state = State()
    state.event(ev("task-received", uuid="t1", name="tasks.add"))
    sent = ev("task-sent", CLIENT, uuid="t1", name="tasks.add")
    sent["timestamp"] += 60
    state.event(sent)
    assert state.task("t1").state == states.RECEIVED


def test_values_many_tasks_repeat_are_one_string_in_memory():
    """100,000 tasks hold one ``{}``, one queue name and no second copy of their own id."""
    import json
    state = State()
    for uuid in ("t1", "t2"):
        # Decoded from JSON, as the receiver does: equal strings, distinct objects.
        state.event(json.loads(json.dumps({
            "type": "task-received", "uuid": uuid, "hostname": "w", "timestamp": 1.0,
            "name": "a", "kwargs": "{}", "queue": "celery", "root_id": uuid,
            "args": "(1, 2)"})))
    first, second = state.task("t1"), state.task("t2")
    assert first is not None and second is not None
    assert first.kwargs is second.kwargs and first.queue is second.queue
    assert first.root_id is first.uuid
