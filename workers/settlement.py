"""Settlement: how every delivery the worker takes ends, exactly once.

A delivery is acked (gathered to ride with the next fetch where the broker can), dead-lettered,
put back to its queue, or published again with its delivery count raised (its process died),
until ``task_max_redeliveries`` makes the worker give up. What a lost connection leaves behind
is settled through the next one: acks that were never sent, deliveries given back unrun, and
running tasks whose delivery went stale with the connection (:meth:`Settlement.connection_lost`).
The worker's main thread is the only caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from kombu.message import Message

from qtui.core import states
from qtui.core.exceptions import TaskRejectedError, WorkerLostError
from qtui.core.protocol import TaskMessage

from . import canvas, leases
from .deadletter import DeadLetters
from .execution import Outcome, store_state
from .hooks import Hooks
from .job import Job
from .redelivery import DELIVERIES_HEADER, Starts, delivery_number, republish

if TYPE_CHECKING:
    from qtui.core.app import App

    from .consumer import Consumer

logger = logging.getLogger("qtui.worker")

#: Task ids remembered as given back unrun on a lost connection.
RETURNED_MAX = 10_000
#: Seconds before a lost AMQP connection was noticed within which an ack may have been lost
#: with it (at least; three heartbeats when longer).
LOST_ACK_WINDOW = 10.0


def _remember(ids: dict[str, float | None], task_id: str, value: float | None = None) -> None:
    """Add ``task_id`` to a bounded record kept oldest first; the oldest go past the bound."""
    ids[task_id] = value
    while len(ids) > RETURNED_MAX:
        del ids[next(iter(ids))]


class Settlement:
    """Acks, dead letters, put-backs and redeliveries of one worker's deliveries."""

    def __init__(self, app: App, consumer: Consumer, jobs: dict[int, Job], starts: Starts,
                 hooks: Hooks, max_redeliveries: int) -> None:
        self.app = app
        self.consumer = consumer
        self.jobs = jobs
        """The worker's jobs (shared): a settled job is forgotten there."""
        self.starts = starts
        self.hooks = hooks
        self.max_redeliveries = max_redeliveries
        self.dead_letters = DeadLetters(consumer.publisher, consumer.queue_type)
        self.acks: list[str] = []
        """Acks gathered to send in one round trip (with the next fetch, or on their own)."""
        self.acks_since = 0.0
        """When the oldest of ``acks`` was gathered (monotonic)."""
        self.orphans: list[tuple[str, bool]] = []
        """Deliveries of a lost connection to settle through the next (Redis and the embedded
        broker): (delivery tag, requeue)."""
        self.unsent: dict[str, str] = {}
        """Task id of each ack gathered or not sent yet, by delivery tag: what would run again
        if the worker stopped now."""
        self.stale_by_task: dict[str, Job] = {}
        """Running jobs whose delivery went with a lost connection, by task id: a redelivery
        of one is adopted by the running job."""
        self._returned: dict[str, float | None] = {}
        """Ids of tasks given back unrun when the connection was lost (oldest first): when
        one comes back flagged redelivered, that delivery does not count against it."""
        self._acked_at: dict[str, float | None] = {}
        """When each task was acked (RabbitMQ; oldest first): an ack sent shortly before a lost
        connection may have been lost with it."""
        self._settled_stale: dict[str, float | None] = {}
        """Ids of tasks this worker settled whose delivery RabbitMQ may still hold (they ended
        after the connection was lost, or their ack may have been lost with it; oldest first):
        the copy it gives back is dropped."""

    def held_tags(self) -> list[str]:
        """Delivery tags of unsettled deliveries, acks not sent yet included (read by the lease
        thread: copies, no lock)."""
        return [*(job.delivery_tag for job in self.jobs.copy().values() if not job.acked),
                *self.acks.copy()]

    # what came back ----------------------------------------------------------------------------
    def was_given_back(self, task_id: str) -> bool:
        """Whether this worker gave the task back unrun when its connection was lost (asked
        once per redelivery: the record goes)."""
        if task_id not in self._returned:
            return False
        del self._returned[task_id]
        return True

    def settled_already(self, task_id: str) -> bool:
        """Whether a redelivered task is one this worker settled while RabbitMQ may still have
        held its delivery (asked once per redelivery: the record goes)."""
        if task_id not in self._settled_stale:
            return False
        del self._settled_stale[task_id]
        return True

    # settling deliveries -----------------------------------------------------------------------
    def ack(self, job: Job) -> None:
        if job.acked:
            return
        job.acked = True
        tag = job.delivery.delivery_tag  # read once: asked of every task
        self.unsent[tag] = job.message.id
        if job.stale:
            if self.consumer.keeps_deliveries:
                self.orphans.append((job.delivery_tag, False))
                self.settle_orphans()
                return
            # RabbitMQ gives it back with the connection: see settled_already.
            _remember(self._settled_stale, job.task_id)
            del self.unsent[job.delivery_tag]
            return
        if not self.consumer.keeps_deliveries:  # before the ack, which may fail or be lost
            _remember(self._acked_at, job.task_id, time.monotonic())
        if self.consumer.batches_acks:
            if not self.acks:
                self.acks_since = time.monotonic()
            self.acks.append(tag)
            return
        try:
            job.delivery.ack()
        except self.consumer.errors:
            if self.consumer.keeps_deliveries:
                self.orphans.append((job.delivery_tag, False))
            raise
        del self.unsent[job.delivery_tag]

    def ack_before_run(self, job: Job) -> None:
        """Acks early: where the broker gives deliveries back with the connection (RabbitMQ)
        the ack goes out now, before the task runs, so a worker lost meanwhile does not run it
        again; on the embedded broker too (one transaction, as before its acks were gathered);
        elsewhere as :meth:`ack` (on Redis it rides with the next fetch)."""
        try:
            self.ack(job)
            if not self.consumer.keeps_deliveries or self.consumer.settles_with_records:
                self.flush_acks()
        except self.consumer.errors:
            # Not sent: the task will not start now, and goes back to the broker unrun.
            job.acked = False
            if (job.delivery_tag, False) in self.orphans:
                self.orphans.remove((job.delivery_tag, False))
            raise

    def flush_acks(self) -> None:
        """Send the acks gathered during this turn, in one round trip (RabbitMQ: in as few
        frames as the deliveries still held allow)."""
        if not self.acks:
            return
        tags, self.acks = self.acks, []
        try:
            self.consumer.ack_many(tags)
        except self.consumer.errors:
            self.orphans.extend((tag, False) for tag in tags)
            raise
        self._sent(tags)

    def _sent(self, tags: Iterable[str]) -> None:
        for tag in tags:
            self.unsent.pop(tag, None)

    def dead_letter(self, job: Job, reason: str) -> None:
        job.acked = True
        self.dead_letters.send(job.delivery, job.queue, reason)
        self.hooks.on_task_rejected(job, reason)

    def forget(self, job: Job) -> None:
        self.jobs.pop(job.id, None)
        if job.start_key is not None:
            self.starts.settled(job.start_key)
            job.start_key = None
        if self.stale_by_task and self.stale_by_task.get(job.message.id) is job:
            del self.stale_by_task[job.message.id]

    def reject_bad(self, queue_name: str, message: Message, reason: str, job: Job | None = None,
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
            self.forget(job)
        self.dead_letters.send(message, queue_name, reason)
        self.hooks.on_task_rejected(job, reason)

    def put_back(self, queue_name: str, message: Message, counted: int | None = None) -> None:
        """Return a delivery that was not lost to its queue, keeping its delivery count
        (``counted``: the deliveries lost before it, when the worker knows better than the
        message's flag)."""
        republish(self.consumer.publisher(), message, queue_name, headers={
            DELIVERIES_HEADER: delivery_number(message) - 1 if counted is None else counted})
        message.ack()

    # settling outcomes -------------------------------------------------------------------------
    def settle_failed(self, job: Job, reason: str) -> None:
        """A failed or timed-out task is acked, or with ``task_acks_on_failure_or_timeout``
        off (and acks late) dead-lettered, where Celery rejects it without requeue."""
        if job.acked or self.app.conf.task_acks_on_failure_or_timeout:
            self.ack(job)
        else:
            self.dead_letter(job, f"{reason} (task_acks_on_failure_or_timeout is false)")

    def rejected_by_task(self, job: Job, outcome: Outcome) -> None:
        """A Celery task raised ``Reject``: its message goes back to its queue (``requeue``) or
        to the dead-letter queue, where Celery's broker would drop it or dead-letter it. One
        acked before it ran cannot go back to its queue (Celery's ``Reject`` needs acks_late and
        drops it): its message goes to the dead-letter queue, to be requeued from there."""
        msg = job.message
        reason = f"rejected by the task: {outcome.exception}"
        logger.warning("Task %s[%s] %s%s", msg.task, msg.id, reason,
                       "" if not outcome.requeue else " (requeued)" if not job.acked
                       else " (dead-lettered: acknowledged before it ran, it cannot be requeued)")
        if outcome.requeue and not job.acked:
            self.put_back(job.queue, job.delivery)
            job.acked = True
            self.hooks.on_task_rejected(job, reason)
        else:  # one acked before it ran is kept there too, not dropped
            self.dead_letter(job, reason)
        self.forget(job)

    def deliver_again(self, job: Job, reason: str) -> None:
        """Its process died: publish it again with its count raised, or give up past the limit."""
        if job.delivery_number + 1 > self.max_redeliveries:
            self.give_up(job, f"{reason}; delivered {job.delivery_number} times "
                              f"(task_max_redeliveries = {self.max_redeliveries})")
            return
        republish(self.consumer.publisher(), job.delivery, job.queue,
                  headers={DELIVERIES_HEADER: job.delivery_number})
        self.ack(job)
        self.forget(job)

    def give_up(self, job: Job, reason: str) -> None:
        # Dead-lettered before its state is stored: a worker lost in between leaves the message
        # to be dead-lettered again, not a FAILURE state that drops the redelivery as done.
        self.dead_letter(job, reason)
        store_state(self.app, job.message, WorkerLostError(reason), states.FAILURE)
        canvas.after_lost(self.app, job.message, states.FAILURE, WorkerLostError(reason))
        self.forget(job)
        self.hooks.on_task_failed(job, repr(WorkerLostError(reason)), None)

    # a lost connection -------------------------------------------------------------------------
    def connection_lost(self, waiting: list[Job], running: Iterable[Job]) -> None:
        """The connection is gone: unsent acks and the ``waiting`` jobs (not started; given
        back unrun) are settled through the next connection where the broker keeps deliveries;
        the ``running`` jobs' deliveries went stale with it."""
        keeps = self.consumer.keeps_deliveries
        self.orphans.extend((tag, False) for tag in self.acks)
        self.acks = []
        for job in waiting:
            self.forget(job)
            if not job.acked:  # back to the broker unrun: not a delivery that failed
                _remember(self._returned, job.task_id)
                if keeps:
                    self.orphans.append((job.delivery_tag, True))
        for job in running:
            job.stale = True
            self.stale_by_task[job.task_id] = job
        self._remember_acks_maybe_lost(returned={job.task_id for job in waiting})

    def _remember_acks_maybe_lost(self, returned: set[str]) -> None:
        """RabbitMQ: acks sent shortly before the loss was noticed (a silent connection) may
        never have arrived; the copies it gives back of those tasks are dropped (see
        settled_already), unless the same id was just given back unrun (a retry, say)."""
        window = max(LOST_ACK_WINDOW, 3 * float(self.app.conf.broker_heartbeat or 0))
        since = time.monotonic() - window
        for task_id, acked_at in self._acked_at.items():
            if acked_at is not None and acked_at >= since and task_id not in returned:
                self._settled_stale[task_id] = None
        while len(self._settled_stale) > RETURNED_MAX:
            del self._settled_stale[next(iter(self._settled_stale))]
        self._acked_at.clear()

    def settle_orphans(self, raising: bool = False) -> None:
        """Settle the deliveries of a lost connection through the current one; what cannot be
        settled yet (the broker is still failing) is tried again on the next turn, or its
        error raised with ``raising`` (at shutdown, which has no next turn)."""
        if not (self.orphans or self.consumer.reclaim_due) \
                or self.consumer.connection is None:
            return
        if not self.consumer.keeps_deliveries:  # RabbitMQ gave them back with the connection
            self.orphans.clear()
            self.consumer.reclaim_due = False
            return
        orphans, self.orphans = self.orphans, []
        if any(requeue for _, requeue in orphans):
            # A start recorded for a job the pool refused, given back unrun: forgotten first.
            self.starts.flush()
        # Acks in one call, requeues in another (each settles its tags in one pass on Redis):
        # settling either again after a failure part-way is harmless.
        for requeue in (False, True):
            tags = [tag for tag, again in orphans if bool(again) is requeue]
            if not tags:
                continue
            try:
                leases.settle(self.consumer.channel, tags, requeue)
            except self.consumer.errors as exc:
                unsettled = [o for o in orphans if o[1]] if requeue else orphans
                self.orphans = unsettled + self.orphans
                if raising:
                    raise
                logger.debug("%d deliveries not settled yet: %s", len(self.orphans), exc)
                return
            if requeue:
                logger.info("Requeued %d prefetched task(s) that had not started", len(tags))
            else:
                self._sent(tags)
        # After the acks above: a finished task's message must not come back.
        try:
            self.consumer.reclaim_after_loss(self.held_tags())
        except self.consumer.errors as exc:
            logger.debug("lost fetches not reclaimed yet: %s", exc)
