"""What the Scheduled view's actions do to ETA tasks not yet due: run now and delete. A
broker-held task is taken out of the delayed store (:mod:`qtui.core.scheduled`); a worker-held
one is in that worker's memory, so running it now revokes it there and sends a copy without
ETA under a new id (the worker drops any message with the revoked id), with the arguments its
worker reports at that moment and the sender's reprs where they mask them. These block on the
network: the console runs them in thread workers."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from qtui.core import App
from qtui.core.display import UNSHOWN
from qtui.core.scheduled import ScheduledTask, delete_from_store, run_now_in_store, with_arguments

from . import equivalents
from .actions import ActionResult, Actions, Retry
from .bulk import Target
from .equivalents import Equivalent

UNKNOWN_REPRS = "(masked: reprs unknown)"
"""The copy's ``argsrepr`` and ``kwargsrepr`` when its worker sent the arguments, not the reprs
(:data:`~qtui.core.display.UNSHOWN`): whether the sender masked them is not known, so the copy
runs with its real arguments and shows neither them nor a sentence about the worker."""


def run_now_target(task: ScheduledTask) -> Target:
    """Any task can be run now: a worker-held one's arguments are asked of its worker then."""
    return Target(task.id, task.name)


def delete_target(task: ScheduledTask) -> Target:
    return Target(task.id, task.name, None if task.broker_held else
                  "held by a worker, in memory: revoke it (R)")


def run_now_command(tasks: Sequence[ScheduledTask]) -> Equivalent | None:
    """The scripted commands: ``qtui eta run`` for broker-held ones; ``qtui control revoke``
    and a ``qtui call`` each for worker-held ones. None when a worker-held one's arguments
    are not known here (the view shows only their reprs) or are masked: a ``qtui call`` line
    would have to carry them."""
    stored = [t for t in tasks if t.broker_held]
    held = [t for t in tasks if not t.broker_held]
    parts: list[Equivalent | None] = []
    if stored:
        parts.append(equivalents.eta_run([t.id for t in stored], [t.queue for t in stored]))
    if held:
        parts.append(equivalents.revoke([t.id for t in held]))
        parts += [None if t.full_args is None or t.full_kwargs is None or t.masked else
                  equivalents.retry(t.name, t.full_args, t.full_kwargs, t.queue or None)
                  for t in held]
    return equivalents.script(*parts)


def delete_command(tasks: Sequence[ScheduledTask]) -> Equivalent:
    return equivalents.eta_delete([t.id for t in tasks], [t.queue for t in tasks])


def run_now(app: App, tasks: Sequence[ScheduledTask], workers: Iterable[str] = ()
            ) -> ActionResult:
    """Run these tasks now: broker-held ones handed to their queue without ETA (same id),
    worker-held ones revoked and sent again without ETA (new id)."""
    title = f"run now {_tasks(tasks)}"
    targets = tuple(t.id for t in tasks)
    stored = [t for t in tasks if t.broker_held]
    held = [t for t in tasks if not t.broker_held]
    lines: list[str] = []
    ok = True
    replies: list[tuple[str, str]] = []
    if stored:
        try:
            with app.connection_for_write() as connection:
                done = set(run_now_in_store(connection, stored))
        except Exception as exc:  # noqa: BLE001 - the broker refused: shown as the outcome
            done, ok = set(), False
            lines.append(f"could not take them out of the delayed store: {exc}")
        for task in stored:
            said = "sent to its queue without ETA" if task.id in done else \
                "no longer held (it ran or was taken by someone else)"
            ok &= task.id in done
            replies.append((task.id, said))
        lines.append(f"{len(done)} of {len(stored)} broker-held sent to their queue now")
    if held:
        known = with_arguments(app, held)
        unknown = [t for t in known if t.full_args is None or t.full_kwargs is None]
        for task in unknown:  # gone (ran, revoked) or holding what JSON cannot carry: left be
            ok = False
            replies.append((task.id, f"{task.holder} did not report its arguments (it no longer "
                                     "holds it, or they are not JSON): left as it was"))
        sending = [t for t in known if t not in unknown]
        if sending:
            actions = Actions(app)
            revoked = actions.revoke([t.id for t in sending], workers)
            ok &= revoked.ok
            replies += list(revoked.replies)
            sent = actions.retry_many([resend(t) for t in sending])
            ok &= sent.ok
            replies += list(sent.replies)
            lines.append(f"{len(sending)} worker-held revoked and sent again without ETA, as "
                         f"new tasks: {sent.message}")
        if unknown:
            lines.append(f"{len(unknown)} worker-held left as they were: their worker did not "
                         "report their arguments")
    return ActionResult(title, tuple(lines), ok, "run now", targets, tuple(replies))


def resend(task: ScheduledTask) -> Retry:
    """The copy of a worker-held task run now: its full arguments, and the sender's reprs as
    the copy's ``argsrepr``/``kwargsrepr`` where they mask them (so its events, the console and
    Flower show the mask, never the secret), :data:`UNKNOWN_REPRS` where they are unknown."""
    assert task.full_args is not None and task.full_kwargs is not None
    if task.args == UNSHOWN:
        argsrepr: str | None = UNKNOWN_REPRS
        kwargsrepr: str | None = UNKNOWN_REPRS
    else:
        argsrepr, kwargsrepr = (task.args, task.kwargs) if task.masked else (None, None)
    return Retry(task.id, task.name, task.full_args, task.full_kwargs, task.queue or None,
                 argsrepr=argsrepr, kwargsrepr=kwargsrepr)


def delete(app: App, tasks: Sequence[ScheduledTask]) -> ActionResult:
    """Discard these broker-held tasks from the delayed store."""
    title = f"delete {_tasks(tasks)}"
    try:
        with app.connection_for_write() as connection:
            done = set(delete_from_store(connection, tasks))
    except Exception as exc:  # noqa: BLE001 - the broker refused: shown as the outcome
        return ActionResult(title, (f"could not delete: {exc}",), False, "eta delete",
                            tuple(t.id for t in tasks))
    replies = tuple((t.id, "deleted" if t.id in done else "no longer held") for t in tasks)
    return dataclasses.replace(
        ActionResult(title, (f"deleted {len(done)} of {len(tasks)} from the delayed store",),
                     len(done) == len(tasks), "eta delete", tuple(t.id for t in tasks)),
        replies=replies)


def _tasks(tasks: Sequence[ScheduledTask]) -> str:
    return tasks[0].id if len(tasks) == 1 else f"{len(tasks)} tasks"
