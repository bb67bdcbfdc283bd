"""The header's alert badge: shown in every view while an alert rule fires."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.events import Click
from textual.widgets import Static

from qtui.core.alerts import FIRING, RuleStatus


class AlertBadge(Static):
    """In every view's header: how many rules fire and the first one's name; a click opens the
    Alerts view. Hidden while none fires."""

    DEFAULT_CSS = """
    AlertBadge {
        dock: right;
        width: auto;
        max-width: 30;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        background: $error;
        color: $text;
        text-style: bold;
        display: none;
    }
    AlertBadge.-firing {
        display: block;
    }
    """

    def show(self, statuses: Sequence[RuleStatus]) -> None:
        firing = [s.rule.name for s in statuses if s.state == FIRING]
        self.set_class(bool(firing), "-firing")
        if firing:
                # The name is data from the config: shown as text, never as markup.
            self.update(Text(f"⚠ {len(firing)} firing: {firing[0]}"))

    async def on_click(self, event: Click) -> None:
        event.stop()
        await self.run_action("app.switch_mode('alerts')")
