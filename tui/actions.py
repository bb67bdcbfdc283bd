"""What the console's actions do: remote-control calls and broker operations, each returning an
ActionResult to show as a notification. These block on the network, so the console runs them in
thread workers; nothing here touches the UI."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qtui.core import App
from qtui.core.display import clip
from qtui.core.pauses import PauseOutcome, pause_queue, resume_queue
from qtui.core.queues import inspector_for
from qtui.core.states import READY_STATES
from qtui.core.task import SendOptions

from .audit import current_user

#: Seconds to wait for workers' replies to an action.
REPLY_TIMEOUT = 2.0
#: Characters of one worker's reply an outcome keeps: Celery's revoke reply repeats every id,
#: so a bulk revoke of 10,000 tasks is answered with 400 KB per worker.
REPLY_SHOWN = 500

SIGNALS = ("SIGTERM", "SIGKILL", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1")


@dataclass(frozen=True)
class ActionResult:
    """What one console action did, for its notification: ``lines`` say it, ``ok`` colours it."""

    title: str
    lines: tuple[str, ...]
    ok: bool
    action: str = ""
    """What was done, for the audit trail (``revoke``, ``purge``...); the title when empty."""
    targets: tuple[str, ...] = ()
    """What it was done to (task ids, a task type, a queue, a worker)."""
    replies: tuple[tuple[str, str], ...] = ()
    """(worker, its reply in words) per answer, for the audit trail; the lines when empty."""

    @property
    def message(self) -> str:
        return "\n".join(self.lines)


def describe_reply(reply: Any) -> tuple[bool, str]:
    """One worker's reply in words: ``{'ok': 'text'}`` or ``{'error': 'text'}`` (Celery's
    shapes)."""
    if isinstance(reply, Mapping):
        if "error" in reply:
            return False, f"error: {reply['error']}"
        if "ok" in reply:
            return True, f"OK {reply['ok']}".rstrip()
    return True, f"OK {reply}"


def outcome_from_replies(title: str, replies: Iterable[Mapping[str, Any]] | None,
                         expected: Iterable[str] = ()) -> ActionResult:
    """Per-worker lines, with "no reply" for each expected worker that said nothing."""
    lines, ok, answered, said = [], True, set(), []
    for reply in replies or []:
        for hostname, body in reply.items():
            answered.add(hostname)
            good, text = describe_reply(body)
            ok &= good
            lines.append(f"{hostname}: {clip(text, REPLY_SHOWN)}")
            said.append((hostname, text))  # the audit trail cuts it to its own bound
    for hostname in sorted(set(expected) - answered):
        ok = False
        lines.append(f"{hostname}: no reply")
        said.append((hostname, "no reply"))
    if not lines:
        return ActionResult(title, ("no worker replied",), False)
    return ActionResult(title, tuple(lines), ok, replies=tuple(said))


class Actions:
    """The console's verbs, bound to one qtui App (one cluster)."""

    def __init__(self, app: App, timeout: float = REPLY_TIMEOUT) -> None:
        self.app = app
        self.timeout = timeout

    def _call(self, title: str, method: str, expected: Iterable[str] = (),
              destination: list[str] | None = None, *, action: str = "",
              targets: Sequence[str] = (), **arguments: Any) -> ActionResult:
        try:
            replies = self.app.control.broadcast(method, arguments, destination=destination,
                                                 reply=True, timeout=self.timeout)
        except Exception as exc:  # the broker is gone: say so instead of failing the console
            outcome = ActionResult(title, (f"could not reach the broker: {exc}",), False)
        else:
            outcome = outcome_from_replies(title, replies, destination or expected)
        return dataclasses.replace(outcome, action=action or method,
                                   targets=tuple(targets) or tuple(destination or ()))

    def revoke(self, task_ids: Sequence[str], workers: Iterable[str] = ()) -> ActionResult:
        """Revoke tasks: one broadcast carries every id (Celery's revoke takes a list)."""
        return self._call(f"revoke {_tasks(task_ids)}", "revoke", workers, action="revoke",
                          targets=task_ids, task_id=list(task_ids), terminate=False,
                          signal="SIGTERM")

    def terminate(self, task_ids: Sequence[str], signal: str,
                  workers: Iterable[str] = ()) -> ActionResult:
        """Revoke tasks and signal the processes running them, in one broadcast."""
        return self._call(f"terminate {_tasks(task_ids)} ({signal})", "revoke", workers,
                          action="terminate", targets=task_ids, task_id=list(task_ids),
                          terminate=True, signal=signal)

    def rate_limit(self, task_name: str, rate: str, destination: list[str] | None = None,
                   workers: Iterable[str] = ()) -> ActionResult:
        return self._call(f"rate limit {task_name} {rate}", "rate_limit", workers, destination,
                          targets=[task_name], task_name=task_name, rate_limit=rate)

    def time_limit(self, task_name: str, soft: float | None, hard: float | None,
                   destination: list[str] | None = None,
                   workers: Iterable[str] = ()) -> ActionResult:
        return self._call(f"time limit {task_name} soft={soft} hard={hard}", "time_limit",
                          workers, destination, targets=[task_name], task_name=task_name,
                          soft=soft, hard=hard)

    def pool_grow(self, worker: str, n: int = 1) -> ActionResult:
        return self._call(f"pool grow {worker} +{n}", "pool_grow", (), [worker], n=n)

    def pool_shrink(self, worker: str, n: int = 1) -> ActionResult:
        return self._call(f"pool shrink {worker} -{n}", "pool_shrink", (), [worker], n=n)

    def add_consumer(self, queue: str, destination: list[str] | None = None,
                     workers: Iterable[str] = ()) -> ActionResult:
        return self._call(f"add consumer {queue}", "add_consumer", workers, destination,
                          targets=[queue], queue=queue)

    def cancel_consumer(self, queue: str, destination: list[str] | None = None,
                        workers: Iterable[str] = ()) -> ActionResult:
        return self._call(f"cancel consumer {queue}", "cancel_consumer", workers, destination,
                          targets=[queue], queue=queue)

    def shutdown(self, worker: str) -> ActionResult:
        title, targets = f"shutdown {worker}", (worker,)
        try:
            self.app.control.broadcast("shutdown", {}, destination=[worker], reply=False)
        except Exception as exc:
            return ActionResult(title, (f"could not reach the broker: {exc}",), False, "shutdown",
                                targets)
        return ActionResult(title, (f"{worker}: shutdown requested",), True, "shutdown", targets)

    def purge(self, queue: str) -> ActionResult:
        """Discard the waiting messages of ``queue`` and its ETA tasks in the delayed store."""
        try:
            with inspector_for(self.app) as inspector:
                count = inspector.purge(queue)
                scheduled = inspector.purge_scheduled(queue)
        except Exception as exc:
            return ActionResult(f"purge {queue}", (f"could not purge {queue}: {exc}",), False,
                                "purge", (queue,))
        held = f" and {scheduled} scheduled (ETA) task(s) from its delayed store" \
            if scheduled else ""
        return ActionResult(f"purge {queue}",
                            (f"removed {count} message(s) from {queue}{held}",), True,
                            "purge", (queue,))

    def retry(self, name: str, args: Any, kwargs: Any, queue: str | None = None,
              exchange: str | None = None, routing_key: str | None = None, *,
              argsrepr: str | None = None, kwargsrepr: str | None = None,
              shadow: str | None = None) -> ActionResult:
        """Send the task again as a new task with the same name and arguments, routed as given
        (the app's routing for what is None), with the sender's ``argsrepr``/``kwargsrepr``
        (its mask over the arguments) and ``shadow`` where given."""
        options: SendOptions = {"queue": queue, "exchange": exchange, "routing_key": routing_key}
        # the masks only where given: a plain retry sends what `qtui call` does
        if argsrepr is not None:
            options["argsrepr"] = argsrepr
        if kwargsrepr is not None:
            options["kwargsrepr"] = kwargsrepr
        if shadow is not None:
            options["shadow"] = shadow
        try:
            result = self.app.send_task(name, args=list(args), kwargs=dict(kwargs), **options)
        except Exception as exc:
            return ActionResult(f"retry {name}", (f"could not send: {exc}",), False, "retry",
                                (name,))
        return ActionResult(f"retry {name}", (f"sent again as {result.id}",), True, "retry",
                            (name,))

    def retry_many(self, sends: Sequence[Retry]) -> ActionResult:
        """Send tasks again, one message each (see :meth:`retry`); the audit trail names the
        original tasks and what became of each."""
        outcomes = [(send.task_id, self.retry(send.name, send.args, send.kwargs, queue=send.queue,
                                              exchange=send.exchange,
                                              routing_key=send.routing_key,
                                              argsrepr=send.argsrepr, kwargsrepr=send.kwargsrepr,
                                              shadow=send.shadow))
                     for send in sends]
        replies = tuple((task_id, o.message) for task_id, o in outcomes)
        targets = tuple(task_id for task_id, _ in outcomes)
        if len(outcomes) == 1:
            return dataclasses.replace(outcomes[0][1], targets=targets, replies=replies)
        failed = [f"{task_id}: {o.message}" for task_id, o in outcomes if not o.ok]
        lines = (f"sent {len(outcomes) - len(failed)} of {len(outcomes)} again", *failed[:3])
        return ActionResult(f"retry {len(outcomes)} tasks", lines, not failed, "retry", targets,
                            replies)

    def pause(self, queue: str) -> ActionResult:
        """Pause ``queue`` across the cluster (:mod:`qtui.core.pauses`)."""
        title = f"pause {queue}"
        try:
            outcome = pause_queue(self.app, queue, current_user(), self.timeout)
        except Exception as exc:  # the broker is gone or keeps no pauses: say so
            return ActionResult(title, (f"could not pause {queue}: {exc}",), False, "pause",
                                (queue,))
        return _paused_outcome(title, f"{queue} paused: no worker consumes it until resumed",
                               "pause", queue, outcome)

    def resume(self, queue: str) -> ActionResult:
        """Resume ``queue``: the workers the pause noted consume it again."""
        title = f"resume {queue}"
        try:
            outcome = resume_queue(self.app, queue, self.timeout)
        except Exception as exc:  # the broker is gone or keeps no pauses: say so
            return ActionResult(title, (f"could not resume {queue}: {exc}",), False, "resume",
                                (queue,))
        if outcome.pause is None:
            return ActionResult(title, (f"{queue} was not paused",), False, "resume", (queue,))
        given = ", ".join(outcome.pause.consumers) or "no worker (none consumed it)"
        return _paused_outcome(title, f"{queue} resumed: given back to {given}", "resume",
                               queue, outcome)


