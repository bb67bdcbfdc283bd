"""A job: one task message this worker received, from delivery to acknowledgement.

The worker moves a job through its stages -- received, scheduled (ETA), waiting (rate limit),
reserved (waiting for a pool slot), active -- and settles its delivery once: ack, dead-letter,
or put back on the queue.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from kombu.message import Message

from qtui.core.protocol import TaskMessage

_ids = itertools.count(1)

RECEIVED = "received"
SCHEDULED = "scheduled"
WAITING = "waiting"
RESERVED = "reserved"
ACTIVE = "active"


@dataclass(eq=False)
class Job:
    message: TaskMessage
    delivery: Message
    queue: str
    delivery_number: int = 1
    """1 for a first delivery; counts deliveries lost with the process that ran them."""
    id: int = field(default_factory=lambda: next(_ids))
    stage: str = RECEIVED
    received_at: float = field(default_factory=time.time)
    started_at: float | None = None
    acked: bool = False
    stale: bool = False
    """Its broker connection was lost: its delivery can no longer be settled the usual way."""
    time_limit: float | None = None
    soft_time_limit: float | None = None
    timer: Any = None
    start_key: str | None = None
    """Set while its start is recorded in the ledger (see :class:`~.redelivery.Starts`)."""
    pooled: bool = False
    """Handed to the pool (a terminate the pool does not signal then finds it past its code)."""
    held_retry: Job | None = None
    """Its own retry message (same id, one retry more), refused by the revoked gate while this
    job ran: examined again once this one ends (see :meth:`~.revoke.Revocation.discard`)."""

    @property
    def task_id(self) -> str:
        return self.message.id

    @property
    def name(self) -> str:
        return self.message.task

    @property
    def delivery_tag(self) -> Any:
        return self.delivery.delivery_tag

    def delivery_info(self) -> dict[str, Any]:
        """What ``self.request.delivery_info`` shows a task (Celery's keys)."""
        info = self.delivery.delivery_info or {}
        return {"exchange": info.get("exchange"), "routing_key": info.get("routing_key"),
                "queue": self.queue, "priority": self.message.priority,
                "redelivered": bool(info.get("redelivered"))}

    def __repr__(self) -> str:
        return f"<Job {self.name}[{self.task_id}] {self.stage}>"
