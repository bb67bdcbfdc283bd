"""Settings: their names (Celery's wherever Celery has one), defaults, types, loading and checks.

A setting is declared once in :data:`SETTINGS`; ``config.example.toml`` documents each of them
and a test keeps the two in step. :class:`Conf` is what ``app.conf`` is: attribute and mapping
access, ``update()`` that checks types and warns about unknown keys with a did-you-mean.
"""

from __future__ import annotations

import difflib
import importlib
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kombu import serialization

from .alerts import parse_rules
from .compression import DEFAULT_MAX_BODY_SIZE
from .exceptions import ConfigError
from .protocol import compression_type

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CONFIG_ENV = "QTUI_CONFIG"
DEFAULT_CONFIG_FILE = "qtui.toml"


class UnknownSettingWarning(UserWarning):
    """A configuration key that qtui does not know (probably a typo)."""


@dataclass(frozen=True)
class Kind:
    """What values a setting takes: a check and the words used to say what was expected."""

    expected: str
    check: Callable[[Any], bool]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _optional(kind: Kind) -> Kind:
    return Kind(f"{kind.expected} or nothing", lambda v: v is None or kind.check(v))


STR = Kind("a string", lambda v: isinstance(v, str))
BOOL = Kind("true or false", lambda v: isinstance(v, bool))
INT = Kind("a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool))
NUMBER = Kind("a number", _is_number)
STR_LIST = Kind("a list of strings",
                lambda v: isinstance(v, (list, tuple)) and all(isinstance(i, str) for i in v))
TABLE = Kind("a table (mapping)", lambda v: isinstance(v, Mapping))
ROUTES = Kind("a table of task name -> route, a list of routers, a callable or its import name",
              lambda v: v is None or isinstance(v, (Mapping, list, tuple, str)) or callable(v))
ANNOTATIONS = Kind("a table of task name -> options, a list of such tables, or a callable",
                   lambda v: v is None or isinstance(v, (Mapping, list, tuple)) or callable(v))
RATE = Kind('a rate such as "10/s", "10/m", "10/h" or a number per second',
            lambda v: v is None or (_is_number(v) and math.isfinite(v) and v >= 0)
            or (isinstance(v, str)
                and re.fullmatch(r"\s*\d+(\.\d+)?\s*(/\s*[smh])?\s*", v) is not None))
QUEUES = Kind("a table of queue name -> options, or a list of kombu Queues",
              lambda v: v is None or isinstance(v, (Mapping, list, tuple)))


def _at_least(kind: Kind, low: float, above: bool = False) -> Kind:
    """``kind``, and >= ``low`` (> with ``above``); NaN is neither."""
    word = ">" if above else ">="
    return Kind(f"{kind.expected} {word} {low:g}", lambda v: kind.check(v) and (
        v > low if above else v >= low))


def _between(kind: Kind, low: int, high: int) -> Kind:
    return Kind(f"{kind.expected} from {low} to {high}",
                lambda v: kind.check(v) and low <= v <= high)


def _one_of(*names: str) -> Kind:
    return Kind("one of " + ", ".join(repr(n) for n in names), lambda v: v in names)


def _serializer(value: Any) -> bool:
    return isinstance(value, str) and value in serialization.registry.name_to_type


def _content_type(value: Any) -> bool:
    """A serializer name or its content type, as accept_content takes them."""
    registry = serialization.registry
    return isinstance(value, str) and (value in registry.name_to_type
                                       or value in registry.type_to_name)


SERIALIZER = Kind("a serializer name kombu knows (json, pickle, yaml, msgpack)", _serializer)


def _compression(value: Any) -> bool:
    try:
        compression_type(value)
    except (TypeError, ValueError):
        return False
    return True


COMPRESSION = Kind("a compression kombu knows (zlib, bzip2, lzma, brotli, zstd)", _compression)
CONTENT_LIST = Kind("a list of serializer names or content types (json, application/json, ...)",
                    lambda v: isinstance(v, (list, tuple)) and all(map(_content_type, v)))
#: The keyword arguments kombu's ``Connection.ensure`` takes from a retry policy.
RETRY_POLICY_KEYS = frozenset({"max_retries", "interval_start", "interval_step", "interval_max",
                               "errback", "on_revive", "retry_errors"})
RETRY_POLICY = Kind("a table with " + ", ".join(sorted(RETRY_POLICY_KEYS)),
                    lambda v: isinstance(v, Mapping) and set(v) <= RETRY_POLICY_KEYS)


#: Inspect commands that show no task's arguments: the default of control_allow_unsigned.
DEFAULT_ALLOW_UNSIGNED = ("ping", "stats", "active_queues", "registered", "clock", "report")
#: Commands control_allow_unsigned may list: read-only ones (never task_arguments, never
#: hello, which revokes tasks, never a command that changes anything).
INSPECT_COMMANDS = frozenset({
    *DEFAULT_ALLOW_UNSIGNED, "active", "reserved", "scheduled", "revoked", "query_task", "conf",
    "dump_active", "dump_reserved", "dump_schedule", "dump_revoked", "dump_tasks", "dump_conf"})
INSPECT_LIST = Kind("a list of read-only inspect commands (" + ", ".join(sorted(
    INSPECT_COMMANDS)) + ")", lambda v: STR_LIST.check(v) and set(v) <= INSPECT_COMMANDS)
#: What the console can do to a cluster, as console_permissions names it.
CONSOLE_ACTIONS = ("revoke", "terminate", "retry", "rate_limit", "time_limit", "pool_grow",
                   "pool_shrink", "add_consumer", "cancel_consumer", "purge", "shutdown",
                   "pause")
PERMISSIONS = Kind("a list of console actions (" + ", ".join(CONSOLE_ACTIONS) + ")",
                   lambda v: STR_LIST.check(v) and set(v) <= set(CONSOLE_ACTIONS))


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    kind: Kind
    doc: str
    secret: bool = False
    validate: Callable[[Any, str], object] | None = None
    """A check past the kind's, raising a ConfigError that says what is wrong inside the value
    (called with the value and where it came from)."""


SETTINGS: dict[str, Setting] = {s.name: s for s in [
    # Broker
    Setting("broker_url", None, _optional(STR),
            "Where messages go. Unset: the embedded SQLite broker in the user's data directory.",
            secret=True),
    Setting("broker_connection_timeout", 4.0, _at_least(NUMBER, 0, above=True),
            "Seconds to wait for the broker to accept a connection."),
    Setting("broker_connection_max_retries", 100, _optional(_at_least(INT, 0)),
            "How often to retry a lost broker connection before giving up (nothing: forever)."),
    Setting("broker_heartbeat", 120.0, _optional(_at_least(NUMBER, 0)),
            "AMQP heartbeat of the worker's connection, in seconds, so a silent broker (a "
            "half-open connection after a network partition) is noticed within about three of "
            "them and the worker reconnects (0 or nothing: off)."),
    Setting("broker_consumer_timeout", 1800.0, _optional(_at_least(NUMBER, 0, above=True)),
            "RabbitMQ's consumer_timeout in seconds as the worker assumes it (the server does "
            "not tell it): the worker warns at start about tasks whose time limit is longer "
            "(nothing: no warning)."),
    Setting("broker_transport_options", {}, TABLE,
            "Options passed to the kombu transport (for example visibility_timeout)."),
    Setting("broker_publish_timeout", 10.0, _at_least(NUMBER, 0, above=True),
            "Seconds a send may take, retries included, before it raises BrokerBlocked: on "
            "RabbitMQ the broker must confirm the task by then (a memory or disk alarm blocks "
            "publishers). On Redis it bounds the wait for a one-at-a-time send's reply to a "
            "queue; a batch, a named exchange and connecting wait as long as "
            "broker_transport_options' socket_timeout and socket_connect_timeout let them."),
    Setting("broker_management_url", None, _optional(STR),
            "RabbitMQ management API (http://user:password@host:15672/), so the console and "
            "`qtui status` list every queue, including those no worker consumes.",
            secret=True),
    # Results
    Setting("result_backend", None, _optional(STR),
            "Where results are stored: redis://, rpc://, sqlite://PATH. Unset: beside the "
            "embedded broker when broker_url is unset too, otherwise results are not stored.",
            secret=True),
    Setting("result_serializer", "json", SERIALIZER,
            "Serializer for results (json unless you opt in)."),
    Setting("result_accept_content", None, _optional(CONTENT_LIST),
            "Content types accepted when reading results; nothing means accept_content."),
    Setting("result_expires", 86400, _optional(_at_least(NUMBER, 0)),
            "Seconds a stored result is kept (nothing: forever)."),
    Setting("result_backend_always_retry", False, BOOL,
            "Also retry a result write that fails because the backend is unreachable (a "
            "connection error or timeout), as Celery's; a write the backend refuses for a while "
            "(Redis's READONLY, OOM, ...) is retried whatever this says."),
    Setting("result_backend_max_retries", None, _optional(_at_least(NUMBER, 0)),
            "How many times a refused result write is tried again before the write fails "
            "(nothing: for as long as the refusal lasts, Celery's inf); a worker stops fetching "
            "while a result write is refused."),
    Setting("result_extended", False, BOOL,
            "Store the task name, args, kwargs, worker and queue with the result."),
    # Serialization and time
    Setting("task_serializer", "json", SERIALIZER, "Serializer for task messages."),
    Setting("task_compression", None, _optional(COMPRESSION),
            "Compression of task message bodies (zlib, bzip2, lzma: kombu's registry), as "
            "Celery's; nothing: none."),
    Setting("accept_content", ["json"], CONTENT_LIST,
            "Content types a worker or client accepts. "
            "Add 'pickle' only if you trust every sender."),
    Setting("timezone", None, _optional(STR),
            "Time zone of naive ETA and expiry datetimes (nothing: UTC, or local time when "
            "enable_utc is false)."),
    Setting("enable_utc", True, BOOL, "Read naive datetimes as UTC when timezone is unset."),
    # Tasks and routing
    Setting("task_default_queue", "celery", STR, "Queue for tasks no route sends elsewhere."),
    Setting("task_default_exchange", None, _optional(STR),
            "Exchange of the default queue (nothing: the queue's name)."),
    Setting("task_default_exchange_type", "direct",
            _one_of("direct", "topic", "fanout", "headers"), "Type of the default exchange."),
    Setting("task_default_routing_key", None, _optional(STR),
            "Routing key of the default queue (nothing: the queue's name)."),
    Setting("task_default_priority", None, _optional(_between(INT, 0, 255)),
            "Priority of tasks sent without one."),
    Setting("task_inherit_parent_priority", False, BOOL,
            "A task sent from inside a running task, with no priority of its own, gets the "
            "running task's (Celery's setting)."),
    Setting("task_queue_max_priority", None, _optional(_between(INT, 1, 255)),
            "x-max-priority of declared queues (RabbitMQ priority queues)."),
    Setting("task_queues", None, QUEUES,
            "Named queues with their exchange, exchange_type, routing_key, max_priority, "
            "queue_type (classic or quorum) and consumer_timeout (seconds, RabbitMQ)."),
    Setting("task_routes", None, ROUTES,
            "Which queue, exchange, routing key and priority each task goes to."),
    Setting("task_annotations", None, ANNOTATIONS,
            "Per-task option overrides, for example {'tasks.add': {'rate_limit': '10/s'}}."),
    Setting("task_create_missing_queues", True, BOOL,
            "Declare a queue named by a route even when task_queues does not list it."),
    Setting("task_acks_late", True, BOOL,
            "Acknowledge a task after it ran, so a crash never loses it "
            "(Celery's default is false)."),
    Setting("task_ignore_result", False, BOOL, "Do not store results unless a task asks for it."),
    Setting("task_acks_on_failure_or_timeout", True, BOOL,
            "Ack a late-acked task that failed or timed out; false: dead-letter its message."),
    Setting("task_always_eager", False, BOOL,
            "apply_async() and delay() run the task at once in the caller (for tests)."),
    Setting("task_eager_propagates", False, BOOL,
            "An eager task's exception is raised by apply() instead of returned in its result."),
    Setting("task_reject_on_worker_lost", True, BOOL,
            "A late-acked task whose process died is delivered again; false: it fails with "
            "WorkerLostError (Celery's default is false)."),
    Setting("task_track_started", False, BOOL,
            "Store STARTED (with the worker's pid and hostname) when a task starts running."),
    Setting("task_time_limit", None, _optional(_at_least(NUMBER, 0, above=True)),
            "Hard time limit in seconds for every task."),
    Setting("task_soft_time_limit", None, _optional(_at_least(NUMBER, 0, above=True)),
            "Soft time limit in seconds for every task."),
    Setting("task_default_rate_limit", None, RATE, "Rate limit of task types that set none."),
    Setting("task_publish_retry", True, BOOL,
            "Retry sending a task when the broker connection fails."),
    Setting("task_publish_retry_policy", {"max_retries": 3, "interval_start": 0,
                                          "interval_step": 0.2, "interval_max": 0.2},
            RETRY_POLICY,
            "kombu retry policy for sending tasks."),
    Setting("task_send_sent_event", False, BOOL,
            "Send a task-sent event for every task sent, so monitors see tasks still queued."),
    Setting("imports", [], STR_LIST, "Modules the worker imports to register their tasks."),
    # Worker
    Setting("worker_concurrency", None, _optional(_at_least(INT, 1)),
            "Pool size (nothing: the number of CPUs)."),
    Setting("worker_prefetch_multiplier", 4, _at_least(INT, 0),
            "Messages reserved per pool slot; 1 for long tasks."),
    Setting("worker_pool", "prefork", _one_of("prefork", "threads", "solo"),
            "Execution pool: prefork (processes), threads or solo (in the worker's own thread)."),
    Setting("worker_max_tasks_per_child", None, _optional(_at_least(INT, 1)),
            "Replace a prefork child after it ran this many tasks (nothing: never)."),
    Setting("worker_max_memory_per_child", None, _optional(_at_least(INT, 1)),
            "Replace a prefork child after a task leaves it above this resident memory, in KiB "
            "(nothing: never)."),
    Setting("worker_soft_shutdown_timeout", 0.0, _at_least(NUMBER, 0),
            "Seconds a cold shutdown first lets running tasks finish (prefork and threads pools; "
            "0: none), as Celery's soft shutdown."),
    Setting("worker_shutdown_timeout", 30.0, _at_least(NUMBER, 0),
            "Seconds a warm shutdown waits for running tasks before it requeues them and exits."),
    Setting("worker_send_task_events", True, BOOL,
            "Send task events to the celeryev exchange (the console shows them)."),
    Setting("worker_enable_remote_control", True, BOOL,
            "Serve remote control (the celery.pidbox mailbox: inspect, control, the console's "
            "commands); false: the worker answers none of them."),
    Setting("worker_enable_pcre_matcher", False, BOOL,
            "Match broadcasts sent with matcher 'pcre' against the worker's hostname; false: "
            "drop them (a pattern such as '(.+)+!' backtracks for hours and locks the worker)."),
    Setting("worker_statedb", None, _optional(STR),
            "File keeping the revoked task ids across worker restarts (nothing: memory only)."),
    Setting("worker_eta_horizon", 10.0, _at_least(NUMBER, 0),
            "A task due within this many seconds is held by the worker; a later one goes to the "
            "broker's delayed store (Redis sorted set, RabbitMQ delay queues) until nearly due."),
    Setting("worker_max_body_size", DEFAULT_MAX_BODY_SIZE, _at_least(INT, 1),
            "Largest message body a worker takes in, in bytes, once decompressed: a compressed "
            "body is inflated in steps and dead-lettered (as it came) past this size, so a small "
            "compressed message cannot inflate into gigabytes; a larger plain body is "
            "dead-lettered too. Peek stops reading a compressed body at the default."),
    Setting("task_max_redeliveries", 3, _at_least(INT, 1),
            "Deliveries of one message after which it goes to the dead-letter queue "
            "<queue>.dead instead of running again (a poison message cannot loop forever)."),
    # Periodic tasks (qtui beat)
    Setting("beat_schedule", {}, TABLE,
            "Periodic tasks: {name: {task, schedule, args, kwargs, options}}; schedule is "
            "seconds, a timedelta, a crontab or (TOML) a table of crontab fields."),
    Setting("beat_catch_up", "once", _one_of("once", "none", "all"),
            "Ticks missed while no beat ran (later than beat_grace): once (one run for all of "
            "them), none (skip them) or all (send each)."),
    Setting("beat_grace", 60.0, _at_least(NUMBER, 1),
            "Seconds a tick may be late and still be sent as scheduled (a takeover); an older "
            "one is missed and follows beat_catch_up. At least 1."),
    Setting("beat_lease_ttl", 5.0, _at_least(NUMBER, 1),
            "Seconds the leading beat's lease lasts unless renewed (every third of it): a "
            "standby takes over within about this long after the leader dies."),
    Setting("beat_key_prefix", "qtui-beat", STR,
            "Names the beat's shared state (Redis keys, SQLite rows): apps sharing a broker "
            "each need their own."),
    # Console
    Setting("console_max_tasks", 100_000, _at_least(INT, 1),
            "Tasks the console keeps in memory (finished ones are forgotten first)."),
    Setting("console_history", True, BOOL,
            "Keep the tasks the console saw in a local SQLite file, so a restart is not blank."),
    Setting("console_history_file", None, _optional(STR),
            "Where the console keeps its history "
            "(nothing: <data dir>/qtui/console-history.sqlite)."),
    Setting("console_refresh_interval", 0.25, _at_least(NUMBER, 0, above=True),
            "Seconds between the console's redraws from the event stream."),
    # Prometheus exporter (qtui exporter)
    Setting("exporter_port", 9808, _between(INT, 1, 65535),
            "TCP port qtui exporter serves /metrics on (celery-exporter's)."),
    Setting("exporter_addr", "127.0.0.1", STR,
            "Address qtui exporter listens on; 0.0.0.0 for every interface."),
    Setting("exporter_poll_interval", 5.0, _at_least(NUMBER, 0, above=True),
            "Seconds between qtui exporter's polls of queue depths and worker details."),
    Setting("audit", True, BOOL,
            "Append every action taken from the console or a scripted command (who, when, "
            "what, each worker's reply) to the audit trail in console_history_file."),
    Setting("audit_max_entries", 10_000, _at_least(INT, 100),
            "Audit entries kept (the oldest go first)."),
    # Remote control and console permissions
    Setting("control_secret", None, _optional(STR),
            "Sign remote-control commands with this secret (16 characters or more): qtui "
            "clients sign every command, and qtui workers that have it refuse unsigned, badly "
            "signed, stale and replayed ones. Nothing: commands are not signed (Celery's way).",
            secret=True),
    Setting("control_secret_file", None, _optional(STR),
            "A file holding the control secret (instead of control_secret)."),
    Setting("control_allow_unsigned", list(DEFAULT_ALLOW_UNSIGNED), INSPECT_LIST,
            "Read-only inspect commands a worker with a control secret still answers unsigned "
            "(Celery's tools, Flower)."),
    Setting("control_replay_window", 60.0, _at_least(NUMBER, 0, above=True),
            "Seconds a signed command stays valid (clocks of clients and workers must agree "
            "this well); its nonce is remembered that long, so it cannot be replayed."),
    Setting("worker_max_concurrency", None, _optional(_at_least(INT, 1)),
            "Most pool slots pool_grow and autoscale may reach (nothing: 4 per CPU, at least 8)."),
    Setting("console_permissions", None, _optional(PERMISSIONS),
            "Console actions allowed (nothing: all of them); the others are hidden and refused "
            "as with --read-only."),
    Setting("console_max_workers", 1_000, _at_least(INT, 1),
            "Workers the console keeps (the least recently heard from is forgotten first), so "
            "a flood of made-up hostnames cannot exhaust its memory."),
    Setting("console_max_field", 10_000, _at_least(INT, 100),
            "Characters the console keeps and stores in its history of each task's args, "
            "kwargs, result, exception and traceback (the rest is cut, with a marker)."),
    Setting("console_metrics", True, BOOL,
            "Count task events per minute, task name and queue (throughput, failures, runtime "
            "and wait histograms) and queue depths in the console's history file, for its "
            "Metrics view (needs console_history)."),
    Setting("console_metrics_hours", 48.0, _at_least(NUMBER, 1),
            "Hours the console keeps metrics per minute; older ones are kept per ten minutes."),
    Setting("console_metrics_days", 30.0, _at_least(NUMBER, 1),
            "Days the console keeps metrics at all; older ones are dropped."),
    Setting("contexts", {}, TABLE,
            "Named clusters for the console ([contexts.NAME] tables of settings such as "
            "broker_url); pick one with --context NAME or :context NAME."),
    # Alerts
    Setting("alerts", [], Kind("a list of alert rules ([[alerts]] tables)",
                               lambda v: isinstance(v, (list, tuple))),
            "Alert rules, one table each: name, kind (worker_offline, queue_depth, queue_age, "
            "failure_rate, no_events), selectors (queue, task, worker globs), over, for. The "
            "console shows them; `qtui status --check` evaluates them.",
            validate=parse_rules),
    Setting("alert_command", None, _optional(Kind(
        "a command: a list of strings (program and arguments) or one string split as a shell "
        "would", lambda v: (isinstance(v, str) and v.strip() != "")
        or (STR_LIST.check(v) and len(v) > 0))),
            "A command run (without a shell) when an alert fires and when it clears, with the "
            "alert as JSON on its standard input."),
    Setting("alert_command_timeout", 10.0, _at_least(NUMBER, 0, above=True),
            "Seconds alert_command may run before it is killed."),
]}


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, SETTINGS, n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_setting(name: str, value: Any, source: str) -> bool:
    """Check one key: warn if unknown (with a did-you-mean), raise ConfigError on a wrong type.

    Returns whether the key is a known setting.
    """
    setting = SETTINGS.get(name)
    if setting is None:
        warnings.warn(f"{source}: unknown setting {name!r}.{_suggest(name)}",
                      UnknownSettingWarning, stacklevel=4)
        return False
    if not setting.kind.check(value):
        raise ConfigError(f"{source}: setting {name!r} must be {setting.kind.expected}, "
                          f"got {type(value).__name__} {value!r:.80}")
    if setting.validate is not None:
        setting.validate(value, source)
    return True


class Conf(MutableMapping[str, Any]):
    """``app.conf``: every setting with its default, readable as attributes or as a mapping."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_changed", set())
        object.__setattr__(self, "version", 0)
        if values:
            self.update(values)

    # mapping protocol
    def __getitem__(self, key: str) -> Any:
        if key in self._values:
            return self._values[key]
        setting = SETTINGS.get(key)
        if setting is None:
            raise KeyError(f"unknown setting {key!r}.{_suggest(key)}")
        default = setting.default
        return default.copy() if isinstance(default, (dict, list)) else default

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __delitem__(self, key: str) -> None:
        del self._values[key]
        self._changed.discard(key)
        object.__setattr__(self, "version", self.version + 1)

    def __iter__(self) -> Iterator[str]:
        yield from SETTINGS
        yield from (k for k in self._values if k not in SETTINGS)

    def __len__(self) -> int:
        return len(SETTINGS) + sum(1 for k in self._values if k not in SETTINGS)

    def __contains__(self, key: object) -> bool:
        return key in SETTINGS or key in self._values

    # attribute access
    version: int
    """Counts changes, so what is derived from settings (the router) knows when to rebuild."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(exc.args[0]) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def update(self, other: Any = (), /, source: str = "app.conf.update()",
               **kwargs: Any) -> None:
        """Set several settings at once, checking each; unknown keys warn and are kept."""
        items = dict(other) if other else {}
        items.update(kwargs)
        for key, value in items.items():
            check_setting(key, value, source)
        self._values.update(items)
        self._changed.update(items)
        object.__setattr__(self, "version", self.version + 1)

    def changes(self) -> dict[str, Any]:
        """Settings set explicitly (not defaults)."""
        return {k: self._values[k] for k in self._changed}

    def censored(self) -> dict[str, Any]:
        """Every setting with secrets masked: safe to print, log or send in a `conf` reply."""
        return {k: censor(k, self[k]) for k in self}

    def __repr__(self) -> str:
        return f"<Conf {self.changes()!r}>"


