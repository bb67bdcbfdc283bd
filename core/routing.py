"""Routing: which queue, exchange, routing key and priority a task is sent with.

The order is Celery's: options given to ``apply_async`` (and the task's own ``queue`` option)
win over ``task_routes``, which win over ``task_default_queue``. ``task_routes`` may be a table
of task name or glob pattern (or compiled regex) -> route, a callable router, a ``module:attr``
string naming one, or a list of any of these tried in order.
"""

from __future__ import annotations

import fnmatch
import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kombu import Exchange, Queue

from .config import Conf
from .exceptions import ConfigError

RouterFn = Callable[..., Any]
_ROUTE_KEYS = ("queue", "exchange", "exchange_type", "routing_key", "priority")


@dataclass(frozen=True)
class Route:
    """Where one message goes. ``queue`` is declared before publishing when known."""

    exchange: str
    routing_key: str
    queue: Queue | None = None
    priority: int | None = None


#: Queue types a task queue may be declared as (RabbitMQ's ``x-queue-type``).
QUEUE_TYPES = ("classic", "quorum")
_QUEUE_OPTIONS = ("exchange", "exchange_type", "routing_key", "max_priority", "queue_type",
                  "consumer_timeout")


def make_queue(name: str, exchange: str | None = None, exchange_type: str = "direct",
               routing_key: str | None = None, max_priority: int | None = None,
               queue_type: str | None = None, consumer_timeout: float | None = None) -> Queue:
    """A durable queue bound to its exchange, named and bound as Celery does by default;
    ``queue_type`` and ``consumer_timeout`` (seconds) become RabbitMQ's ``x-queue-type`` and
    ``x-consumer-timeout`` arguments."""
    arguments: dict[str, Any] = {}
    if max_priority is not None:
        arguments["x-max-priority"] = max_priority
    if queue_type is not None and queue_type != "classic":
        arguments["x-queue-type"] = queue_type
    if consumer_timeout is not None:
        arguments["x-consumer-timeout"] = int(consumer_timeout * 1000)
    return Queue(name, Exchange(exchange or name, exchange_type),
                 routing_key=routing_key or name, queue_arguments=arguments or None)


def queue_arguments(queue: Queue) -> dict[str, Any]:
    """The arguments ``queue`` is declared with ({} for none). kombu sets them from
    ``Queue.attrs``, which its annotations do not list."""
    arguments: dict[str, Any] | None = getattr(queue, "queue_arguments", None)
    return arguments or {}


def queue_type(queue: Queue) -> str:
    """``quorum`` or ``classic``: what the queue is declared as."""
    return str(queue_arguments(queue).get("x-queue-type") or "classic")


def _queue_options(name: str, options: Mapping[str, Any], default_priority: int | None,
                   ) -> dict[str, Any]:
    """Check one ``task_queues`` table; quorum queues have no priorities (RabbitMQ < 4.0), so
    task_queue_max_priority leaves them out and an explicit max_priority is an error."""
    unknown = set(options) - set(_QUEUE_OPTIONS)
    if unknown:
        raise ConfigError(f"task_queues[{name!r}]: unknown option(s) {sorted(unknown)}; "
                          f"expected {', '.join(_QUEUE_OPTIONS)}")
    options = dict(options)
    kind = options.get("queue_type")
    if kind is not None and kind not in QUEUE_TYPES:
        raise ConfigError(f"task_queues[{name!r}]: queue_type must be one of "
                          f"{', '.join(QUEUE_TYPES)}, got {kind!r}")
    timeout = options.get("consumer_timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or timeout <= 0):
        raise ConfigError(f"task_queues[{name!r}]: consumer_timeout must be a number of seconds "
                          f"above 0, got {timeout!r}")
    if kind == "quorum":
        if options.get("max_priority") is not None:
            raise ConfigError(f"task_queues[{name!r}]: a quorum queue has no priorities "
                              "(RabbitMQ before 4.0); remove max_priority or use a classic queue")
    else:
        options.setdefault("max_priority", default_priority)
    return options


def queues_from_conf(conf: Conf) -> dict[str, Queue]:
    """Every named queue: ``task_queues`` (table or kombu Queues) plus the default queue."""
    configured = conf.task_queues
    queues: dict[str, Queue] = {}
    if isinstance(configured, Mapping):
        for name, options in configured.items():
            if not isinstance(options, Mapping):
                raise ConfigError(f"task_queues[{name!r}] must be a table of queue options, "
                                  f"got {type(options).__name__}")
            queues[name] = make_queue(name, **_queue_options(name, options,
                                                             conf.task_queue_max_priority))
    elif configured:
        for queue in configured:
            if not isinstance(queue, Queue):
                raise ConfigError(f"task_queues entries must be kombu Queue objects, got {queue!r}")
            queues[queue.name] = queue
    default = conf.task_default_queue
    if default not in queues:
        queues[default] = make_queue(
            default, conf.task_default_exchange, conf.task_default_exchange_type,
            conf.task_default_routing_key, conf.task_queue_max_priority)
    return queues


class MapRoute:
    """A table router: exact task names first, then glob patterns and regexes in order."""

    def __init__(self, table: Mapping[Any, Any]) -> None:
        self.exact: dict[str, Any] = {}
        self.patterns: list[tuple[re.Pattern[str], Any]] = []
        for key, route in table.items():
            if isinstance(key, re.Pattern):
                self.patterns.append((key, route))
            elif isinstance(key, str) and any(c in key for c in "*?["):
                self.patterns.append((re.compile(fnmatch.translate(key)), route))
            elif isinstance(key, str):
                self.exact[key] = route
            else:
                raise ConfigError(f"task_routes keys must be task names or patterns, got {key!r}")

    def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name in self.exact:
            return self.exact[name]
        for pattern, route in self.patterns:
            if pattern.match(name):
                return route
        return None


def _router(entry: Any) -> RouterFn:
    if isinstance(entry, Mapping):
        return MapRoute(entry)
    if isinstance(entry, str):
        module, _, attr = entry.replace(":", ".").rpartition(".")
        try:
            entry = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"task_routes: cannot import router {entry!r}: {exc}") from exc
    if not callable(entry):
        raise ConfigError(f"task_routes entries must be tables or callables, got {entry!r}")
    router: RouterFn = entry
    return router


