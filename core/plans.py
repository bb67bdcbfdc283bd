"""Send plans: what a send works out from a task's name and options, once for every call that
shares them.

``App.send_task`` splits a call's options in two. What does not depend on the call's arguments
or identity (the route, unless a router sees the arguments; the serializer; the result
setting; time limits; priority; retries; the canvas fields) makes a :class:`SendPlan`, kept by
the app for the next call with the same name, task and options; what is the call's own (its
id, root and parent ids, group and index, countdown or ETA, expiry) is read per call into a
:class:`Call`. A bulk send of one task (``send_many``, a group, ``chunks``) so works out its
route and options once, and each task costs its id, its arguments' repr and its stored text:
its :class:`~qtui.core.protocol.TaskMessage` is built only when something asks for it (a
message that does not fill a template, a backend that hears of each call, task-sent events).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

from .lineage import RUNNING, lineage
from .protocol import (
    ARGSREPR_MAXSIZE,
    COMPRESSION_HEADER,
    KWARGSREPR_MAXSIZE,
    NO_EMBED,
    TaskMessage,
    body_of,
    compression_type,
    new_id,
    saferepr,
    stamped_header_names,
)
from .result import AsyncResult
from .routing import Route
from .sending import Outgoing
from .task import resolve_eta, resolve_expires, seconds_to_live

if TYPE_CHECKING:
    from .app import App
    from .brokers.envelope import Template
    from .task import Task

#: The options a plan is made of, in the order of its key. Any other option (see
#: :class:`~qtui.core.task.SendOptions`) is the call's own.
PLANNED = ("queue", "routing_key", "exchange", "priority", "serializer", "compression",
           "ignore_result", "reply_to", "retries", "time_limit", "soft_time_limit", "shadow",
           "headers", "link", "link_error", "chain", "chord", "stamped_headers", "stamps")
#: Where the options that hold containers start in :data:`PLANNED`: a plan with any of them
#: is made for its call alone.
_FIRST_CONTAINER = PLANNED.index("headers")
_NO_CONTAINERS = (None,) * (len(PLANNED) - _FIRST_CONTAINER)
_PLANNED_NAMES = frozenset(PLANNED)
#: The planned options' values and their types in the key of a call that gives none of them.
_NONE_GIVEN = ((None,) * len(PLANNED), (type(None),) * len(PLANNED))
#: The types of the values a kept plan's options may have.
_KEYED = frozenset({type(None), str, int, bool, float})
#: Plans an app keeps (names times kinds of options: a few in practice); past it they are
#: made again as they are used.
PLANS_KEPT = 1024


@dataclass(frozen=True, slots=True, eq=False)
class SendPlan:
    """Everything a send works out that its arguments and ids do not change (equal only to
    itself: a batch keeps its calls' templates by plan)."""

    name: str
    task: Task | None
    route: Route | None
    """None when a router sees the call's arguments: routed per call."""
    serializer: str
    compression: str | None
    """The content type of the body's compression (kombu's registry), or None."""
    prototype: TaskMessage
    """The fields every call's message shares (:meth:`TaskMessage.for_call`)."""
    stores_result: bool
    """The backend hears of each task before it is sent (``on_task_call``)."""
    embed: Mapping[str, Any]
    """The third part of every call's body (:func:`~qtui.core.protocol.body_of`):
    :data:`~qtui.core.protocol.NO_EMBED` itself when the plan has no canvas fields."""
    templates: dict[tuple[Any, ...], Template | None] = field(default_factory=dict)
    """The message templates of this plan's calls (or None: no template fits), kept by
    :meth:`~qtui.core.brokers.envelope.Template.of_call`."""

    @classmethod
    def of(cls, app: App, name: str, task: Task | None, options: Mapping[str, Any]
           ) -> SendPlan:
        settings = app.send_settings
        ignore_result = options.get("ignore_result")
        if ignore_result is None:
            ignore_result = settings.ignore_result
        reply_to = options.get("reply_to")
        router = app.router
        route = router.route(name, (), None, _route_options(options), task=task) \
            if router.sees_only_names else None
        chain = options.get("chain")
        compression = options.get("compression") or settings.compression
        compression = compression_type(compression) if compression else None
        headers = dict(options.get("headers") or {})
        if compression:
            headers[COMPRESSION_HEADER] = compression
        prototype = TaskMessage(
            id="", task=name, shadow=options.get("shadow"), retries=options.get("retries", 0),
            time_limit=options.get("time_limit"), soft_time_limit=options.get("soft_time_limit"),
            ignore_result=ignore_result, reply_to=reply_to,
            headers=headers,
            callbacks=_signatures(options.get("link")),
            errbacks=_signatures(options.get("link_error")),
            chain=list(chain) if chain else None, chord=options.get("chord"),
            stamped_headers=stamped_header_names(options.get("stamped_headers")),
            stamps=dict(options.get("stamps") or {}))
        embed = body_of(prototype, copy=False)[2]
        return cls(name, task, route, options.get("serializer") or settings.serializer,
                   compression, prototype, not ignore_result and not reply_to,
                   NO_EMBED if embed == NO_EMBED else embed)

    def route_of(self, app: App, args: Any, kwargs: Any, options: Mapping[str, Any]) -> Route:
        """The call's route: the plan's, or the routers' for these arguments."""
        if self.route is not None:
            return self.route
        return app.router.route(self.name, args, kwargs, _route_options(options),
                                task=self.task)

    def call(self, app: App, args: Any, kwargs: Any, options: Mapping[str, Any],
             priority: int | None) -> Call:
        """One call of this plan: the call's arguments and own options."""
        eta, expires, countdown = (options.get("eta"), options.get("expires"),
                                   options.get("countdown"))
        if eta is None and expires is None and countdown is None:
            eta_at = expires_at = expiration = None
        else:
            # The zone only reads naive datetimes: worked out only when there is one.
            tz = app.timezone if eta is not None or isinstance(expires, datetime) \
                else timezone.utc
            eta_at, expires_at = resolve_eta(countdown, eta, tz), resolve_expires(expires, tz)
            expiration = None if expires is None or expires_at is None \
                else seconds_to_live(expires, expires_at)
        task_id = options.get("task_id") or new_id()
        args = tuple(args) if args else ()
        kwargs = dict(kwargs) if kwargs else {}
        argsrepr, kwargsrepr = options.get("argsrepr"), options.get("kwargsrepr")
        root_id, parent_id = options.get("root_id"), options.get("parent_id")
        if RUNNING.get() and not (root_id and parent_id):  # inside a task: its ids fill gaps
            root_id, parent_id = lineage(root_id, parent_id)
        return Call(self, task_id, args, kwargs,
                    saferepr(args, ARGSREPR_MAXSIZE) if argsrepr is None else argsrepr,
                    saferepr(kwargs, KWARGSREPR_MAXSIZE) if kwargsrepr is None else kwargsrepr,
                    root_id or task_id, parent_id, options.get("group_id"),
                    options.get("group_index"), eta_at, expires_at, expiration, priority)


class Call(NamedTuple):
    """One call of a send plan: what its message has of its own (the rest is the plan's
    prototype). A tuple rather than a message: most sends only fill these into the plan's
    template (:class:`~qtui.core.brokers.envelope.Template`)."""

    plan: SendPlan
    id: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    argsrepr: str
    kwargsrepr: str
    root_id: str
    parent_id: str | None
    group: str | None
    group_index: int | None
    eta: datetime | None
    expires: datetime | None
    expiration: float | None
    """Seconds the broker may hold it (:attr:`TaskMessage.expiration`)."""
    priority: int | None

    def message(self) -> TaskMessage:
        return self.plan.prototype.for_call(self)


def plan_key(name: str, task: Task | None, options: Mapping[str, Any]
             ) -> tuple[Any, ...] | None:
    """What a plan for these options is kept under, or None when it is for this call alone
    (a container option, or a value of a type a key cannot tell apart from an equal one).
    Equal values written differently make different keys, as they make different messages:
    ``1``, ``1.0`` and ``True`` by their types, ``0.0`` and ``-0.0`` by their reprs."""
    if options.keys().isdisjoint(_PLANNED_NAMES):  # a group's member: its ids and index alone
        return (name, task, *_NONE_GIVEN)
    values = tuple(map(options.get, PLANNED))
    kinds = tuple(map(type, values))
    if not _KEYED.issuperset(kinds) or values[_FIRST_CONTAINER:] != _NO_CONTAINERS:
        return None
    if float in kinds:
        values = tuple(repr(value) if type(value) is float else value for value in values)
    return (name, task, values, kinds)


def _route_options(options: Mapping[str, Any]) -> dict[str, Any]:
    return {"queue": options.get("queue"), "exchange": options.get("exchange"),
            "routing_key": options.get("routing_key"), "priority": options.get("priority")}


def _signatures(value: Any) -> list[Any] | None:
    """``link=`` and ``link_error=`` take one signature or a list of them, as in Celery."""
    if not value:
        return None
    return [dict(sig) for sig in value] if isinstance(value, (list, tuple)) else [dict(value)]


class Lane:
    """The calls of one registered task that give no options but a group's id and index
    (``send_many``'s plain signatures, a group's members), each made straight into its
    :class:`Call` and held for the batch, without ``apply_async``'s layers per call (options
    merged, plan looked up, route asked). Made only where those layers give the same message
    (see :meth:`of`); a call that does not fit it (:meth:`hold` returns None) goes the usual
    way."""

    __slots__ = ("app", "backend", "defaults_cache", "held", "name", "outgoing", "parent_id",
                 "plan", "priority", "root_id", "shape", "task", "tasks", "typing", "version")

    def __init__(self, app: App, task: Task, plan: SendPlan, held: list[Outgoing],
                 defaults_cache: tuple[Any, dict[str, Any]]) -> None:
        self.app, self.task, self.plan, self.held = app, task, plan, held
        self.name = plan.name
        self.tasks = app.tasks
        self.backend = app.send_settings.backend
        self.version = app.conf.version
        self.defaults_cache = defaults_cache
        """The task's send defaults as the plan was made of them (a task option set since
        makes a new one: the calls after it go the usual way)."""
        self.typing = task.typing
        route = plan.route
        assert route is not None
        self.priority = route.priority
        self.outgoing = (route.exchange, route.routing_key, route.queue, plan.serializer)
        self.shape: Any = None
        """The shape of the last call's arguments that fitted the task (checked again only
        for a new one)."""
        self.root_id, self.parent_id = lineage(None, None)
        """The ids of the task whose batch this is, when one is running here (read once for
        the lane: a batch does not outlive the task that sends it)."""

    @classmethod
    def of(cls, app: App, task: Task | None, held: list[Outgoing], *, eager: bool
           ) -> Lane | None:
        """The lane of ``task`` for calls held in ``held`` (a :meth:`App.sending_batch`'s),
        or None where a call must go the usual way: a task not registered, a task or app
        class, or the task or app itself (``mock.patch.object``), that overrides how it
        sends, a router that sees the arguments, a backend that hears of each call, an expiry
        worked out per call, or (``eager``: calls that ``task_always_eager`` runs here) an
        app that runs tasks eagerly."""
        from .app import App
        from .task import Task

        if task is None or any(getattr(type(task), method) is not getattr(Task, method)
                               for method in _TASK_SENDS) \
                or any(getattr(type(app), method) is not getattr(App, method)
                       for method in _APP_SENDS) \
                or not vars(task).keys().isdisjoint(_TASK_SENDS) \
                or not vars(app).keys().isdisjoint(_APP_SENDS):
            return None
        settings = app.send_settings
        if eager and settings.always_eager:
            return None
        defaults = task._send_defaults()
        # read once: another thread setting a task option meanwhile drops the cache
        cache = task.__dict__.get("_send_defaults_cache")
        if cache is None or cache[1] is not defaults:
            return None
        plan = task._default_plan(defaults)
        if plan.route is None or defaults.get("expires") is not None \
                or (plan.stores_result and settings.backend.hears_of_calls):
            return None
        return cls(app, task, plan, held, cache)

    def hold(self, args: Any, kwargs: Any, group_id: str | None = None,
             group_index: int | None = None) -> AsyncResult | None:
        """Check and hold one call (as ``send_planned`` makes it), and return its result; None
        when it does not fit the lane: arguments not a tuple and a dict, or the task's options,
        the configuration or the task registered under its name changed since the lane was
        made."""
        if type(args) is not tuple or type(kwargs) is not dict \
                or self.task.__dict__.get("_send_defaults_cache") is not self.defaults_cache \
                or self.app.conf.version != self.version \
                or self.tasks.get(self.name) is not self.task:
            return None
        if self.typing:
            shape = (len(args), *kwargs) if kwargs else len(args)
            if shape != self.shape:
                self.task._check_signature(args, kwargs)
                self.shape = shape
        task_id = new_id()
        if kwargs:
            kwargs = dict(kwargs)
            kwargsrepr = saferepr(kwargs, KWARGSREPR_MAXSIZE)
        else:
            kwargs, kwargsrepr = {}, "{}"
        plan = self.plan
        exchange, routing_key, queue, serializer = self.outgoing
        self.held.append(Outgoing(
            _new_tuple(Call, (plan, task_id, args, kwargs, saferepr(args, ARGSREPR_MAXSIZE),
                              kwargsrepr, self.root_id or task_id, self.parent_id, group_id,
                              group_index, None, None, None,
                              self.priority)),  # Call(...) without its __new__'s frame
            exchange, routing_key, queue, serializer, (), plan.compression))
        return AsyncResult(task_id, self.app, self.backend, self.name)


_new_tuple = tuple.__new__
# Lane.hold fills a Call's fields by position: a field added to Call must be added there too.
assert len(Call._fields) == 14, "Lane.hold makes a Call of 14 values"
#: The methods of a task and of an app a call of a :class:`Lane` would go through: a class
#: that overrides one sends its calls the usual way.
_TASK_SENDS = ("apply_async", "send_call", "_send_defaults", "_default_plan",
               "_check_signature")
_APP_SENDS = ("send_task", "send_planned", "plan")


class Lanes(dict[str, "Lane | None"]):
    """The lanes of one batch by task name, each made when a call of its task first comes
    (None: that task's calls go the usual way)."""

    def __init__(self, app: App, *, eager: bool) -> None:
        super().__init__()
        self.app, self.eager = app, eager
        held = app._batch.outgoing
        assert held is not None, "lanes hold calls for an App.sending_batch block"
        self.held: list[Outgoing] = held

    def __missing__(self, name: str) -> Lane | None:
        lane = self[name] = Lane.of(self.app, self.app.tasks.get(name), self.held,
                                    eager=self.eager)
        return lane