#: A key naming a credential: its whole value is masked (Celery's words, and more).
_SECRET_WORDS = re.compile(r"API|TOKEN|KEY|SECRET|PASS|SIGNATURE|DATABASE|CREDENTIAL"
                           r"|AUTH(?!OR)|DSN|COOKIE|PRIVATE|(?<![a-z])PWD?(?![a-z])", re.I)
MASK = "********"
#: A URL's password: up to the *last* ``@`` of the authority (a password may hold one, as
#: kombu and urllib read it).
_URL_PASSWORD = re.compile(r"(?P<head>[a-z0-9+.-]+://[^:/@\s]*:)(?P<password>[^/\s]+)"
                           r"(?=@[^@/\s]*(?:[/?#\s]|$))", re.I)


#: A credential in a URL's query (?password=..., &access_token=...).
_URL_QUERY_SECRET = re.compile(r"(?P<head>[?&;][a-z_]*(?:pass|pw|token|secret|key|auth|signature"
                               r"|sig)[a-z_]*=)[^&#;\s]+", re.I)


def mask_url(url: str) -> str:
    """``redis://:secret@host`` -> ``redis://:**@host``, ``?password=secret`` ->
    ``?password=**``; any scheme, several URLs in one string."""
    return _URL_QUERY_SECRET.sub(r"\g<head>**", _URL_PASSWORD.sub(r"\g<head>**", url))


