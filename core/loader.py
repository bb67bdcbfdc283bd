"""Finding the user's app for the command line: ``-A MODULE[:ATTR]`` plus the discovered config."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from . import brokers
from .app import App
from .celery_app import CeleryApp, is_celery_app
from .config import discover_config_file
from .exceptions import ConfigError


def find_app(spec: str) -> App:
    """``-A`` as ``celery -A`` reads it: ``proj`` -> ``proj.app`` or ``proj.celery`` (or the
    module's only app), else the module ``proj.celery``; ``proj.tasks:application`` -> that.
    A qtui App is used as it is; a Celery app is wrapped in :class:`CeleryApp`."""
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as Celery does: -A tasks finds ./tasks.py
    module = _import(spec, module_name)
    if attr:
        app = getattr(module, attr, None)
        if not _is_app(app):
            raise ConfigError(f"-A {spec}: {module_name}.{attr} is not a qtui or Celery app")
        return _as_qtui(app)
    found = _app_in(spec, module)
    if found is None and not module_name.endswith(".celery"):
        # Celery's next guess: the app lives in the package's celery.py.
        try:
            submodule = importlib.import_module(f"{module_name}.celery")
        except ImportError as exc:
            if getattr(exc, "name", None) != f"{module_name}.celery":
                raise
        else:
            found = _app_in(spec, submodule)
    if found is None:
        raise ConfigError(f"-A {spec}: module {module_name!r} defines no qtui or Celery app "
                          "(expected `app = App(...)` or `app = Celery(...)`)")
    return _as_qtui(found)


def _import(spec: str, module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        if getattr(exc, "name", None) == module_name:
            raise ConfigError(f"-A {spec}: no module named {module_name!r} "
                              f"(looked in {os.getcwd()} and the Python path)") from exc
        raise


def _is_app(obj: Any) -> bool:
    return isinstance(obj, App) or is_celery_app(obj)


def _app_in(spec: str, module: ModuleType) -> Any:
    """The module's ``app``, else its ``celery``, else its only app; None when it has none."""
    for name in ("app", "celery"):
        named = getattr(module, name, None)
        if _is_app(named):
            return named
    candidates = list({id(v): v for v in vars(module).values() if _is_app(v)}.values())
    if len(candidates) > 1:
        raise ConfigError(f"-A {spec}: module {module.__name__!r} defines several apps; "
                          f"name one with -A {module.__name__}:NAME")
    return candidates[0] if candidates else None


def _as_qtui(app: Any) -> App:
    return app if isinstance(app, App) else CeleryApp(app)


def load_app(spec: str | None = None, config_file: str | None = None,
             broker: str | None = None) -> App:
    """The app a command works with: from ``-A``, else a default one; then the config file
    (``--config``, ``$QTUI_CONFIG`` or ``./qtui.toml``) and ``--broker`` on top."""
    app = find_app(spec) if spec else App("qtui")
    path = discover_config_file(config_file)
    if path is not None:
        app.config_from_file(Path(path))
    if broker:
        app.conf.update(broker_url=broker, source="--broker")
    brokers.check_url(app.broker_url, app.conf.broker_transport_options)
    return app
