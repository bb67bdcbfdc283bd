"""A Celery app seen through qtui's App, so ``qtui -A proj run-worker`` runs a Celery project.

:class:`CeleryApp` takes a ``celery.Celery`` instance: its settings become qtui settings where
qtui has the same one, and each of its tasks is registered as a :class:`CeleryTask` that keeps
the Celery task object, which the worker runs with Celery's own tracer (task context, handlers,
signals, result storage). celery stays optional: this module never imports it; it is only ever
handed a Celery app that its user already imported.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from . import config
from .app import App
from .exceptions import ConfigError
from .task import Task

logger = logging.getLogger(__name__)

#: Per-task options qtui's worker reads (time limits, acks, rate limits, routing) and Celery's
#: task objects carry with Celery's own precedence already applied.
_TASK_OPTIONS = ("rate_limit", "time_limit", "soft_time_limit", "acks_late", "ignore_result",
                 "serializer", "priority", "queue", "expires", "max_retries",
                 "default_retry_delay")


def is_celery_app(obj: Any) -> bool:
    """Whether ``obj`` is a ``celery.Celery`` (or a subclass), without importing celery."""
    return any(cls.__name__ == "Celery" and cls.__module__.startswith("celery.app")
               for cls in type(obj).__mro__)


class CeleryTask(Task):
    """A Celery task in qtui's registry: the worker runs ``celery_task`` with Celery's tracer."""

    def __init__(self, app: App, celery_task: Any) -> None:
        options = {key: getattr(celery_task, key) for key in _TASK_OPTIONS
                   if getattr(celery_task, key, None) is not None}
        super().__init__(app, celery_task.run, celery_task.name, typing=False, **options)
        self.celery_task = celery_task


class CeleryApp(App):
    """qtui's App over a ``celery.Celery``: its broker, backend, settings and tasks."""

    def __init__(self, celery_app: Any) -> None:
        # What a Celery worker does before it consumes: import `imports` and `include` (which
        # also runs autodiscover_tasks), then bind every task, shared_task ones included.
        celery_app.loader.import_default_modules()
        celery_app.finalize(auto=True)
        super().__init__(celery_app.main)
        self.celery = celery_app
        source = f"Celery app {celery_app.main!r}"
        try:
            self.conf.update(_settings_of(celery_app), source=source)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (read from the Celery app's configuration)") from None
        for name, task in celery_app.tasks.items():
            self.tasks[name] = CeleryTask(self, task)

    def __repr__(self) -> str:
        return f"<CeleryApp {self.main!r}>"


def _settings_of(celery_app: Any) -> dict[str, Any]:
    """The Celery app's settings that qtui also has, as qtui reads them. A Celery setting left
    at None means "derive it" in Celery, so it leaves qtui's default. Worker settings the user
    changed that qtui's worker does not implement are named in one warning (task and result
    settings need no list: Celery's own tracer and backend run the tasks and store results)."""
    from celery.app.defaults import DEFAULTS  # a Celery app is at hand: celery is installed

    conf = celery_app.conf
    settings: dict[str, Any] = {}
    unsupported = []
    for key in conf:
        value = conf.get(key)
        if key not in config.SETTINGS:
            if key.startswith(_WORKER_SIDE) and value != DEFAULTS.get(key):
                unsupported.append(key)
            continue
        if value is None and config.SETTINGS[key].default is not None:
            continue
        value = _as_qtui(value)
        if value != config.SETTINGS[key].default:
            settings[key] = value
    if unsupported:
        logger.warning("Celery app %r: qtui's worker does not use these settings: %s",
                       celery_app.main, ", ".join(sorted(unsupported)))
    return settings


#: Prefix of the settings qtui's worker itself would have to honour.
_WORKER_SIDE = "worker_"


def _as_qtui(value: Any) -> Any:
    """Celery's value types as qtui's settings take them."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, tuple):
        return list(value)
    return value
