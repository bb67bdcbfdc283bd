"""Tasks: a function registered with an app, callable directly or sent to workers.

Each option (rate_limit, time_limit, acks_late, ...) is read in this order: ``task_annotations``
for the task's name, then what the decorator set, then the app's config default, then the class
default. So a config change reaches tasks defined before it, as Celery users expect.
"""

from __future__ import annotations

import inspect
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypedDict, TypeVar

from .canvas import UNCHECKED, Signature
from .exceptions import MaxRetriesExceededError, Retry
from .lineage import DIRECT, RUNNING, entered, left
from .protocol import TaskMessage, new_id

if TYPE_CHECKING:
    from typing import Unpack

    from .app import App
    from .eager import EagerResult
    from .plans import SendPlan
    from .result import AsyncResult

T = TypeVar("T")


class SendOptions(TypedDict, total=False):
    """The keyword options of :meth:`App.send_task` and :meth:`Task.apply_async`, listed once.

    ``countdown`` (seconds) or ``eta`` (datetime) delay the task; ``expires`` (seconds or
    datetime) discards it if not started by then; ``queue``/``exchange``/``routing_key``/
    ``priority`` override routing; ``time_limit``/``soft_time_limit`` bound its run time.
    ``link``/``link_error`` (signatures), ``chain`` and ``chord`` travel in the body as
    Celery's canvas fields (see :mod:`qtui.core.canvas`); ``retries``, ``root_id``,
    ``parent_id``, ``group_id`` and ``group_index`` are what a worker and the canvas set.
    ``argsrepr``/``kwargsrepr`` replace the arguments' reprs that events, logs and the console
    show (Celery's way to mask secret arguments); ``shadow`` is the name they show instead of
    the task's. ``stamped_headers`` and ``stamps`` (a mapping of each stamped header to its
    value) are Celery's stamps, sent in the headers of the same names; Celery's form,
    ``stamped_headers`` and each stamp an option of its own, is taken too.
    ``retry``/``retry_policy`` override ``task_publish_retry``/
    ``task_publish_retry_policy`` for this send (the policy's keys over the configured ones,
    as in Celery); ``producer``/``publisher``/``connection`` (Celery's) are accepted when they
    point at the app's broker (qtui sends through its own producers); ``add_to_parent`` is
    accepted and changes nothing (qtui does not track a running task's children).
    ``replaced_task_nesting`` is the header of that name (how many ``Task.replace`` calls deep
    the task is), sent as given, as Celery's ``send_task`` takes it.
    """

    countdown: float | None
    eta: datetime | None
    expires: float | datetime | None
    queue: str | None
    routing_key: str | None
    exchange: str | None
    priority: int | None
    headers: Mapping[str, Any] | None
    time_limit: float | None
    soft_time_limit: float | None
    ignore_result: bool | None
    task_id: str | None
    serializer: str | None
    compression: str | None
    retries: int
    root_id: str | None
    parent_id: str | None
    group_id: str | None
    reply_to: str | None
    group_index: int | None
    link: Any
    link_error: Any
    chain: list[Any] | None
    chord: Any
    argsrepr: str | None
    kwargsrepr: str | None
    shadow: str | None
    stamped_headers: list[str] | None
    stamps: Mapping[str, Any] | None
    retry: bool | None
    retry_policy: Mapping[str, Any] | None
    producer: Any
    publisher: Any
    connection: Any
    add_to_parent: bool
    replaced_task_nesting: int

#: Options that ``task_annotations`` and the decorator may set, with the config key supplying
#: their default (None: the class default).
_CONF_DEFAULTS = {
    "rate_limit": "task_default_rate_limit",
    "time_limit": "task_time_limit",
    "soft_time_limit": "task_soft_time_limit",
    "acks_late": "task_acks_late",
    "ignore_result": "task_ignore_result",
    "serializer": "task_serializer",
    "compression": "task_compression",
    "priority": "task_default_priority",
    "track_started": "task_track_started",
}


