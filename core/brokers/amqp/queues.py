"""Queue inspection on RabbitMQ: the management API lists every queue of the vhost when
``broker_management_url`` is set; passive declares count the named queues otherwise."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

from kombu import Connection

from ...config import mask_url
from ...queues import DeclaredQueues, QueueInfo, QueueInspectionError, is_internal

#: Seconds to wait for the RabbitMQ management API.
MANAGEMENT_TIMEOUT = 5.0


class AmqpQueues(DeclaredQueues):
    """RabbitMQ: the management API lists every queue when its URL is set; passive declare
    counts the named ones otherwise (and those the API does not know yet)."""

    counts_consumers = True

    def __init__(self, connection: Connection, management_url: str | None = None) -> None:
        super().__init__(connection)
        self.management_url = management_url
        self.lists_all = bool(management_url)

    def queues(self, names: Iterable[str] = ()) -> list[QueueInfo]:
        wanted = set(names)
        listed: dict[str, QueueInfo] = {}
        if self.management_url:
            vhost = self.connection.virtual_host or "/"
            listed = {q.name: q for q in fetch_management_queues(
                self.management_url, vhost, self.connection.userid, self.connection.password)
                if not is_internal(q.name)}
        listed.update({q.name: q for q in super().queues(wanted - set(listed))})
        return sorted(listed.values(), key=lambda q: q.name)


def fetch_management_queues(url: str, vhost: str, userid: str | None = None,
                            password: str | None = None,
                            timeout: float = MANAGEMENT_TIMEOUT) -> list[QueueInfo]:
    """``GET /api/queues/<vhost>`` of the RabbitMQ management API. Credentials come from the
    URL (``http://user:password@host:15672/``), else from the broker connection."""
    parts = urllib.parse.urlsplit(url)
    user = urllib.parse.unquote(parts.username) if parts.username else userid
    secret = urllib.parse.unquote(parts.password) if parts.password else password
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    endpoint = (f"{base}/api/queues/{urllib.parse.quote(vhost, safe='')}"
                "?columns=name,vhost,messages_ready,messages_unacknowledged,consumers")
    request = urllib.request.Request(endpoint, headers={"Accept": "application/json"})
    if user is not None:
        token = base64.b64encode(f"{user}:{secret or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            payload = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise QueueInspectionError(
            f"the RabbitMQ management API at {mask_url(url)} answered {exc.code} {exc.reason} "
            "(check the user, password and vhost in broker_management_url)") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise QueueInspectionError(
            f"cannot read queues from the RabbitMQ management API at {mask_url(url)}: {exc}. "
            "Is the rabbitmq_management plugin enabled? Unset broker_management_url to look "
            "queues up by name instead.") from exc
    return parse_management_queues(payload, vhost)


def parse_management_queues(payload: Any, vhost: str | None = None) -> list[QueueInfo]:
    """Queues from a management API ``/api/queues`` answer (optionally one vhost's)."""
    if not isinstance(payload, list):
        raise QueueInspectionError("the RabbitMQ management API did not answer with a list of "
                                   f"queues: {str(payload)[:200]}")
    found = []
    for entry in payload:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            continue
        if vhost is not None and entry.get("vhost", vhost) != vhost:
            continue
        found.append(QueueInfo(entry["name"], _count(entry.get("messages_ready")),
                               _count(entry.get("consumers")),
                               _count(entry.get("messages_unacknowledged"))))
    return sorted(found, key=lambda q: q.name)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
