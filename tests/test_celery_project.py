"""A Celery project laid out as Celery's documentation shows it, unchanged (no qtui import in it),
run by ``qtui -A proj run-worker`` and driven by Celery's own client: the outcomes, states,
handlers and signals are a Celery worker's. Each test runs twice per broker (Redis, RabbitMQ;
results on Redis): on ``qtui -A proj run-worker`` and on ``celery -A proj worker`` (both prefork,
two processes, one of each kind per broker for the module), so every expected outcome is checked
against the real Celery worker too; each test uses its own task ids and records."""

from __future__ import annotations

import importlib
import logging
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery import _state as celery_state

from qtui.core.celery_app import CeleryApp
from qtui.core.exceptions import ConfigError
from qtui.core.loader import find_app

from .processes import running
from .services import AMQP_HOST, AMQP_PORT, REDIS_HOST, REDIS_PORT, need

#: The project is imported here once per broker, and no task of it is registered twice (see
#: ``proj``): Celery's warning is an error.
pytestmark = pytest.mark.filterwarnings("error::celery.exceptions.DuplicateTaskNameWarning")

REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
AMQP_URL = f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}//"

PROJ_INIT = """\
from .celery import app as celery_app

__all__ = ("celery_app",)
"""

PROJ_CELERY = """\
from celery import Celery

app = Celery("proj", broker={broker!r}, backend={backend!r}, include=["proj.tasks"])
app.conf.update(task_default_queue={queue!r}, task_track_started=True, result_extended=True)
app.conf.task_routes = {{"proj.tasks.where": {{"queue": {queue!r} + "-routed"}}}}
app.conf.task_annotations = {{"proj.tasks.limited": {{"rate_limit": "5/s"}}}}
"""

PROJ_TASKS = """\
import os
import time

import redis
from celery import Task, shared_task
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded
from celery.signals import (task_failure, task_postrun, task_prerun, task_received, task_retry,
                            task_revoked, worker_init, worker_process_init, worker_ready)

from .celery import app

records = redis.Redis.from_url({backend!r})
KEY = {key!r}


def record(*words):
    records.rpush(KEY, " ".join(str(w) for w in words))


@task_received.connect
def received(sender=None, request=None, **_):
    record("task_received", request.id)


@task_prerun.connect
def prerun(sender=None, task_id=None, task=None, args=None, kwargs=None, **_):
    record("prerun", task_id, task.name, list(args))


@task_postrun.connect
def postrun(sender=None, task_id=None, task=None, retval=None, state=None, **_):
    record("postrun", task_id, state)


@task_failure.connect
def failure(sender=None, task_id=None, exception=None, **_):
    record("task_failure", task_id, type(exception).__name__)


@task_retry.connect
def retried(sender=None, request=None, reason=None, **_):
    record("task_retry", request.id)


@task_revoked.connect
def revoked(sender=None, request=None, expired=None, **_):
    record("task_revoked", request.id, expired)


@worker_init.connect
def init(sender=None, **_):
    record("worker_init")


@worker_ready.connect
def ready(sender=None, **_):
    record("worker_ready")


@worker_process_init.connect
def process_init(sender=None, **_):
    record("worker_process_init", os.getpid())


class Recorded(Task):
    def before_start(self, task_id, args, kwargs):
        record("before_start", task_id)

    def on_success(self, retval, task_id, args, kwargs):
        record("on_success", task_id, retval)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        record("on_failure", task_id, type(exc).__name__)

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        record("on_retry", task_id)

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        record("after_return", task_id, status)


@app.task(base=Recorded)
def add(x, y):
    return x + y


@shared_task
def mul(x, y):
    return x * y


@app.task(bind=True)
def context(self):
    request = self.request
    return {{"id": request.id, "args": request.args, "kwargs": request.kwargs,
            "retries": request.retries, "hostname": request.hostname,
            "correlation_id": request.correlation_id, "root_id": request.root_id,
            "parent_id": request.parent_id, "routing_key": request.delivery_info["routing_key"],
            "eta": request.eta, "expires": request.expires, "is_eager": request.is_eager,
            "priority": request.delivery_info.get("priority"), "now": time.time()}}


@app.task(bind=True)
def where(self):
    return self.request.delivery_info["routing_key"]


@app.task
def limited(token):
    record("limited", token, time.time())


@app.task(bind=True)
def part(self, i, token):
    time.sleep(0.1)
    record("part", token, i, self.request.hostname)
    return i * 10


@app.task
def collect(values, token):
    record("collect", token, ",".join(str(v) for v in values))
    return values


@app.task
def errback(request, exc, traceback):
    record("errback", request.id, type(exc).__name__, "ValueError" in traceback)


@app.task(base=Recorded)
def fail(message):
    raise ValueError(message)


@app.task(bind=True, base=Recorded, max_retries=5)
def retry_twice(self):
    if self.request.retries < 2:
        raise self.retry(countdown=0.1)
    return self.request.retries


@app.task(bind=True, autoretry_for=(KeyError,), retry_backoff=0.1, retry_jitter=False,
          max_retries=4)
def flaky(self, counter):
    if records.incr(counter) < 3:
        raise KeyError(counter)
    return self.request.retries


@app.task(bind=True)
def wait_for(self, key):
    records.blpop(key, timeout=20)
    return "released"


@app.task
def sum_of(numbers):
    return sum(numbers)


@app.task(soft_time_limit=0.3)
def cleans_up():
    try:
        while True:
            time.sleep(0.01)
    except SoftTimeLimitExceeded:
        return "cleaned up"


@app.task
def rejected():
    raise Reject("not for this worker", requeue=False)


@app.task
def ignored():
    raise Ignore()
"""


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def project(request, tmp_path_factory) -> Iterator[Path]:
    """proj/ (``__init__.py``, ``celery.py``, ``tasks.py``) on the test's own queue, with its
    broker on Redis or RabbitMQ and its results (and the test's records) on Redis."""
    need("Redis", REDIS_HOST, REDIS_PORT)
    broker = REDIS_URL
    if request.param == "rabbitmq":
        need("RabbitMQ", AMQP_HOST, AMQP_PORT)
        broker = AMQP_URL
    root = tmp_path_factory.mktemp("celery-project")
    token = uuid.uuid4().hex[:10]
    package = root / "proj"
    package.mkdir()
    (package / "__init__.py").write_text(PROJ_INIT)
    (package / "celery.py").write_text(
        PROJ_CELERY.format(broker=broker, backend=REDIS_URL, queue=f"proj-{token}"))
    (package / "tasks.py").write_text(
        PROJ_TASKS.format(backend=REDIS_URL, key=f"proj-records-{token}"))
    yield root
    redis.Redis.from_url(REDIS_URL).delete(f"proj-records-{token}")


