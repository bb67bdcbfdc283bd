"""The footer: the keys of the view and of the console, on one line of text.

Textual's Footer rebuilds one widget per key whenever a screen's bindings change, which is on
every view switch: at 200x50 that rebuild was most of a switch's time (bench/RESULTS.md). This
bar shows the same bindings (``show=True``, a group as one entry: ``1234 views``) and redraws
only its text. Keys are not clickable here; every one is in the help (``?``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding
from textual.widgets import Static


class KeyBar(Static):
    COMPONENT_CLASSES: ClassVar[set[str]] = {"keybar--key"}

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self._bindings_changed(self.screen)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen: Any) -> None:
        if screen is self.screen:
            self.update(self.keys())

    def keys(self) -> Text:
        """One entry per action shown (its first key), or per group of them."""
        by_action: dict[str, Binding] = {}
        for active in self.screen.active_bindings.values():
            if active.binding.show and active.enabled:
                by_action.setdefault(active.binding.action, active.binding)
        entries: list[tuple[str, str]] = []
        groups: dict[Any, int] = {}
        for binding in by_action.values():
            shown = self.app.get_key_display(binding)
            if binding.group is None:
                entries.append((shown, binding.description))
            elif binding.group in groups:
                key, description = entries[groups[binding.group]]
                entries[groups[binding.group]] = (key + shown, description)
            else:
                groups[binding.group] = len(entries)
                entries.append((shown, binding.group.description))
        key_style = self.get_component_rich_style("keybar--key")
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        for key, description in entries:  # single spaces: 80 columns hold a view's keys
            text.append(key, key_style)
            text.append(f" {description} ")
        return text
