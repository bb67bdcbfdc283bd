"""Exceptions a qtui user can meet, each with a message that says what to do."""

from __future__ import annotations

import builtins


class QtuiError(Exception):
    """Base class of every error qtui raises on purpose."""


class ConfigError(QtuiError):
    """A configuration file or object is wrong: the message names the source, the key and the
    fix."""


class ProtocolError(QtuiError):
    """A message does not follow Celery's task protocol v2; the message says which part is wrong."""


class ContentDisallowed(ProtocolError):
    """A message uses a serializer that `accept_content` does not allow (pickle is opt-in)."""


class BrokerUnavailable(QtuiError):
    """The broker could not be reached (after the configured retries)."""


class BrokerBlocked(BrokerUnavailable):
    """The broker did not take a task in time, or blocks publishers (a RabbitMQ memory or disk
    alarm): the send raised instead of reporting a success the broker never confirmed."""


class SendFailed(BrokerUnavailable):
    """A bulk send stopped part way: ``sent`` lists the ids the broker has, ``in_doubt`` those
    it may or may not have (the batch being stored when it failed, or on a broker that takes
    messages one by one, the one being sent and those awaiting their confirms), ``unsent``
    those never sent. Send ``unsent`` again, and ``in_doubt`` once you know they did not run
    (sending them again may run them twice)."""

    def __init__(self, cause: BaseException, sent: list[str], in_doubt: list[str],
                 unsent: list[str], whole: bool = False) -> None:
        self.sent = sent
        self.in_doubt = in_doubt
        self.unsent = unsent
        doubt = ("in the failed batch (the broker has all or none of them)" if whole
                 else "in doubt (the broker may have any of them)")
        super().__init__(
            f"{cause} Sent before the failure: {len(sent)} task(s); {doubt}: "
            f"{len(in_doubt)}, ids {_ids(in_doubt)}; not sent: {len(unsent)}, ids "
            f"{_ids(unsent)}. The error's sent, in_doubt and unsent attributes list every id.")


def _ids(ids: list[str], shown: int = 5) -> str:
    return ", ".join(ids[:shown]) + (f" and {len(ids) - shown} more" if len(ids) > shown else "")


class NotRegistered(QtuiError, KeyError):
    """No task of that name is registered with the app."""

    def __str__(self) -> str:
        return Exception.__str__(self)


class ImproperlyConfigured(QtuiError):
    """The app cannot do what was asked with the configuration it has (for example no result
    backend)."""


class TimeoutError(QtuiError, builtins.TimeoutError):  # noqa: A001 - the name users of Celery expect
    """`AsyncResult.get()` waited longer than its timeout."""


class BackendError(QtuiError):
    """A result backend could not store or read a result."""


class TaskRevokedError(QtuiError):
    """The task was revoked (or expired) before it ran."""


class TaskRejectedError(QtuiError):
    """The worker rejected the task (for example an unknown task name or a malformed message)."""


class Retry(QtuiError):
    """Raised by `Task.retry()` so the worker reschedules the task; not an error of the task
    itself."""

    def __init__(self, message: str | None = None, exc: BaseException | None = None,
                 when: float | None = None) -> None:
        self.exc = exc
        self.when = when
        super().__init__(message or f"Retry in {when}s" + (f": {exc!r}" if exc else ""))


class MaxRetriesExceededError(QtuiError):
    """`Task.retry()` was called after the task's `max_retries` was reached."""


class SoftTimeLimitExceeded(QtuiError):
    """Raised inside a task when its soft time limit passes, so it can clean up."""


class TimeLimitExceeded(QtuiError):
    """The task ran past its hard time limit and its process was killed."""


class WorkerLostError(QtuiError):
    """The process running the task died."""


class RemoteTaskError(QtuiError):
    """A task failed with an exception type this process does not have; keeps the remote type's
    name."""


class CanvasError(QtuiError):
    """A canvas field (link, link_error, chain, chord) that cannot be followed: the task fails
    with this reason rather than dropping the work silently."""


class ChordError(QtuiError):
    """A chord's header task failed, so its body cannot run (Celery's name)."""
