"""What a task sends from inside its body is what Celery's client sends there: the running
task's id as each message's ``parent_id`` and its root (or its id) as the ``root_id``, on
every way of sending (``delay``, ``apply_async``, ``send_task``, a signature, a group, chain
or chord, ``send_many``), with the ids a caller gives winning; outside a task neither is set.
Whole messages compared as :mod:`tests.test_canvas_fidelity` compares them, the task run by
``apply()`` on each side (Celery's eager run is a running task to its ``send_task`` too)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest

from qtui.core import App

from .test_canvas_fidelity import Side, same_messages, sides  # noqa: F401 - the fixture
from .test_stamps_fidelity import followed

#: The running task's id: not an id ``Side.sent`` renames, so the messages show it as it is.
PARENT = "the-parent"
#: A fixed ETA (a countdown would differ between the two sides by the time between them).
ETA = datetime(2030, 1, 1, tzinfo=timezone.utc)


def in_task(send: Callable[[Side], Any], task_id: str = PARENT, priority: int | None = None
            ) -> Callable[[Side], Any]:
    """``send`` run inside the body of a task applied under ``task_id`` (with ``priority`` as
    its delivery priority) on a side."""
    def run(side: Side) -> None:
        def body() -> None:
            send(side)
        side.app.task(name="tasks.parent")(body).apply(task_id=task_id, priority=priority)
    return run


def _ids(sent: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    return [(m["headers"]["parent_id"], m["headers"]["root_id"]) for m in sent]


def _is_qtui(side: Side) -> bool:
    return isinstance(side.app, App)


@pytest.mark.timeout(30)
def test_delay_apply_async_and_send_task_in_a_task_name_it_parent_and_root(
        sides: dict[str, Side]) -> None:
    sent = same_messages(sides, in_task(lambda s: (
        s.add.delay(1), s.add.apply_async((2,), eta=ETA),
        s.app.send_task("tasks.other", (3,)))))
    assert _ids(sent) == [(PARENT, PARENT)] * 3


@pytest.mark.timeout(30)
def test_a_signature_group_chain_and_chord_in_a_task_name_it_parent_and_root(
        sides: dict[str, Side]) -> None:
    sent = same_messages(sides, in_task(lambda s: (
        s.add.s(1).apply_async(), s.add.s(2).delay(),
        s.canvas.group(s.add.s(3), s.add.s(4)).apply_async(),
        s.canvas.chain(s.add.s(5), s.add.s(6)).apply_async(),
        s.canvas.chord([s.add.s(7), s.add.s(8)], s.tsum.s()).apply_async())))
    assert _ids(sent) == [(PARENT, PARENT)] * 7


@pytest.mark.timeout(30)
def test_send_many_in_a_task_sends_what_celerys_calls_one_by_one_send(
        sides: dict[str, Side]) -> None:
    def send(side: Side) -> None:
        calls = [side.add.s(1), side.add.s(2, y=1), side.add.s(3).set(eta=ETA),
                 side.canvas.group(side.add.s(4), side.add.s(5))]
        if _is_qtui(side):
            side.app.send_many(calls)
        else:
            for call in calls:
                call.apply_async()

    sent = same_messages(sides, in_task(send))
    assert _ids(sent) == [(PARENT, PARENT)] * 5


@pytest.mark.timeout(30)
def test_the_ids_a_caller_gives_win_over_the_running_tasks(sides: dict[str, Side]) -> None:
    sent = same_messages(sides, in_task(lambda s: (
        s.add.apply_async((1,), parent_id="given-parent", root_id="given-root"),
        s.add.apply_async((2,), parent_id="given-parent"),
        s.add.apply_async((3,), root_id="given-root"))))
    assert _ids(sent) == [("given-parent", "given-root"), ("given-parent", PARENT),
                          (PARENT, "given-root")]


@pytest.mark.timeout(30)
def test_a_task_run_inside_another_sends_with_its_own_id_and_the_outer_root(
        sides: dict[str, Side]) -> None:
    def outer(side: Side) -> None:
        def inner() -> None:  # a def: Celery cannot make a task of a lambda
            side.add.delay(1)
        side.app.task(name="tasks.inner")(inner).apply(task_id="the-inner")

    sent = same_messages(sides, in_task(outer))
    assert _ids(sent) == [("the-inner", PARENT)]


@pytest.mark.timeout(30)
def test_a_task_applied_in_one_called_directly_in_a_task_is_its_own_root(
        sides: dict[str, Side]) -> None:
    """Celery's ``apply()`` takes its parent from the innermost task, which a direct call
    is: its request has no id, so the applied task has no parent and is its own root; a send
    from the direct call names the running task, as Celery's ``send_task`` skips that call."""
    seen: dict[str, Any] = {}

    def outer(side: Side) -> None:
        def inner() -> None:
            seen["qtui" if _is_qtui(side) else "celery"] = (inner_task.request.parent_id,
                                                          inner_task.request.root_id)
            side.add.delay(1)
        inner_task = side.app.task(name="tasks.inner")(inner)

        def mid() -> None:
            side.add.delay(2)
            inner_task.apply(task_id="the-inner")
        side.app.task(name="tasks.mid")(mid)()

    sent = same_messages(sides, in_task(outer))
    assert _ids(sent) == [(PARENT, PARENT), ("the-inner", "the-inner")]
    assert seen == {"celery": (None, "the-inner"), "qtui": (None, "the-inner")}


