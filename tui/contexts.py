"""Several clusters in one config: ``[contexts.NAME]`` tables, as kubectl and k9s have them.

Each context is the app's own settings with the context's table on top (so a context usually
names just its ``broker_url``). ``qtui --context NAME`` starts on one; ``:context NAME``
switches inside the console.
"""

from __future__ import annotations

from collections.abc import Mapping

from qtui.core import App
from qtui.core.exceptions import ConfigError


def context_app(app: App, name: str) -> App:
    """A copy of ``app``'s settings with context ``name`` applied."""
    contexts = app.conf.contexts or {}
    if name not in contexts:
        known = ", ".join(sorted(contexts)) or "none configured ([contexts.NAME] in the config)"
        raise ConfigError(f"unknown context {name!r}; known: {known}")
    settings = contexts[name]
    if not isinstance(settings, Mapping):
        raise ConfigError(f"[contexts.{name}] must be a table of settings, got {settings!r}")
    clone = App(app.main or "qtui")
    base = {k: v for k, v in app.conf.changes().items() if k != "contexts"}
    clone.conf.update(base, source="config")
    clone.conf.update(dict(settings), source=f"[contexts.{name}]")
    clone.conf.update(contexts=contexts, source="config")
    return clone


def context_apps(app: App) -> dict[str, App]:
    """Every configured context, checked up front so a typo fails at start, not on a switch."""
    return {name: context_app(app, name) for name in sorted(app.conf.contexts or {})}
