"""Redis URLs: which schemes reach Redis, and a URL as redis-py takes it.

Nothing here imports redis-py: a process on another broker asks whether a URL is Redis's (its
broker, its result backend, the ledger, the beat store) without loading the Redis client, which
only the modules that talk to Redis import.
"""

from __future__ import annotations

import urllib.parse

from kombu import Connection

REDIS_SCHEMES = ("redis", "rediss", "redis+socket")
"""The broker URL schemes that reach Redis: kombu's (and Celery's) TCP, TLS and unix socket
forms."""

SENTINEL_SCHEME = "sentinel"
"""The broker URL scheme of Redis Sentinel: the sentinels to ask for the master that the
``master_name`` transport option names. redis-py takes no such URL (:func:`client_url`)."""

BROKER_SCHEMES = (*REDIS_SCHEMES, SENTINEL_SCHEME)
"""The broker URL schemes that qtui's Redis channels serve."""

CLIENT_SCHEMES = (*REDIS_SCHEMES, "unix")
"""The URL schemes of a Redis that results, the ledger and the beat store reach with redis-py
(:func:`client_url`): the broker's, and redis-py's own unix socket form."""


def scheme(url: str) -> str:
    """The scheme of ``url``, lower case, prefix included (``redis+socket``)."""
    return url.partition("://")[0].strip().lower()


def client_url(url: str, active: Connection | None = None) -> str:
    """``url`` as redis-py's ``Redis.from_url`` takes it: of a failover list (``;``), the entry
    ``active`` is connected to (the first without it); kombu's unix socket form
    (``redis+socket:///path?virtual_host=N``) becomes ``unix:///path?db=N``."""
    entries = [entry.strip() for entry in url.split(";") if entry.strip()]
    url = entries[0] if entries else url
    if active is not None:
        url = next((entry for entry in entries if _same_server(entry, active)), url)
    if scheme(url) != "redis+socket":
        return url
    path, _, query = url.strip().partition("://")[2].partition("?")
    pairs = [("db" if key == "virtual_host" else key, value)
             for key, value in urllib.parse.parse_qsl(query)]
    return f"unix://{path}" + (f"?{urllib.parse.urlencode(pairs)}" if pairs else "")


def _same_server(url: str, active: Connection) -> bool:
    """Whether ``url`` names the host and port ``active`` is connected to."""
    entry = Connection(url)
    return (entry.hostname, entry.port) == (active.hostname, active.port)
