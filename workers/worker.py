"""The worker: receives task messages, runs them in a pool, and settles every delivery exactly once.

A job's path (each step a method below, each feature in its own module):

``on_message`` (decode and validate; bad input is dead-lettered) -> ``_receive`` (delivery
counter, unknown task, revoked or expired, ETA) -> ``_ready`` (revoked or expired again, rate
limit) -> ``_reserve`` -> ``_start`` in the pool -> ``_on_outcome`` / ``_on_lost`` (ack,
dead-letter or deliver again).

Everything that touches the broker runs on the main thread. Pools report outcomes through a
thread-safe queue that the main loop drains between broker reads, so the loop never blocks on
the broker while a finished task waits for its ack. Features plug in at the named points of
:class:`~qtui.workers.hooks.Hooks` (events, the arguments store); remote-control commands
(:mod:`~qtui.workers.control`) arrive on the same thread and change the worker through the
methods of its "remote control" section.
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
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from kombu import Queue
from kombu.message import Message
from rich.console import Console
from rich.table import Table
from rich.text import Text

from qtui.core import states
from qtui.core.celery_app import CeleryApp
from qtui.core.config import mask_url
from qtui.core.display import safe_text
from qtui.core.exceptions import (
    ConfigError,
    NotRegistered,
    ProtocolError,
    TaskRejectedError,
    TaskRevokedError,
    TimeLimitExceeded,
    WorkerLostError,
)
from qtui.core.ledger import ledger_for
from qtui.core.protocol import TaskMessage, decode, parse
from qtui.core.signing import verifier_for

from . import canvas, consumer_timeout, leases
from .arguments import ArgumentStore
from .autoscale import INTERVAL, Autoscaler
from .consumer import Consumer
from .deadletter import DeadLetters
from .eta import RedisDelayedStore, Scheduler, delayed_store_for
from .events import Events
from .execution import Lost, Outcome, TaskOptions, WorkItem, store_state
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
from .revoke import Revoked
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
#: Task ids remembered as given back unrun on a lost connection.
RETURNED_MAX = 10_000
#: Seconds before a lost AMQP connection was noticed within which an ack may have been lost
#: with it (at least; three heartbeats when longer).
LOST_ACK_WINDOW = 10.0
QUICK_LOSS = 2.0
"""A connection lost within this many seconds of reconnecting makes the next attempt wait."""
RECONNECT_DELAY_MIN, RECONNECT_DELAY_MAX = 0.1, 5.0


class WorkerTerminate(SystemExit):
    """Raised in the main thread on a cold shutdown while the solo pool runs a task there."""


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
        self.queues = self._select_queues(queues)
        self.send_events = conf.worker_send_task_events if send_events is None else send_events
        self.heartbeat = heartbeat
        self.shutdown_timeout = float(conf.worker_shutdown_timeout if shutdown_timeout is None
                                      else shutdown_timeout)
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
        self.rate_limits = RateLimiter(app, self.timer, self._reserve)
        self.scheduler = Scheduler(self.timer, self._ready, float(conf.worker_eta_horizon))
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
        self.consumer = Consumer(self, self.queues, self.on_message, self.on_undecodable)
        self.dead_letters = DeadLetters(self.consumer.publisher, self.consumer.queue_type)
        self.starts = Starts(self.ledger)
        self._starts_ride = False
        """Starts are recorded by the fetch script (the ledger is on the Redis broker)."""
        self._stale_by_task: dict[str, Job] = {}
        self._orphans: list[tuple[str, bool]] = []
        """Deliveries of a lost connection to settle through the next (Redis and the embedded
        broker): (delivery tag, requeue)."""
        self._acks: list[str] = []
        """Acks gathered to send in one round trip (with the next fetch, or on their own)."""
        self._acks_since = 0.0
        """When the oldest of ``_acks`` was gathered (monotonic)."""
        self._returned: dict[str, None] = {}
        """Ids of tasks given back unrun when the connection was lost (oldest first): when
        one comes back flagged redelivered, that delivery does not count against it."""
        self._acked_at: dict[str, float] = {}
        """When each task was acked (RabbitMQ; oldest first): an ack sent shortly before a lost
        connection may have been lost with it."""
        self._settled_stale: dict[str, None] = {}
        """Ids of tasks this worker settled whose delivery RabbitMQ may still hold (they ended
        after the connection was lost, or their ack may have been lost with it; oldest first):
        the copy it gives back is dropped."""
        self._next_drain = 0.0
        self._polling = False
        self._task_options: dict[str, tuple[int, TaskOptions]] = {}
        self._time_limits: dict[str, tuple[float | None, float | None]] = {}
        """(hard, soft) set by the time_limit command, by task name."""
        self._connected_at = 0.0
        self._reconnect_delay = 0.0
        self.stopping = False
        self._cold = False
        self._shutdown_deadline = 0.0
        self.console = Console(highlight=False, soft_wrap=True)
        self.events = Events(self)
        self.arguments = ArgumentStore()
        self.hooks.add(self.events)
        self.hooks.add(self.arguments)
        self.autoscaler = Autoscaler(self, *autoscale) if autoscale else None
        """Resizes the pool with the load (``--autoscale``); None: a fixed pool."""
        if isinstance(app, CeleryApp):
            from .celery_signals import CelerySignals
            self.hooks.add(CelerySignals(self, app))
        else:
            self.hooks.add(Signals(self))

    def _select_queues(self, names: list[str] | None) -> list[Queue]:
        router = self.app.router
        if not names:
            return [router.queue(self.app.conf.task_default_queue)]
        return [router.queue(name) for name in names]

    # running ---------------------------------------------------------------------------------
    def start(self) -> int:
        """Run until shut down; returns the process exit code."""
        self.print_banner()
        self._install_signals()
        self.started_at = time.time()
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
            self._cold = True
        finally:
            self._shutdown()
        return 0

    def _loop(self) -> None:
        while not self._cold:
            if self.stopping and (not self.active or time.monotonic() > self._shutdown_deadline):
                return
            try:
                self._turn()
            except self.consumer.errors as exc:
                if self.stopping:
                    logger.error("Broker connection lost during shutdown: %s", exc)
                    return
                try:
                    self._on_connection_lost(exc)
                except self.consumer.errors as again:
                    if not self.stopping:
                        raise
                    # Told to stop while reconnecting: finish the running tasks without it.
                    logger.error("Shutting down while the broker is unreachable (%s)", again)
                    return

    def _turn(self) -> None:
        if self.stopping and self.consumer.consuming:
            # Warm shutdown: take no more tasks (each would only be put back) and return what
            # was prefetched now; remote control goes on while running tasks finish.
            self._put_back_waiting()
        if self._orphans or self.consumer.unanswered:
            self._settle_orphans()
        self.consumer.heartbeat_check()
        self._process_events()
        self.pool.maintain()
        next_timer = self.timer.run_due()
        batch = self._next_batch()
        prefetch = self.prefetch_target()
        self.consumer.set_prefetch(prefetch)
        timeout = IDLE_WAIT if next_timer is None else min(IDLE_WAIT, next_timer)
        if batch or self.active or self.reserved:
            timeout = min(timeout, BUSY_WAIT)
        room = FETCH_MAX if prefetch == 0 else min(FETCH_MAX, prefetch - self.held())
        # While enough work is reserved, let the window empty further: bigger, rarer fetches.
        starving = len(self.reserved) < self.concurrency
        due = self.consumer.consuming and room > 0 and (starving or 2 * room >= prefetch)
        fetched = self._start_and_fetch(batch, room if due else 0)
        if due:
            if not fetched:
                self.consumer.drain(timeout)
            elif time.monotonic() >= self._next_drain:
                self.consumer.drain(0)  # remote control rides the same connection
                self._next_drain = time.monotonic() + BUSY_WAIT
        else:
            if (starving or 2 * len(self._acks) >= prefetch
                    or time.monotonic() - self._acks_since >= ACK_MAX_WAIT):
                self._flush_acks()  # otherwise they ride with the next fetch
            self._process_events(wait=timeout)
            if time.monotonic() >= self._next_drain:
                self.consumer.drain(0)
                self._next_drain = time.monotonic() + BUSY_WAIT

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake up for a shutdown request."""
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.1, deadline - time.monotonic()))

    def held(self) -> int:
        """Deliveries not settled yet: what counts against the prefetch window."""
        return sum(1 for job in self.jobs.values() if not job.acked)

    def held_tags(self) -> list[str]:
        """Delivery tags of unsettled deliveries, acks not sent yet included (read by the lease
        thread: copies, no lock)."""
        return [*(job.delivery_tag for job in self.jobs.copy().values() if not job.acked),
                *self._acks.copy()]

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
        self._settle_orphans()

    def _settle_orphans(self) -> None:
        """Settle the deliveries of a lost connection through the current one; what cannot be
        settled yet (the broker is still failing) is tried again on the next turn."""
        if not (self._orphans or self.consumer.unanswered) or self.consumer.connection is None:
            return
        if not self.consumer.keeps_deliveries:  # RabbitMQ gave them back with the connection
            self._orphans.clear()
            self.consumer.unanswered.clear()
            return
        orphans, self._orphans = self._orphans, []
        if any(requeue for _, requeue in orphans):
            # A start recorded for a job the pool refused, given back unrun: forgotten first.
            self.starts.flush()
        for done, (tag, requeue) in enumerate(orphans):
            try:
                leases.settle(self.consumer.channel, [tag], requeue)
            except self.consumer.errors as exc:
                self._orphans = orphans[done:] + self._orphans
                logger.debug("%d deliveries not settled yet: %s", len(self._orphans), exc)
                return
        # After the acks above: a finished task's message must not come back.
        try:
            self.consumer.reclaim_unanswered(self.held_tags())
        except self.consumer.errors as exc:
            logger.debug("lost fetches not reclaimed yet: %s", exc)

    def _poll_delayed(self) -> None:
        if self.scheduler.store is not None and self.consumer.consuming:
            self.scheduler.store.poll()

    def _restore_expired(self) -> None:
        if self.consumer.leases is not None:
            self.consumer.leases.restore_expired()
        # From the main loop's timer, so no fetch is under way: what this worker owns and does
        # not hold (nor has to settle) was taken by a fetch whose reply it never read.
        self.consumer.reclaim_unheld([*self.held_tags(), *(tag for tag, _ in self._orphans)])

    # receiving -------------------------------------------------------------------------------
    def on_message(self, queue_name: str, message: Message) -> None:
        """A message arrived from ``queue_name``: validate it, then take it in as a job."""
        if self.stopping:
            self._put_back(queue_name, message)
            return
        try:
            body = decode(message.body, message.content_type, message.content_encoding,
                          self.app.conf.accept_content)
            task_message = parse(body, message.headers, message.properties)
        except ProtocolError as exc:
            self._reject_bad(queue_name, message, str(exc))
            return
        number = delivery_number(message)
        if self._returned.pop(task_message.id, False) is None \
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
            self._put_back(queue_name, message)
            return
        compression = message.headers.get("compression")
        if not compression:
            reason = f"cannot read the message body: {exc!r}"
        elif isinstance(exc, KeyError):
            reason = f"unknown compression {compression!r}: the body cannot be decompressed"
        else:
            reason = f"cannot decompress the body as {compression!r}: {exc!r}"
        self._reject_bad(queue_name, message, reason)

    def _receive(self, job: Job) -> None:
        msg = job.message
        stale = self._stale_by_task.get(msg.id)
        if stale is not None and stale.id in self.active:
            # Redelivered after a reconnection while this worker still runs it: adopt it. The
            # new delivery is unacked, even where the old one was acked before the task ran.
            stale.delivery, stale.stale, stale.acked = job.delivery, False, False
            del self._stale_by_task[msg.id]
            self.jobs.pop(job.id, None)
            if not self.task_options(stale.name).acks_late:
                self._ack(stale)
            return
        redelivered = job.delivery.delivery_info.get("redelivered")
        if redelivered and msg.id in self._settled_stale:
            del self._settled_stale[msg.id]
            logger.info("Task %s[%s] came back after a reconnection but already ran here; "
                        "dropping the copy", msg.task, msg.id)
            self._ack(job)
            self._forget(job)
            return
        if redelivered and self._redelivered(job):
            return
        if msg.task not in self.app.tasks:
            self._reject_bad(job.queue, job.delivery, f"unknown task {msg.task!r}",
                             job=job, state=states.FAILURE,
                             exc=NotRegistered(f"task {msg.task!r} is not registered with the "
                                               f"worker {self.hostname}"))
            return
        logger.info("Task %s[%s] received", msg.task, msg.id)
        self.hooks.on_task_received(job)
        if self._refuse(job):
            return
        delay = msg.seconds_until_eta()
        if delay > 0:
            if self.scheduler.store_for_later(job, delay):
                logger.info("Task %s[%s] stored until its ETA %s", msg.task, msg.id,
                            msg.eta.isoformat() if msg.eta else "")
                self._forget(job)
            else:
                self.scheduler.hold(job, delay)
            return
        self._ready(job)

    def _redelivered(self, job: Job) -> bool:
        """A message the broker delivers again (its holder died or gave it back). True when it
        was handled: already done, dead-lettered, or published again with its delivery count;
        False when its previous delivery never started, so it runs as it is."""
        msg = job.message
        if self._already_done(msg):
            logger.info("Task %s[%s] was redelivered but already ran; dropping the copy",
                        msg.task, msg.id)
            self._ack(job)
            self._forget(job)
            return True
        counted = counted_deliveries(job.delivery)
        if job.delivery_number == counted + 1 \
                or not self.starts.started(start_key(msg, counted)):
            job.delivery_number = counted + 1  # the previous delivery never ran: not lost
            return False
        if job.delivery_number > self.max_redeliveries:
            self._give_up(job, f"delivered {job.delivery_number} times; the worker holding it "
                               "was lost each time")
            return True
        republish(self.consumer.publisher(), job.delivery, job.queue,
                  headers={DELIVERIES_HEADER: job.delivery_number - 1})
        self._ack(job)
        self._forget(job)
        return True

    def _already_done(self, msg: TaskMessage) -> bool:
        backend = self.app.backend
        if not backend.persistent or msg.ignore_result:
            return False
        try:
            return backend.get_task_meta(msg.id)["status"] in (
                states.SUCCESS, states.FAILURE, states.REVOKED, states.REJECTED)
        except Exception as exc:  # noqa: BLE001 - a backend down or a record unreadable: it
            # cannot say, so the task runs again, as a redelivered task does without a backend
            logger.warning("Task %s[%s] was delivered again and the result backend cannot tell "
                           "whether it already ran (%r): running it", msg.task, msg.id, exc)
            return False

    def _refuse(self, job: Job) -> bool:
        """Settle a job that must not run (expired or revoked); True if it was refused."""
        msg = job.message
        if msg.is_expired():
            self._revoke_job(job, expired=True)
            return True
        if msg.id in self.revoked:
            self._revoke_job(job)
            return True
        return False

    def _revoke_job(self, job: Job, expired: bool = False) -> None:
        msg = job.message
        why = "expired" if expired else "revoked"
        logger.warning("Discarding %s task %s[%s]", why, msg.task, msg.id)
        store_state(self.app, msg, TaskRevokedError(why), states.REVOKED)
        self._ack(job)
        self._forget(job)
        self.hooks.on_task_revoked(job, expired=expired)

    def _ready(self, job: Job) -> None:
        """The job may run now (its ETA passed): last checks, then the rate limit."""
        if self._refuse(job):
            return
        if self.rate_limits.admit(job):
            self._reserve(job)

    def _reserve(self, job: Job) -> None:
        job.stage = RESERVED
        self.reserved.append(job)

    def _next_batch(self) -> list[Job]:
        """The reserved jobs the pool has room for now, in order; their start keys set."""
        batch: list[Job] = []
        while self.reserved and len(batch) < self.pool.free_slots and not self.stopping:
            job = self.reserved.popleft()
            if not self._refuse(job):
                batch.append(job)
        # Recorded before the tasks run: if this worker is lost while they run, their
        # redelivery counts against task_max_redeliveries (a prefetched one's does not).
        for job in batch:
            if self.task_options(job.name).acks_late:
                job.start_key = start_key(job.message, job.delivery_number - 1)
        return batch

    def _start_and_fetch(self, batch: list[Job], room: int) -> int | None:
        """Start ``batch`` with its starts recorded first, send the gathered acks and take up
        to ``room`` messages. Where the broker keeps the ledger (Redis) all of it is one script
        call (one ZADD when nothing is taken), sent before the batch starts (the record is then
        in Redis's hands, as a record sent on its own would be) and read while the batch runs.
        Returns how many messages
        came; None when no fetch was made (nothing to take or record, or a broker without
        fetch)."""
        keys = [job.start_key for job in batch if job.start_key]
        # A call that takes nothing records the starts alone (one ZADD): the acks and the
        # settled records wait for the next fetch, as they did before starts were recorded.
        record = self.starts.take(keys, settle=room > 0) if keys and self._starts_ride else None
        if keys and record is None:
            self.starts.record(keys)
        if room <= 0 and record is None:
            self._start(batch)
            return None
        acks: list[str] = []
        if room > 0:
            acks, self._acks = self._acks, []
        try:
            sent = self.consumer.send_fetch(room, acks, record)
        except self.consumer.errors as exc:
            self._lost_fetch(acks, record, batch, exc)
            raise
        if not sent:
            self._acks = [*acks, *self._acks]
            self.starts.untaken(record)
            if record is not None:
                self.starts.record(keys)
            self._start(batch)
            self._flush_acks()
            return None
        self._start(batch)
        try:
            return self.consumer.read_fetch()
        except self.consumer.errors as exc:
            self._lost_fetch(acks, record, [], exc)
            raise

    def _lost_fetch(self, acks: list[str], record: StartRecord | None, batch: list[Job],
                    exc: BaseException) -> None:
        """A fetch call failed: it may have run (its reply lost) or not. Its acks are sent
        again through the next connection; the batch it was to record (``batch`` if not started
        yet) runs as a batch whose record could not be sent does."""
        self._orphans.extend((tag, False) for tag in acks)
        self.starts.untaken(record)
        if record is not None:
            logger.warning("Cannot record started tasks in %s (%s): if this worker is lost now, "
                           "their delivery may not be counted", self.starts.where, exc)
        self._start(batch)

    def _start(self, batch: list[Job]) -> None:
        """Hand ``batch`` to the pool (what it refuses goes back to the reserved jobs)."""
        for index, job in enumerate(batch):
            options = self.task_options(job.name)
            job.time_limit, job.soft_time_limit = options.limits(job.message)
            item = WorkItem(job.id, job.message, job.delivery_info(), self.hostname,
                            job.time_limit, job.soft_time_limit)
            job.stage, job.started_at = ACTIVE, time.time()
            self.active[job.id] = job
            self.total[job.name] += 1
            if not options.acks_late:
                self._ack(job)
            self.hooks.on_task_started(job, None)
            if not self.pool.apply(item):
                del self.active[job.id]
                job.stage = RESERVED
                self.reserved.extendleft(reversed(batch[index:]))
                return

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
        if job is None:
            return
        self.processed += 1
        msg = job.message
        if outcome.state == states.REJECTED:
            self._rejected_by_task(job, outcome)
            return
        if outcome.dead_letter:
            self._dead_letter(job, outcome.dead_letter)
        elif outcome.state == states.FAILURE:
            self._settle_failed(job, f"failed: {outcome.exception}")
        else:
            self._ack(job)
        self._forget(job)
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

    def _settle_failed(self, job: Job, reason: str) -> None:
        """A failed or timed-out task is acked, or with ``task_acks_on_failure_or_timeout``
        off (and acks late) dead-lettered, where Celery rejects it without requeue."""
        if job.acked or self.app.conf.task_acks_on_failure_or_timeout:
            self._ack(job)
        else:
            self._dead_letter(job, f"{reason} (task_acks_on_failure_or_timeout is false)")

    def _rejected_by_task(self, job: Job, outcome: Outcome) -> None:
        """A Celery task raised ``Reject``: its message goes back to its queue (``requeue``) or
        to the dead-letter queue, where Celery's broker would drop it or dead-letter it."""
        msg = job.message
        reason = f"rejected by the task: {outcome.exception}"
        logger.warning("Task %s[%s] %s%s", msg.task, msg.id, reason,
                       " (requeued)" if outcome.requeue else "")
        if outcome.requeue:
            self._put_back(job.queue, job.delivery)
            job.acked = True
            self.hooks.on_task_rejected(job, reason)
        else:
            self._dead_letter(job, reason)
        self._forget(job)

    def _on_lost(self, lost: Lost) -> None:
        job = self.active.pop(lost.job_id, None)
        if job is None or self._cold:
            return
        msg = job.message
        if lost.cause == "time-limit":
            exc: Exception = TimeLimitExceeded(job.time_limit)
            logger.error("Task %s[%s]: hard time limit (%ss) exceeded; its process was killed",
                         msg.task, msg.id, job.time_limit)
            store_state(self.app, msg, exc, states.FAILURE)
            canvas.after_lost(self.app, msg, states.FAILURE, exc)
            self._settle_failed(job, f"hard time limit ({job.time_limit}s) exceeded")
            self._forget(job)
            self.hooks.on_task_failed(job, repr(exc), None)
        elif lost.cause == "signalled":
            logger.warning("Task %s[%s] terminated by signal %s (revoked)", msg.task, msg.id,
                           lost.signum)
            store_state(self.app, msg, TaskRevokedError("terminated"), states.REVOKED)
            canvas.after_lost(self.app, msg, states.REVOKED, TaskRevokedError("terminated"))
            self._ack(job)
            self._forget(job)
            self.hooks.on_task_revoked(job, terminated=True, signum=lost.signum)
        else:
            how = f"signal {lost.signum}" if lost.signum else f"exit code {lost.exitcode}"
            reason = f"the process running it (pid {lost.pid}) died ({how})"
            logger.error("Task %s[%s]: %s", msg.task, msg.id, reason)
            if job.acked or not self.app.conf.task_reject_on_worker_lost:
                # Acked early, or the app chose Celery's default: a lost task fails, once.
                store_state(self.app, msg, WorkerLostError(reason), states.FAILURE)
                canvas.after_lost(self.app, msg, states.FAILURE, WorkerLostError(reason))
                self._ack(job)
                self._forget(job)
                self.hooks.on_task_failed(job, repr(WorkerLostError(reason)), None)
            else:
                self._deliver_again(job, reason)

    def _deliver_again(self, job: Job, reason: str) -> None:
        """Its process died: publish it again with its count raised, or give up past the limit."""
        if job.delivery_number + 1 > self.max_redeliveries:
            self._give_up(job, f"{reason}; delivered {job.delivery_number} times "
                               f"(task_max_redeliveries = {self.max_redeliveries})")
            return
        republish(self.consumer.publisher(), job.delivery, job.queue,
                  headers={DELIVERIES_HEADER: job.delivery_number})
        self._ack(job)
        self._forget(job)

    def _give_up(self, job: Job, reason: str) -> None:
        # Dead-lettered before its state is stored: a worker lost in between leaves the message
        # to be dead-lettered again, not a FAILURE state that drops the redelivery as done.
        self._dead_letter(job, reason)
        store_state(self.app, job.message, WorkerLostError(reason), states.FAILURE)
        canvas.after_lost(self.app, job.message, states.FAILURE, WorkerLostError(reason))
        self._forget(job)
        self.hooks.on_task_failed(job, repr(WorkerLostError(reason)), None)

    # settling deliveries ---------------------------------------------------------------------
    def _ack(self, job: Job) -> None:
        if job.acked:
            return
        job.acked = True
        if job.stale:
            if self.consumer.keeps_deliveries:
                self._orphans.append((job.delivery_tag, False))
                self._settle_orphans()
                return
            self._settled_stale[job.task_id] = None  # RabbitMQ gives it back: see _receive
            while len(self._settled_stale) > RETURNED_MAX:
                del self._settled_stale[next(iter(self._settled_stale))]
            return
        if self.consumer.batches_acks:
            if not self._acks:
                self._acks_since = time.monotonic()
            self._acks.append(job.delivery_tag)
            return
        if not self.consumer.keeps_deliveries:  # before the ack, which may fail or be lost
            self._acked_at[job.task_id] = time.monotonic()
            while len(self._acked_at) > RETURNED_MAX:
                del self._acked_at[next(iter(self._acked_at))]
        try:
            job.delivery.ack()
        except self.consumer.errors:
            if self.consumer.keeps_deliveries:
                self._orphans.append((job.delivery_tag, False))
            raise

    def _flush_acks(self) -> None:
        """Send the acks gathered during this turn, in one round trip."""
        if not self._acks:
            return
        tags, self._acks = self._acks, []
        try:
            self.consumer.ack_many(tags)
        except self.consumer.errors:
            self._orphans.extend((tag, False) for tag in tags)
            raise

    def _dead_letter(self, job: Job, reason: str) -> None:
        job.acked = True
        self.dead_letters.send(job.delivery, job.queue, reason)
        self.hooks.on_task_rejected(job, reason)

    def _forget(self, job: Job) -> None:
        self.jobs.pop(job.id, None)
        if job.start_key is not None:
            self.starts.settled(job.start_key)
            job.start_key = None
        if self._stale_by_task.get(job.task_id) is job:
            del self._stale_by_task[job.task_id]

    def _reject_bad(self, queue_name: str, message: Message, reason: str, job: Job | None = None,
                    state: str = states.REJECTED, exc: Exception | None = None) -> None:
        """A message that cannot run: log why, record it where there is a task id, dead-letter."""
        headers = message.headers or {}
        task_id = headers.get("id") or message.properties.get("correlation_id")
        name = headers.get("task")
        logger.error("Rejected a message from queue %s%s: %s", queue_name,
                     f" (task {name}[{task_id}])" if task_id else "", reason)
        if isinstance(task_id, str) and task_id:
            stub = job.message if job is not None else TaskMessage(
                id=task_id, task=name if isinstance(name, str) else "unknown",
                reply_to=message.properties.get("reply_to") or None)
            store_state(self.app, stub, exc or TaskRejectedError(reason), state)
        if job is not None:
            job.acked = True
            self._forget(job)
        self.dead_letters.send(message, queue_name, reason)
        self.hooks.on_task_rejected(job, reason)

    def _put_back(self, queue_name: str, message: Message, counted: int | None = None) -> None:
        """Return a delivery that was not lost to its queue, keeping its delivery count
        (``counted``: the deliveries lost before it, when the worker knows better than the
        message's flag)."""
        republish(self.consumer.publisher(), message, queue_name, headers={
            DELIVERIES_HEADER: delivery_number(message) - 1 if counted is None else counted})
        message.ack()

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

    def revoke(self, task_ids: list[str], terminate: bool = False,
               signum: int = signal.SIGTERM) -> list[str]:
        """Never start these tasks; with ``terminate``, signal the processes running them."""
        self.revoked.add(task_ids)
        logger.info("Tasks flagged as revoked: %s", ", ".join(task_ids))
        terminated = []
        if terminate:
            wanted = set(task_ids)
            for job in list(self.active.values()):
                if job.task_id in wanted and self.pool.signal(job.id, signum):
                    terminated.append(job.task_id)
        return terminated

    # connection loss and shutdown ------------------------------------------------------------
    def _on_connection_lost(self, exc: BaseException) -> None:
        # Lost again right after reconnecting (a broker that accepts connections and then
        # fails, like a full disk under the embedded one): wait longer each time.
        if time.monotonic() - self._connected_at < QUICK_LOSS:
            self._reconnect_delay = min(RECONNECT_DELAY_MAX,
                                        self._reconnect_delay * 2 or RECONNECT_DELAY_MIN)
        else:
            self._reconnect_delay = 0.0
        logger.error("Broker connection lost: %s. Reconnecting%s...", exc or type(exc).__name__,
                     f" in {self._reconnect_delay:.1f}s" if self._reconnect_delay else "")
        keeps = self.consumer.keeps_deliveries
        self._orphans.extend((tag, False) for tag in self._acks)
        self._acks = []
        waiting = [*self.scheduler.take_all(), *self.rate_limits.take_all(), *self.reserved]
        self.reserved.clear()
        for job in waiting:
            self._forget(job)
            if not job.acked:  # back to the broker unrun: not a delivery that failed
                self._returned[job.task_id] = None
                while len(self._returned) > RETURNED_MAX:
                    del self._returned[next(iter(self._returned))]
                if keeps:
                    self._orphans.append((job.delivery_tag, True))
        for job in self.active.values():
            job.stale = True
            self._stale_by_task[job.task_id] = job
        self._remember_acks_maybe_lost(returned={job.task_id for job in waiting})
        self.consumer.close(lost=True)
        self.sleep(self._reconnect_delay)
        self.consumer.connect(self.prefetch_target())
        self._on_connected()
        self._connected_at = time.monotonic()
        logger.warning("Reconnected to %s; consuming again", self.consumer.broker_name())

    def _remember_acks_maybe_lost(self, returned: set[str]) -> None:
        """RabbitMQ: acks sent shortly before the loss was noticed (a silent connection) may
        never have arrived; the copies it gives back of those tasks are dropped (see
        _receive), unless the same id was just given back unrun (a retry, say)."""
        window = max(LOST_ACK_WINDOW, 3 * float(self.app.conf.broker_heartbeat or 0))
        since = time.monotonic() - window
        for task_id, acked_at in self._acked_at.items():
            if acked_at >= since and task_id not in returned:
                self._settled_stale[task_id] = None
        while len(self._settled_stale) > RETURNED_MAX:
            del self._settled_stale[next(iter(self._settled_stale))]
        self._acked_at.clear()

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_warm_signal)
        signal.signal(signal.SIGINT, self._on_warm_signal)
        signal.signal(signal.SIGQUIT, self._on_cold_signal)

    def _on_warm_signal(self, signum: int, frame: Any) -> None:
        if self.stopping:
            self._on_cold_signal(signum, frame)
            return
        logger.warning("worker: Warm shutdown (%s): finishing running tasks (up to %ss)",
                       signal.Signals(signum).name, self.shutdown_timeout)
        self.stopping = True
        self._shutdown_deadline = time.monotonic() + self.shutdown_timeout

    def _on_cold_signal(self, signum: int, frame: Any) -> None:
        logger.warning("worker: Cold shutdown (%s): requeueing everything unacked",
                       signal.Signals(signum).name)
        self.stopping = True
        self._cold = True
        if self.pool_name == "solo" and self.pool.active:
            raise WorkerTerminate(1)

    def stop(self, cold: bool = False) -> None:
        """Ask the main loop to shut down (warm: finish running tasks first)."""
        self.stopping = True
        self._shutdown_deadline = time.monotonic() + self.shutdown_timeout
        self._cold = self._cold or cold

    def _shutdown(self) -> None:
        self.stopping = True
        self.hooks.on_worker_stopping(self)
        try:
            self._flush_acks()
            self._put_back_waiting()
            if not self._cold:
                self._finish_active()
            else:
                self._soft_shutdown()
            self._process_events()  # outcomes already in: those tasks are done, not requeued
            if self.active:
                self.pool.terminate()
                abandoned = []
                for job in list(self.active.values()):
                    self._forget(job)
                    if not job.acked and not job.stale:
                        # Given back on purpose, not lost: forget its start first, and keep
                        # its count, so the next delivery does not count against it.
                        self.starts.flush()
                        self._put_back(job.queue, job.delivery, job.delivery_number - 1)
                        job.acked = True
                    elif not job.stale:
                        abandoned.append(job)
                self.active.clear()
                for job in abandoned:
                    logger.warning("Task %s[%s] was stopped at shutdown and is not requeued: it "
                                   "was acknowledged before it ran (acks_late is off)",
                                   job.name, job.task_id)
            self._flush_acks()
        except self.consumer.errors as exc:
            logger.error("Broker unreachable while shutting down (%s); the broker returns what "
                         "this worker held", exc)
        finally:
            self.pool.stop()
            self.consumer.stop()
            self.revoked.close()
            self.starts.flush()
            if self.ledger is not None:
                self.ledger.close()
            self.hooks.on_worker_stopped(self)
        logger.info("worker %s stopped", self.hostname)

    def _put_back_waiting(self) -> None:
        """Warm or cold: what was prefetched but did not start goes back to its queue."""
        if self.consumer.connection is None:
            return
        self.consumer.cancel()
        waiting = [*self.scheduler.take_all(), *self.rate_limits.take_all(), *self.reserved]
        self.reserved.clear()
        for job in waiting:
            if not job.acked and not job.stale:
                self._put_back(job.queue, job.delivery, job.delivery_number - 1)
                job.acked = True
            self._forget(job)
        if waiting:
            logger.info("Requeued %d prefetched task(s)", len(waiting))

    def _finish_active(self) -> None:
        deadline = self._shutdown_deadline or time.monotonic() + self.shutdown_timeout
        self._wait_for_active(deadline, until_cold=True)
        if self.active:
            logger.warning("%d task(s) still running at shutdown", len(self.active))

    def _soft_shutdown(self) -> None:
        """Cold, with ``worker_soft_shutdown_timeout`` (Celery's soft shutdown): running tasks
        get that long to finish before they are stopped and requeued."""
        timeout = float(self.app.conf.worker_soft_shutdown_timeout)
        if not timeout or not self.active:
            return
        logger.warning("worker: Soft shutdown: %d running task(s) have up to %ss to finish",
                       len(self.active), timeout)
        self._wait_for_active(time.monotonic() + timeout, until_cold=False)

    def _wait_for_active(self, deadline: float, until_cold: bool) -> None:
        """Settle outcomes as running tasks end, until none runs or ``deadline`` passes (or a
        cold shutdown comes, with ``until_cold``)."""
        while self.active and not (until_cold and self._cold) and time.monotonic() < deadline:
            self._process_events(wait=0.1)
            if self.consumer.connection is not None:  # None: stopped during a broker outage
                self._flush_acks()
                self.consumer.drain(0)

    # banner ----------------------------------------------------------------------------------
    def print_banner(self) -> None:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        backend = self.app.result_backend_url
        table.add_row("app", f"{self.app.main or '__main__'}")
        table.add_row("broker", mask_url(self.app.broker_url))
        table.add_row("results", mask_url(backend) if backend else "disabled")
        table.add_row("pool", f"{self.pool_name} (concurrency {self.concurrency}, "
                              f"prefetch {self.base_prefetch or 'unlimited'})")
        table.add_row("queues", safe_text(", ".join(
            f"{q.name} (exchange {q.exchange.name or 'default'}, key {q.routing_key})"
            for q in self.queues)))
        table.add_row("tasks", safe_text("\n".join(sorted(self.app.tasks)) or "(none registered)",
                                         multiline=True))
        self.console.print(Text.assemble(("qtui worker", "bold"), " ", safe_text(self.hostname)))
        self.console.print(table)