#: Secrets recognised by their shape, wherever they are: (pattern, replacement).
_SECRET_SHAPES = [
    # A URL whose user part alone is the secret (a token-only Sentry DSN: https://KEY@host/1).
    (re.compile(r"(?P<head>[a-z0-9+.-]+://)[^:/@\s]+(?=@[^@/\s]*(?:[/?#\s]|$))", re.I),
     r"\g<head>**"),
    # An HTTP authorization value.
    (re.compile(r"(?P<head>\b(?:Bearer|Basic|Token|Bot)\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\g<head>**"),
    # key=value DSNs (libpq, ODBC): password=..., Pwd=...
    (re.compile(r"(?P<head>(?<![a-z])(?:password|passwd|pwd|pw|secret|token)\s*=\s*)"
                r"(?:'[^']*'|\"[^\"]*\"|[^;\s&#]+)", re.I), r"\g<head>**"),
]


def mask_secrets(text: str) -> str:
    """Mask what looks like a secret in ``text`` whatever key holds it: URL passwords and
    user-only URL credentials, credentials in a query string, bearer and basic tokens, and
    ``password=`` in DSNs."""
    text = mask_url(text)
    for pattern, replacement in _SECRET_SHAPES:
        text = pattern.sub(replacement, text)
    return text


def censor(key: str, value: Any) -> Any:
    """Mask the whole value of any key that names a credential, and secrets by their shape in
    every other value (:func:`mask_secrets`)."""
    if key not in SETTINGS and _SECRET_WORDS.search(key) and value not in (None, "", [], {}):
        return MASK
    if key in SETTINGS and SETTINGS[key].secret and isinstance(value, str) \
            and "://" not in value and value:  # a secret that is not a URL with a password
        return MASK
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, Mapping):
        return {k: censor(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [censor("", v) for v in value]
    return value


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML config file; errors name the file and what is wrong with it."""
    file = Path(path).expanduser()
    try:
        with file.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {file} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {file} is a directory, not a TOML file") from None
    except PermissionError:
        raise ConfigError(f"config file {file} cannot be read: permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {file} is not UTF-8 text: {exc}") from None
    return data


def settings_from_object(obj: Any) -> dict[str, Any]:
    """The lowercase public attributes of a module or object (Celery's config_from_object)."""
    if isinstance(obj, str):
        try:
            obj = importlib.import_module(obj)
        except ImportError as exc:
            raise ConfigError(f"cannot import config module {obj!r}: {exc}") from exc
    if isinstance(obj, Mapping):
        return dict(obj)
    return {k: getattr(obj, k) for k in dir(obj)
            if not k.startswith("_") and k.islower() and not _is_module(getattr(obj, k))}


def _is_module(value: Any) -> bool:
    return type(value).__name__ == "module"


def discover_config_file(explicit: str | None = None, cwd: str | os.PathLike[str] | None = None
                         ) -> Path | None:
    """The CLI's config file: ``--config``, else ``$QTUI_CONFIG``, else ``./qtui.toml`` if
    present."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    local = Path(cwd or os.getcwd()) / DEFAULT_CONFIG_FILE
    return local if local.is_file() else None
