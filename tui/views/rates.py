"""ThroughputSeries per final state as bars on one shared, labelled scale with a time axis.

Textual's Sparkline scales each series to its own minimum and maximum, so one failure drew a
full bar next to a thousand successes, and a series of zeros a solid line. Here every state is
drawn against the same top value, zero draws nothing, and the axis says how old each bar is.
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from ..rows import ThroughputSeries
from .format import STATE_STYLES

STATES = ("SUCCESS", "FAILURE", "RETRY", "RECEIVED")
#: A bar's eighths, from nothing to a full cell.
BLOCKS = " ▁▂▃▄▅▆▇█"
#: Seconds between the axis's labels.
TICK = 30
LABEL_WIDTH = 18  # "Received  123.4/s "


def rate(series: list[int], interval: float) -> float:
    """Tasks per second in the newest complete bucket (the last one is still filling)."""
    return (series[-2] if len(series) > 1 else 0) / interval


def bar_cells(value: int, top: int, rows: int) -> list[str]:
    """One bar, ``rows`` cells high, top cell first: ``value`` out of ``top``. Nothing for 0,
    and at least one eighth for anything above it, so a single failure is seen but small."""
    if value <= 0:
        return [" "] * rows
    eighths = max(1, round(value / top * rows * 8))
    return [BLOCKS[min(8, max(0, eighths - 8 * (rows - 1 - r)))] for r in range(rows)]


def axis(width: int, interval: float) -> str:
    """Time labels under ``width`` bars, the newest at the right: ``-60s   -30s   now``."""
    cells = [" "] * width
    step = max(1, round(TICK / interval))
    for age in range(0, width, step):
        label = "now" if age == 0 else f"-{age * interval:g}s"
        end = width - age
        start = end - len(label)
        if start >= 0 and all(c == " " for c in cells[max(0, start - 1):end]):
            cells[start:end] = label
    return "".join(cells)


class RateChart(Widget):
    """Tasks per second of each final state over the last minutes (one bucket per column)."""

    throughput: reactive[ThroughputSeries] = reactive(ThroughputSeries(1.0), always_update=True)

    def render(self) -> Text:
        width, height = self.size
        bars = max(0, width - LABEL_WIDTH)
        rows = max(1, (height - 2) // len(STATES))
        throughput = self.throughput
        # The newest bucket is still filling: drawing it would show a dip at "now".
        series = {s: (throughput.series.get(s) or [0])[:-1][-bars:] if bars else []
                  for s in STATES}
        top = max((v for values in series.values() for v in values), default=0) or 1
        text = Text(no_wrap=True, overflow="crop")
        text.append(f"Tasks/s, one scale: a full bar is {top / throughput.interval:g}/s",
                    style="bold")
        for state in STATES:
            values = [0] * (bars - len(series[state])) + series[state]
            style = STATE_STYLES.get(state, "")
            now = rate(throughput.series.get(state) or [], throughput.interval)
            label = f"{state.title():<9}{now:>6.1f}/s "
            columns = [bar_cells(v, top, rows) for v in values]
            for r in range(rows):
                text.append("\n")
                text.append(label if r == 0 else " " * LABEL_WIDTH, style=style)
                text.append("".join(column[r] for column in columns), style=style)
        text.append("\n" + " " * LABEL_WIDTH + axis(bars, throughput.interval))
        return text