def _chain_roots(side: Side) -> list[tuple[Any, list[Any]]]:
    """Each message's ``root_id`` and those of its chain's steps (which ``Side.sent`` leaves
    out of the comparison), its own id written ``self``."""
    found = []
    for raw in reversed(side.redis.lrange(side.queue, 0, -1)):
        envelope = json.loads(raw)
        embed = json.loads(base64.b64decode(envelope["body"]))[2]
        own = envelope["headers"]["id"]
        found.append(tuple("self" if root == own else root for root in (
            envelope["headers"]["root_id"],
            *(step["options"].get("root_id") for step in embed["chain"] or ()))))
    return found


@pytest.mark.timeout(30)
@pytest.mark.parametrize("inside", [True, False])
def test_a_chains_steps_carry_the_root_celerys_carry(sides: dict[str, Side], inside: bool) -> None:
    def send(side: Side) -> None:
        side.canvas.chain(side.add.s(1), side.add.s(2), side.add.s(3)).apply_async()

    same_messages(sides, in_task(send) if inside else send)
    roots = {kind: _chain_roots(side) for kind, side in sides.items()}
    assert roots["qtui"] == roots["celery"]
    assert roots["qtui"] == [(PARENT if inside else "self", None, None)]


@pytest.mark.timeout(30)
def test_outside_a_task_a_send_has_no_parent_and_is_its_own_root(
        sides: dict[str, Side]) -> None:
    sent = same_messages(sides, lambda s: (s.add.delay(1), s.add.s(2).delay()))
    assert [(parent, root == m["headers"]["id"]) for m, (parent, root)
            in zip(sent, _ids(sent), strict=True)] == [(None, True)] * 2


def inheriting(sides: dict[str, Side]) -> dict[str, Side]:
    """``sides`` with ``task_inherit_parent_priority`` on."""
    for side in sides.values():
        side.app.conf.task_inherit_parent_priority = True
    return sides


@pytest.mark.timeout(30)
def test_a_send_from_a_task_inherits_its_priority_on_every_way_of_sending(
        sides: dict[str, Side]) -> None:
    """Priority 5 is on kombu's list for step 3 on both sides: every message sent there has
    the running task's priority, as Celery's ``send_task`` gives it (a chord's body is not sent
    yet: its options stay its own; ``send_many`` against Celery's one by one)."""
    def send(side: Side) -> None:
        side.add.delay(1)
        side.add.apply_async((2,), eta=ETA)
        side.app.send_task("tasks.other", (3,))
        side.add.s(4).apply_async()
        side.canvas.group(side.add.s(5), side.add.s(6)).apply_async()
        side.canvas.chain(side.add.s(7), side.add.s(8)).apply_async()
        side.canvas.chord([side.add.s(9)], side.tsum.s()).apply_async()
        if _is_qtui(side):
            side.app.send_many([side.add.s(10)])
        else:
            side.add.s(10).apply_async()

    sent = same_messages(inheriting(sides), in_task(send, priority=5), priority=3)
    assert [m["properties"]["priority"] for m in sent] == [5] * 9


