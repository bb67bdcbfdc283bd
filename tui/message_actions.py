"""What the peek and dead-letter views do to messages: delete, move, requeue. Each blocks on the
broker (the console runs it in a thread worker) and returns an ActionResult for the
notification and the audit trail, named as the scripted command that does the same."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from qtui.core import App
from qtui.core import deadletters as dead
from qtui.core.peek import WaitingMessage
from qtui.core.queues import QueueInspector, inspector_for

from .actions import ActionResult


def _counted(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' if number != 1 else ''}"


def _gone(done: int, chosen: int) -> str:
    return f" ({chosen - done} had gone already)" if done < chosen else ""


def delete(app: App, queue: str, messages: Sequence[WaitingMessage]) -> ActionResult:
    """Remove peeked messages from ``queue``."""
    title, ids = f"delete from {queue}", tuple(m.task_id for m in messages)
    try:
        with inspector_for(app) as inspector:
            done = inspector.delete(queue, messages)
    except Exception as exc:  # the broker refused or is gone: the outcome says so
        return ActionResult(title, (f"could not delete: {exc}",), False, "peek delete",
                            (queue, *ids))
    return ActionResult(title, (f"deleted {_counted(done, 'message')} from {queue}"
                                f"{_gone(done, len(messages))}",), True, "peek delete",
                        (queue, *ids))


def move(app: App, queue: str, messages: Sequence[WaitingMessage], to: str) -> ActionResult:
    """Move peeked messages from ``queue`` to the back of ``to``."""
    title, ids = f"move {queue} to {to}", tuple(m.task_id for m in messages)
    try:
        with inspector_for(app) as inspector:
            done = inspector.move(queue, messages, lambda m: to)
    except Exception as exc:  # the broker refused or is gone: the outcome says so
        return ActionResult(title, (f"could not move: {exc}",), False, "peek move",
                            (queue, to, *ids))
    return ActionResult(title, (f"moved {_counted(done, 'message')} from {queue} to {to}"
                                f"{_gone(done, len(messages))}",), True, "peek move",
                        (queue, to, *ids))


def requeue_dead(app: App, letters: Mapping[str, Sequence[WaitingMessage]]) -> ActionResult:
    """Send dead letters (by dead-letter queue) back to the queues they came from."""
    return _each_dead(app, letters, "requeue", lambda inspector, queue, messages: dead.requeue(
        inspector, queue, messages, app.backend))


def delete_dead(app: App, letters: Mapping[str, Sequence[WaitingMessage]]) -> ActionResult:
    """Discard dead letters (by dead-letter queue)."""
    return _each_dead(app, letters, "delete", lambda inspector, queue, messages:
                      inspector.delete(queue, messages))


def _each_dead(app: App, letters: Mapping[str, Sequence[WaitingMessage]], verb: str,
               act: Callable[[QueueInspector, str, Sequence[WaitingMessage]], int]
               ) -> ActionResult:
    lines, ok = [], True
    targets = tuple(m.task_id for messages in letters.values() for m in messages)
    try:
        with inspector_for(app) as inspector:
            for queue, messages in letters.items():
                done = act(inspector, queue, messages)
                lines.append(f"{queue}: {verb}d {_counted(done, 'dead letter')}"
                             f"{_gone(done, len(messages))}")
    except Exception as exc:  # the broker refused or is gone: the outcome says so
        lines.append(f"could not {verb}: {exc}")
        ok = False
    return ActionResult(f"{verb} dead letters", tuple(lines), ok, f"dead {verb}",
                        (*letters, *targets))
