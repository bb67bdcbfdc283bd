"""The console's filter language, for the task list and ``:tasks QUERY``.

Terms are separated by spaces and all must match (AND)::

    name:tasks.add        field contains the text (case-insensitive)
    state:FAILURE,RETRY   any of several values (OR)
    name:/^reports\\./     a regular expression between slashes
    -state:SUCCESS        a leading minus negates a term
    timeout               free text: id, name, worker, args, kwargs, result or exception
    /Err(or)?$/           a free regular expression
    "two words"           quotes keep spaces together

Fields: ``id``, ``name``, ``state``, ``worker``, ``args`` (args and kwargs), ``result``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass

FIELDS = ("id", "name", "state", "worker", "args", "result")


class QueryError(ValueError):
    """A filter the console cannot understand; the message says what to write instead."""


@dataclass(frozen=True)
class Term:
    field: str | None
    matchers: tuple[Callable[[str], bool], ...]
    negate: bool = False
    values: tuple[str, ...] = ()
    """The values as written (states upper-cased), for whoever needs more than a match."""

    def matches(self, values: Mapping[str, str]) -> bool:
        texts = [values.get(self.field, "")] if self.field else list(values.values())
        hit = any(m(t) for m in self.matchers for t in texts)
        return hit != self.negate


def _matcher(text: str) -> Callable[[str], bool]:
    if len(text) >= 2 and text.startswith("/") and text.endswith("/"):
        try:
            pattern = re.compile(text[1:-1], re.IGNORECASE)
        except re.error as exc:
            raise QueryError(f"bad regular expression {text}: {exc}") from None
        return lambda value: pattern.search(value) is not None
    needle = text.lower()
    return lambda value: needle in value.lower()


def parse(query: str) -> list[Term]:
    """Parse a filter; an empty one matches everything."""
    try:
        words = shlex.split(query)
    except ValueError as exc:
        raise QueryError(f"cannot read the filter: {exc}") from None
    terms = []
    for word in words:
        negate = word.startswith("-") and len(word) > 1
        if negate:
            word = word[1:]
        field, sep, value = word.partition(":")
        if sep and field in FIELDS and not word.startswith("/"):
            if not value:
                raise QueryError(f"{field}: needs a value, for example {field}:something")
            values = value.split(",") if field == "state" else [value]
            if field == "state":
                values = [v.upper() for v in values if v]
                matchers = tuple(_matcher(f"/^{re.escape(v)}$/") for v in values)
            else:
                matchers = tuple(_matcher(v) for v in values)
            terms.append(Term(field, matchers, negate, tuple(values)))
        elif sep and field.isidentifier() and field not in FIELDS and not value.startswith("//"):
            raise QueryError(f"unknown field {field!r}; use one of: {', '.join(FIELDS)}")
        else:
            terms.append(Term(None, (_matcher(word),), negate))
    return terms


def matches(terms: list[Term], values: Mapping[str, str]) -> bool:
    return all(term.matches(values) for term in terms)
