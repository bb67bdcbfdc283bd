"""The beat: sends each entry's task at its scheduled times, while it holds the lease.

Any number of beat processes run the same loop; the one holding the lease (:class:`BeatStore`)
sends and the others stand by, renewing their claim every third of the lease so one takes over
within a lease after the leader dies, however it dies. Each tick is claimed by (entry,
scheduled time) before it is sent and confirmed after, so a new leader sends what the dead one
claimed but never confirmed (late) and skips what it confirmed: a takeover neither skips nor
repeats a tick. Ticks later than ``beat_grace`` seconds are *missed* (the beat was down) and
follow ``beat_catch_up``.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..events import EventDispatcher
from ..schedules import latest_at_or_before, ticks
from .entries import Entry, entries
from .store import BeatStore, Claim, Node, Run, store_for

if TYPE_CHECKING:
    from ..app import App

logger = logging.getLogger("qtui.beat")
UTC = timezone.utc
#: Seconds between attempts after the store or the broker failed.
RETRY_INTERVAL = 1.0


def default_node_name() -> str:
    return f"beat-{os.getpid()}@{socket.gethostname()}"


def tick_task_id(prefix: str, entry: str, scheduled: float) -> str:
    """The task id of a tick: the same in every beat process, so a tick sent again after a
    takeover is the same task to the result backend and the console."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"qtui-beat:{prefix}:{entry}:{scheduled!r}"))


def _at(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, UTC)


