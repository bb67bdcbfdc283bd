"""Remote-control handlers: what the worker does for each ``celery.pidbox`` command.

Celery's commands, with Celery's names, arguments and reply shapes, so ``celery inspect`` and
``celery control``, Flower and qtui's console see and steer a qtui worker as they do a Celery one:

* inspect -- ping, stats, active, reserved, scheduled, revoked, registered, query_task, conf
  (secrets censored), report, active_queues, clock (and Celery's ``dump_*`` aliases);
* control -- revoke (terminate, signal), terminate, rate_limit, time_limit, enable_events,
  disable_events, heartbeat, pool_grow, pool_shrink, autoscale, shutdown, add_consumer,
  cancel_consumer; ``hello`` answers a Celery worker's start-up sync with the revoked ids.

And one of qtui's own:

* ``task_arguments(ids)`` -- the complete ``args`` and ``kwargs`` of tasks this worker received
  lately, so a monitor can send a failed task again exactly as it was (the ``argsrepr`` of
  events is cut at 1 KiB). The reply is ``{task_id: {"args": [...], "kwargs": {...}, "name":
  ..., "queue": ..., "argsrepr": ..., "kwargsrepr": ..., "masked": bool, "shadow": ...}}``
  (``masked``: the sender's reprs hide the arguments) for each id the worker still remembers:
  the last 5,000 tasks; for those whose arguments exceed 256 KiB as JSON, only the reprs, name
  and queue (:mod:`~qtui.workers.arguments`). Unknown ids are left out; a Celery worker
  answers ``{"error": ...}``, as for any command it does not know.

Each handler is registered by name with :func:`handler` and called on the worker's main thread
as ``handler(worker, **arguments)``; what it returns is the reply. :class:`ControlNode` guards
every request: an unknown command, arguments of the wrong names or types, or a handler that
fails get an ``{"error": "..."}`` reply, and nothing a request carries can stop the worker.
Commands that touch the broker (add_consumer, cancel_consumer) or the pool (pool_grow,
pool_shrink) answer at once and act on the next turn of the worker's loop, as Celery's do.
``worker_enable_remote_control = false`` turns the mailbox off. With a ``control_secret``, a
command whose signature :mod:`qtui.core.signing` refuses is logged and answered with an error.
"""

from __future__ import annotations

import inspect
import logging
import os
import platform
import signal as signals
import sys
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import kombu
from kombu.matcher import match
from kombu.pidbox import Node
from kombu.utils.json import dumps

from qtui.core import __version__
from qtui.core.brokers.dropped import warn_dropped
from qtui.core.brokers.family import transport_name
from qtui.core.config import censor, mask_url
from qtui.core.exceptions import ConfigError
from qtui.core.routing import make_queue

from .execution import MAX_TIME_LIMIT
from .job import ACTIVE, RESERVED, SCHEDULED, WAITING, Job
from .ratelimit import parse_rate

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from kombu.message import Message
    from kombu.pidbox import Mailbox

    from qtui.core.signing import Verifier

    from .worker import Worker

logger = logging.getLogger("qtui.worker")

Handler = Callable[..., Any]
HANDLERS: dict[str, Handler] = {}
_SIGNATURES: dict[str, inspect.Signature] = {}

#: Registered tasks' attributes ``registered`` shows when not asked for others (Celery's).
DEFAULT_TASK_INFO_ITEMS = ("exchange", "routing_key", "rate_limit")
#: A ``task_arguments`` reply stops adding tasks past about this many bytes.
ARGUMENTS_REPLY_MAX = 4 * 1024 * 1024
#: The slowest rate ``rate_limit`` may set (tasks per second): one an hour.
MIN_RATE = 1 / 3600


class ControlError(Exception):
    """A request this worker cannot carry out; its message is the error reply."""


def handler(name: str | None = None, *aliases: str) -> Callable[[Handler], Handler]:
    """Register a remote-control handler under ``name`` (default: the function's name)."""
    def register(fun: Handler) -> Handler:
        for key in (name or fun.__name__, *aliases):
            HANDLERS[key] = fun
            _SIGNATURES[key] = inspect.signature(fun)
        return fun
    return register


