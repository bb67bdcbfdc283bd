"""How a signature is applied, as Celery's are: through its task's own ``apply_async`` when the
task's class overrides it (a signature, each member of a group, a chain's first step, a step a
worker sends after a task), and here and now under ``task_always_eager`` (a signature, group,
chain, chord or chunks gives eager results and sends nothing)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from qtui.core import App, GroupResult, NotRegistered, Signature, Task, chain, chord, group, sending
from qtui.core.canvas import apply
from qtui.core.eager import EagerResult
from qtui.core.sending import Outgoing


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[Outgoing]:
    """What each send would have put on the broker, in order (nothing is sent)."""
    outgoing: list[Outgoing] = []
    monkeypatch.setattr(sending, "send", lambda _app, batch, *_: outgoing.extend(batch))
    return outgoing


class Audited(Task):
    """A task class whose ``apply_async`` notes each call and marks the message, as a Celery
    project's base class may (to add headers, audit, route)."""

    calls: ClassVar[list[tuple[Any, ...]]] = []

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        Audited.calls.append((self.name, tuple(args or ()), dict(kwargs or {})))
        return super().apply_async(args, kwargs, **{**options, "headers": {"audited": True}})


@pytest.fixture
def app() -> Iterator[App]:
    app = App("calls", broker="memory://", backend=None, task_default_queue="calls")
    Audited.calls = []
    yield app
    app.close()


def test_a_signature_group_and_chain_go_through_the_tasks_own_apply_async(
        app: App, sent: list[Outgoing]) -> None:
    @app.task(name="tasks.add", base=Audited, ignore_result=True)
    def add(x: int, y: int = 0) -> int:
        return x + y

    add.s(1).apply_async(kwargs={"y": 2})
    group(add.s(2), add.s(3)).apply_async()
    chain(add.s(4), add.s(5)).apply_async()

    assert Audited.calls == [("tasks.add", (1,), {"y": 2}), ("tasks.add", (2,), {}),
                             ("tasks.add", (3,), {}), ("tasks.add", (4,), {})]
    assert [o.message.headers.get("audited") for o in sent] == [True] * 4
    assert [o.message.group_index for o in sent[1:3]] == [0, 1]


def test_a_step_a_worker_sends_after_a_task_goes_through_its_tasks_apply_async(
        app: App, sent: list[Outgoing]) -> None:
    @app.task(name="tasks.add", base=Audited, ignore_result=True)
    def add(x: int, y: int = 0) -> int:
        return x + y

    apply(app, dict(add.s(1)), (10,), parent_id="p", root_id="r")

    assert Audited.calls == [("tasks.add", (10, 1), {})]
    assert (sent[0].message.parent_id, sent[0].message.headers.get("audited")) == ("p", True)


def test_a_task_that_does_not_override_apply_async_is_sent_as_before(
        app: App, sent: list[Outgoing]) -> None:
    @app.task(name="tasks.add", ignore_result=True)
    def add(x: int, y: int = 0) -> int:
        return x + y

    group(add.s(1), add.s(2)).apply_async()

    assert not add.overrides_apply_async
    assert Audited.calls == [] and len(sent) == 2


@pytest.fixture
def eager(app: App) -> App:
    app.conf.task_always_eager = True
    return app


def test_under_always_eager_a_signature_runs_here_through_its_tasks_apply_async(
        eager: App, sent: list[Outgoing]) -> None:
    @eager.task(name="tasks.add", base=Audited)
    def add(x: int, y: int = 0) -> int:
        return x + y

    result = add.s(1).delay(y=2)

    assert isinstance(result, EagerResult) and result.get() == 3
    assert Audited.calls == [("tasks.add", (1,), {"y": 2})]
    assert sent == []


