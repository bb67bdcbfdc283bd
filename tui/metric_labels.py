"""Label values for the Prometheus exporter: made safe to show, and kept few.

Every label value comes from the cluster (task names, hostnames, queue and exception names), and
anyone who can publish to the broker writes those. Prometheus keeps one series per distinct set
of label values, so made-up names by the thousand would grow the exporter and the Prometheus
server without end. Values are cleaned (control characters made visible, anything shaped like a
secret masked, cut to :data:`MAX_LENGTH`) and bounded twice: each label admits at most so many
distinct values, and each metric at most so many label sets. Past a bound, a new value or set
is counted under :data:`OVERFLOW` instead, and :attr:`folded` says how often that happened.
"""

from __future__ import annotations

from qtui.core.config import mask_secrets
from qtui.core.display import clip, printable

#: What a value past its bound is reported as.
OVERFLOW = "other"
#: Characters kept of a label value.
MAX_LENGTH = 200


def clean(value: str) -> str:
    """A label value safe to serve: no control characters, no secrets, a bounded length."""
    return clip(printable(mask_secrets(value)), MAX_LENGTH)


class LabelValues:
    """The values one label may take: the first ``limit`` distinct ones, cleaned; any later
    one is :data:`OVERFLOW`."""

    def __init__(self, label: str, limit: int) -> None:
        self.label = label
        self.limit = limit
        self.folded = 0
        """Values reported as :data:`OVERFLOW` because the bound was reached."""
        self._known: dict[str, str] = {}

    def __call__(self, raw: str, *, count: bool = True) -> str:
        """The label value of ``raw``; ``count``: a fold counts in :attr:`folded` (a scrape
        that reads the same values again says False)."""
        known = self._known.get(raw)
        if known is not None:
            return known
        if len(self._known) >= self.limit:
            self.folded += count
            return OVERFLOW
        known = self._known[raw] = clean(raw)
        return known

    def __len__(self) -> int:
        return len(self._known)


class LabelSets:
    """The label sets one metric may have: the first ``limit`` distinct ones; any later one
    has every label :data:`OVERFLOW`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.folded = 0
        self._seen: set[tuple[str, ...]] = set()

    def __call__(self, labels: tuple[str, ...]) -> tuple[str, ...]:
        if labels in self._seen:
            return labels
        if len(self._seen) >= self.limit:
            self.folded += 1
            return (OVERFLOW,) * len(labels)
        self._seen.add(labels)
        return labels

    def __len__(self) -> int:
        return len(self._seen)
