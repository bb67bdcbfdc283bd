"""Acting on many items at once: the marks a view keeps, and the plan of a bulk action (what it
touches, what it skips and why, what to ask before).

Nothing here knows tasks: a view hands over :class:`Target` items (an id, a name, and why the
action cannot apply to it, if so), so the tasks view, and later the dead-letter, scheduled and
peek views, share one flow: mark or filter, plan, confirm (typing the count above
:data:`TYPE_COUNT_ABOVE` items), act once on the lot.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

#: Above this many items, the operator types the count to confirm (a stray `y` is not enough).
TYPE_COUNT_ABOVE = 100
#: Items a confirmation names (id and name) before "and N more".
SAMPLE = 3


class Marks:
    """The rows a view has marked, in the order they were marked, by key."""

    def __init__(self) -> None:
        self._keys: dict[str, None] = {}
        self.anchor: str | None = None
        """The row last marked or unmarked by hand: a range mark starts there."""

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._keys))

    def toggle(self, key: str) -> bool:
        """Mark ``key``, or unmark it if it was marked; returns whether it is marked now."""
        self.anchor = key
        if key in self._keys:
            del self._keys[key]
            return False
        self._keys[key] = None
        return True

    def add(self, keys: Iterable[str]) -> int:
        """Mark these too; returns how many were not marked before."""
        before = len(self._keys)
        self._keys.update(dict.fromkeys(keys))
        return len(self._keys) - before

    def extend(self, rows: Sequence[str], to: str) -> int:
        """Mark every row from the anchor to ``to`` (both included, in ``rows``' order), as
        k9s's range mark; only ``to`` when the anchor is not among ``rows``."""
        end = rows.index(to)
        start = rows.index(self.anchor) if self.anchor in rows else end
        low, high = sorted((start, end))
        self.anchor = to
        return self.add(rows[low:high + 1])

    def keep(self, keys: Iterable[str]) -> None:
        """Forget marks of rows that are gone (the model forgot them)."""
        alive = set(keys)
        self._keys = {k: None for k in self._keys if k in alive}

    def clear(self) -> None:
        self._keys.clear()
        self.anchor = None


@dataclass(frozen=True)
class Target:
    """One item an action may touch."""

    id: str
    name: str
    refusal: str | None = None
    """Why the action cannot apply to it (``finished``), or None."""


@dataclass(frozen=True)
class BulkPlan:
    """What a bulk action will touch and what it leaves alone."""

    verb: str
    """The action in words, capitalised: ``Revoke``, ``Terminate (SIGKILL)``."""
    noun: str
    """What an item is, singular: ``task``."""
    targets: tuple[Target, ...]
    skipped: tuple[Target, ...]

    @classmethod
    def of(cls, verb: str, noun: str, items: Iterable[Target]) -> BulkPlan:
        items = list(items)
        return cls(verb, noun, tuple(t for t in items if t.refusal is None),
                   tuple(t for t in items if t.refusal is not None))

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.targets]

    def counted(self, number: int) -> str:
        return f"{number} {self.noun}{'s' if number != 1 else ''}"

    def question(self, consequence: str) -> str:
        """``Revoke 250 tasks? They will not run.``"""
        return f"{self.verb} {self.counted(len(self.targets))}? {consequence}".rstrip()

    def nothing_left(self) -> str:
        """Why there is nothing to ask about: ``Nothing to revoke: 2 tasks skipped: ...``."""
        return f"Nothing to {self.verb.split()[0].lower()}: {self.skipped_words()}"

    def skipped_words(self) -> str:
        """``12 skipped: finished (10), no arguments known (2).``, or '' when none is."""
        if not self.skipped:
            return ""
        reasons = Counter(t.refusal for t in self.skipped)
        why = ", ".join(f"{reason} ({count})" for reason, count in reasons.most_common())
        return f"{self.counted(len(self.skipped))} skipped: {why}."

    def details(self) -> str:
        """The first few items (full id and name), then how many more, then what is skipped."""
        lines = [f"{t.id}  {t.name or '(unknown)'}" for t in self.targets[:SAMPLE]]
        if len(self.targets) > SAMPLE:
            lines.append(f"… and {len(self.targets) - SAMPLE} more")
        skipped = self.skipped_words()
        return "\n".join([*lines, *([skipped] if skipped else [])])

    @property
    def typed(self) -> str | None:
        """What the operator must type to confirm (the count), or None when `y` will do."""
        return str(len(self.targets)) if len(self.targets) > TYPE_COUNT_ABOVE else None
