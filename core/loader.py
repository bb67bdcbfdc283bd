"""Finding the user's app for the command line: ``-A MODULE[:ATTR]`` plus the discovered config."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from . import brokers
from .app import App
from .config import discover_config_file
from .exceptions import ConfigError


def find_app(spec: str) -> App:
    """``tasks`` -> ``tasks.app`` (or the module's only App); ``proj.tasks:application`` -> that."""
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as Celery does: -A tasks finds ./tasks.py
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if getattr(exc, "name", None) == module_name:
            raise ConfigError(f"-A {spec}: no module named {module_name!r} "
                              f"(looked in {os.getcwd()} and the Python path)") from exc
        raise
    if attr:
        app = getattr(module, attr, None)
        if not isinstance(app, App):
            raise ConfigError(f"-A {spec}: {module_name}.{attr} is not a qtui App")
        return app
    candidates = [v for v in vars(module).values() if isinstance(v, App)]
    named = getattr(module, "app", None)
    if isinstance(named, App):
        return named
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ConfigError(f"-A {spec}: module {module_name!r} defines no qtui App "
                          "(expected `app = App(...)`)")
    raise ConfigError(f"-A {spec}: module {module_name!r} defines several Apps; "
                      f"name one with -A {module_name}:NAME")


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
    brokers.check_url(app.broker_url)
    return app