@pytest.fixture(scope="module")
def proj(project: Path) -> Iterator[Any]:
    """The project's modules as its client code imports them (Celery's client only)."""
    sys.path.insert(0, str(project))
    shared = set(celery_state._on_app_finalizers)  # Celery's built-in tasks (imported above)
    tasks = None
    try:
        tasks = importlib.import_module("proj.tasks")
        yield tasks
    finally:
        sys.path.remove(str(project))
        for name in [n for n in sys.modules if n == "proj" or n.startswith("proj.")]:
            del sys.modules[name]
        # Its tasks are shared ones: Celery gives them to every app alive or made later in this
        # process. Kept, the next import's copies would join them, and the project's app and
        # every later Celery app (another test file's client, say) would warn that each name is
        # registered twice.
        if tasks is not None:
            tasks.app.close()
        celery_state._on_app_finalizers.intersection_update(shared)


@pytest.fixture(scope="module", params=["qtui", "celery"])
def kind(request) -> str:
    """Which worker runs the project: qtui's, or Celery's own (the outcome to match)."""
    return request.param


@pytest.fixture(scope="module")
def worker(project: Path, proj: Any, kind: str) -> Iterator[str]:
    """``qtui -A proj run-worker`` or ``celery -A proj worker`` (prefork, two processes, the
    default queue and the routed one), the records emptied first; yields its hostname."""
    hostname = f"proj-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    queue = proj.app.conf.task_default_queue
    common = ["-P", "prefork", "-c", "2", "-n", hostname, "-l", "INFO",
              "-Q", f"{queue},{queue}-routed"]
    if kind == "qtui":
        argv = [sys.executable, "-m", "qtui.tui.cli", "-A", "proj", "run-worker", *common]
        ready = f"qtui worker {hostname} ready."
    else:
        argv = [sys.executable, "-m", "celery", "-A", "proj", "worker", *common,
                "--without-mingle", "--without-gossip"]
        ready = f"{hostname} ready."
    proj.records.delete(proj.KEY)
    with running(argv, project, ready=ready, timeout=60):
        yield hostname


def records(proj: Any) -> list[str]:
    return [r.decode() for r in proj.records.lrange(proj.KEY, 0, -1)]


