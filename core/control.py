"""Remote control client: broadcast commands to workers through Celery's ``celery.pidbox`` mailbox."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kombu.pidbox import Mailbox

if TYPE_CHECKING:
    from .app import App

MAILBOX_NAME = "celery"


class Control:
    """``app.control``: send a command to every worker (or some) and collect their replies."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.mailbox = Mailbox(MAILBOX_NAME, type="fanout", accept=app.conf.accept_content,
                               serializer="json", queue_ttl=300.0, reply_queue_ttl=300.0,
                               queue_expires=10.0, reply_queue_expires=10.0)

    def broadcast(self, command: str, arguments: dict[str, Any] | None = None,
                  destination: list[str] | None = None, reply: bool = False,
                  timeout: float = 1.0, limit: int | None = None) -> list[dict[str, Any]] | None:
        """Send ``command`` to the workers; with ``reply``, wait up to ``timeout`` for answers."""
        with self.app.connection_for_write() as conn:
            return self.mailbox(conn)._broadcast(command, arguments or {}, destination, reply,
                                                 timeout, limit)

    def revoke(self, task_id: str | list[str], destination: list[str] | None = None,
               terminate: bool = False, signal: str = "SIGTERM", reply: bool = False,
               timeout: float = 1.0) -> list[dict[str, Any]] | None:
        """Tell workers never to run these tasks (and with ``terminate``, to kill them if running)."""
        return self.broadcast("revoke", {"task_id": task_id, "terminate": terminate,
                                         "signal": signal},
                              destination=destination, reply=reply, timeout=timeout)