class Beat:
    """One beat process (or thread, beside a worker with ``-B``): leader or standby."""

    def __init__(self, app: App, node: str | None = None, store: BeatStore | None = None,
                 send_events: bool = True) -> None:
        self.app = app
        self.entries: list[Entry] = entries(app)
        self.node = node or default_node_name()
        self.store = store or store_for(app)
        self.lease_ttl: float = app.conf.beat_lease_ttl
        self.grace: float = app.conf.beat_grace
        self.catch_up: str = app.conf.beat_catch_up
        self.prefix: str = app.conf.beat_key_prefix
        self.leader = False
        self._renewed = 0.0
        self._stop = threading.Event()
        self._events = EventDispatcher(app.connection_for_write(), hostname=self.node) \
            if send_events else None

    # the loop -----------------------------------------------------------------------------------
    def run(self) -> None:
        """Lead or stand by until :meth:`stop`; then give the lease up."""
        logger.info("beat %s: %d entries, lease %gs, standing by until it holds the lease",
                    self.node, len(self.entries), self.lease_ttl)
        try:
            while not self._stop.is_set():
                try:
                    wait = self.step()
                except Exception as exc:  # noqa: BLE001 - the store or broker is down: retry
                    logger.error("beat %s: %s: %s (retrying)", self.node, type(exc).__name__, exc)
                    wait = RETRY_INTERVAL
                self._stop.wait(wait)
        finally:
            self._resign()

    def stop(self) -> None:
        self._stop.set()

    def step(self) -> float:
        """Renew or take the lease; as leader, send what is due. Returns seconds to wait."""
        self._hold()
        self.store.report_node(Node(self.node, self.leader, time.time()), self.lease_ttl * 3)
        renew_at = time.time() + self.lease_ttl / 3
        if not self.leader:
            return renew_at - time.time()
        paused = self.store.paused()
        soonest = renew_at
        for entry in self.entries:
            if self._stop.is_set() or not self._still_leader():
                break
            soonest = min(soonest, self._handle(entry, entry.name in paused))
        return max(0.0, soonest - time.time())

    def _hold(self) -> None:
        leading = self.store.hold_lease(self.node, self.lease_ttl)
        if leading:
            self._renewed = time.monotonic()
        if leading != self.leader:
            self.leader = leading
            logger.info("beat %s: %s", self.node, "leader" if leading else "standby")
            self._event("beat-leader", leader=leading)

    def _still_leader(self) -> bool:
        """Renew the lease when a third of it has passed (sending many ticks takes time)."""
        if time.monotonic() - self._renewed > self.lease_ttl / 3:
            self._hold()
        return self.leader

    def _resign(self) -> None:
        try:
            if self.leader:
                self.store.release_lease(self.node)
                self.leader = False
                self._event("beat-leader", leader=False)
                logger.info("beat %s: gave the lease up", self.node)
            self.store.report_node(Node(self.node, False, time.time()), 0)  # gone: forget it
        except Exception as exc:  # noqa: BLE001 - the store is down: the lease expires alone
            logger.warning("beat %s: could not give the lease up: %s", self.node, exc)
        finally:
            if self._events is not None:
                self._events.close()
            self.store.close()

    # one entry --------------------------------------------------------------------------------
    def _handle(self, entry: Entry, paused: bool) -> float:
        """Send (or skip) the entry's due ticks; returns when it is due next (Unix seconds)."""
        now = datetime.now(UTC)
        upcoming = entry.schedule.next_after(now).timestamp()
        position = self.store.position(entry.name)
        if position is None:  # a new entry starts counting now
            self.store.skip_to(entry.name, latest_at_or_before(entry.schedule, now).timestamp())
            return upcoming
        start = _at(position)
        if paused:
            due = ticks(entry.schedule, start, now, limit=1)
            if due:
                self.store.skip_to(entry.name, due[-1].timestamp())
            return upcoming
        missed_until = _at(now.timestamp() - self.grace)
        if start < missed_until:
            caught_up = self._catch_up(entry, start, missed_until)
            if caught_up is None:
                return time.time() + RETRY_INTERVAL
            start = caught_up
        for tick in ticks(entry.schedule, start, now, limit=sys.maxsize):
            if not self._still_leader() or not self._send(entry, tick.timestamp()):
                return time.time() + RETRY_INTERVAL
        return upcoming

    def _catch_up(self, entry: Entry, start: datetime, until: datetime) -> datetime | None:
        """Handle ticks in ``(start, until]``, missed while no beat ran, per beat_catch_up;
        returns where on-time ticks start (None: a send failed, retry later)."""
        if self.catch_up == "all":
            missed = ticks(entry.schedule, start, until, limit=sys.maxsize)
        else:
            missed = ticks(entry.schedule, start, until, limit=1)
        if not missed:
            return start
        last = missed[-1]
        if self.catch_up == "none":
            logger.info("beat: %s missed runs until %s: skipped (beat_catch_up = none)",
                        entry.name, last.isoformat())
            self.store.skip_to(entry.name, last.timestamp())
            return last
        if self.catch_up == "once":
            logger.info("beat: %s missed runs until %s: sending it once", entry.name,
                        last.isoformat())
        for tick in missed:
            if not self._still_leader() or not self._send(entry, tick.timestamp()):
                return None
        return last

    def _send(self, entry: Entry, scheduled: float) -> bool:
        """Send one tick unless it was sent already; False to try again later (the broker
        refused it, or another beat's claim on it is younger than a lease)."""
        claim = self.store.claim_tick(entry.name, scheduled, self.node, fresh=self.lease_ttl)
        if claim is Claim.SENT:
            self.store.skip_to(entry.name, scheduled)
            return True
        if claim is Claim.PENDING:  # a deposed leader may still be sending it: wait
            return False
        task_id = tick_task_id(self.prefix, entry.name, scheduled)
        try:
            send_entry(self.app, entry, task_id, scheduled)
        except Exception as exc:  # noqa: BLE001 - the claim stays ours: the next loop retries
            logger.error("beat: cannot send %s (%s) scheduled %s: %s", entry.name, entry.task,
                         _at(scheduled).isoformat(), exc)
            return False
        self.store.record_run(entry.name, Run(scheduled, time.time(), task_id, self.node))
        late = time.time() - scheduled
        if claim is Claim.ORPHANED:
            logger.info("beat: sent %s scheduled %s, claimed by a beat that stopped (%.1fs late)",
                        entry.name, _at(scheduled).isoformat(), late)
        self._event("beat-tick", entry=entry.name, task=entry.task, uuid=task_id,
                    scheduled=scheduled, late=late, manual=False)
        return True

    def _event(self, type: str, **fields: Any) -> None:  # noqa: A002
        if self._events is None:
            return
        try:
            self._events.send(type, fields)
        except Exception as exc:  # noqa: BLE001 - an event is news, never a reason to stop
            logger.warning("beat: could not send the %s event: %s", type, exc)


def send_entry(app: App, entry: Entry, task_id: str, scheduled: float | None) -> None:
    """Send the entry's task with its options; headers say which entry and tick sent it."""
    options = dict(entry.options)
    headers = {**options.pop("headers", {}), "beat_entry": entry.name,
               "beat_scheduled": _at(scheduled).isoformat() if scheduled else None}
    app.send_task(entry.task, entry.args, entry.kwargs, task_id=task_id, headers=headers,
                  **options)


def run_now(app: App, store: BeatStore, entry: Entry, by: str) -> Run:
    """Send the entry's task at once, outside its schedule, and record it as a manual run."""
    task_id = str(uuid.uuid4())
    send_entry(app, entry, task_id, None)
    run = Run(0.0, time.time(), task_id, by, manual=True)
    store.record_run(entry.name, run)
    return run
