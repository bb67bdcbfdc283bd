"""Every ETA/countdown task not yet due, wherever it waits: in the broker's delayed store
(:mod:`qtui.core.delayed`) or in a worker's memory (``inspect scheduled``, qtui and Celery
workers alike), as one list for the console's Scheduled view and ``qtui scheduled``.

Running a task now and deleting it are the store's verbs for broker-held tasks. A task a worker
holds is in that worker's memory: nothing outside can change its ETA. Running it now revokes it
there and sends a copy without ETA under a *new* id (a worker drops a message whose id it has
revoked, so a copy with the same id would never run); deleting it is revoking it.

Workers are asked for the *safe* view of what they hold (``inspect scheduled`` with ``safe``:
the reprs the sender wrote, a mask where it masked a secret argument), so a secret never
reaches a list; running a task now asks its worker for the arguments themselves
(:func:`with_arguments`), and the copy keeps the sender's mask.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from kombu import Connection

from .delayed import HeldTask, delayed_for, is_store_queue
from .display import UNSHOWN
from .protocol import masks

if TYPE_CHECKING:
    from .app import App

BROKER = "broker"
"""Where a task waits when the broker's delayed store holds it (else: the worker's name)."""


@dataclass(frozen=True)
class ScheduledTask:
    """One ETA task not yet due, and where it waits."""

    id: str
    name: str
    due: float | None
    """Its ETA as epoch seconds (None: unknown)."""
    queue: str
    args: str
    kwargs: str
    """The arguments as text, for showing and filtering."""
    holder: str
    """:data:`BROKER`, or the hostname of the worker holding it."""
    full_args: list[Any] | None = None
    full_kwargs: dict[str, Any] | None = None
    """A worker-held task's arguments, once :func:`with_arguments` asked its worker for them
    (None: not asked, or it showed only their text)."""

    @property
    def masked(self) -> bool:
        """Whether ``args``/``kwargs`` (the reprs the sender wrote) hide the full arguments:
        then they are what is shown and sent with a copy, never the arguments."""
        return self.full_args is not None and self.full_kwargs is not None and masks(
            self.full_args, self.full_kwargs, self.args, self.kwargs)

    @property
    def broker_held(self) -> bool:
        return self.holder == BROKER

    def filter_values(self) -> dict[str, str]:
        """The fields the console's filter language matches (``worker:`` is where it waits)."""
        return {"id": self.id, "name": self.name, "worker": self.holder,
                "args": f"{self.args} {self.kwargs}", "state": "SCHEDULED", "queue": self.queue}

    def to_json(self) -> dict[str, Any]:
        eta = None if self.due is None else datetime.fromtimestamp(
            self.due, timezone.utc).isoformat()
        return {"id": self.id, "name": self.name, "eta": eta, "queue": self.queue,
                "args": self.args, "kwargs": self.kwargs, "held_by": self.holder}


@dataclass(frozen=True)
class Scheduled:
    """One read of everything scheduled."""

    tasks: list[ScheduledTask]
    """By due time, soonest first."""
    unlisted: dict[str, int] = field(default_factory=dict)
    """Per queue, how many tasks the broker holds that it cannot show (RabbitMQ)."""
    no_reply: list[str] = field(default_factory=list)
    """Workers asked that did not answer."""


def parse_time(value: Any) -> float | None:
    """An ETA as epoch seconds, from an ISO text (naive: UTC, as Celery sends it) or a number."""
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def from_store(queue: str, held: HeldTask) -> ScheduledTask:
    return ScheduledTask(held.id or "", held.name or "", parse_time(held.eta), queue,
                         held.args or "", held.kwargs or "", BROKER)


def from_workers(replies: Mapping[str, Any]) -> list[ScheduledTask]:
    """The tasks in workers' replies to ``scheduled`` (Celery's shape:
    ``[{"eta", "priority", "request": {id, name, args, kwargs, delivery_info}}]``); entries of
    another shape are left out (a reply is whatever a worker sent)."""
    found = []
    for hostname, items in replies.items():
        for item in items if isinstance(items, list) else ():
            request = item.get("request") if isinstance(item, Mapping) else None
            if not isinstance(request, Mapping) or not request.get("id"):
                continue
            delivery = request.get("delivery_info")
            delivery = delivery if isinstance(delivery, Mapping) else {}
            args, kwargs = request.get("args"), request.get("kwargs")
            full_args = list(args) if isinstance(args, list) else None
            full_kwargs = dict(kwargs) if isinstance(kwargs, dict) else None
            full = full_args is not None and full_kwargs is not None
            # Reprs are text; values mean the worker sent the arguments themselves, unmasked.
            reprs = isinstance(args, (str, type(None))) and isinstance(kwargs, (str, type(None)))
            found.append(ScheduledTask(
                str(request["id"]), str(request.get("name") or ""), parse_time(item.get("eta")),
                str(delivery.get("queue") or delivery.get("routing_key") or ""),
                _text(args) if reprs else UNSHOWN, _text(kwargs) if reprs else "",
                str(hostname), full_args if full else None, full_kwargs if full else None))
    return found