@dataclass(frozen=True)
class Retry:
    """A task to send again: its id (the one retried), name, full arguments and route, and the
    sender's reprs and shadow name where it masked them."""

    task_id: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    shadow: str | None = None

    @property
    def masked(self) -> bool:
        """Whether the sender's reprs go with it (its arguments are not to be shown)."""
        return self.argsrepr is not None or self.kwargsrepr is not None


def _tasks(task_ids: Sequence[str]) -> str:
    """A title's words for some tasks: the id of one, the count of several."""
    return task_ids[0] if len(task_ids) == 1 else f"{len(task_ids)} tasks"


def not_stoppable(state: str) -> str | None:
    """Why a task in ``state`` cannot be revoked or terminated (it has finished: no worker would
    do anything), or None when it can."""
    if state in READY_STATES:
        return f"it is {state}: it has finished, so there is nothing left to stop"
    return None


_ATTRIBUTE = re.compile(r"(\w+)=([^\s\]]+)")


def registered_tasks(reply: Any) -> dict[str, dict[str, str]]:
    """Task types and the attributes a worker named for each, from its reply to ``registered``
    (``['tasks.add [rate_limit=10/m time_limit=20]', 'tasks.mul']``, as Celery words it).
    Entries of another shape (the reply is whatever a worker sent) are left out."""
    tasks: dict[str, dict[str, str]] = {}
    for entry in reply if isinstance(reply, list) else []:
        if not isinstance(entry, str) or not entry.strip():
            continue
        name, _, info = entry.partition(" [")
        tasks[name.strip()] = dict(_ATTRIBUTE.findall(info))
    return tasks


