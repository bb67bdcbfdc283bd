"""Where the beat keeps what several beat processes share: the lease, each entry's position
and runs, pauses, tick claims and which beat processes are alive.

One small interface (:class:`BeatStore`) with a Redis and an SQLite implementation, chosen by
:func:`store_for` from the broker, else the result backend. Never a local file: any beat process
on any host must see the same state, so a standby takes over where the leader stopped.
"""

from __future__ import annotations

import enum
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from ..backends import results_path
from ..brokers import broker_path
from ..brokers.redis.urls import CLIENT_SCHEMES, scheme
from ..config import mask_url
from ..exceptions import ConfigError

if TYPE_CHECKING:
    from ..app import App

#: Seconds a tick claim is kept: far longer than a takeover, so a claim outlives every beat
#: process that could still look at its tick.
TICK_TTL = 3600
#: Runs kept per entry for the console's and ``qtui schedule``'s history.
RUNS_KEPT = 20


class Claim(enum.Enum):
    """What claiming a tick found."""

    NEW = "new"
    """Nobody had claimed it: send it."""
    ORPHANED = "orphaned"
    """Another beat claimed it and did not confirm the send within ``fresh`` seconds (it
    died): it is this beat's claim now; send it, late."""
    PENDING = "pending"
    """Another beat claimed it less than ``fresh`` seconds ago and may still be sending it:
    ask again later."""
    SENT = "sent"
    """It was sent already: skip it."""
    MINE = "mine"
    """This beat claimed it before (and is sending it now or died in between)."""


@dataclass(frozen=True)
class Run:
    """One sent tick of an entry."""

    scheduled: float
    """The scheduled time (Unix seconds); 0 for a run asked for by hand."""
    sent: float
    task_id: str
    by: str
    """The beat process (or client) that sent it."""
    manual: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> Run:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class Node:
    """A beat process as it last reported itself."""

    name: str
    leader: bool
    seen: float


class BeatStore(ABC):
    """The shared state of the beat processes of one app (``beat_key_prefix`` names it)."""

    where: str
    """Where the state is, for messages (a URL without its password, or a file)."""
    errors: tuple[type[BaseException], ...]
    """What the store raises when it cannot be reached or refuses an operation."""

    @abstractmethod
    def hold_lease(self, node: str, ttl: float) -> bool:
        """Take the lease if it is free or expired, or renew it if ``node`` holds it; return
        whether ``node`` holds it now."""

    @abstractmethod
    def release_lease(self, node: str) -> None:
        """Give the lease up if ``node`` holds it (a clean exit: the standby need not wait)."""

    @abstractmethod
    def claim_tick(self, entry: str, scheduled: float, node: str, fresh: float) -> Claim:
        """Claim the tick of ``entry`` at ``scheduled`` for ``node``, atomically; another
        beat's unconfirmed claim is taken over once it is ``fresh`` seconds old."""

    @abstractmethod
    def record_run(self, entry: str, run: Run) -> None:
        """Confirm a sent run: the tick's claim says sent, the entry's position moves to it
        (unless manual) and it heads the entry's runs."""

    @abstractmethod
    def skip_to(self, entry: str, scheduled: float) -> None:
        """Move the entry's position to ``scheduled`` without sending (paused, missed ticks)."""

    @abstractmethod
    def position(self, entry: str) -> float | None:
        """The scheduled time of the last tick handled for ``entry`` (None: never)."""

    @abstractmethod
    def runs(self, entry: str, limit: int = RUNS_KEPT) -> list[Run]:
        """The entry's latest runs, newest first."""

    @abstractmethod
    def set_paused(self, entry: str, paused: bool) -> None: ...

    @abstractmethod
    def paused(self) -> set[str]: ...

    @abstractmethod
    def report_node(self, node: Node, ttl: float) -> None:
        """Say ``node`` is alive (and whether it leads), forgotten after ``ttl`` seconds."""

    @abstractmethod
    def nodes(self) -> list[Node]:
        """The beat processes that reported recently."""

    @abstractmethod
    def close(self) -> None: ...


def store_for(app: App) -> BeatStore:
    """The store beside the app's broker if it can hold one (Redis, the embedded SQLite
    broker), else beside its result backend (Redis, SQLite); RabbitMQ with rpc:// results has
    no shared place, so that is a ConfigError that says what to set."""
    prefix = app.conf.beat_key_prefix
    for url in (app.broker_url, app.result_backend_url or ""):
        if scheme(url) in CLIENT_SCHEMES:
            from .redis_store import RedisBeatStore
            return RedisBeatStore(url, prefix)
        if scheme(url) == "sqlite":
            from .sqlite_store import SQLiteBeatStore
            return SQLiteBeatStore(_sqlite_path(url, url == app.broker_url), prefix)
    raise ConfigError(
        f"qtui beat needs a place every beat process shares for its lease, runs and pauses: "
        f"the broker ({mask_url(app.broker_url)}) and the result backend "
        f"({mask_url(app.result_backend_url or 'none')}) cannot hold one. Set result_backend "
        "to a redis:// or sqlite:// URL (the beat stores its state there).")


def _sqlite_path(url: str, is_broker: bool) -> str:
    return str(broker_path(url) if is_broker else results_path(url))
