"""Text from the cluster made safe to show: the one place that turns data into display text.

Hostnames, queue and task names, arguments, results, tracebacks and control replies come from
anyone who can publish to the broker. Shown raw, an ``ESC`` in them drives the operator's
terminal (clears the screen, writes the clipboard with OSC 52); parsed as Rich/Textual markup,
``[/]`` crashes a widget and ``[@click=...]`` becomes a link that runs an action. So data is
only ever shown as a :class:`rich.text.Text` (:func:`safe_text`) or a Textual ``Content`` made
from :func:`printable` text, never as a markup string, with every control character replaced by
a visible stand-in.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text

#: What each control character becomes: C0 controls as their Unicode control pictures
#: (ESC shows as ␛, BEL as ␇), DEL as ␡, and C1 controls, line and paragraph separators and the
#: bidirectional overrides (which reorder what the operator reads) as ``\\xNN``/``\\uNNNN``.
_VISIBLE: dict[int, str] = {
    **{code: chr(0x2400 + code) for code in range(0x20)},
    0x7F: "\u2421",
    **{code: f"\\x{code:02x}" for code in range(0x80, 0xA0)},
    **{code: f"\\u{code:04x}" for code in (0x2028, 0x2029, *range(0x202A, 0x202F),
                                           *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)},
}
#: Multi-line text (tracebacks, replies) keeps its line breaks and tabs.
_VISIBLE_MULTILINE = {code: text for code, text in _VISIBLE.items() if chr(code) not in "\n\t"}

#: What :func:`clip` appends, before the count of characters left out.
CLIP_MARKER = "…[+{} chars]"


def printable(value: Any, *, multiline: bool = False) -> str:
    """``value`` as a string with every control character made visible (``str()`` of a string,
    ``repr()`` of anything else). ``multiline`` keeps newlines and tabs."""
    text = value if isinstance(value, str) else repr(value)
    return text.translate(_VISIBLE_MULTILINE if multiline else _VISIBLE)


def safe_text(value: Any, style: str = "", *, multiline: bool = False) -> Text:
    """``value`` as a Rich ``Text`` that shows it literally: never parsed as markup, control
    characters made visible. ``None`` shows as nothing."""
    return Text("" if value is None else printable(value, multiline=multiline), style=style)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with a marker saying how much was left out, so a
    huge field costs bounded memory and the reader knows it was cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + CLIP_MARKER.format(len(text) - limit)


UNSHOWN = "(not shown: its worker sent the arguments, not their reprs)"
"""The text of a task's args in a worker's reply when its worker ignored ``safe`` (Celery's
``reserved``, ``scheduled`` and ``query_task`` do): whether its sender masked them is not known,
so they are not shown."""


def reprs_only(value: Any) -> Any:
    """A task's ``args`` or ``kwargs`` from a worker's reply, as they may be shown: text (the
    reprs a worker sends in safe mode) and empty values as they are, anything else (the
    arguments themselves, where a mask their sender wrote cannot be told from them)
    :data:`UNSHOWN`."""
    return value if isinstance(value, str) or not value else UNSHOWN