def wait_until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout}s: {check}")


def about(proj: Any, task_id: str) -> list[str]:
    """The records that name one task, in order."""
    return [r for r in records(proj) if f" {task_id}" in r]


# finding the app ----------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["proj", "proj.celery", "proj.celery:app"])
def test_dash_a_finds_a_celery_app_as_celery_does(spec, proj):
    app = find_app(spec)
    assert isinstance(app, CeleryApp)
    assert app.celery is proj.app
    # @app.task, @shared_task and the `include`d module's tasks, Celery's built-ins too
    assert {"proj.tasks.add", "proj.tasks.mul", "celery.chord_unlock"} <= set(app.tasks)
    assert app.conf.task_default_queue == proj.app.conf.task_default_queue
    assert app.conf.result_extended is True
    assert app.broker_url == proj.app.conf.broker_url


def test_worker_settings_qtui_lacks_are_named_in_one_warning(caplog):
    lacking = Celery("lacking", broker=REDIS_URL, set_as_current=False)
    lacking.conf.update(worker_direct=True, worker_prefetch_multiplier=2)
    with caplog.at_level(logging.WARNING, logger="qtui.core.celery_app"):
        app = CeleryApp(lacking)
    assert "worker_direct" in caplog.text
    assert "worker_prefetch_multiplier" not in caplog.text
    assert app.conf.worker_prefetch_multiplier == 2


def test_dash_a_names_what_is_not_an_app(proj):
    with pytest.raises(ConfigError, match="not a qtui or Celery app"):
        find_app("proj.tasks:records")


# running its tasks --------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_worker_signals_fire_at_start(proj, worker):
    wait_until(lambda: "worker_ready" in records(proj))
    # worker_process_init: Celery's pool processes send it as they start, qtui's before their
    # first task; a Celery worker's may come before or after worker_ready.
    started = [r for r in records(proj) if not r.startswith("worker_process_init ")]
    assert started[:2] == ["worker_init", "worker_ready"]


@pytest.mark.timeout(60)
def test_a_task_runs_with_its_handlers_and_signals(proj, worker):
    result = proj.add.delay(2, 3)
    assert result.get(timeout=20) == 5
    assert any(r.startswith("worker_process_init ") for r in records(proj))
    wait_until(lambda: len(about(proj, result.id)) >= 6)
    assert about(proj, result.id) == [
        f"task_received {result.id}",
        f"prerun {result.id} proj.tasks.add [2, 3]",
        f"before_start {result.id}",
        f"on_success {result.id} 5",
        f"after_return {result.id} SUCCESS",
        f"postrun {result.id} SUCCESS",
    ]


@pytest.mark.timeout(60)
def test_a_shared_task_runs(proj, worker):
    assert proj.mul.delay(6, 7).get(timeout=20) == 42


@pytest.mark.timeout(60)
def test_a_bound_task_sees_its_request(proj, worker):
    result = proj.context.apply_async(countdown=0.1, expires=60)
    seen = result.get(timeout=20)
    assert seen["id"] == seen["correlation_id"] == seen["root_id"] == result.id
    assert seen["parent_id"] is None and seen["retries"] == 0 and seen["is_eager"] is False
    assert seen["hostname"] == worker
    assert seen["routing_key"] == proj.app.conf.task_default_queue
    assert seen["eta"] and seen["expires"]


@pytest.mark.timeout(60)
def test_an_eta_task_runs_at_its_eta_and_sees_it(proj, worker):
    eta = datetime.now(timezone.utc) + timedelta(seconds=1)
    seen = proj.context.apply_async(eta=eta).get(timeout=20)
    assert datetime.fromisoformat(seen["eta"]) == eta
    assert seen["now"] >= eta.timestamp()


@pytest.mark.timeout(60)
def test_a_task_sees_the_priority_it_was_sent_with(proj, worker):
    assert proj.context.apply_async(priority=3).get(timeout=20)["priority"] == 3


@pytest.mark.timeout(60)
def test_a_routed_task_goes_to_its_route_s_queue(proj, worker):
    queue = f"{proj.app.conf.task_default_queue}-routed"
    result = proj.where.delay()
    assert result.get(timeout=20) == queue
    assert result.queue == queue