def ok(value: Any) -> dict[str, Any]:
    return {"ok": value}


def nok(value: Any) -> dict[str, Any]:
    return {"error": value}


# the guard ---------------------------------------------------------------------------------------
def call(worker: Worker, method: Any, arguments: Any) -> Any:
    """Run one command and return its reply; never raises."""
    fun = HANDLERS.get(method) if isinstance(method, str) else None
    if fun is None:
        return nok(f"unknown command {_short(method)}")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping) or not all(isinstance(k, str) for k in arguments):
        return nok(f"{method}: arguments must be a mapping of names to values, "
                   f"not {_short(arguments)}")
    try:
        _SIGNATURES[method].bind(worker, **arguments)
    except TypeError as exc:
        return nok(f"{method}: bad arguments: {exc}")
    try:
        reply = fun(worker, **arguments)
    except ControlError as exc:
        return nok(str(exc))
    except Exception as exc:
        logger.exception("Remote control command %s failed", method)
        return nok(f"{method} failed: {exc!r}")
    try:
        dumps(reply)
    except (TypeError, ValueError) as exc:
        logger.error("Remote control command %s: its reply cannot be sent as JSON: %s",
                     method, exc)
        return nok(f"{method}: the reply cannot be sent as JSON: {exc}")
    return reply


