"""The console's ANSI colours, one palette for dark themes and one for light ones.

Task states are drawn in ANSI colours (``green``, ``red``...), which Textual turns into real
colours through the app's ANSI palettes. Its defaults (Monokai, Alabaster) left FAILURE at
3.9:1 on dark rows and RECEIVED and SUCCESS near 3:1 on light ones; these keep every state
colour at 4.5:1 or more (WCAG AA) on plain and striped table rows of the textual-dark and
textual-light themes. tests/test_console_contrast.py measures it on the rendered table.
"""

from __future__ import annotations

from rich.color import parse_rgb_hex
from rich.terminal_theme import TerminalTheme


def _rgb(*colours: str) -> list[tuple[int, int, int]]:
    return [parse_rgb_hex(c.lstrip("#")) for c in colours]  # ColorTriplet: an (r, g, b) tuple


def _palette(background: str, foreground: str, normal: list[str], bright: list[str]
             ) -> TerminalTheme:
    return TerminalTheme(_rgb(background)[0], _rgb(foreground)[0], _rgb(*normal),
                         _rgb(*bright))


#: black, red, green, yellow, blue, magenta, cyan, white; then their bright forms.
DARK = _palette(
    "#0c0c0c", "#d9d9d9",
    ["#1a1a1a", "#ff5f5f", "#98e024", "#fd971f", "#9d65ff", "#d787ff", "#58d1eb", "#c4c5b5"],
    ["#a8a8a8", "#ff7a7a", "#98e024", "#e0d561", "#9d65ff", "#e4a8ff", "#58d1eb", "#f6f6ef"])
LIGHT = _palette(
    "#f7f7f7", "#000000",
    ["#000000", "#9e1c1c", "#1f5c0e", "#664a00", "#24479a", "#6a2e8d", "#005a78", "#f7f7f7"],
    ["#505050", "#b02020", "#2a6e14", "#7a5800", "#2a52b0", "#7a3aa0", "#006a8a", "#f7f7f7"])