@pytest.mark.timeout(60)
def test_a_rate_limit_from_the_annotations_spaces_the_task_out(proj, worker):
    token = uuid.uuid4().hex[:8]
    results = [proj.limited.delay(token) for _ in range(4)]
    for result in results:
        result.get(timeout=20)
    times = sorted(float(r.split()[2]) for r in records(proj) if r.startswith(f"limited {token}"))
    assert len(times) == 4
    # 5/s: a token every 0.2 s after the first, so four runs span at least 0.6 s (less, a little,
    # where a token bucket starts full or the clock reads early).
    assert times[-1] - times[0] >= 0.5


@pytest.mark.timeout(60)
def test_extended_results_name_the_task_its_arguments_worker_and_queue(proj, worker):
    result = proj.add.delay(4, 5)
    assert result.get(timeout=20) == 9
    assert result.name == "proj.tasks.add"
    assert result.args == [4, 5] and result.kwargs == {}
    assert result.worker == worker
    assert result.queue == proj.app.conf.task_default_queue


@pytest.mark.timeout(60)
def test_a_running_task_is_started_when_track_started_is_on(proj, worker):
    release = f"release-{uuid.uuid4().hex[:8]}"
    result = proj.wait_for.delay(release)
    try:
        wait_until(lambda: result.state == "STARTED")
        assert result.info["hostname"] == worker
    finally:
        proj.records.rpush(release, "go")
    assert result.get(timeout=20) == "released"
    proj.records.delete(release)


@pytest.mark.timeout(60)
def test_a_failure_calls_on_failure_and_task_failure(proj, worker):
    result = proj.fail.delay("boom")
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=20)
    assert "ValueError: boom" in result.traceback
    wait_until(lambda: f"postrun {result.id} FAILURE" in about(proj, result.id))
    seen = about(proj, result.id)
    assert f"task_failure {result.id} ValueError" in seen
    assert f"on_failure {result.id} ValueError" in seen
    assert f"after_return {result.id} FAILURE" in seen


@pytest.mark.timeout(60)
def test_retry_runs_again_with_the_retries_counted(proj, worker):
    result = proj.retry_twice.delay()
    assert result.get(timeout=20) == 2
    # A Celery worker sends the retry before it calls on_retry and the retry signals: the run
    # that follows can store its result before the run it replaces has written its records.
    wait_until(lambda: about(proj, result.id).count(f"postrun {result.id} RETRY") == 2)
    seen = about(proj, result.id)
    assert seen.count(f"on_retry {result.id}") == 2
    assert seen.count(f"task_retry {result.id}") == 2
    assert seen.count(f"postrun {result.id} RETRY") == 2


@pytest.mark.timeout(60)
def test_autoretry_for_retries_with_backoff_until_it_succeeds(proj, worker):
    counter = f"flaky-{uuid.uuid4().hex[:8]}"
    try:
        assert proj.flaky.delay(counter).get(timeout=20) == 2
    finally:
        proj.records.delete(counter)


@pytest.mark.timeout(60)
def test_ignore_stores_nothing_after_started(proj, worker):
    result = proj.ignored.delay()
    wait_until(lambda: f"postrun {result.id} IGNORED" in about(proj, result.id))
    assert result.state == "STARTED"  # what track_started stored, as a Celery worker leaves it


@pytest.mark.timeout(60)
def test_a_soft_time_limit_raises_celerys_exception_in_the_task(proj, worker):
    assert proj.cleans_up.delay().get(timeout=20) == "cleaned up"


@pytest.mark.timeout(60)
def test_ignore_result_stores_nothing_but_runs(proj, worker):
    result = proj.add.apply_async((1, 1), ignore_result=True)
    wait_until(lambda: f"postrun {result.id} SUCCESS" in about(proj, result.id))
    assert result.state == "PENDING"


@pytest.mark.timeout(60)
def test_an_expired_task_is_revoked_with_task_revoked(proj, worker):
    # Due after its expiry: the worker holds it until its ETA, then finds it expired.
    result = proj.add.apply_async((1, 2), countdown=1, expires=0.5)
    wait_until(lambda: result.state == "REVOKED")
    wait_until(lambda: f"task_revoked {result.id} True" in about(proj, result.id))
    assert not any(r.startswith("prerun") for r in about(proj, result.id))


@pytest.mark.timeout(60)
def test_a_revoked_task_does_not_run(proj, worker):
    task_id = str(uuid.uuid4())
    proj.app.control.revoke(task_id)
    wait_until(lambda: task_id in (proj.app.control.inspect(destination=[worker], timeout=2)
                                   .revoked() or {}).get(worker, []))
    result = proj.add.apply_async((1, 2), task_id=task_id)
    wait_until(lambda: result.state == "REVOKED")
    wait_until(lambda: f"task_revoked {task_id} False" in about(proj, task_id))
    assert not any(r.startswith("prerun") for r in about(proj, task_id))