def routers_from(setting: Any) -> list[RouterFn]:
    if setting is None:
        return []
    if isinstance(setting, (list, tuple)):
        return [_router(e) for e in setting]
    return [_router(setting)]


#: Routes a Router keeps resolved (task names times explicit options: a few in practice).
_STATIC_ROUTES = 4096


class Router:
    """Resolves a task's destination from explicit options, task_routes and the defaults."""

    def __init__(self, conf: Conf) -> None:
        self.conf = conf
        self.queues = queues_from_conf(conf)
        self.routers = routers_from(conf.task_routes)
        self._static: dict[tuple[Any, ...], Route] = {}
        """Routes already resolved, by task name and explicit options: with no router to
        consult (routers see the arguments), a route depends on nothing else, and this
        Router is rebuilt when the configuration changes."""
        self.sees_only_names = all(isinstance(router, MapRoute) for router in self.routers)
        """No router sees a call's arguments or options (only tables of task names): a route
        depends on the task's name and the options given."""

    def queue(self, name: str) -> Queue:
        """The named queue, created on the fly unless task_create_missing_queues is off."""
        if name not in self.queues:
            if not self.conf.task_create_missing_queues:
                raise ConfigError(f"queue {name!r} is not in task_queues and "
                                  "task_create_missing_queues is off")
            self.queues[name] = make_queue(name, max_priority=self.conf.task_queue_max_priority)
        return self.queues[name]

    def lookup(self, name: str, args: Any = (), kwargs: Any = None,
               options: Mapping[str, Any] | None = None, task: Any = None) -> dict[str, Any]:
        """The first route any router gives for this task, as a dict of route keys."""
        for router in self.routers:
            route = router(name, args, kwargs or {}, dict(options or {}), task=task)
            if route is None:
                continue
            if isinstance(route, (str, Queue)):
                return {"queue": route}
            if not isinstance(route, Mapping):
                raise ConfigError(f"router for {name!r} returned {route!r}; "
                                  "expected a queue name, a kombu Queue or a table of route keys")
            unknown = set(route) - set(_ROUTE_KEYS)
            if unknown:
                raise ConfigError(f"route for {name!r} has unknown key(s) {sorted(unknown)}; "
                                  f"expected {', '.join(_ROUTE_KEYS)}")
            return dict(route)
        return {}

    def route(self, name: str, args: Any = (), kwargs: Any = None,
              options: Mapping[str, Any] | None = None, task: Any = None) -> Route:
        options = {k: v for k, v in (options or {}).items() if k in _ROUTE_KEYS and v is not None}
        if self.routers:
            return self._route(name, args, kwargs, options, task)
        key = (name, *sorted(options.items()))
        try:
            return self._static[key]
        except (KeyError, TypeError):  # not resolved yet, or an option that cannot be a key
            pass
        route = self._route(name, args, kwargs, options, task)
        if len(self._static) < _STATIC_ROUTES:
            try:
                self._static[key] = route
            except TypeError:
                pass
        return route

    def _route(self, name: str, args: Any, kwargs: Any, options: Mapping[str, Any],
               task: Any) -> Route:
        merged = {**self.lookup(name, args, kwargs, options, task), **options}
        queue = merged.get("queue")
        if isinstance(queue, str):
            queue = self.queue(queue)
        elif queue is None and "exchange" not in merged:
            queue = self.queue(self.conf.task_default_queue)
        priority = merged.get("priority", self.conf.task_default_priority)
        if queue is not None:
            exchange = merged.get("exchange")
            routing_key = merged.get("routing_key")
            exchange_type = merged.get("exchange_type") or (
                queue.exchange.type if queue.exchange else "direct")
            if (not exchange or not routing_key) and exchange_type == "direct":
                # Celery's rule: straight to the queue through the default exchange, which
                # needs no binding (on Redis a lost binding set would drop the message).
                exchange, routing_key = "", queue.name
            else:
                exchange = exchange or (queue.exchange.name if queue.exchange else "")
                routing_key = routing_key or queue.routing_key or queue.name
        else:
            exchange = merged["exchange"]
            routing_key = merged.get("routing_key", name)
        if isinstance(exchange, Exchange):
            exchange = exchange.name
        return Route(exchange=exchange, routing_key=routing_key, queue=queue, priority=priority)
