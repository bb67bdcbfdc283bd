"""How values look in the console's tables."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime

from rich.text import Text

from qtui.core.display import safe_text
from qtui.core.queue_rates import Rate
from qtui.core.queues import Age

#: ANSI colours, made real by the console's palettes (tui/palette.py); never "dim", which
#: Textual draws by fading the colour into the background, below a readable contrast.
STATE_STYLES = {
    "PENDING": "italic", "RECEIVED": "cyan", "STARTED": "yellow", "SUCCESS": "green",
    "FAILURE": "bold red", "RETRY": "magenta", "REVOKED": "bright_black", "REJECTED": "red",
}


def cells(*values: str | Text) -> list[Text]:
    """Table cells as plain text: task names, arguments and queue names are data, never markup
    (``[1, 2]`` must show as itself), and their control characters are made visible."""
    return [v if isinstance(v, Text) else safe_text(v) for v in values]


def state(value: str) -> Text:
    return Text(value, style=STATE_STYLES.get(value, ""))


def clock(timestamp: float | None) -> str:
    if not timestamp:
        return ""
    try:
        return datetime.fromtimestamp(timestamp).strftime("%H:%M:%S")
    except (OverflowError, ValueError, OSError, TypeError):  # a time no calendar holds
        return "?"


def moment(timestamp: float | None) -> str:
    """A time of day to the millisecond: events of one task are often milliseconds apart."""
    if not timestamp:
        return ""
    try:
        return datetime.fromtimestamp(timestamp).strftime("%H:%M:%S.%f")[:-3]
    except (OverflowError, ValueError, OSError, TypeError):  # a time no calendar holds
        return "?"


def offset(timestamp: float | None, start: float | None) -> str:
    """How long after ``start`` a moment came (``+12ms``; before it, ``-5ms``)."""
    if not timestamp or not start:
        return ""
    delta = timestamp - start
    return ("-" if delta < 0 else "+") + duration(abs(delta))


def age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def waited(wait: Age | None) -> str:
    """How long a queue's oldest message has waited: ``~`` before a figure inferred from a
    ``task-sent`` event, ``?`` when unknown (see :func:`qtui.core.queues.oldest_wait`)."""
    if wait is None:
        return "?"
    seconds = wait.seconds
    if seconds < 60:
        figure = f"{seconds:.0f}s"
    elif seconds < 3600:
        figure = f"{seconds / 60:.0f}m"
    else:
        figure = f"{seconds / 3600:.1f}h"
    return figure if wait.exact else f"~{figure}"


def per_second(rate: Rate | None) -> str:
    """Tasks per second into or out of a queue: ``~`` before a figure inferred from
    ``task-sent`` events, ``?`` when unknown (see :mod:`qtui.core.queue_rates`)."""
    if rate is None:
        return "?"
    figure = f"{rate.per_second:.1f}" if rate.per_second < 1000 else f"{rate.per_second:.0f}"
    return figure if rate.exact else f"~{figure}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.2f}s"
    return f"{seconds / 60:.1f}m"


def consumers(count: int | None) -> Text:
    """A queue's consumer count; none at all stands out, as its messages wait unseen."""
    if count is None:
        return Text("")
    return Text("none", style="bold red") if count == 0 else Text(str(count))


def alive(is_alive: bool) -> Text:
    return Text("online", style="green") if is_alive else Text("offline", style="red")


def load(values: tuple[float, ...]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def since(timestamp: float | None) -> float | None:
    return None if not timestamp else max(0.0, time.time() - timestamp)


#: How an alert rule's state is written, in the console and by `qtui status --check`.
ALERT_STYLES = {"firing": "bold red", "pending": "yellow", "unknown": "italic", "ok": "green"}


def alert_state(value: str) -> Text:
    return Text(value, style=ALERT_STYLES.get(value, ""))


def time_left(due: float | None, now: float) -> str:
    """Time until ``due``: ``3d04h``, ``2h05m``, ``4m12s``, ``42s``; ``due`` once it is."""
    if due is None:
        return "?"
    left = int(due - now)
    if left <= 0:
        return "due"
    hours, rest = divmod(left, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours >= 48:
        return f"{hours // 24}d{hours % 24:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def date_time(timestamp: float | None) -> str:
    """A date and time to the second (an ETA may be days away); ``?`` when unknown."""
    if timestamp is None:
        return "?"
    try:
        return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, ValueError, OSError, TypeError):  # a time no calendar holds
        return "?"


def fit(rows: list[list[Text]], headers: Sequence[str], least: Mapping[int, int],
        width: int, padding: int = 1) -> list[list[Text]]:
    """``rows`` with the cells of the columns in ``least`` (column index: the fewest cells it
    keeps) cut with an ellipsis, the widest first, so that every column fits in ``width``
    (a long queue name must not push the Paused column off the screen). The others stay
    whole; a column is never cut below its header."""
    natural = [max([len(header), *(row[i].cell_len for row in rows)])
               for i, header in enumerate(headers)]
    floor = {i: max(least[i], len(headers[i])) for i in least}
    caps = {i: min(natural[i], max(width, floor[i])) for i in least}
    over = sum(natural) + 2 * padding * len(headers) - width - sum(natural[i] - caps[i]
                                                                   for i in caps)
    while over > 0:
        widest = max(caps, key=lambda i: caps[i] - floor[i])
        step = min(over, caps[widest] - floor[widest])
        if step <= 0:
            break
        others = [caps[i] - floor[i] for i in caps if i != widest]
        step = min(step, max(1, caps[widest] - floor[widest] - max(others, default=0)))
        caps[widest] -= step
        over -= step
    return [[cut(cell, caps[i]) if i in caps else cell for i, cell in enumerate(row)]
            for row in rows]


def cut(value: Text, width: int) -> Text:
    """``value`` in at most ``width`` cells, ending in "…" when it was longer."""
    if value.cell_len <= width:
        return value
    short = value.copy()
    short.truncate(width, overflow="ellipsis")
    return short