class Option(Generic[T]):
    """A task attribute that annotations can override and config can default."""

    def __init__(self, default: T) -> None:
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, task: Task | None, owner: type | None = None) -> T:
        if task is None:
            return self.default
        annotated: T = task.app.annotation(task.name, self.name)
        if annotated is not _MISSING:
            return annotated
        if self.name in task.__dict__:
            own: T = task.__dict__[self.name]
            return own
        conf_key = _CONF_DEFAULTS.get(self.name)
        return task.app.conf[conf_key] if conf_key else self.default

    def __set__(self, task: Task, value: T) -> None:
        task.__dict__[self.name] = value
        task.__dict__.pop("_send_defaults_cache", None)


_MISSING: Any = object()

#: The options of :class:`SendOptions` a task supplies from its own ``Option`` when a call
#: leaves them out (None, or an empty name); a falsy value given (priority 0) is kept.
_SEND_DEFAULTS = ("queue", "routing_key", "exchange", "serializer", "compression", "expires",
                  "priority", "time_limit", "soft_time_limit", "ignore_result")
_NAMES = frozenset({"queue", "routing_key", "exchange", "serializer"})
#: Options that are a call's own (none of them planned, none a default of the task's): a call
#: giving only these is sent on the plan of a call that gives none.
_PER_CALL = frozenset({"task_id", "root_id", "parent_id", "group_id", "group_index",
                       "countdown", "eta", "argsrepr", "kwargsrepr"})
#: Argument shapes a task remembers as fitting its function (a few in practice).
_FITTED_SHAPES = 256


@dataclass
class Request:
    """What a running task knows about its own invocation (``self.request`` in a bound task)."""

    id: str | None = None
    task: str | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    eta: datetime | None = None
    expires: datetime | None = None
    hostname: str | None = None
    delivery_info: dict[str, Any] = field(default_factory=dict)
    reply_to: str | None = None
    correlation_id: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    origin: str | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    stamped_headers: list[str] | None = None
    stamps: dict[str, Any] = field(default_factory=dict)
    """Celery's stamps of the message (a retry carries them on, as Celery's does)."""
    called_directly: bool = True
    is_eager: bool = False
    """Run by ``apply()`` (or ``task_always_eager``) in the caller's thread, not by a worker."""

    @classmethod
    def from_message(cls, message: TaskMessage, hostname: str | None = None,
                     delivery_info: Mapping[str, Any] | None = None) -> Request:
        return cls(id=message.id, task=message.task, args=message.args, kwargs=message.kwargs,
                   retries=message.retries, eta=message.eta, expires=message.expires,
                   hostname=hostname, delivery_info=dict(delivery_info or {}),
                   reply_to=message.reply_to, correlation_id=message.id,
                   root_id=message.root_id, parent_id=message.parent_id, group=message.group,
                   origin=message.origin, time_limit=message.time_limit,
                   soft_time_limit=message.soft_time_limit, headers=dict(message.headers),
                   stamped_headers=message.stamped_headers, stamps=dict(message.stamps),
                   called_directly=False)


@dataclass
class ExceptionInfo:
    """What a task's handlers get as ``einfo``, with Celery's attribute names."""

    exception: BaseException
    traceback: str

    @property
    def type(self) -> type[BaseException]:
        return type(self.exception)

    def __str__(self) -> str:
        return self.traceback