def pause_told(title: str, outcome: PauseOutcome) -> ActionResult:
    """Each worker's answer to a pause or resume, "no reply" for each worker the pause noted
    that said nothing: ok only if every one of them acted (a pause stored but not heard leaves
    the queue consumed). With no worker to tell, nothing is said and it is ok."""
    noted = outcome.pause.consumers if outcome.pause is not None else ()
    if not outcome.replies and not noted:
        return ActionResult(title, (), True)
    return outcome_from_replies(title, [{host: reply} for host, reply in outcome.replies.items()],
                                noted)


def reapplied(hostname: str, done: Mapping[str, Any]) -> ActionResult:
    """A worker that came online during pauses was told to stop consuming ``done`` (queue: its
    reply, None when it said nothing): a pause, for the audit trail, ok if it acted on each."""
    said = [(queue, describe_reply(reply) if reply is not None else (False, "no reply"))
            for queue, reply in sorted(done.items())]
    text = "; ".join(f"{queue}: {words}" for queue, (_, words) in said)
    return ActionResult(f"pause on {hostname}", (f"{hostname}: {text}",),
                        all(good for _, (good, _) in said), "pause", tuple(sorted(done)),
                        ((hostname, text),))


def _paused_outcome(title: str, done: str, action: str, queue: str,
                    outcome: PauseOutcome) -> ActionResult:
    """A pause or resume that was stored: its line, then each worker's reply."""
    told = pause_told(title, outcome)
    return ActionResult(title, (done, *told.lines), told.ok, action, (queue,), told.replies)
