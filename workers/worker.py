"""The worker: receives task messages, runs them in a pool, and settles every delivery exactly once.

A job's path (each step a method below, each feature in its own module):

``on_message`` (decode and validate; bad input is dead-lettered) -> ``_receive`` (delivery
counter, unknown task; the ``refuse_task`` and ``delay_task`` gates) -> ``_admit`` (the
``throttle_task`` gate; ``_ready`` asks ``refuse_task`` first for a job whose ETA passed) ->
``_reserve`` -> ``_start`` in the pool ->
``_on_outcome`` / ``_on_lost`` (ack, dead-letter or deliver again).

This module is the orchestrator: the main loop and the job's path. The broker connection is the
:class:`~qtui.workers.consumer.Consumer`'s, acks and the rest of a delivery's end are
:mod:`~qtui.workers.settlement`'s, stopping is :mod:`~qtui.workers.shutdown`'s. Everything that
touches the broker runs on the main thread. Pools report outcomes through a thread-safe queue
that the main loop drains between broker reads, so the loop never blocks on the broker while a
finished task waits for its ack; the prefork pool reports from the main loop's own wait
(:meth:`~qtui.workers.pools.base.Pool.collect`), with no thread between a child and the ack.
Features plug in at the named points of
:class:`~qtui.workers.hooks.Hooks` (events, the arguments store, revocation, ETA and rate
limits); remote-control commands (:mod:`~qtui.workers.control`) arrive on the same thread and
change the worker through the methods of its "remote control" section.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kombu import Queue
from kombu.message import Message

from qtui.core import states
from qtui.core.backends.base import exception_from_meta
from qtui.core.celery_app import CeleryApp, CeleryTask
from qtui.core.compression import BodyTooLarge, cap_decompression
from qtui.core.exceptions import (
    ConfigError,
    NotRegistered,
    ProtocolError,
    TaskRevokedError,
    TimeLimitExceeded,
    WorkerLostError,
)
from qtui.core.ledger import ledger_for
from qtui.core.protocol import TaskMessage, decode, parse, saferepr
from qtui.core.signing import verifier_for

from . import canvas, consumer_timeout, control
from .arguments import ArgumentStore
from .autoscale import INTERVAL, Autoscaler
from .banner import print_banner
from .consumer import Consumer
from .eta import RedisDelayedStore, Scheduler, delayed_store_for
from .events import Events
from .execution import (
    RESULT_REPR_MAXSIZE,
    Lost,
    Outcome,
    Phase,
    TaskOptions,
    WorkItem,
    store_state,
)
from .hooks import Hooks
from .job import ACTIVE, RESERVED, Job
from .pools import pool_class
from .ratelimit import RateLimiter
from .redelivery import (
    DELIVERIES_HEADER,
    StartRecord,
    Starts,
    counted_deliveries,
    delivery_number,
    republish,
    start_key,
)
from .revoke import Revocation, Revoked
from .settlement import Settlement
from .shutdown import Shutdown, WorkerTerminate
from .signals import Signals
from .timer import Timer

if TYPE_CHECKING:
    from qtui.core.app import App

logger = logging.getLogger("qtui.worker")

#: Main-loop waits: short while tasks run (their acks free prefetch slots), longer when idle;
#: a signal (SIGTERM) is acted on after at most the current wait.
BUSY_WAIT = 0.05
IDLE_WAIT = 0.25
#: Prefetch slots added for jobs held for an ETA or a rate limit, at most this many times the
#: normal window (so a flood of delayed tasks cannot pull a whole queue into memory).
HELD_WINDOW_FACTOR = 10
#: Most messages taken in one round trip where the transport can (Redis).
FETCH_MAX = 100
#: Longest an ack waits to ride with a fetch before it is sent on its own (seconds); far below
#: any visibility timeout, so a finished task's message is never given back.
ACK_MAX_WAIT = 1.0
QUICK_LOSS = 2.0
"""A connection lost within this many seconds of reconnecting makes the next attempt wait."""
RECONNECT_DELAY_MIN, RECONNECT_DELAY_MAX = 0.1, 5.0


@dataclass
class SentFetch:
    """A fetch call sent whose reply is not read yet: what it carried, for a lost reply."""

    acks: list[str]
    record: StartRecord | None
    room: int
    """The most messages it takes."""


def default_hostname() -> str:
    return f"qtui@{socket.gethostname()}"


class Worker:
    def __init__(self, app: App, *, hostname: str | None = None, pool: str | None = None,
                 concurrency: int | None = None, queues: list[str] | None = None,
                 prefetch_multiplier: int | None = None, max_tasks_per_child: int | None = None,
                 statedb: str | None = None, send_events: bool | None = None,
                 heartbeat: bool = True, shutdown_timeout: float | None = None,
                 autoscale: tuple[int, int] | None = None) -> None:
        conf = app.conf
        self.app = app
        self.hostname = hostname or default_hostname()
        self.pool_name = pool or conf.worker_pool
        cls = pool_class(self.pool_name)
        if autoscale and self.pool_name == "solo":
            raise ConfigError("--autoscale needs a pool that can resize: -P prefork or threads")
        self.concurrency = 1 if self.pool_name == "solo" else (
            max(1, autoscale[1]) if autoscale else
            concurrency or conf.worker_concurrency or os.cpu_count() or 1)
        self.prefetch_multiplier = conf.worker_prefetch_multiplier \
            if prefetch_multiplier is None else prefetch_multiplier
        self.base_prefetch = max(0, self.concurrency * self.prefetch_multiplier)
        self.max_body_size = int(conf.worker_max_body_size)
        self.queues = self._select_queues(queues)
        self.send_events = conf.worker_send_task_events if send_events is None else send_events
        self.heartbeat = heartbeat
        self.shutdown = Shutdown(self, float(conf.worker_shutdown_timeout
                                             if shutdown_timeout is None else shutdown_timeout))
        self.max_redeliveries = int(conf.task_max_redeliveries)
        self.max_concurrency = int(conf.worker_max_concurrency
                                   or max(8, 4 * (os.cpu_count() or 1)))
        """Most pool slots remote control may grow the pool to."""
        self.control_verifier = verifier_for(conf)
        """Checks remote-control commands' signatures; None without a control secret."""

        self.hooks = Hooks()
        self.timer = Timer()
        self.clock = app.control.mailbox.clock
        """The Lamport clock of this worker's events and remote-control replies."""
        self.started_at = time.time()
        self.ledger = ledger_for(app)
        """The cluster ledger (started deliveries, revoked ids); None on RabbitMQ without a
        Redis or SQLite result backend."""
        self.revoked = Revoked(statedb or conf.worker_statedb, ledger=self.ledger)
        self.jobs: dict[int, Job] = {}
        """Every job this worker knows of: held (unacked) or running."""
        self.reserved: deque[Job] = deque()
        self.active: dict[int, Job] = {}
        self.processed = 0
        self.total: Counter[str] = Counter()
        """Tasks started, by task name (``inspect stats``)."""
        self._events: queue.SimpleQueue[Outcome | Lost] = queue.SimpleQueue()
        self.pool = cls(app, self.concurrency, self._events.put,
                        max_tasks_per_child if max_tasks_per_child is not None
                        else conf.worker_max_tasks_per_child)
        control_node = control.ControlNode(self.hostname, state=self, handlers=control.HANDLERS,
                                           mailbox=app.control.mailbox)
        control_node.verifier = self.control_verifier
        control_node.matches_pcre = bool(app.conf.worker_enable_pcre_matcher)
        self.consumer = Consumer(
            app, self.hostname, self.queues, self.on_message, self.on_undecodable,
            # A lambda: the settlement that answers is made from the consumer, just below.
            held_tags=lambda: self.settlement.held_tags(), stopping=lambda: self.stopping,
            sleep=self.sleep, control_node=control_node)
        self.starts = Starts(self.ledger)
        self._starts_ride = False
        """Starts are recorded by the fetch script (the ledger is on the Redis broker)."""
        self.settlement = Settlement(app, self.consumer, self.jobs, self.starts, self.hooks,
                                     self.max_redeliveries)
        self.revocation = Revocation(app, self.revoked, self.settlement, self.hooks,
                                     self.running)
        self.scheduler = Scheduler(self.timer, self._ready, float(conf.worker_eta_horizon),
                                   self.settlement.forget)
        self.rate_limits = RateLimiter(app, self.timer, self._reserve)
        self._next_drain = 0.0
        self._unread_fetches: deque[SentFetch] = deque()
        """Fetch calls sent whose replies are not read yet, oldest first (see
        :meth:`_start_and_fetch`)."""
        self._told_results_refused = False
        self._polling = False
        self._task_options: dict[str, tuple[int, TaskOptions]] = {}
        self._accept: tuple[int, list[str]] = (-1, [])
        """``accept_content`` and the configuration version it was read at."""
        self._time_limits: dict[str, tuple[float | None, float | None]] = {}
        """(hard, soft) set by the time_limit command, by task name."""
        self._connected_at = 0.0
        self._reconnect_delay = 0.0
        self.events = Events(self)
        self.arguments = ArgumentStore()
        self.hooks.add(self.events)
        self.hooks.add(self.arguments)
        self.hooks.add(self.revocation)
        self.hooks.add(self.scheduler)
        self.hooks.add(self.rate_limits)
        self.autoscaler = Autoscaler(self, *autoscale) if autoscale else None
        """Resizes the pool with the load (``--autoscale``); None: a fixed pool."""
        if isinstance(app, CeleryApp):
            from .celery_signals import CelerySignals
            self.hooks.add(CelerySignals(self, app))
        else:
            self.hooks.add(Signals(self))

    @property
    def stopping(self) -> bool:
        """Asked to shut down (warm or cold)."""
        return self.shutdown.stopping

    def _select_queues(self, names: list[str] | None) -> list[Queue]:
        router = self.app.router
        if not names:
            return [router.queue(self.app.conf.task_default_queue)]
        return [router.queue(name) for name in names]

    # running ---------------------------------------------------------------------------------
    def start(self) -> int:
        """Run until shut down; returns the process exit code."""
        print_banner(self)
        self.shutdown.install_signals()
        self.started_at = time.time()
        cap_decompression(self.max_body_size)
        self.pool.start()
        try:
            try:
                self.consumer.connect(self.prefetch_target())
            except self.consumer.errors as exc:
                if not self.stopping:
                    raise
                logger.warning("Stopped before the broker was reached (%s)", exc)
                return 0
            self._on_connected()
            print(f"qtui worker {self.hostname} ready.", flush=True)
            logger.info("Connected to %s; consuming %s", self.consumer.broker_name(),
                        ", ".join(q.name for q in self.queues))
            if self.consumer.holds_deliveries_on_a_timer:
                consumer_timeout.warn_long_tasks(self)
            self.hooks.on_worker_ready(self)
            if self.autoscaler is not None:
                self.timer.call_repeatedly(INTERVAL, self.autoscaler.tick)
            self._loop()
        except WorkerTerminate:
            self.shutdown.cold = True
        finally:
            self.shutdown.run()
        return 0

    def _loop(self) -> None:
        while not self.shutdown.cold:
            if self.stopping and (not self.active or time.monotonic() > self.shutdown.deadline):
                return
            try:
                self._turn()
            except self.consumer.errors as exc:
                if self.stopping:
                    self._lost_at_shutdown("Broker connection lost during shutdown", exc)
                    return
                try:
                    self._on_connection_lost(exc)
                except self.consumer.errors as again:
                    if not self.stopping:
                        raise
                    # Told to stop while reconnecting: finish the running tasks without it.
                    self._lost_at_shutdown("Shutting down while the broker is unreachable",
                                           again)
                    return

    def _lost_at_shutdown(self, what: str, exc: BaseException) -> None:
        """Say why the broker failed as the shutdown began; a refusal (Redis's ``READONLY``,
        ...) is not an error: it is waited out for the rest of the grace (:meth:`Shutdown.run`)."""
        refused = self.consumer.refusal(exc)
        if refused is None:
            logger.error("%s: %s", what, exc)
        else:  # told once, with how long it is waited out, by Shutdown.run
            logger.debug("%s while shutting down", refused)

    def _turn(self) -> None:
        if self._unread_fetches and not self._reply_can_wait():
            self.read_fetches()
        if self.stopping and self.consumer.consuming:
            # Warm shutdown: take no more tasks (each would only be put back) and return what
            # was prefetched now; remote control goes on while running tasks finish.
            self.shutdown.put_back_waiting()
        if self.settlement.orphans or self.consumer.reclaim_due:
            self.settlement.settle_orphans()
        self.consumer.heartbeat_check()
        self._process_events()
        self.pool.maintain()
        next_timer = self.timer.run_due()
        batch = self._next_batch()
        refused = self._results_refused()
        # While a result write is refused, a window of what is held: no fetch is due, and the
        # broker (RabbitMQ's push, kombu's idle BRPOP on Redis) sends no more either.
        prefetch = max(1, self.held()) if refused else self.prefetch_target()
        self.consumer.set_prefetch(prefetch)
        timeout = IDLE_WAIT if next_timer is None else min(IDLE_WAIT, next_timer)
        busy = bool(batch or self.active or self.reserved)
        if busy:
            timeout = min(timeout, BUSY_WAIT)
        self.consumer.set_idle(not busy)
        room = FETCH_MAX if prefetch == 0 else min(
            FETCH_MAX, prefetch - self.held() - sum(f.room for f in self._unread_fetches))
        # While enough work is reserved, let the window empty further: bigger, rarer fetches.
        starving = len(self.reserved) < self.concurrency
        # A batch run in this thread is preceded by a call anyway (the acks of the tasks just
        # finished and the batch's starts, see _start_and_fetch): the fetch rides it.
        due = self.consumer.consuming and room > 0 and not refused \
            and (starving or self._runs_here(batch) or 2 * room >= prefetch)
        fetched = self._start_and_fetch(batch, room if due else 0)
        if due:
            if fetched is None and self.reserved and self.pool.free_slots:
                # A broker that pushes (RabbitMQ): the reserved work runs first, what came
                # meanwhile is read once it runs out (remote control: every BUSY_WAIT).
                if time.monotonic() >= self._next_drain:
                    self._drain(0)
                    self._next_drain = time.monotonic() + BUSY_WAIT
            elif not fetched:
                self._drain(timeout)
            elif time.monotonic() >= self._next_drain:
                self._drain(0)  # remote control rides the same connection
                self._next_drain = time.monotonic() + BUSY_WAIT
        else:
            if self._acks_due():
                self.settlement.flush_acks()  # otherwise they ride with the next fetch
            self._process_events(wait=timeout)
            if time.monotonic() >= self._next_drain:
                self._drain(0)
                self._next_drain = time.monotonic() + BUSY_WAIT

    def _results_refused(self) -> bool:
        """Whether a result write in this process or a pool child waits out a refusal
        (Redis's ``OOM``, ...): no task is fetched meanwhile, whose result would only wait too
        (or be lost, past ``result_backend_max_retries``). Said once when it starts."""
        refused = self.app.backend.refused or self.pool.results_refused
        if refused is not None and not self._told_results_refused:
            logger.warning("%s: no new task is fetched while a result waits to be written",
                           refused)
        self._told_results_refused = refused is not None
        return self._told_results_refused

    def _drain(self, timeout: float) -> None:
        """Deliver what the broker pushes (remote control, an idle wait's message) within
        ``timeout`` seconds, after what the fetches sent took."""
        self.read_fetches()
        self.consumer.drain(timeout)

    def _reply_can_wait(self) -> bool:
        """Whether the unread fetch replies may stay unread through this turn: it runs the
        next reserved task and nothing else that needs the deliveries they took (a timer,
        orphans to settle, a shutdown)."""
        next_timer = self.timer.next_due()
        return (bool(self.reserved) and not self.stopping and not self.settlement.orphans
                and not self.consumer.reclaim_due
                and (next_timer is None or next_timer > time.monotonic()))

    def read_fetches(self, keep: int = 0) -> int:
        """Read the replies to the fetch calls sent, oldest first, and deliver what they took,
        leaving the last ``keep`` unread; returns how many messages came. A reply lost with
        the connection loses every call sent after it too: their acks are sent again."""
        came = 0
        while len(self._unread_fetches) > keep:
            try:
                came += self.consumer.read_fetch()
            except self.consumer.errors as exc:
                self._lost_fetches(exc)
                raise
            except BaseException:  # the channel read the reply all the same: not unread now
                self._unread_fetches.popleft()
                raise
            self._unread_fetches.popleft()
        return came

    def _lost_fetches(self, exc: BaseException) -> None:
        unread, self._unread_fetches = self._unread_fetches, deque()
        for fetch in unread:
            self._lost_fetch(fetch.acks, fetch.record, [], exc)

    def _acks_due(self) -> bool:
        """Whether the gathered acks go out now rather than with a later fetch or turn: the
        reserved work runs out (the broker sends no more until they arrive), half the prefetch
        window waits on them, or the oldest has waited :data:`ACK_MAX_WAIT`."""
        return (len(self.reserved) < self.concurrency
                or 2 * len(self.settlement.acks) >= self.consumer.prefetch
                or time.monotonic() - self.settlement.acks_since >= ACK_MAX_WAIT)

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake up for a shutdown request."""
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.1, deadline - time.monotonic()))

    def held(self) -> int:
        """Deliveries not settled yet: what counts against the prefetch window."""
        return sum(1 for job in self.jobs.values() if not job.acked)

    def prefetch_target(self) -> int:
        if self.base_prefetch == 0:
            return 0
        waiting = self.scheduler.held + self.rate_limits.waiting
        return self.base_prefetch + min(waiting, self.base_prefetch * HELD_WINDOW_FACTOR)

    def _on_connected(self) -> None:
        consumer = self.consumer
        assert consumer.connection is not None  # called once the consumer has connected
        self.scheduler.store = delayed_store_for(
            consumer.connection, consumer.channel, consumer.publisher,
            [q.name for q in self.queues], self.consumer.queue_type)
        store = self.scheduler.store
        if store is not None and store.poll_interval and not self._polling:
            self._polling = True
            self.timer.call_repeatedly(store.poll_interval, self._poll_delayed)
            if consumer.leases is not None:
                self.timer.call_repeatedly(consumer.leases.interval, self._restore_expired)
        self._starts_ride = consumer.writes_ledger(self.ledger)
        new = self.revoked.load()
        if new and self.ledger is not None:
            logger.info("%d revoked task id(s) read from %s", new, self.ledger.where)
        self.settlement.settle_orphans()

    def _poll_delayed(self) -> None:
        if self.scheduler.store is not None and self.consumer.consuming:
            self.scheduler.store.poll()

    def _restore_expired(self) -> None:
        if self.consumer.leases is not None:
            self.consumer.leases.restore_expired()
        # A busy solo worker may have a fetch reply unread (see _start_and_fetch): read first,
        # or what that call took looks unheld, is put back and runs twice. Then what this
        # worker owns and does not hold (nor has to settle) was taken by a fetch whose reply
        # it never read (lost with a connection). A lost connection here reconnects as usual.
        self.read_fetches()
        self.consumer.reclaim_unheld([*self.settlement.held_tags(),
                                      *(tag for tag, _ in self.settlement.orphans)])

    # receiving -------------------------------------------------------------------------------
    def on_message(self, queue_name: str, message: Message) -> None:
        """A message arrived from ``queue_name``: validate it, then take it in as a job."""
        if self.stopping:
            self.settlement.put_back(queue_name, message)
            return
        if len(message.body) > self.max_body_size:
            self.settlement.reject_bad(queue_name, message,
                                       str(BodyTooLarge(self.max_body_size, compressed=False)))
            return
        try:
            body = decode(message.body, message.content_type, message.content_encoding,
                          self._accept_content())
            task_message = parse(body, message.headers, message.properties)
        except ProtocolError as exc:
            self.settlement.reject_bad(queue_name, message, str(exc))
            return
        number = delivery_number(message)
        if self.settlement.was_given_back(task_message.id) \
                and (message.delivery_info or {}).get("redelivered"):
            number -= 1  # this worker gave it back unrun when its connection was lost
        job = Job(task_message, message, queue_name, number)
        self.jobs[job.id] = job
        self._receive(job)

    def on_undecodable(self, queue_name: str, message: Message | Any, exc: Exception) -> None:
        """kombu could not unpack a message from ``queue_name`` (its ``compression`` header is
        unknown or does not match the body): dead-letter it as it came. Where kombu could not
        even make a Message of what the broker sent, there is nothing to dead-letter here:
        ``exc`` goes on as before."""
        if not isinstance(message, Message):
            raise exc
        if self.stopping:
            self.settlement.put_back(queue_name, message)
            return
        compression = message.headers.get("compression")
        if isinstance(exc, (ProtocolError, BodyTooLarge)):
            reason = str(exc)
        elif not compression:
            reason = f"cannot read the message body: {exc!r}"
        elif isinstance(exc, KeyError):
            reason = f"unknown compression {compression!r}: the body cannot be decompressed"
        else:
            reason = f"cannot decompress the body as {compression!r}: {exc!r}"
        self.settlement.reject_bad(queue_name, message, reason)

    def _receive(self, job: Job) -> None:
        msg = job.message
        stale = self.settlement.stale_by_task.get(msg.id)
        if stale is not None and stale.id in self.active \
                and msg.retries == stale.message.retries:
            # Redelivered after a reconnection while this worker still runs it: adopt it. The
            # new delivery is unacked, even where the old one was acked before the task ran.
            # The task's own retry message (one retry more, given back held) is not this run:
            # it is received as any other.
            stale.delivery, stale.stale, stale.acked = job.delivery, False, False
            del self.settlement.stale_by_task[msg.id]
            self.jobs.pop(job.id, None)
            if not self.task_options(stale.name).acks_late:
                self.settlement.ack(stale)
            return
        redelivered = job.delivery.delivery_info.get("redelivered")
        if redelivered and self.settlement.settled_already(msg.id):
            logger.info("Task %s[%s] came back after a reconnection but already ran here; "
                        "dropping the copy", msg.task, msg.id)
            self.settlement.ack(job)
            self.settlement.forget(job)
            return
        if redelivered and self._redelivered(job):
            return
        if msg.task not in self.app.tasks:
            self.settlement.reject_bad(job.queue, job.delivery, f"unknown task {msg.task!r}",
                             job=job, state=states.FAILURE,
                             exc=NotRegistered(f"task {msg.task!r} is not registered with the "
                                               f"worker {self.hostname}"))
            return
        logger.info("Task %s[%s] received", msg.task, msg.id)
        self.hooks.on_task_received(job)
        self._examine(job)

    def _examine(self, job: Job) -> None:
        """The gates a received job passes: refused, delayed (ETA) or admitted."""
        if self.hooks.refuse_task(job) or self.hooks.delay_task(job):
            return
        self._admit(job)  # refuse_task was asked just now: not again before the rate limit

    def _redelivered(self, job: Job) -> bool:
        """A message the broker delivers again (its holder died or gave it back). True when it
        was handled: already done, dead-lettered, or published again with its delivery count;
        False when its previous delivery never started, so it runs as it is."""
        msg = job.message
        if self._already_done(msg):
            logger.info("Task %s[%s] was redelivered but already ran; dropping the copy",
                        msg.task, msg.id)
            self.settlement.ack(job)
            self.settlement.forget(job)
            return True
        counted = counted_deliveries(job.delivery)
        if job.delivery_number == counted + 1 \
                or not self.starts.started(start_key(msg, counted)):
            job.delivery_number = counted + 1  # the previous delivery never ran: not lost
            return False
        if job.delivery_number > self.max_redeliveries:
            self.settlement.give_up(job, f"delivered {job.delivery_number} times; the worker "
                                         "holding it was lost each time")
            return True
        republish(self.consumer.publisher(), job.delivery, job.queue,
                  headers={DELIVERIES_HEADER: job.delivery_number - 1})
        self.settlement.ack(job)
        self.settlement.forget(job)
        return True

    def _already_done(self, msg: TaskMessage, since: float | None = None,
                      when: str = "was delivered again", otherwise: str = "running it") -> bool:
        """Whether the result backend holds a final state of the task (stored at ``since`` or
        later, when given: by the run started then). When it cannot tell, the log says what
        happened to the task (``when``) and what is done (``otherwise``)."""
        backend = self.app.backend
        if not backend.persistent or msg.ignore_result:
            return False
        try:
            meta = backend.get_task_meta(msg.id)
            done = meta["status"] in (states.SUCCESS, states.FAILURE, states.REVOKED,
                                      states.REJECTED)
            if done and since is not None:
                done = datetime.fromisoformat(meta["date_done"]).timestamp() >= since
            return done
        except Exception as exc:  # noqa: BLE001 - a backend down or a record unreadable: it
            # cannot say, so the caller goes on as it does without a backend
            logger.warning("Task %s[%s] %s and the result backend cannot tell whether it "
                           "already ran (%r): %s", msg.task, msg.id, when, exc, otherwise)
            return False

    def _ready(self, job: Job) -> None:
        """The job may run now (its ETA passed): last checks, then the rate limit."""
        if not self.hooks.refuse_task(job):
            self._admit(job)

    def _admit(self, job: Job) -> None:
        """The rate limit, then the job waits for a pool slot."""
        if not self.hooks.throttle_task(job):
            self._reserve(job)

    def _reserve(self, job: Job) -> None:
        job.stage = RESERVED
        self.reserved.append(job)

    def _next_batch(self) -> list[Job]:
        """The reserved jobs the pool has room for now, in order; their start keys set."""
        batch: list[Job] = []
        # Asked once: a pool's slots free up behind this loop, never fill (the threads pool
        # answers under its lock, which its threads take for every task).
        room = self.pool.free_slots
        while self.reserved and len(batch) < room and not self.stopping:
            job = self.reserved.popleft()
            if not self.hooks.refuse_task(job):
                batch.append(job)
        # Recorded before the tasks run: if this worker is lost while they run, their
        # redelivery counts against task_max_redeliveries (a prefetched one's does not).
        for job in batch:
            if self.task_options(job.message.task).acks_late:
                job.start_key = start_key(job.message, job.delivery_number - 1)
        return batch

    def _runs_here(self, batch: list[Job]) -> bool:
        """Whether ``batch`` runs in this thread (solo): then the finished tasks' acks go out
        before it starts, and a fetch rides that call."""
        return bool(batch) and self.pool.runs_in_caller

    def _start_and_fetch(self, batch: list[Job], room: int) -> int | None:
        """Start ``batch`` with its starts recorded first, send the gathered acks and take up
        to ``room`` messages. Where the broker keeps the ledger (Redis) all of it is one script
        call (one ZADD when nothing is taken), sent before the batch starts (the record is then
        in Redis's hands, as a record sent on its own would be) and read while the batch runs;
        on the embedded broker one transaction, committed before the batch starts. Returns how
        many messages came; None when no fetch was made (nothing to take or record, or a broker
        without fetch)."""
        keys = [job.start_key for job in batch if job.start_key]
        # On Redis a call that takes nothing records the starts alone (one ZADD): the acks and
        # the settled records wait for the next fetch, as they did before starts were recorded;
        # not where the batch runs in this thread (solo), whose finished tasks' acks must reach
        # the broker before the next task starts, or a worker lost in it runs them again.
        settle = room > 0 or self.consumer.settles_with_records or self._runs_here(batch)
        record = self.starts.take(keys, settle=settle) if keys and self._starts_ride else None
        if keys and record is None:
            self.starts.record(keys)
        if room <= 0 and record is None:
            self._flush_acks_before(batch)
            self._start(batch)
            return None
        acks: list[str] = []
        if settle:
            acks, self.settlement.acks = self.settlement.acks, []
        try:
            sent = self.consumer.send_fetch(room, acks, record)
        except self.consumer.errors as exc:
            self._lost_fetches(exc)
            self._lost_fetch(acks, record, batch, exc)
            raise
        if not sent:
            self.settlement.acks = [*acks, *self.settlement.acks]
            self.starts.untaken(record)
            if record is not None:
                self.starts.record(keys)
            self._flush_acks_before(batch)
            self._start(batch)
            if self._acks_due():  # RabbitMQ: several go out in one frame
                self.settlement.flush_acks()
            return None
        self._start(batch)
        self._unread_fetches.append(SentFetch(acks, record, room))
        if self._runs_here(batch) and self.consumer.pipelines_fetches and self._reply_can_wait():
            # Solo: the next task is reserved already, so this reply is read once the next
            # call is sent, by when Redis has long answered: the worker does not wait for it.
            # What it takes counts as on its way (the turn sends nothing else meanwhile).
            return self.read_fetches(keep=1) or room
        return self.read_fetches()

    def _flush_acks_before(self, batch: list[Job]) -> None:
        """Send the gathered acks before ``batch`` starts when due, and always when the pool
        runs it in this thread (solo): they would otherwise wait for it to finish, and a
        worker lost meanwhile would have the finished tasks run again."""
        if (batch and self.pool.runs_in_caller) or self._acks_due():
            self.settlement.flush_acks()

    def _lost_fetch(self, acks: list[str], record: StartRecord | None, batch: list[Job],
                    exc: BaseException) -> None:
        """A fetch call failed: it may have run (its reply lost) or not. Its acks are sent
        again through the next connection; the batch it was to record (``batch`` if not started
        yet) runs as a batch whose record could not be sent does."""
        self.settlement.orphans.extend((tag, False) for tag in acks)
        self.starts.untaken(record)
        if record is not None:
            logger.warning("Cannot record started tasks in %s (%s): if this worker is lost now, "
                           "their delivery may not be counted", self.starts.where, exc)
        self._start(batch)

    def _start(self, batch: list[Job]) -> None:
        """Hand ``batch`` to the pool (what it refuses goes back to the reserved jobs)."""
        for index, job in enumerate(batch):
            name = job.message.task  # not job.name: a property, asked for every task
            options = self.task_options(name)
            job.time_limit, job.soft_time_limit = options.limits(job.message)
            item = WorkItem(job.id, job.message, job.delivery_info(), self.hostname,
                            job.time_limit, job.soft_time_limit)
            job.stage, job.started_at = ACTIVE, time.time()
            self.active[job.id] = job
            if not options.acks_late:
                try:
                    self.settlement.ack_before_run(job)
                except self.consumer.errors:
                    # Lost connection: the task did not start, so the copy the broker sends
                    # back must run rather than be adopted as this one.
                    self._unstart(batch[index:])
                    raise
            if job.message.id in self.revoked:
                self._revoked_before_run(job)
                continue
            self.total[name] += 1
            self.hooks.on_task_started(job, None)
            job.pooled = True
            if not self.pool.apply(item):
                job.pooled = False
                self._unstart(batch[index:])
                return

    def running(self, task_id: str) -> Job | None:
        """The job of ``task_id`` active here, if any (asked when a revoked one is refused)."""
        return next((job for job in self.active.values() if job.task_id == task_id), None)

    def _revoked_before_run(self, job: Job) -> None:
        """``job`` was revoked after the gate let it through (:meth:`_next_batch`) and before
        the pool took it: a remote-control request handled inside a broker round trip on the
        way (py-amqp hands over the deliveries that come while it waits for a reply, as for
        ``basic_qos``), which could not terminate it, as no process ran it yet. It never runs."""
        del self.active[job.id]
        self.revocation.discard(job)

    def _unstart(self, jobs: list[Job]) -> None:
        """``jobs`` (the first one put in :attr:`active`, the others not yet) wait again, in
        order, ahead of the reserved ones."""
        del self.active[jobs[0].id]
        jobs[0].stage = RESERVED
        self.reserved.extendleft(reversed(jobs))

    def _accept_content(self) -> list[str]:
        """``accept_content``, read again whenever the configuration changes (a lookup through
        the settings, and a copy of the default, for every message otherwise)."""
        version = self.app.conf.version
        if self._accept[0] != version:
            self._accept = (version, self.app.conf.accept_content)
        return self._accept[1]

    def task_options(self, name: str) -> TaskOptions:
        """A task type's options, read again whenever the configuration changes."""
        version = self.app.conf.version
        cached = self._task_options.get(name)
        if cached is None or cached[0] != version:
            options = TaskOptions.of(self.app, name)
            if name in self._time_limits:
                hard, soft = self._time_limits[name]
                options = replace(options, time_limit=hard, soft_time_limit=soft)
            cached = self._task_options[name] = (version, options)
        return cached[1]

    # outcomes --------------------------------------------------------------------------------
    def _process_events(self, wait: float | None = None) -> None:
        if self.pool.collect(wait or 0.0):
            wait = None  # the pool waited, and reported what came in this thread
        try:
            event = self._events.get(timeout=wait) if wait else self._events.get_nowait()
        except queue.Empty:
            return
        while True:
            if isinstance(event, Outcome):
                self._on_outcome(event)
            else:
                self._on_lost(event)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return

    def _on_outcome(self, outcome: Outcome) -> None:
        job = self.active.pop(outcome.job_id, None)
        if job is not None:
            self._settle_outcome(job, outcome)

    def _settle_outcome(self, job: Job, outcome: Outcome) -> None:
        self.processed += 1
        msg = job.message
        if outcome.state == states.REJECTED:
            self.settlement.rejected_by_task(job, outcome)
            self._after_run(job)
            return
        if outcome.dead_letter:
            self.settlement.dead_letter(job, outcome.dead_letter)
        elif outcome.state == states.FAILURE:
            self.settlement.settle_failed(job, f"failed: {outcome.exception}")
        else:
            self.settlement.ack(job)
        self.settlement.forget(job)
        if outcome.state == states.SUCCESS:
            logger.info("Task %s[%s] succeeded in %.6fs: %s", msg.task, msg.id, outcome.runtime,
                        outcome.result)
            self.hooks.on_task_succeeded(job, outcome)
        elif outcome.state == states.RETRY:
            logger.info("Task %s[%s] retry: %s", msg.task, msg.id, outcome.exception)
            self.hooks.on_task_retried(job, outcome)
        elif outcome.state == states.IGNORED:
            logger.info("Task %s[%s] ignored: %s", msg.task, msg.id, outcome.exception)
        elif outcome.state == states.REVOKED:
            logger.warning("Task %s[%s] terminated (revoked)", msg.task, msg.id)
            self.hooks.on_task_revoked(job, terminated=True)
        else:
            logger.error("Task %s[%s] raised unexpected: %s\n%s", msg.task, msg.id,
                         outcome.exception, outcome.traceback or "")
            self.hooks.on_task_failed(job, outcome.exception or "", outcome.traceback)
        self._after_run(job)

    def _after_run(self, job: Job) -> None:
        """``job``'s run has ended and its outcome is taken in: its retry message, held while
        it ran, goes through the gates now (refused: REVOKED stored after the run's RETRY)."""
        if job.held_retry is not None:
            self._examine(job.held_retry)

    def _on_lost(self, lost: Lost) -> None:
        job = self.active.pop(lost.job_id, None)
        if job is None or self.shutdown.cold:
            return
        msg = job.message
        if lost.phase >= Phase.STORED and lost.state is not None:
            self._settle_outcome(job, self._stored_outcome(job, lost))
            return
        if lost.cause != "signalled" and isinstance(self.app.tasks.get(msg.task), CeleryTask) \
                and self._already_done(msg, since=job.started_at, when=f"was lost ({lost.cause})",
                                       otherwise="recorded lost"):
            # Celery's tracer stores and follows up inside the call the pool cannot see into:
            # its stored outcome stands, what it had not followed stays undone (as on Celery).
            self._settle_outcome(job, self._stored_outcome(job, replace(lost,
                                                                        phase=Phase.FOLLOWED)))
            return
        # Killed at its hard time limit or terminated once the broker took some of a success's
        # links (SENDING) or all of them and its next chain step (SENT): not run again (as on
        # main, no redelivery there); what was not sent is failed, its chord part counted as
        # the kill. Died otherwise, or nothing taken yet (ENDED): lost as in its code (with
        # task_reject_on_worker_lost, delivered again: its links may go twice, at least once).
        some_sent, all_sent = lost.phase == Phase.SENDING, lost.phase == Phase.SENT
        if (some_sent or all_sent) and lost.cause in ("time-limit", "signalled"):
            logger.warning("Task %s[%s] succeeded and its process was killed while sending "
                           "what follows it: %s, its own result is lost", msg.task, msg.id,
                           "all of it was sent" if all_sent
                           else "its chain steps not sent are failed")
        if lost.cause == "time-limit":
            exc: Exception = TimeLimitExceeded(job.time_limit)
            logger.error("Task %s[%s]: hard time limit (%ss) exceeded; its process was killed",
                         msg.task, msg.id, job.time_limit)
            store_state(self.app, msg, exc, states.FAILURE)
            canvas.after_lost(self.app, msg, states.FAILURE, exc, some_sent, all_sent,
                              retake=True)
            self.settlement.settle_failed(job, f"hard time limit ({job.time_limit}s) exceeded")
            self.settlement.forget(job)
            self.hooks.on_task_failed(job, repr(exc), None)
        elif lost.cause == "signalled":
            if self._already_done(msg, since=job.started_at, when="was terminated",
                                  otherwise="recorded REVOKED"):
                # Its result was stored before the signal landed: the task ran to its end, and
                # its result stands, as on Celery. Only a Celery task gets here: its tracer stores
                # inside the call the pool's terminate gate guards (a qtui task is past the gate).
                logger.warning("Task %s[%s] had finished when signal %s ended its process; its "
                               "stored result stands", msg.task, msg.id, lost.signum)
            else:
                logger.warning("Task %s[%s] terminated by signal %s (revoked)", msg.task,
                               msg.id, lost.signum)
                store_state(self.app, msg, TaskRevokedError("terminated"), states.REVOKED)
                canvas.after_lost(self.app, msg, states.REVOKED, TaskRevokedError("terminated"),
                                  some_sent, all_sent, retake=True)
            self.settlement.ack(job)
            self.settlement.forget(job)
            self.hooks.on_task_revoked(job, terminated=True, signum=lost.signum)
        else:
            how = f"signal {lost.signum}" if lost.signum else f"exit code {lost.exitcode}"
            reason = f"the process running it (pid {lost.pid}) died ({how})"
            logger.error("Task %s[%s]: %s", msg.task, msg.id, reason)
            if job.acked or not self.app.conf.task_reject_on_worker_lost:
                # Acked early, or the app chose Celery's default: a lost task fails, once.
                store_state(self.app, msg, WorkerLostError(reason), states.FAILURE)
                canvas.after_lost(self.app, msg, states.FAILURE, WorkerLostError(reason),
                                  some_sent, all_sent, retake=True)
                self.settlement.ack(job)
                self.settlement.forget(job)
                self.hooks.on_task_failed(job, repr(WorkerLostError(reason)), None)
            else:
                self.settlement.deliver_again(job, reason)
        self._after_run(job)

    def _stored_outcome(self, job: Job, lost: Lost) -> Outcome:
        """The outcome of a task whose process was killed once it had stored it (the pool
        says so): that outcome stands, and what the process had not followed yet is done here
        (a chord part counted once, a failure's chain and errbacks), nothing twice."""
        msg, state = job.message, lost.state or states.FAILURE
        runtime = time.time() - job.started_at if job.started_at else 0.0
        if state == states.REJECTED:  # a follow-up given back: it runs again, whatever is stored
            logger.warning("Task %s[%s] gave back what follows it before its process was "
                           "killed (%s): it runs again", msg.task, msg.id, lost.cause)
            return Outcome(job_id=lost.job_id, state=state, runtime=runtime, pid=lost.pid or 0,
                           requeue=True,
                           exception="what follows it was not sent before its process was "
                                     "killed")
        value: Any = None
        stored = self.app.backend.persistent and not msg.ignore_result
        if stored:
            try:
                meta = self.app.backend.get_task_meta(msg.id)
            except Exception as exc:  # noqa: BLE001 - the backend is down: its state as told
                logger.warning("Task %s[%s]: cannot read its stored outcome: %s", msg.task,
                               msg.id, exc)
            else:
                # Its own, or a canvas failure the process stored over it.
                if meta["status"] == state or meta["status"] in states.READY_STATES:
                    state, value = meta["status"], meta.get("result")
        failed = state in states.EXCEPTION_STATES
        error = exception_from_meta(value) if failed and value is not None \
            else WorkerLostError(f"its process (pid {lost.pid}) was killed after it ended")
        logger.warning("Task %s[%s] ended %s before its process was killed (%s): that outcome "
                       "stands%s", msg.task, msg.id, state, lost.cause,
                       "" if lost.phase == Phase.FOLLOWED else "; what follows it is done here")
        if lost.phase == Phase.STORED:
            canvas.after_stored(self.app, msg, state, error if failed else value, None)
        outcome = Outcome(job_id=lost.job_id, state=state, runtime=runtime, pid=lost.pid or 0)
        if failed:
            outcome.exception = repr(error)
        elif stored:
            outcome.result = saferepr(value, RESULT_REPR_MAXSIZE)
        if lost.dead_letter:  # the reason the process stored (a CanvasError's, ...)
            outcome.dead_letter = str(error) if failed and value is not None \
                else f"dead-lettered by its process (pid {lost.pid})"
        return outcome

    # remote control --------------------------------------------------------------------------
    def call_soon(self, action: Callable[[], Any], what: str) -> None:
        """Run ``action`` on the next turn of the main loop, outside any broker callback (a
        command that touches the broker or forks must not run inside ``drain_events``)."""
        def run() -> None:
            try:
                action()
            except self.consumer.errors:
                raise  # the loop reconnects
            except Exception:
                logger.exception("%s failed", what)
        self.timer.call_later(0, run)

    def consume_from(self, queue: Queue) -> None:
        """Consume ``queue`` too (``add_consumer``)."""
        if self.consumer.add_queue(queue):
            logger.info("Consuming from queue %s too", queue.name)
            self._queues_changed()

    def stop_consuming_from(self, name: str) -> None:
        """Stop consuming the queue ``name`` (``cancel_consumer``); what this worker already
        holds from it still runs."""
        if self.consumer.cancel_queue(name):
            logger.info("No longer consuming from queue %s", name)
            self._queues_changed()

    def _queues_changed(self) -> None:
        store = self.scheduler.store
        if isinstance(store, RedisDelayedStore):
            store.queues = [q.name for q in self.queues]

    def resize_pool(self, delta: int) -> None:
        """Grow (``delta`` > 0, up to :attr:`max_concurrency`) or shrink the pool, and the
        prefetch window with it."""
        if delta > 0:
            self.pool.grow(max(0, min(delta, self.max_concurrency - self.pool.concurrency)))
        elif delta < 0:
            self.pool.shrink(-delta)
        self.concurrency = self.pool.concurrency
        self.base_prefetch = max(0, self.concurrency * self.prefetch_multiplier)
        logger.info("Pool resized to %d", self.concurrency)

    def set_time_limits(self, name: str, hard: float | None, soft: float | None) -> None:
        """Time limits of a task type from its next task on (``time_limit``); None: none."""
        self._time_limits[name] = (hard, soft)
        self._task_options.pop(name, None)

    def stop(self, cold: bool = False) -> None:
        """Ask the main loop to shut down (warm: finish running tasks first)."""
        self.shutdown.request(cold)

    def revoke(self, task_ids: list[str], terminate: bool = False,
               signum: int = signal.SIGTERM) -> tuple[list[str], list[str]]:
        """Never start these tasks; with ``terminate``, signal the processes running them:
        the tasks signalled, and those the pool runs but did not signal (past their code)."""
        self.revoked.add(task_ids)
        logger.info("Tasks flagged as revoked: %s", ", ".join(task_ids))
        terminated, unsignalled = [], []
        if terminate:
            wanted = set(task_ids)
            for job in list(self.active.values()):
                if job.task_id not in wanted:
                    continue
                if self.pool.signal(job.id, signum):
                    terminated.append(job.task_id)
                elif job.pooled:
                    unsignalled.append(job.task_id)
        return terminated, unsignalled

    # connection loss -------------------------------------------------------------------------
    def _on_connection_lost(self, exc: BaseException) -> None:
        # Lost again right after reconnecting (a broker that accepts connections and then
        # fails, like a full disk under the embedded one): wait longer each time.
        if time.monotonic() - self._connected_at < QUICK_LOSS:
            self._reconnect_delay = min(RECONNECT_DELAY_MAX,
                                        self._reconnect_delay * 2 or RECONNECT_DELAY_MIN)
        else:
            self._reconnect_delay = 0.0
        delay = f" in {self._reconnect_delay:.1f}s" if self._reconnect_delay else ""
        refused = self.consumer.refusal(exc)
        if refused is None:
            logger.error("Broker connection lost: %s. Reconnecting%s...",
                         exc or type(exc).__name__, delay)
        else:  # a server-side refusal: waited out as a lost connection, nothing given up
            logger.warning("%s: %s. Reconnecting%s and retrying; running tasks go on, and "
                           "what they settle is sent once the broker takes it again", refused, exc,
                           delay)
        self._lost_fetches(exc)  # replies not read yet went with the connection
        self.settlement.connection_lost(self.take_waiting(), self.active.values())
        self.consumer.close(lost=True)
        self.sleep(self._reconnect_delay)
        self.consumer.connect(self.prefetch_target(), told=refused)
        self._on_connected()
        self._connected_at = time.monotonic()
        logger.warning("Reconnected to %s; consuming again", self.consumer.broker_name())

    def take_waiting(self) -> list[Job]:
        """Every job held but not started (ETA, rate limit, reserved, a running task's retry),
        removed: for shutdown and connection loss."""
        waiting = [*self.scheduler.take_all(), *self.rate_limits.take_all(), *self.reserved]
        self.reserved.clear()
        for job in self.active.values():
            if job.held_retry is not None:
                waiting.append(job.held_retry)
                job.held_retry = None
        return waiting
