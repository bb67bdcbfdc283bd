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

    assert not app.tasks_override_apply_async and not add.overrides_apply_async
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


def test_under_always_eager_a_signature_of_a_task_not_registered_is_an_error(
        eager: App, sent: list[Outgoing]) -> None:
    with pytest.raises(NotRegistered, match=r"tasks\.elsewhere"):
        Signature("tasks.elsewhere", (1,), app=eager).delay()
    assert sent == []
