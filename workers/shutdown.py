"""Shutdown: how the worker stops, warm, soft or cold.

* **Warm** (SIGTERM, SIGINT, the ``shutdown`` command): take no more tasks, put back what was
  prefetched, and let running tasks finish for up to ``worker_shutdown_timeout`` seconds.
* **Restart** (SIGHUP, as Celery's worker): a warm shutdown, then the worker starts again with
  the same command line (:func:`restart`); with its output on a terminal (one being closed
  sends SIGHUP) only the warm shutdown, so a closed window does not leave a worker running
  behind it.
* **Cold** (SIGQUIT, or a second warm signal): put back what was prefetched and, after
  ``worker_soft_shutdown_timeout`` seconds (Celery's soft shutdown; none by default), stop the
  running tasks and requeue the ones not acked yet.

Either way what is still running when the time is up is stopped: a task acked late goes back to
its queue with its delivery count kept, one acked early is logged as not requeued.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from .job import Job
    from .worker import Worker

logger = logging.getLogger("qtui.worker")

#: Pause (seconds) before settling again at shutdown while the broker refuses.
REFUSED_PAUSE = 0.5


class WorkerTerminate(SystemExit):
    """Raised in the main thread on a cold shutdown while the solo pool runs a task there."""


class Shutdown:
    """Whether the worker was asked to stop (and how), and the steps that end its run."""

    def __init__(self, worker: Worker, timeout: float) -> None:
        self.worker = worker
        self.timeout = timeout
        """Seconds running tasks get to finish on a warm shutdown."""
        self.stopping = False
        self.cold = False
        self.deadline = 0.0
        """When a warm shutdown stops waiting for running tasks (monotonic)."""
        self.restart = False
        """Whether the worker starts again once stopped (SIGHUP, away from a terminal)."""
        self._grace: threading.Timer | None = None
        """The warm shutdown's grace, once started: one per shutdown, however often asked."""

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_warm_signal)
        signal.signal(signal.SIGINT, self._on_warm_signal)
        signal.signal(signal.SIGQUIT, self._on_cold_signal)
        signal.signal(signal.SIGHUP, self._on_hangup)

    def _on_hangup(self, signum: int, frame: Any) -> None:
        if self.stopping:  # a hangup never turns a shutdown under way into a cold one
            logger.warning("worker: SIGHUP while shutting down: ignored")
            return
        self.restart = not sys.stdout.isatty()
        then = "then restarting" if self.restart else "not restarting (output on a terminal)"
        logger.warning("worker: Warm shutdown (SIGHUP), %s: finishing running tasks (up to %ss)",
                       then, self.timeout)
        self.stopping = True
        self._start_grace()

    def _on_warm_signal(self, signum: int, frame: Any) -> None:
        self.restart = False  # told to stop: a SIGHUP's restart is off
        if self.stopping:
            self._on_cold_signal(signum, frame)
            return
        logger.warning("worker: Warm shutdown (%s): finishing running tasks (up to %ss)",
                       signal.Signals(signum).name, self.timeout)
        self.stopping = True
        self._start_grace()

    def _start_grace(self) -> None:
        """The warm shutdown's grace starts, once (a request after a signal keeps its end): at
        its end a result write still waiting out a refusal gives up (in a solo worker it runs
        in the main thread: a timer says so)."""
        if self._grace is not None:
            return
        self.deadline = time.monotonic() + self.timeout
        self._grace = threading.Timer(self.timeout, self._grace_over)
        self._grace.daemon = True
        self._grace.start()

    def _grace_over(self) -> None:
        self.worker.app.backend.stop_retrying.set()  # in the timer's thread: it may lock

    def _on_cold_signal(self, signum: int, frame: Any) -> None:
        logger.warning("worker: Cold shutdown (%s): requeueing everything unacked",
                       signal.Signals(signum).name)
        self.restart = False
        self.stopping = True
        self.cold = True
        if self.worker.pool_name == "solo" and self.worker.pool.active:
            raise WorkerTerminate(1)

    def request(self, cold: bool = False) -> None:
        """Ask the main loop to shut down (warm: finish running tasks first)."""
        self.stopping = True
        self._start_grace()
        self.cold = self.cold or cold

    def run(self) -> None:
        """The end of the worker's run: settle what it holds, then let go of everything. While
        the broker refuses (Redis's ``READONLY``, ...), settling is tried again for as long as
        the warm shutdown's grace lasts."""
        worker = self.worker
        self.stopping = True
        worker.hooks.on_worker_stopping(worker)
        deadline = self.deadline or time.monotonic() + self.timeout
        told: str | None = None
        try:
            while True:
                try:
                    self._settle()
                    break
                except worker.consumer.errors as exc:
                    refused = worker.consumer.refusal(exc)
                    if refused is None or self.cold or time.monotonic() >= deadline:
                        self._unsettled(exc, told or refused)
                        break
                    if told is None:
                        logger.warning("%s while shutting down: what this worker settled is "
                                       "sent again for up to %.0fs", refused,
                                       deadline - time.monotonic())
                    told = told or refused
                    time.sleep(REFUSED_PAUSE)
        finally:
            worker.pool.stop()
            worker.consumer.stop()
            worker.revoked.close()
            worker.starts.flush()
            if worker.ledger is not None:
                worker.ledger.close()
            worker.hooks.on_worker_stopped(worker)
        logger.info("worker %s stopped", worker.hostname)

    def _settle(self) -> None:
        """Settle everything the worker holds; run again from the top after a refusal."""
        worker = self.worker
        settlement = worker.settlement
        if worker.consumer.connection is None and (settlement.orphans or settlement.acks) \
                and worker.consumer.keeps_deliveries:
            worker.consumer.connect(1)  # once (stopping): the acks a lost connection held
            worker.consumer.cancel()
        worker.read_fetches()  # what they took is put back with the other waiting jobs
        settlement.settle_orphans(raising=True)
        settlement.flush_acks()
        self.put_back_waiting()
        if not self.cold:
            self._finish_active()
        else:
            self._soft_shutdown()
        worker._process_events()  # outcomes already in: those tasks are done, not requeued
        if worker.active:
            worker.pool.terminate()
            abandoned = []
            for job in list(worker.active.values()):
                settlement.forget(job)
                if not job.acked and not job.stale:
                    # Given back on purpose, not lost: forget its start first, and keep
                    # its count, so the next delivery does not count against it.
                    worker.starts.flush()
                    settlement.put_back(job.queue, job.delivery, job.delivery_number - 1)
                    job.acked = True
                elif not job.stale:
                    abandoned.append(job)
            worker.active.clear()
            for job in abandoned:
                logger.warning("Task %s[%s] was stopped at shutdown and is not requeued: it "
                               "was acknowledged before it ran (acks_late is off)",
                               job.name, job.task_id)
        settlement.settle_orphans(raising=True)
        settlement.flush_acks()

    def _unsettled(self, exc: BaseException, refused: str | None) -> None:
        """The broker failed for good, or past the grace: the broker gives back what this worker
        held, so these tasks run again."""
        worker = self.worker
        again = sorted({*worker.settlement.unsent.values(),
                        *(job.task_id for job in worker.active.values() if not job.acked)})
        which = f"; these tasks will run again: {', '.join(again)}" if again else ""
        if refused is None:
            logger.error("Broker unreachable while shutting down (%s); the broker returns what "
                         "this worker held%s", exc, which)
        else:
            logger.error("%s until the end of the shutdown: the broker returns what this worker "
                         "held%s", refused, which)

    def put_back_waiting(self) -> None:
        """Warm or cold: what was prefetched but did not start goes back to its queue."""
        worker = self.worker
        if worker.consumer.connection is None:
            return
        worker.consumer.cancel()
        waiting = worker.take_waiting()
        for position, job in enumerate(waiting):
            try:
                if not job.acked and not job.stale:
                    worker.settlement.put_back(job.queue, job.delivery, job.delivery_number - 1)
                    job.acked = True
            except worker.consumer.errors:
                self._put_back_later(waiting[position:])
                raise
            worker.settlement.forget(job)
        if waiting:
            logger.info("Requeued %d prefetched task(s)", len(waiting))

    def _put_back_later(self, jobs: list[Job]) -> None:
        """Jobs the broker refused to take back now: requeued with the orphans, which
        :meth:`run` settles again while the grace lasts (the broker returns them otherwise)."""
        settlement = self.worker.settlement
        for job in jobs:
            if not job.acked and not job.stale and self.worker.consumer.keeps_deliveries:
                settlement.orphans.append((job.delivery_tag, True))
                job.acked = True
            settlement.forget(job)

    def _finish_active(self) -> None:
        deadline = self.deadline or time.monotonic() + self.timeout
        self._wait_for_active(deadline, until_cold=True)
        if self.worker.active:
            logger.warning("%d task(s) still running at shutdown", len(self.worker.active))

    def _soft_shutdown(self) -> None:
        """Cold, with ``worker_soft_shutdown_timeout`` (Celery's soft shutdown): running tasks
        get that long to finish before they are stopped and requeued."""
        timeout = float(self.worker.app.conf.worker_soft_shutdown_timeout)
        if not timeout or not self.worker.active:
            return
        logger.warning("worker: Soft shutdown: %d running task(s) have up to %ss to finish",
                       len(self.worker.active), timeout)
        self._wait_for_active(time.monotonic() + timeout, until_cold=False)

    def _wait_for_active(self, deadline: float, until_cold: bool) -> None:
        """Settle outcomes as running tasks end, until none runs or ``deadline`` passes (or a
        cold shutdown comes, with ``until_cold``)."""
        worker = self.worker
        while worker.active and not (until_cold and self.cold) and time.monotonic() < deadline:
            worker._process_events(wait=0.1)
            if worker.consumer.connection is not None:  # None: stopped during a broker outage
                worker.settlement.flush_acks()
                worker.consumer.drain(0)


def restart() -> NoReturn:
    """Start the worker again in this process with the command line it was started with (as
    Celery's SIGHUP handler does), once its shutdown has run and its logs are written."""
    logger.warning("worker: Restarting: %s", " ".join(sys.orig_argv))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)
