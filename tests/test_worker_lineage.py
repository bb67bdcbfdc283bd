"""On a live worker, what a task sends from inside its body names that task as its parent and
shares its root, on the prefork and threads pools; two tasks running at once in one threads
process each name their own. With ``task_inherit_parent_priority`` it, and the task's link,
get the task's priority."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from qtui.core.canvas import Signature

from .processes import write_module
from .worker_helpers import REDIS_URL, TASKS, Setup

LINEAGE_TASKS = TASKS + """

@app.task(bind=True)
def spawn(self, tag, together):
    # wait until ``together`` spawns run at once, so each sends while the other runs
    _redis.rpush(f"{KEY}:running", tag)
    deadline = time.time() + 20
    while _redis.llen(f"{KEY}:running") < together and time.time() < deadline:
        time.sleep(0.01)
    record("spawn", tag=tag, id=self.request.id, root=self.request.root_id)
    child.delay(tag)


@app.task(bind=True)
def child(self, tag):
    record("child", tag=tag, parent=self.request.parent_id, root=self.request.root_id,
           priority=self.request.delivery_info.get("priority"))
"""


@pytest.fixture
def lineage_setup(tmp_path, unique, redis_url) -> Iterator[Setup]:
    write_module(tmp_path, "tasks", LINEAGE_TASKS)
    setup = Setup(tmp_path, f"qw-{unique}", redis_url, redis_url)
    yield setup
    redis.Redis.from_url(REDIS_URL).delete(f"{setup.queue}:running")
    setup.cleanup()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_two_tasks_running_at_once_each_send_as_the_parent_of_their_own_child(
        lineage_setup: Setup, pool: str) -> None:
    app = lineage_setup.app()
    sent = {tag: app.send_task("tasks.spawn", (tag, 2), root_id=f"root-{tag}").id
            for tag in ("a", "b")}
    app.close()
    with lineage_setup.worker("-P", pool, "-c", "2"):
        children = lineage_setup.wait_records("child", 2, timeout=60)
    spawns = lineage_setup.records("spawn")
    assert sorted((r["tag"], r["id"], r["root"]) for r in spawns) == [
        ("a", sent["a"], "root-a"), ("b", sent["b"], "root-b")]
    assert len({r["pid"] for r in spawns}) == (1 if pool == "threads" else 2)
    assert sorted((r["tag"], r["parent"], r["root"]) for r in children) == [
        ("a", sent["a"], "root-a"), ("b", sent["b"], "root-b")]


@pytest.mark.timeout(60)
def test_a_task_sent_from_outside_a_task_has_no_parent(lineage_setup: Setup) -> None:
    app = lineage_setup.app()
    sent = app.send_task("tasks.child", ("solo",)).id
    app.close()
    with lineage_setup.worker("-P", "solo"):
        children = lineage_setup.wait_records("child", 1)
    assert [(r["parent"], r["root"]) for r in children] == [(None, sent)]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_with_inherit_parent_priority_a_child_and_a_link_get_the_tasks_priority(
        lineage_setup: Setup, pool: str) -> None:
    lineage_setup.conf["task_inherit_parent_priority"] = True
    app = lineage_setup.app()
    link = Signature("tasks.child", ("linked",), immutable=True).set(priority=1)
    sent = app.send_task("tasks.spawn", ("p", 1), priority=5, link=link).id
    app.close()
    with lineage_setup.worker("-P", pool, "-c", "1"):
        children = lineage_setup.wait_records("child", 2, timeout=60)
    assert sorted((r["tag"], r["parent"], r["priority"]) for r in children) == [
        ("linked", sent, 5), ("p", sent, 5)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_with_inherit_parent_priority_an_errback_keeps_no_priority_of_its_own(
        lineage_setup: Setup, pool: str) -> None:
    """Celery's backend sends an errback naming the failed task as its parent and root, and
    its ``send_task`` gives the running task's priority only to a send that leaves an id to be
    filled in: an errback with no priority has none, whether the task raised or ran past its
    time limit (before, the raise's errback got the task's 5 on both pools, the time limit's
    on threads too)."""
    lineage_setup.conf["task_inherit_parent_priority"] = True
    app = lineage_setup.app()
    app.send_task("tasks.fail", ("boom",), priority=5,
                  link_error=Signature("tasks.child", ("raised",), immutable=True))
    app.send_task("tasks.slow", (15,), priority=5, time_limit=1,
                  link_error=Signature("tasks.child", ("killed",), immutable=True))
    app.close()
    with lineage_setup.worker("-P", pool, "-c", "2"):
        errbacks = lineage_setup.wait_records("child", 2, timeout=60)
    assert sorted((r["tag"], r["priority"]) for r in errbacks) == [
        ("killed", 0), ("raised", 0)]  # 0: the envelope's default