@pytest.mark.timeout(30)
def test_a_priority_given_wins_over_the_running_tasks(sides: dict[str, Side]) -> None:
    sent = same_messages(inheriting(sides), in_task(lambda s: (
        s.add.apply_async((1,), priority=1), s.add.s(2).set(priority=2).delay()), priority=5))
    assert [m["properties"]["priority"] for m in sent] == [1, 2]


@pytest.mark.timeout(30)
def test_without_the_setting_a_send_from_a_task_has_no_priority(sides: dict[str, Side]) -> None:
    sent = same_messages(sides, in_task(lambda s: s.add.delay(1), priority=5))
    assert [m["properties"]["priority"] for m in sent] == [0]  # the envelope's default


@pytest.mark.timeout(30)
def test_a_finished_tasks_link_and_next_step_get_its_priority_over_their_own(
        sides: dict[str, Side]) -> None:
    """Celery's tracer passes the task's priority to its links' and next step's
    ``apply_async``: it wins over the priority they carry (7 here, on kombu's list for 6)."""
    def canvas(side: Side) -> Any:
        first = side.add.s(1).set(priority=0)
        first.link(side.tsum.s().set(priority=7))
        return side.canvas.chain(first, side.add.s(2).set(priority=7), side.add.s(3))

    sent = followed(inheriting(sides), canvas)
    assert [(m["headers"]["task"], m["args"], m["properties"]["priority"]) for m in sent] == [
        ("tasks.tsum", [1], 0), ("tasks.add", [1, 2], 0)]


@pytest.mark.timeout(30)
def test_a_failed_tasks_errback_keeps_its_own_priority(sides: dict[str, Side]) -> None:
    """Celery's tracer gives the task's priority to its links and next step only, not to its
    errbacks (sent by ``mark_as_failure``): an errback is sent with the priority it carries (7,
    on kombu's list for 6). qtui's side alone: Celery's ``apply()`` sends no errback."""
    side = inheriting(sides)["qtui"]
    side.add.apply(("x",), priority=5, link_error=side.tsum.si([0]).set(priority=7))
    assert [(m["headers"]["task"], m["properties"]["priority"])
            for m in side.sent(priority=6)] == [("tasks.tsum", 7)]


@pytest.mark.timeout(30)
def test_a_failed_tasks_errback_with_no_priority_gets_none(sides: dict[str, Side]) -> None:
    """An errback is sent naming its parent and root, so ``task_inherit_parent_priority``
    gives it nothing (Celery's ``send_task`` inherits only where it fills an id in): the failed
    task's 5 does not reach it (before, it did)."""
    side = inheriting(sides)["qtui"]
    side.add.apply(("x",), priority=5, link_error=side.tsum.si([0]))
    assert [(m["headers"]["task"], m["properties"]["priority"])
            for m in side.sent()] == [("tasks.tsum", 0)]


@pytest.mark.timeout(30)
def test_a_send_from_a_task_naming_both_ids_inherits_no_priority(sides: dict[str, Side]) -> None:
    """Celery inherits only when ``root_id`` or ``parent_id`` is left to be filled in: one of
    them given still inherits, both given does not."""
    inheriting(sides)
    for side in sides.values():
        in_task(lambda s: (s.app.send_task("tasks.other", (1,), parent_id="p", root_id="r"),
                           s.app.send_task("tasks.other", (2,), parent_id="p")), priority=5)(side)
    both, one = ([(m["args"], m["properties"]["priority"]) for m in side.sent(priority=step)]
                 for step in (0, 3) for side in [sides["qtui"]])
    assert (both, one) == ([([1], 0)], [([2], 5)])
    assert [side.sent(priority=step) for step in (0, 3) for side in [sides["qtui"]]] == \
        [side.sent(priority=step) for step in (0, 3) for side in [sides["celery"]]]