def _short(value: Any, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class ControlNode(Node):
    """kombu's pidbox node, with every request checked before it is dispatched: whatever a
    message holds, it gets a reply (an error one if need be) or is dropped with a log line.
    With a :class:`~qtui.core.signing.Verifier`, a command it refuses is logged and answered
    with an error instead of being run."""

    verifier: Verifier | None = None
    matches_pcre = False
    """Whether a broadcast with matcher 'pcre' is matched (``worker_enable_pcre_matcher``):
    Python's regular expressions run without a time bound, and a backtracking pattern holds
    the worker's main thread for hours."""
    # kombu's Node declares these None at class level; __init__ sets them, as the consumer does
    hostname: str
    mailbox: Mailbox
    state: Worker

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        """A request whose body cannot be decoded (anyone can publish one): a warning, not
        kombu's error with a traceback for each."""
        warn_dropped(logger, "celery.pidbox", f"Dropped a remote-control message that cannot "
                                              f"be decoded: {exc}")

    def handle_message(self, body: Any, message: Message | None = None) -> Any:
        if not isinstance(body, Mapping):
            logger.warning("Dropped a remote-control message that is not a mapping: %s",
                           _short(body))
            return None
        clock = (message.headers or {}).get("clock") if message is not None else None
        if isinstance(clock, int) and not isinstance(clock, bool):
            self.adjust_clock(clock)
        destination = body.get("destination")
        if isinstance(destination, str):
            destination = [destination]
        if destination is not None and not isinstance(destination, (list, tuple)):
            logger.warning("Dropped a remote-control message with destination %s",
                           _short(destination))
            return None
        pattern, matcher = body.get("pattern"), body.get("matcher")
        if destination:
            if self.hostname not in destination:
                return None
        elif pattern and matcher:
            if matcher == "pcre" and not self.matches_pcre:
                warn_dropped(logger, "celery.pidbox", f"Dropped a remote-control message with "
                             f"matcher pcre and pattern {_short(pattern)}: "
                             f"worker_enable_pcre_matcher is off")
                return None
            try:
                if not match(self.hostname.encode(), pattern, matcher):
                    return None
            except Exception as exc:  # an unknown matcher, a bad regex, a pattern not a str
                logger.warning("Dropped a remote-control message with pattern %s and matcher "
                               "%s: %r", _short(pattern), _short(matcher), exc)
                return None
        method = body.get("method")
        refusal = self.verifier.refusal(body) if self.verifier is not None else None
        if refusal is not None:
            logger.warning("Refused remote-control command %s: %s", _short(method), refusal)
            return self._answer(nok(f"{_short(method)} refused: {refusal}"),
                                body.get("reply_to"), body.get("ticket"))
        return self.dispatch(method, body.get("arguments"), body.get("reply_to"),
                             body.get("ticket"))

    def dispatch(self, method: Any = None, arguments: Any = None, reply_to: Any = None,
                 ticket: Any = None, **kwargs: Any) -> Any:
        logger.debug("pidbox received method %s [reply_to:%s ticket:%s]", _short(method),
                     _short(reply_to), _short(ticket))
        return self._answer(call(self.state, method, arguments), reply_to, ticket)

    def _answer(self, reply: Any, reply_to: Any, ticket: Any) -> Any:
        # Replies go to the mailbox's reply exchange only: declaring one a request names could
        # clash with an existing exchange and, on RabbitMQ, close the channel commands arrive on.
        # Without one, there is nowhere to answer: the command was a cast.
        reply_exchange = self.mailbox.reply_exchange
        if isinstance(reply_to, Mapping) and reply_exchange is not None \
                and reply_to.get("exchange") == reply_exchange.name \
                and isinstance(reply_to.get("routing_key"), str):
            self.reply({self.hostname: reply}, exchange=reply_to["exchange"],
                       routing_key=reply_to["routing_key"], ticket=ticket)
        return reply

    def handle(self, method: Any, arguments: Any = None) -> Any:
        return call(self.state, method, arguments)


# checking arguments ------------------------------------------------------------------------------
def _ids(value: Any, what: str = "task_id") -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(dict.fromkeys(value))
    raise ControlError(f"{what} must be a task id or a list of task ids, not {_short(value)}")


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ControlError(f"{what} must be a non-empty string, not {_short(value)}")
    return value


def _flag(value: Any, what: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in {"1", "true", "yes", "y", "on"}:
            return True
        if lowered in {"0", "false", "no", "n", "off", ""}:
            return False
    raise ControlError(f"{what} must be true or false, not {_short(value)}")


def _count(value: Any, what: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ControlError(f"{what} must be a whole number of at least 1, not {_short(value)}")
    return value


def _seconds(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ControlError(f"{what} must be a number of seconds, not {_short(value)}") \
                from None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0 \
            or value == float("inf"):
        raise ControlError(f"{what} must be a number of seconds, not {_short(value)}")
    return float(value) or None


def signum_of(value: Any) -> int:
    """``"SIGTERM"``, ``"TERM"``, ``15`` -> 15."""
    if value is None:
        return int(signals.SIGTERM)
    if isinstance(value, int) and not isinstance(value, bool):
        if value in signals.valid_signals():
            return value
        raise ControlError(f"unknown signal {value!r}")
    if not isinstance(value, str):
        raise ControlError(f"signal must be a signal name or number, not {_short(value)}")
    text = value.strip().upper()
    if text.isdigit():
        return signum_of(int(text))
    if not text.startswith("SIG"):
        text = "SIG" + text
    number = getattr(signals, text, None)
    if not isinstance(number, signals.Signals):
        raise ControlError(f"unknown signal {value!r}")
    return int(number)


def jsonable(value: Any) -> Any:
    """``value`` with anything JSON cannot carry replaced by its repr."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    return _short(value, 1000)


# what a job looks like in a reply ----------------------------------------------------------------
def job_info(worker: Worker, job: Job, safe: bool = False) -> dict[str, Any]:
    """Celery's ``Request.info()``: the full arguments, or their reprs when ``safe`` (or when
    they cannot travel as JSON)."""
    msg = job.message
    args: Any = list(msg.args)
    kwargs: Any = msg.kwargs
    if safe or not _is_json(args, kwargs):
        args, kwargs = msg.argsrepr, msg.kwargsrepr
    return {"id": msg.id, "name": msg.task, "args": args, "kwargs": kwargs, "type": msg.task,
            "hostname": worker.hostname, "time_start": job.started_at,
            "acknowledged": job.acked, "delivery_info": job.delivery_info(),
            "worker_pid": worker.pool.pid_of(job.id) if job.stage == ACTIVE else None}


def _is_json(*values: Any) -> bool:
    try:
        dumps(values)
    except (TypeError, ValueError):
        return False
    return True


_STATE_OF_STAGE = {ACTIVE: "active", RESERVED: "reserved", WAITING: "reserved",
                   SCHEDULED: "scheduled"}


# inspect -----------------------------------------------------------------------------------------
@handler()
def ping(worker: Worker, **kwargs: Any) -> dict[str, str]:
    """Ping worker(s)."""
    return ok("pong")


@handler()
def stats(worker: Worker, **kwargs: Any) -> dict[str, Any]:
    """Request worker statistics/information."""
    return {"total": dict(worker.total), "pid": os.getpid(), "clock": str(worker.clock.value),
            "uptime": round(time.time() - worker.started_at), "pool": worker.pool.info(),
            "broker": broker_info(worker), "prefetch_count": worker.consumer.prefetch,
            "rusage": rusage()}


def broker_info(worker: Worker) -> Any:
    connection = worker.consumer.connection
    if connection is None:
        return "N/A"
    info = connection.info()
    info.pop("password", None)
    if not isinstance(info.get("transport"), str):  # the worker's own Redis transport class
        info["transport"] = transport_name(connection)
    return jsonable({key: censor(key, value) for key, value in info.items()})


def rusage() -> Any:
    if resource is None:
        return "N/A"
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {name: getattr(usage, f"ru_{name}") for name in (
        "utime", "stime", "maxrss", "ixrss", "idrss", "isrss", "minflt", "majflt", "nswap",
        "inblock", "oublock", "msgsnd", "msgrcv", "nsignals", "nvcsw", "nivcsw")}


@handler("active", "dump_active")
def active(worker: Worker, safe: Any = False, **kwargs: Any) -> list[dict[str, Any]]:
    """List of tasks currently being executed."""
    safe = _flag(safe, "safe")
    return [job_info(worker, job, safe) for job in list(worker.active.values())]


@handler("reserved", "dump_reserved")
def reserved(worker: Worker, safe: Any = False, **kwargs: Any) -> list[dict[str, Any]]:
    """List of currently reserved tasks, not including scheduled/active (rate-limited ones
    waiting for their turn included). ``safe`` (qtui's, as for active): the reprs."""
    safe = _flag(safe, "safe")
    return [job_info(worker, job, safe)
            for job in (*worker.reserved, *worker.rate_limits.jobs())]


@handler("scheduled", "dump_schedule")
def scheduled(worker: Worker, safe: Any = False, **kwargs: Any) -> list[dict[str, Any]]:
    """List of currently scheduled ETA/countdown tasks. ``safe`` as for reserved."""
    safe = _flag(safe, "safe")
    return [{"eta": job.message.eta.isoformat() if job.message.eta else None,
             "priority": job.message.priority or 0, "request": job_info(worker, job, safe)}
            for job in worker.scheduler.jobs()]


@handler("revoked", "dump_revoked")
def revoked(worker: Worker, **kwargs: Any) -> list[str]:
    """List of revoked task-ids."""
    return worker.revoked.ids()


@handler("registered", "dump_tasks")
def registered(worker: Worker, taskinfoitems: Any = None, builtins: Any = False,
               **kwargs: Any) -> list[str]:
    """List of registered tasks, with the attributes named in ``taskinfoitems`` (default:
    exchange, routing_key, rate_limit) where they are set: ``'tasks.add [rate_limit=10/m]'``."""
    if isinstance(taskinfoitems, str):
        taskinfoitems = [taskinfoitems]
    if taskinfoitems is not None and not isinstance(taskinfoitems, (list, tuple)):
        raise ControlError(f"taskinfoitems must be a list of attribute names, "
                           f"not {_short(taskinfoitems)}")
    items = [item for item in (taskinfoitems or DEFAULT_TASK_INFO_ITEMS)
             if isinstance(item, str) and not item.startswith("_")]
    names = sorted(name for name in worker.app.tasks
                   if _flag(builtins, "builtins") or not name.startswith("celery."))

    def describe(name: str) -> str:
        fields = {item: value for item in items
                  if (value := task_attribute(worker, name, item)) is not None}
        if not fields:
            return name
        return "{} [{}]".format(name, " ".join(f"{k}={v}" for k, v in fields.items()))

    return [describe(name) for name in names]


def task_attribute(worker: Worker, name: str, item: str) -> str | None:
    """A task option as this worker applies it now (remote-control changes included)."""
    if item == "rate_limit":
        value = worker.rate_limits.rate_of(name)
    elif item in ("time_limit", "soft_time_limit"):
        options = worker.task_options(name)
        value = options.time_limit if item == "time_limit" else options.soft_time_limit
    else:
        try:
            value = getattr(worker.app.tasks[name], item, None)
        except Exception:  # an attribute whose getter fails is just not shown
            value = None
    return None if value is None or callable(value) else str(value)


@handler()
def query_task(worker: Worker, ids: Any = None, safe: Any = False, **kwargs: Any
               ) -> dict[str, Any]:
    """Query for task information by id: ``{id: [state, info]}`` for the tasks this worker
    holds (active, reserved or scheduled). ``safe`` as for reserved."""
    wanted = set(_ids(ids or [], "ids"))
    safe = _flag(safe, "safe")
    return {job.task_id: [_STATE_OF_STAGE.get(job.stage, "ready"), job_info(worker, job, safe)]
            for job in list(worker.jobs.values()) if job.task_id in wanted}


@handler("conf", "dump_conf")
def conf(worker: Worker, with_defaults: Any = False, **kwargs: Any) -> dict[str, Any]:
    """List configuration: the settings changed from their defaults (all of them with
    ``with_defaults``), secrets censored."""
    settings = worker.app.conf
    values = settings.censored() if _flag(with_defaults, "with_defaults") else {
        key: censor(key, value) for key, value in settings.changes().items()}
    return {key: jsonable(value) for key, value in values.items() if not key.startswith("__")}


@handler()
def report(worker: Worker, **kwargs: Any) -> dict[str, str]:
    """Information about the installation, for bug reports."""
    app = worker.app
    connection = worker.consumer.connection
    transport = transport_name(connection) if connection is not None else "?"
    changed = "\n".join(f"{key}: {_short(censor(key, value), 200)}"
                        for key, value in sorted(app.conf.changes().items()))
    text = (f"software -> qtui:{__version__} kombu:{kombu.__version__} "
            f"py:{platform.python_version()}\n"
            f"            {platform.python_implementation()} {sys.version.split()[0]}\n"
            f"platform -> system:{platform.system()} arch:{platform.machine()} "
            f"kernel version:{platform.release()}\n"
            f"worker   -> pool:{worker.pool_name} concurrency:{worker.concurrency}\n"
            f"settings -> transport:{transport} "
            f"results:{mask_url(app.result_backend_url) if app.result_backend_url else 'disabled'}"
            f"\n\n{changed}\n")
    return ok(text)


@handler()
def active_queues(worker: Worker, **kwargs: Any) -> list[dict[str, Any]]:
    """List the task queues a worker is currently consuming from."""
    return [jsonable(queue.as_dict(recurse=True)) for queue in worker.queues]


@handler()
def clock(worker: Worker, **kwargs: Any) -> dict[str, int]:
    """Get current logical clock value."""
    return {"clock": worker.clock.value}


@handler()
def hello(worker: Worker, from_node: Any = None, revoked: Any = None,
          **kwargs: Any) -> dict[str, Any] | None:
    """A Celery worker starting up (mingle) shares its revoked ids and asks for ours."""
    if from_node == worker.hostname:
        return None
    if isinstance(revoked, Mapping):
        revoked = list(revoked)
    if revoked:
        worker.revoked.add(_ids(revoked, "revoked"))
    return {"revoked": worker.revoked.ids(), "clock": worker.clock.forward()}


@handler()
def task_arguments(worker: Worker, ids: Any = None, **kwargs: Any) -> dict[str, Any]:
    """The full args and kwargs of recently received tasks: ``{id: {args, kwargs, name,
    queue, argsrepr, kwargsrepr, masked, shadow}}`` for the ids this worker remembers."""
    return worker.arguments.lookup(_ids(ids or [], "ids"), ARGUMENTS_REPLY_MAX)


# control -----------------------------------------------------------------------------------------
@handler()
def revoke(worker: Worker, task_id: Any = None, terminate: Any = False, signal: Any = None,
           **kwargs: Any) -> dict[str, str]:
    """Revoke task by task id (or list of ids): it never starts here. With ``terminate``, the
    process running it is sent ``signal`` (default SIGTERM); a task past its own code is not
    signalled (unless by SIGKILL, on prefork) and the reply says so."""
    ids = _ids(task_id if task_id is not None else [])
    terminate = _flag(terminate, "terminate")
    signum = signum_of(signal)
    known = {job.task_id for job in list(worker.jobs.values())}
    signalled, unsignalled = map(set, worker.revoke(ids, terminate=terminate, signum=signum))
    if terminate:
        # A running task left unsignalled (past its code) is not said to be terminated.
        past = [i for i in ids if i in unsignalled and i not in signalled]
        stopped = [i for i in ids if i in signalled or (i in known and i not in past)]
        said = [f"terminate: {', '.join(stopped)}"] if stopped else []
        if past:
            said.append(f"not signalled (past its code): {', '.join(past)}")
        return ok("; ".join(said) or "terminate: tasks unknown")
    shown = "{" + ", ".join(repr(i) for i in ids) + "}" if ids else "set()"
    return ok(f"tasks {shown} flagged as revoked")


@handler()
def terminate(worker: Worker, signal: Any = None, task_id: Any = None,
              **kwargs: Any) -> dict[str, str]:
    """Terminate task by task id (or list of ids)."""
    return revoke(worker, task_id, terminate=True, signal=signal)


@handler()
def rate_limit(worker: Worker, task_name: Any = None, rate_limit: Any = None,
               **kwargs: Any) -> dict[str, str]:
    """Change a task type's rate limit on this worker, from its next task on
    (``"10/m"``; 0 or nothing: no limit)."""
    try:
        rate = parse_rate(rate_limit)
    except (ValueError, TypeError) as exc:
        return nok(f"Invalid rate limit string: {exc!r}")
    if rate is not None and rate < MIN_RATE:
        return nok(f"Invalid rate limit {_short(rate_limit)}: below 1/h it stops the task type; "
                   "revoke its tasks instead")
    if not isinstance(task_name, str) or task_name not in worker.app.tasks:
        logger.error("Rate limit attempt for unknown task %s", _short(task_name))
        return nok("unknown task")
    worker.rate_limits.set_rate(task_name, rate_limit)
    if rate is None:
        logger.info("Rate limits disabled for tasks of type %s", task_name)
        return ok("rate limit disabled successfully")
    logger.info("New rate limit for tasks of type %s: %s.", task_name, rate_limit)
    return ok("new rate limit set successfully")


@handler()
def time_limit(worker: Worker, task_name: Any = None, hard: Any = None, soft: Any = None,
               **kwargs: Any) -> dict[str, str]:
    """Change a task type's hard and soft time limits (seconds; nothing: none), from its next
    task on."""
    if not isinstance(task_name, str) or task_name not in worker.app.tasks:
        logger.error("Change time limit attempt for unknown task %s", _short(task_name))
        return nok("unknown task")
    hard_s, soft_s = _seconds(hard, "hard"), _seconds(soft, "soft")
    if max(hard_s or 0, soft_s or 0) > MAX_TIME_LIMIT:
        return nok(f"time limits above {MAX_TIME_LIMIT:.0f} s (a year) cannot be set")
    if hard_s is not None and soft_s is not None and soft_s > hard_s:
        return nok(f"the soft time limit ({soft_s:g} s) must not exceed the hard one "
                   f"({hard_s:g} s)")
    worker.set_time_limits(task_name, hard=hard_s, soft=soft_s)
    logger.info("New time limits for tasks of type %s: soft=%s hard=%s", task_name, soft_s,
                hard_s)
    return ok("time limits set successfully")


@handler()
def enable_events(worker: Worker, **kwargs: Any) -> dict[str, str]:
    """Tell worker(s) to send task-related events."""
    if worker.events.enable():
        logger.info("Events of group {task} enabled by remote.")
        return ok("task events enabled")
    return ok("task events already enabled")


@handler()
def disable_events(worker: Worker, **kwargs: Any) -> dict[str, str]:
    """Tell worker(s) to stop sending task-related events."""
    if worker.events.disable():
        logger.info("Events of group {task} disabled by remote.")
        return ok("task events disabled")
    return ok("task events already disabled")


@handler()
def heartbeat(worker: Worker, **kwargs: Any) -> None:
    """Tell worker(s) to send event heartbeat immediately (Celery answers nothing more)."""
    logger.debug("Heartbeat requested by remote.")
    worker.events.heartbeat_now()


@handler()
def pool_grow(worker: Worker, n: Any = 1, **kwargs: Any) -> dict[str, str]:
    """Grow pool by n processes/threads."""
    n = _count(n, "n")
    if worker.pool_name == "solo":
        return nok("the solo pool runs one task at a time and cannot grow; "
                   "start the worker with -P prefork or -P threads")
    if worker.concurrency + n > worker.max_concurrency:
        return nok(f"pool_grow: {worker.concurrency} + {n} slots would exceed "
                   f"worker_max_concurrency ({worker.max_concurrency})")
    worker.call_soon(partial(worker.resize_pool, n), "pool_grow")
    return ok("pool will grow")


@handler()
def pool_shrink(worker: Worker, n: Any = 1, **kwargs: Any) -> dict[str, str]:
    """Shrink pool by n processes/threads (never below one)."""
    n = _count(n, "n")
    if worker.pool_name == "solo" or worker.pool.concurrency <= 1:
        return nok("the pool has a single slot and cannot shrink")
    worker.call_soon(partial(worker.resize_pool, -n), "pool_shrink")
    return ok("pool will shrink")


@handler()
def autoscale(worker: Worker, max: Any = None, min: Any = None,  # noqa: A002 - Celery's names
              **kwargs: Any) -> dict[str, str]:
    """Modify autoscale settings of a worker started with --autoscale; one with a fixed pool
    answers as a Celery one started without it (after checking the arguments)."""
    for value, what in ((max, "max"), (min, "min")):
        if value is not None and _count(value, what) > worker.max_concurrency:
            return nok(f"autoscale: {what} {value} exceeds worker_max_concurrency "
                       f"({worker.max_concurrency})")
    if worker.autoscaler is None:
        return nok("Autoscale not enabled: this worker's pool has a fixed size; "
                   "use pool_grow and pool_shrink")
    scaler = worker.autoscaler
    scaler.update(None if max is None else _count(max, "max"),
                  None if min is None else _count(min, "min"))
    return ok(f"autoscale now max={scaler.most} min={scaler.least}")


@handler()
def shutdown(worker: Worker, msg: Any = "Got shutdown from remote", **kwargs: Any
             ) -> dict[str, str]:
    """Shut the worker down warmly: no new task starts, running ones finish, then it exits."""
    logger.warning("%s", _short(msg, 200) if not isinstance(msg, str) else msg[:200])
    worker.stop()
    return ok("shutting down")


@handler()
def add_consumer(worker: Worker, queue: Any = None, exchange: Any = None,
                 exchange_type: Any = None, routing_key: Any = None,
                 **options: Any) -> dict[str, str]:
    """Tell worker(s) to consume from task queue by name: the queue as routing declares it,
    or bound to the exchange (of ``exchange_type``) with the routing key given here."""
    name = _name(queue, "queue")
    for key, value in (("exchange", exchange), ("exchange_type", exchange_type),
                       ("routing_key", routing_key)):
        if value is not None:
            _name(value, key)
    if exchange is None and routing_key is None:
        try:
            declared = worker.app.router.queue(name)
        except ConfigError as exc:
            raise ControlError(f"add_consumer: {exc}") from None
    else:
        declared = make_queue(name, exchange, exchange_type or "direct", routing_key,
                              worker.app.conf.task_queue_max_priority)
    worker.call_soon(partial(worker.consume_from, declared), f"add_consumer {name}")
    return ok(f"add consumer {name}")


@handler()
def cancel_consumer(worker: Worker, queue: Any = None, **kwargs: Any) -> dict[str, str]:
    """Tell worker(s) to stop consuming from task queue by name."""
    name = _name(queue, "queue")
    worker.call_soon(partial(worker.stop_consuming_from, name), f"cancel_consumer {name}")
    return ok(f"no longer consuming from {name}")