# canvas, followed by Celery's tracer -----------------------------------------------------------

@pytest.mark.timeout(60)
def test_a_chain_runs_each_step_with_the_previous_result(proj, worker):
    from celery import chain

    result = chain(proj.add.s(1, 2), proj.mul.s(4)).delay()
    assert result.get(timeout=20) == 12
    assert result.parent.get(timeout=20) == 3


@pytest.mark.timeout(60)
def test_a_chord_joins_its_header_once(proj, worker):
    from celery import chord

    result = chord([proj.add.s(i, i) for i in range(4)], proj.sum_of.s()).delay()
    assert result.get(timeout=20) == 12


@pytest.mark.timeout(60)
def test_an_immutable_step_does_not_get_the_previous_result(proj, worker):
    from celery import chain

    assert chain(proj.add.s(1, 2), proj.add.si(10, 10)).delay().get(timeout=20) == 20


@pytest.mark.timeout(60)
def test_a_group_returns_its_results_in_order(proj, worker):
    from celery import group

    result = group(proj.add.s(i, i) for i in range(5)).delay()
    assert result.get(timeout=20) == [0, 2, 4, 6, 8]
    assert result.completed_count() == 5


@pytest.mark.timeout(60)
def test_a_link_gets_the_result_and_its_parent_id(proj, worker):
    callback = proj.mul.s(10)
    linked = callback.freeze()
    parent = proj.add.apply_async((2, 2), link=callback)
    assert linked.get(timeout=20) == 40
    assert proj.app.backend.get_task_meta(linked.id)["parent_id"] == parent.id


@pytest.mark.timeout(60)
def test_a_link_error_gets_the_request_the_exception_and_the_traceback(proj, worker):
    result = proj.fail.apply_async(("linked",), link_error=proj.errback.s())
    with pytest.raises(ValueError, match="linked"):
        result.get(timeout=20)
    wait_until(lambda: any(r.startswith("errback") for r in about(proj, result.id)))
    assert f"errback {result.id} ValueError True" in about(proj, result.id)


@pytest.mark.timeout(120)
def test_a_chord_split_between_this_worker_and_a_celery_worker_runs_its_body_once(
        project, proj, worker, kind):
    """The header's parts are taken by this qtui worker and by a Celery worker beside it on the
    same queue (more parts than both prefetch); the join in the Redis result store counts each
    once and the body runs once, with the results in header order."""
    if kind == "celery":
        pytest.skip("the mix needs the qtui worker")
    from celery import chord

    celery_host = f"proj-celery-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    argv = [sys.executable, "-m", "celery", "-A", "proj", "worker", "-P", "solo", "-n",
            celery_host, "-l", "INFO", "--without-mingle", "--without-gossip"]
    token = uuid.uuid4().hex[:8]
    expected = [i * 10 for i in range(24)]
    with running(argv, project, ready=f"{celery_host} ready.", timeout=60):
        result = chord([proj.part.s(i, token) for i in range(24)], proj.collect.s(token)).delay()
        assert result.get(timeout=60) == expected
        parts = [r.split() for r in records(proj) if r.startswith(f"part {token} ")]
        assert sorted(int(p[2]) for p in parts) == list(range(24))
        assert {p[3] for p in parts} == {worker, celery_host}

        def bodies() -> list[str]:
            return [r for r in records(proj) if r.startswith(f"collect {token} ")]

        # A second body, had it been sent, would have run by now on one of the two workers.
        with pytest.raises(AssertionError):
            wait_until(lambda: len(bodies()) > 1, timeout=3)
    assert bodies() == [f"collect {token} {','.join(str(v) for v in expected)}"]


@pytest.mark.timeout(60)
def test_reject_without_requeue_dead_letters_the_message(proj, worker, kind):
    if kind == "celery":
        pytest.skip("qtui's own: a Celery worker drops the message (no dead-letter queue)")
    from kombu import Connection

    from qtui.workers.redelivery import direct_queue

    result = proj.rejected.delay()
    with Connection(proj.app.conf.broker_url) as conn:
        dead = direct_queue(f"{proj.app.conf.task_default_queue}.dead")(conn.default_channel)
        dead.declare()
        message = wait_until(lambda: dead.get(no_ack=True))
        assert message.headers["id"] == result.id
        dead.delete()