class Task:
    """A registered task. Made by ``@app.task``; subclass it and pass ``base=`` for shared
    behaviour."""

    name: str
    app: App
    bind: bool = False
    typing: bool = True

    rate_limit = Option[Any](None)
    time_limit = Option[Any](None)
    soft_time_limit = Option[Any](None)
    acks_late = Option[bool](True)
    ignore_result = Option[bool](False)
    track_started = Option[bool](False)
    serializer = Option[str]("json")
    compression = Option[Any](None)
    priority = Option[Any](None)
    queue = Option[Any](None)
    routing_key = Option[Any](None)
    exchange = Option[Any](None)
    expires = Option[Any](None)
    max_retries = Option[Any](3)
    default_retry_delay = Option[float](180)
    autoretry_for = Option[tuple[type[BaseException], ...]](())
    retry_kwargs = Option[dict[str, Any]]({})
    retry_backoff = Option[Any](False)
    retry_backoff_max = Option[float](600)
    retry_jitter = Option[bool](True)

    overrides_apply_async: ClassVar[bool] = False
    """Whether this class overrides :meth:`apply_async` (set when the class is made). With
    ``"apply_async" in task.__dict__`` (one patched on the task, as ``mock.patch.object``
    does), whether signatures of a task are sent through its own ``apply_async``, as
    Celery's signatures call ``self.type.apply_async``; asked at each send
    (``canvas._sends_its_own_way``)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.overrides_apply_async = cls.apply_async is not Task.apply_async

    #: Decorator options a task accepts; anything else is a typo and raises TypeError.
    OPTIONS = frozenset({
        "name", "bind", "typing", "rate_limit", "time_limit", "soft_time_limit", "acks_late",
        "ignore_result", "track_started", "serializer", "compression", "priority", "queue",
        "routing_key", "exchange", "expires",
        "max_retries", "default_retry_delay", "autoretry_for", "retry_kwargs", "retry_backoff",
        "retry_backoff_max", "retry_jitter",
    })

    def __init__(self, app: App, fun: Callable[..., Any], name: str, **options: Any) -> None:
        unknown = set(options) - self.OPTIONS
        if unknown:
            raise TypeError(f"task {name!r}: unknown option(s) {sorted(unknown)}; "
                            f"known: {', '.join(sorted(self.OPTIONS))}")
        self.app = app
        self.name = name
        self.run = fun
        self.__wrapped__ = fun
        self.__doc__ = fun.__doc__
        self.__module__ = fun.__module__
        self.__name__ = getattr(fun, "__name__", name)
        self.__qualname__ = getattr(fun, "__qualname__", name)
        for key, value in options.items():
            setattr(self, key, value)
        self._local = threading.local()

    # calling --------------------------------------------------------------------------------
    @property
    def request(self) -> Request:
        """The current invocation (a default one when called directly)."""
        stack = getattr(self._local, "stack", None)
        return stack[-1] if stack else Request()

    def push_request(self, request: Request) -> None:
        """Make ``request`` this task's current one; a request not called directly (a
        worker's run, ``apply()``) is also the running task of this thread or context, whose
        sends name it as their parent (:mod:`.lineage`)."""
        self._local.__dict__.setdefault("stack", []).append(request)
        if not request.called_directly:
            entered(request)

    def pop_request(self) -> None:
        left(self._local.stack.pop())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here and now, in this process (no broker involved). Called directly
        inside a running task (not as its run), it is what an ``apply()`` in it sees on top
        (:func:`~.lineage.applied_under`)."""
        running = RUNNING.get()
        stack = getattr(self._local, "stack", None)
        if running and not (stack and stack[-1] is running[-1]):
            mark = DIRECT.set((*DIRECT.get(), len(running)))
            try:
                return self.run(self, *args, **kwargs) if self.bind else self.run(*args, **kwargs)
            finally:
                DIRECT.reset(mark)
        if self.bind:
            return self.run(self, *args, **kwargs)
        return self.run(*args, **kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send the task to a worker: ``add.delay(2, 2)``."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: tuple[Any, ...] | list[Any] | None = None,
                    kwargs: Mapping[str, Any] | None = None,
                    **options: Unpack[SendOptions]) -> AsyncResult:
        """Send the task with options (see :class:`SendOptions`); routing, limits, expiry,
        priority, ignore_result and serializer not given are the task's own."""
        if self.typing and not UNCHECKED.get():
            self._check_signature(args or (), kwargs or {})
        if self.app.send_settings.always_eager:
            self._send_defaults()  # Celery checks the task's time limits before running it here
            return self.apply(  # type: ignore[return-value]
                args, kwargs, task_id=options.get("task_id"), link=options.get("link"),
                link_error=options.get("link_error"))
        return self.send_call(args, kwargs, options, check=False)  # checked above

    def send_call(self, args: tuple[Any, ...] | list[Any] | None,
                  kwargs: Mapping[str, Any] | None, options: SendOptions, *,
                  check: bool = True) -> AsyncResult:
        """Send the task as :meth:`apply_async` does, whatever ``task_always_eager``: how the
        canvas sends a signature of a task registered here. ``options`` (a dict of the
        caller's that this may change) are :class:`SendOptions`; ``check``: the arguments
        are checked (``typing``)."""
        if check and self.typing:
            self._check_signature(args or (), kwargs or {})
        defaults = self._send_defaults()
        if not options:  # delay(), a plain signature: the task's own options, as they are
            return self.app.send_planned(self._default_plan(defaults), args, kwargs, defaults)
        if _PER_CALL.issuperset(options):  # a group's member: the same plan, its own ids
            return self.app.send_planned(self._default_plan(defaults), args, kwargs,
                                         {**defaults, **options})
        for key, default in defaults.items():
            given = options.get(key)
            if given is None or (not given and key in _NAMES):
                options[key] = default  # type: ignore[literal-required]
        return self.app.send_task(self.name, args, kwargs, task=self, **options)

    def _send_defaults(self) -> dict[str, Any]:
        """The send options this task supplies when a call does not (``Option`` values read
        through annotations and config), worked out again when the configuration or one of
        the task's own options changes. A soft time limit above the hard one is a ValueError
        for every send, as in Celery (a call's own limits are not checked, as in Celery)."""
        version = self.app.conf.version
        cached = self.__dict__.get("_send_defaults_cache")
        if cached is None or cached[0] != version:
            values = {key: getattr(self, key) for key in _SEND_DEFAULTS}
            hard, soft = values["time_limit"], values["soft_time_limit"]
            if hard and soft and soft > hard:  # Celery's check, on the task's own limits
                raise ValueError(f"task {self.name}: soft_time_limit ({soft}) must be less "
                                 f"than or equal to time_limit ({hard})")
            cached = self.__dict__["_send_defaults_cache"] = (version, values)
        defaults: dict[str, Any] = cached[1]
        return defaults

    def _default_plan(self, defaults: dict[str, Any]) -> SendPlan:
        """The send plan of a call that gives no options: the app's plan for the task's own
        ``defaults`` (kept here while the configuration and the task's options are
        unchanged)."""
        cached = self.__dict__.get("_default_plan_cache")
        if cached is None or cached[0] is not defaults or cached[1] != self.app.conf.version:
            cached = self.__dict__["_default_plan_cache"] = (
                defaults, self.app.conf.version, self.app.plan(self.name, self, defaults))
        plan: SendPlan = cached[2]
        return plan

    def apply(self, args: tuple[Any, ...] | list[Any] | None = None,
              kwargs: Mapping[str, Any] | None = None, **options: Any) -> EagerResult:
        """Run the task here and now as a worker would (handlers, signals, retries), for
        tests; see :mod:`qtui.core.eager`."""
        from .eager import apply
        return apply(self, args, kwargs, **options)

    def _check_signature(self, args: Any, kwargs: Any) -> None:
        """Fail at the call site, not in a worker, when arguments do not fit the function.
        Whether they fit depends only on how many come by position and which by name: a
        shape that fitted once is not bound again."""
        signature = self._signature
        if signature is None:
            return
        shape = (self.bind, len(args), *kwargs)
        fitted: set[tuple[Any, ...]] = self.__dict__["_run_signature"][2]
        if shape in fitted:
            return
        try:
            if self.bind:
                signature.bind(self, *args, **kwargs)
            else:
                signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}: {exc}") from None
        if len(fitted) < _FITTED_SHAPES:
            fitted.add(shape)

    @property
    def _signature(self) -> inspect.Signature | None:
        """The signature of ``run``, read once per function (None when it has none)."""
        cached = self.__dict__.get("_run_signature")
        if cached is None or cached[0] is not self.run:
            try:
                signature = inspect.signature(self.run)
            except (TypeError, ValueError):
                signature = None
            cached = self.__dict__["_run_signature"] = (self.run, signature, set())
        return cached[1]

    # canvas ---------------------------------------------------------------------------------
    def signature(self, args: Any = None, kwargs: Mapping[str, Any] | None = None,
                  immutable: bool = False, **options: Any) -> Signature:
        """This task with its arguments, to send later or as part of a chain, group or chord."""
        return Signature(self, args, kwargs, options, immutable=immutable)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A mutable signature: in a chain or link the previous result goes first."""
        if type(self).signature is Task.signature and "signature" not in self.__dict__:
            # one call less: a bulk send makes many
            return Signature(self, args, kwargs)
        return self.signature(args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: it ignores the previous result."""
        return self.signature(args, kwargs, immutable=True)

    def map(self, it: Any) -> Signature:
        """One task calling this one on each item of ``it``, in the worker, in turn."""
        from .canvas import xmap
        return xmap(self.s(), it)

    def starmap(self, it: Any) -> Signature:
        """One task calling this one with each item of ``it`` as its arguments."""
        from .canvas import xstarmap
        return xstarmap(self.s(), it)

    def chunks(self, it: Any, n: int) -> Signature:
        """``it`` (argument tuples) cut in parts of ``n``, each part a starmap task, as a group."""
        from .canvas import chunks
        return chunks(self.s(), it, n)

    def AsyncResult(self, task_id: str) -> AsyncResult:  # noqa: N802 - Celery's name
        from .result import AsyncResult
        return AsyncResult(task_id, app=self.app, task_name=self.name)

    # retrying -------------------------------------------------------------------------------
    def retry_delay(self, retries: int) -> float:
        """Seconds before retry number ``retries + 1``: exponential with ``retry_backoff``."""
        backoff = self.retry_backoff
        if not backoff:
            return float(self.default_retry_delay)
        factor = 1 if backoff is True else float(backoff)
        delay = min(factor * (2 ** retries), float(self.retry_backoff_max))
        return random.uniform(0, delay) if self.retry_jitter else delay

    def retry(self, args: Any = None, kwargs: Any = None, exc: BaseException | None = None,
              throw: bool = True, eta: datetime | None = None, countdown: float | None = None,
              max_retries: int | None = _MISSING, **options: Any) -> Retry:
        """Send this task again, later, and stop the current run by raising :class:`Retry`.

        Raises ``exc`` (or MaxRetriesExceededError) instead once ``max_retries`` is reached;
        ``max_retries=None`` retries forever.
        """
        request = self.request
        if request.called_directly:
            raise RuntimeError(f"{self.name}.retry() can only be called from a task run by a "
                               "worker (the task was called directly)")
        limit = self.max_retries if max_retries is _MISSING else max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"can't retry {self.name}[{request.id}] args:{request.args} "
                f"kwargs:{request.kwargs}: max_retries={limit} reached")
        if eta is None and countdown is None:
            countdown = self.retry_delay(request.retries)
        # Back where it came from: the same exchange and routing key, unless told otherwise.
        delivery = request.delivery_info
        route = {key: options.pop(key, None) for key in ("queue", "exchange", "routing_key")}
        if not any(route.values()) and delivery.get("routing_key"):
            route = {"exchange": delivery.get("exchange") or "",
                     "routing_key": delivery["routing_key"]}
        # What the first send had, as Celery's retry keeps it: the expiry, the priority, and the
        # task's serializer, compression and result setting.
        options.setdefault("expires", request.expires)
        priority = delivery.get("priority")
        options.setdefault("priority", self.priority if priority is None else priority)
        options.setdefault("serializer", self.serializer)
        options.setdefault("compression", self.compression)
        options.setdefault("ignore_result", self.ignore_result)
        if request.is_eager:  # apply() runs it again at once, with the same arguments
            raise Retry(exc=exc, when=0)
        with self.app.sending_now():  # not held by a sending_batch the Retry would end
            self.app.send_task(
                self.name, request.args if args is None else args,
                request.kwargs if kwargs is None else kwargs,
                task_id=request.id, retries=request.retries + 1, eta=eta, countdown=countdown,
                **route,
                time_limit=request.time_limit, soft_time_limit=request.soft_time_limit,
                root_id=request.root_id, parent_id=request.parent_id, group_id=request.group,
                reply_to=request.reply_to, headers=request.headers,
                stamped_headers=request.stamped_headers, stamps=request.stamps or None,
                task=self, **options)
        when = countdown if countdown is not None else (
            (eta - datetime.now(timezone.utc)).total_seconds() if eta else None)
        retry = Retry(exc=exc, when=when)
        if throw:
            raise retry
        return retry

    # handlers: override in a base class (``base=``); called by the worker as Celery's are ------
    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Before the task runs (an exception here fails the task)."""

    def on_success(self, retval: Any, task_id: str, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> None:
        """After the task succeeded and its result is stored."""

    def on_failure(self, exc: BaseException, task_id: str, args: tuple[Any, ...],
                   kwargs: dict[str, Any], einfo: ExceptionInfo) -> None:
        """After the task failed and its failure is stored."""

    def on_retry(self, exc: BaseException, task_id: str, args: tuple[Any, ...],
                 kwargs: dict[str, Any], einfo: ExceptionInfo) -> None:
        """After the task asked to be retried and was sent again."""

    def after_return(self, status: str, retval: Any, task_id: str, args: tuple[Any, ...],
                     kwargs: dict[str, Any], einfo: ExceptionInfo | None) -> None:
        """After the task succeeded or failed (not after a retry), once the other handlers ran."""

    def __repr__(self) -> str:
        return f"<@task: {self.name} of {self.app.main or '__main__'}>"


def resolve_eta(countdown: float | None, eta: datetime | None, tz: tzinfo,
                now: datetime | None = None) -> datetime | None:
    """An aware ETA from a countdown or a datetime; a naive datetime is in the app's time zone."""
    if countdown is not None:
        if countdown != countdown or countdown < 0:
            raise ValueError(f"countdown must be a number of seconds >= 0, got {countdown!r}")
        return (now or datetime.now(timezone.utc)) + timedelta(seconds=countdown)
    if eta is None:
        return None
    return eta if eta.tzinfo else eta.replace(tzinfo=tz)


def resolve_expires(expires: float | datetime | None, tz: tzinfo,
                    now: datetime | None = None) -> datetime | None:
    if expires is None:
        return None
    if isinstance(expires, datetime):
        return expires if expires.tzinfo else expires.replace(tzinfo=tz)
    return (now or datetime.now(timezone.utc)) + timedelta(seconds=float(expires))


def seconds_to_live(expires: float | datetime, expires_at: datetime) -> float:
    """Celery's ``expiration`` message property for ``expires`` (resolved to ``expires_at``):
    the seconds given, or those left until the date; 0 for a date past, as Celery sends it
    (RabbitMQ then drops the message unless a consumer takes it at once)."""
    if isinstance(expires, datetime):
        return max((expires_at - datetime.now(timezone.utc)).total_seconds(), 0.0)
    return max(float(expires), 0.0)


def new_task_id() -> str:
    return new_id()