def test_under_always_eager_groups_chains_and_chords_run_here(
        eager: App, sent: list[Outgoing]) -> None:
    @eager.task(name="tasks.add")
    def add(x: int, y: int = 0) -> int:
        return x + y

    @eager.task(name="tasks.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    members = group(add.s(i) for i in range(3)).apply_async(kwargs={"y": 1})
    steps = (add.s(1, 1) | add.s(10)).delay()
    joined = chord([add.s(1), add.s(2)], tsum.s()).apply_async(kwargs={"y": 5})
    parts = add.chunks([(1, 1), (2, 2), (3, 3)], 2).apply_async()

    assert isinstance(members, GroupResult) and members.get() == [1, 2, 3]
    assert all(isinstance(r, EagerResult) for r in members.results)
    assert (steps.get(), steps.parent.get()) == (12, 2)
    assert (joined.get(), joined.parent.get()) == (13, [6, 7])
    assert parts.get() == [[2, 4], [6]]
    assert sent == []


def test_under_always_eager_a_signature_of_a_task_not_registered_here_is_sent_by_name(
        eager: App, sent: list[Outgoing]) -> None:
    """As Celery's signature falls back to ``send_task``: a task of another service."""
    result = Signature("tasks.elsewhere", (1,), app=eager).delay()

    assert [(o.message.task, o.message.args, o.message.id) for o in sent] == [
        ("tasks.elsewhere", (1,), result.id)]


def test_under_always_eager_a_group_of_a_task_not_registered_here_is_an_error(
        eager: App, sent: list[Outgoing]) -> None:
    with pytest.raises(NotRegistered, match=r"tasks\.elsewhere"):
        group(Signature("tasks.elsewhere", (1,), app=eager)).delay()
    assert sent == []


def test_a_step_a_worker_sends_through_an_override_is_not_checked(
        app: App, sent: list[Outgoing]) -> None:
    """What a worker sends after a task goes out as it is and fails when it runs, as for a
    task without an override: the override's own call to ``Task.apply_async`` does not check."""
    @app.task(name="tasks.add", base=Audited, ignore_result=True)
    def add(x: int, y: int) -> int:
        return x + y

    apply(app, dict(add.s(1, 2)), (3,), parent_id="p", root_id="p")

    assert [(o.message.task, o.message.args) for o in sent] == [("tasks.add", (3, 1, 2))]
    with pytest.raises(TypeError, match=r"tasks\.add"):  # a client's call is still checked
        add.s(1, 2).delay(3)


def test_a_worker_keeps_a_tasks_success_when_its_next_step_through_an_override_does_not_fit(
        app: App, sent: list[Outgoing]) -> None:
    from qtui.core import states
    from qtui.core.protocol import TaskMessage
    from qtui.workers import canvas as worker_canvas
    from qtui.workers.execution import Outcome

    @app.task(name="tasks.add", base=Audited, ignore_result=True)
    def add(x: int, y: int) -> int:
        return x + y

    message = TaskMessage(id="t-1", task="tasks.add", chain=[dict(add.s(1, 2))])
    outcome = Outcome(job_id=1, state=states.SUCCESS, runtime=0.1)
    value = worker_canvas.before_store(app, message, outcome, 3)

    assert (outcome.state, outcome.dead_letter, value) == (states.SUCCESS, None, 3)
    assert [(o.message.task, o.message.args) for o in sent] == [("tasks.add", (3, 1, 2))]


class Skipping(Task):
    """An override that sends nothing and returns None (Celery ignores what it returns)."""

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        Audited.calls.append((self.name, tuple(args or ()), options.get("task_id")))
        return None


def test_a_step_a_worker_sends_through_an_override_returning_none_has_the_id_it_was_given(
        app: App, sent: list[Outgoing]) -> None:
    @app.task(name="tasks.skip", base=Skipping)
    def skip(x: int) -> int:
        return x

    task_id = apply(app, dict(skip.s()), (5,), parent_id="p")

    assert Audited.calls == [("tasks.skip", (5,), task_id)] and task_id and sent == []


def test_an_apply_async_patched_on_one_task_is_called_by_its_signatures_and_groups(
        app: App, sent: list[Outgoing]) -> None:
    from unittest import mock

    @app.task(name="tasks.add")
    def add(x: int, y: int = 0) -> int:
        return x + y

    with mock.patch.object(add, "apply_async") as patched:
        add.s(1).delay()
        group(add.s(1), add.s(2)).apply_async()
        chain(add.s(1), add.s(2)).apply_async()

    assert patched.call_count == 4 and sent == []


@pytest.fixture
def linked(eager: App) -> tuple[list[Any], Task, Task, Task]:
    """``seen`` (what ``tasks.record`` got, in order) and the eager tasks ``tasks.add``,
    ``tasks.fail`` (raises, whatever it is given) and ``tasks.record``."""
    seen: list[Any] = []

    @eager.task(name="tasks.add")
    def add(x: int, y: int = 0) -> int:
        return x + y

    @eager.task(name="tasks.fail")
    def fail(*args: Any) -> None:
        raise ValueError(args)

    @eager.task(name="tasks.record")
    def record(value: Any) -> None:
        seen.append(value)

    return seen, add, fail, record


def test_under_always_eager_links_get_the_result_and_errbacks_the_failed_tasks_id(
        linked: tuple[list[Any], Task, Task, Task], sent: list[Outgoing]) -> None:
    seen, add, fail, record = linked

    add.s(1, 2).set(link=record.s()).apply_async()
    chain(add.s(1, 2), add.s(3)).set(link=record.s()).apply_async()
    add.apply_async((10, 1), link=[record.s(), record.s()])
    failed = fail.apply_async(link_error=record.s(), link=add.s(1))

    assert seen == [3, 6, 11, 11, failed.id] and failed.failed() and sent == []


def test_under_always_eager_a_chain_runs_its_error_link_for_the_step_that_failed(
        linked: tuple[list[Any], Task, Task, Task], sent: list[Outgoing]) -> None:
    seen, add, fail, record = linked

    result = chain(add.s(1, 2), fail.s()).set(link_error=record.s()).apply_async()

    assert seen == [result.id] and result.failed() and result.parent.get() == 3


def test_under_always_eager_a_chains_link_on_a_closing_chord_goes_to_its_body(
        linked: tuple[list[Any], Task, Task, Task], sent: list[Outgoing]) -> None:
    seen, add, _fail, record = linked

    steps = chain(add.s(1, 1), chord([add.s(1), add.s(2)], record.s())).set(link=record.s())
    steps.apply_async()

    assert seen == [[3, 4], None]


def test_a_chain_piped_on_keeps_its_links_on_its_steps(app: App) -> None:
    @app.task(name="tasks.add")
    def add(x: int, y: int = 0) -> int:
        return x + y

    errback, callback = add.si(0), add.si(1)
    piped = chain(add.s(1), add.s(2)).set(link_error=[errback], link=[callback]) | add.s(3)

    assert [(s.options.get("link_error"), s.options.get("link")) for s in piped.tasks] == [
        ([errback], None), ([errback], [callback]), (None, None)]


def test_a_chains_links_are_added_to_its_steps_own(app: App, sent: list[Outgoing]) -> None:
    @app.task(name="tasks.add", ignore_result=True)
    def add(x: int, y: int = 0) -> int:
        return x + y

    first, last = add.s(1), add.s(2)
    first.link_error(add.si(-1))
    last.link(add.si(10))
    chain(first, last).apply_async(link_error=add.si(-2), link=add.si(20))

    message = sent[0].message
    step = message.chain[0] if message.chain else {}
    assert [[list(s["args"]) for s in links] for links in (
        message.errbacks or [], step["options"]["link_error"], step["options"]["link"])] == [
        [[-1], [-2]], [[-2]], [[10], [20]]]
