"""A one-line prompt that remembers what was entered (↑/↓, as a shell does) and completes with
Tab, for the ``/`` filter and the ``:`` command."""

from __future__ import annotations

from typing import Any

from textual.binding import Binding
from textual.suggester import SuggestFromList
from textual.widgets import Input


class HistoryInput(Input):
    """``history`` is the caller's list, oldest first: entries submitted here are appended to
    it, so it outlives the prompt. ``completions`` are offered as you type; Tab takes one."""

    BINDINGS = [
        Binding("up", "history(-1)", "Older", show=False),
        Binding("down", "history(1)", "Newer", show=False),
        Binding("tab", "complete", "Complete", show=False),
    ]

    def __init__(self, history: list[str], completions: list[str] | None = None,
                 **kwargs: Any) -> None:
        suggester = SuggestFromList(completions, case_sensitive=False) if completions else None
        super().__init__(suggester=suggester, **kwargs)
        self.history = history
        self._position = len(history)
        """Where ↑/↓ are in the history; len(history) is the line being typed."""
        self._typed = ""

    def action_history(self, step: int) -> None:
        if not self.history:
            return
        if self._position == len(self.history):
            self._typed = self.value
        self._position = max(0, min(len(self.history), self._position + step))
        self.value = (self._typed if self._position == len(self.history)
                      else self.history[self._position])
        self.cursor_position = len(self.value)

    def action_complete(self) -> None:
        """Take the completion shown after the cursor (at the end of the line, the right arrow
        takes it); Tab does nothing else: focus stays in the prompt."""
        if self.cursor_at_end:
            self.action_cursor_right()

    def remember(self, text: str) -> None:
        """Add a submitted entry to the history (not twice in a row) and start from the end."""
        if text and (not self.history or self.history[-1] != text):
            self.history.append(text)
        self._position = len(self.history)

    def _on_input_submitted(self, event: Input.Submitted) -> None:
        self.remember(event.value.strip())