def with_arguments(app: App, tasks: Iterable[ScheduledTask], timeout: float = 1.0
                   ) -> list[ScheduledTask]:
    """Worker-held ``tasks`` with their full arguments, asked of the workers holding them (for
    running them now); a task its worker no longer holds, or holds with arguments that cannot
    travel as JSON, keeps ``full_args`` None."""
    tasks = list(tasks)
    holders = sorted({t.holder for t in tasks if not t.broker_held})
    if not holders:
        return tasks
    replies = app.control.inspect(destination=holders, timeout=timeout).scheduled(safe=False)
    full = {(t.holder, t.id): t for t in from_workers(replies or {})}
    found = []
    for task in tasks:
        answer = full.get((task.holder, task.id))
        found.append(task if answer is None else dataclasses.replace(
            task, full_args=answer.full_args, full_kwargs=answer.full_kwargs))
    return found


def from_broker(connection: Connection, queues: Iterable[str],
                limit: int = 1000) -> tuple[list[ScheduledTask], dict[str, int]]:
    """The tasks the broker's delayed store holds for ``queues`` (at most ``limit`` a queue),
    and per queue how many it holds but cannot show."""
    reader = delayed_for(connection)
    if reader is None:
        return [], {}
    found: list[ScheduledTask] = []
    unlisted: dict[str, int] = {}
    for queue in sorted(set(queues)):
        held = reader.tasks(queue, limit)
        if held is None:
            if count := reader.count(queue):
                unlisted[queue] = count
            continue
        found += [from_store(queue, task) for task in held]
    return found, unlisted


def by_due(tasks: Iterable[ScheduledTask]) -> list[ScheduledTask]:
    """Soonest first; those whose ETA is unknown last."""
    return sorted(tasks, key=lambda t: (t.due is None, t.due or 0.0, t.id))


def run_now_in_store(connection: Connection, tasks: Iterable[ScheduledTask]) -> list[str]:
    """Hand these broker-held tasks back to their queues without ETA; the ids handed back."""
    return _in_store(connection, tasks, "run_now")


def delete_from_store(connection: Connection, tasks: Iterable[ScheduledTask]) -> list[str]:
    """Discard these broker-held tasks; the ids discarded."""
    return _in_store(connection, tasks, "delete")


def _in_store(connection: Connection, tasks: Iterable[ScheduledTask], verb: str) -> list[str]:
    reader = delayed_for(connection)
    by_queue: dict[str, list[str]] = {}
    for task in tasks:
        by_queue.setdefault(task.queue, []).append(task.id)
    if reader is None or not by_queue:
        return []
    return [task_id for queue, ids in sorted(by_queue.items())
            for task_id in getattr(reader, verb)(queue, ids)]


def read(app: App, queues: Iterable[str] = (), timeout: float = 1.0,
         destination: list[str] | None = None) -> Scheduled:
    """Everything scheduled on ``app``'s cluster: the store's tasks of ``queues`` and of the
    queues the workers consume, and what each worker holds. Blocks for ``timeout``."""
    inspect = app.control.inspect(destination=destination, timeout=timeout)
    held = inspect.scheduled(safe=True) or {}  # the reprs: never a masked secret
    silent = list(inspect.no_reply)
    consumed = {str(q.get("name")) for replies in (inspect.active_queues() or {}).values()
                if isinstance(replies, list) for q in replies if isinstance(q, Mapping)}
    names = {*queues, *app.router.queues,
             *(q for q in consumed if q and q != "None" and not is_store_queue(q))}
    with app.connection_for_write() as connection:
        stored, unlisted = from_broker(connection, names)
    return Scheduled(by_due([*stored, *from_workers(held)]), unlisted, silent)
