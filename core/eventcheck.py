"""What an event's fields may hold: the check between the event stream and the cluster State.

Anyone who can publish to the broker can send events, so a receiver sees ``uuid: [1, 2]``,
``timestamp: 1e300`` and 4 MB tracebacks as well as Celery's well-formed dicts. :func:`check`
turns an event into one the State and the console can trust (known fields of the right type,
times a calendar holds, text fields cut to a size) or refuses it with :class:`BadEvent`, which
the State counts and skips: one bad event never stops the stream.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .display import clip

#: Latest timestamp a calendar holds (datetime's year 9999): anything later cannot be shown.
MAX_TIMESTAMP = 253_402_300_799.0
#: Characters kept of a name-like field (hostname, task name, queue, ids).
MAX_NAME = 512
#: Characters kept of each free-text field, unless the caller says otherwise.
MAX_FIELD = 10_000

#: Free text: kept as a string (``repr()`` of anything else), cut to the field limit.
TEXT_FIELDS = ("args", "kwargs", "result", "exception", "traceback")
#: Names and ids: strings (or None), cut to :data:`MAX_NAME`.
NAME_FIELDS = ("type", "hostname", "uuid", "name", "eta", "expires", "root_id", "parent_id",
               "queue", "exchange", "routing_key", "sw_ident", "sw_ver", "sw_sys")
#: Moments: finite numbers within the calendar.
TIME_FIELDS = ("timestamp", "local_received")
#: Other real numbers: finite.
NUMBER_FIELDS = ("runtime", "utcoffset")
#: Counters: whole numbers, zero or more.
COUNT_FIELDS = ("clock", "pid", "retries", "active", "processed")


class BadEvent(ValueError):
    """An event with a field of the wrong type or an impossible value."""


#: What each known field is, looked up once per field an event has (most have a dozen of the
#: thirty known): one pass over the event instead of one look-up per known field.
_NAME, _TEXT, _TIME, _NUMBER, _COUNT, _FREQ, _LOADAVG = range(7)
_KINDS = {**dict.fromkeys(NAME_FIELDS, _NAME), **dict.fromkeys(TEXT_FIELDS, _TEXT),
          **dict.fromkeys(TIME_FIELDS, _TIME), **dict.fromkeys(NUMBER_FIELDS, _NUMBER),
          **dict.fromkeys(COUNT_FIELDS, _COUNT), "freq": _FREQ, "loadavg": _LOADAVG}


def check(event: Mapping[str, Any], max_field: int = MAX_FIELD) -> dict[str, Any]:
    """A copy of ``event`` whose known fields are safe to use; raises :class:`BadEvent`."""
    if not isinstance(event.get("type"), str):
        raise BadEvent(f"type must be a string, not {event.get('type')!r:.80}")
    checked = dict(event)
    for name, value in event.items():
        kind = _KINDS.get(name)
        if kind is None or value is None:
            continue
        if kind == _NAME:
            if not isinstance(value, str):
                raise BadEvent(f"{name} must be a string, not {type(value).__name__}")
            if len(value) > MAX_NAME:
                checked[name] = clip(value, MAX_NAME)
        elif kind == _TEXT:
            text = value if isinstance(value, str) else _repr(name, value)
            checked[name] = clip(text, max_field)
        elif kind == _TIME:
            if not (_real(value) and 0 <= value <= MAX_TIMESTAMP):
                raise BadEvent(f"{name} is no time: {value!r:.80}")
        elif kind == _NUMBER:
            if not _real(value):
                raise BadEvent(f"{name} must be a finite number, not {value!r:.80}")
        elif kind == _COUNT:
            if type(value) is bool or not (isinstance(value, int) and value >= 0):
                raise BadEvent(f"{name} must be a whole number, not {value!r:.80}")
        elif kind == _FREQ:
            if not (_real(value) and value > 0):
                raise BadEvent(f"freq must be a positive number, not {value!r:.80}")
        elif not (isinstance(value, (list, tuple)) and len(value) <= 3
                  and all(_real(v) for v in value)):
            raise BadEvent(f"loadavg must be up to 3 numbers, not {value!r:.80}")
    return checked


#: The largest whole number taken as a number: past it a JSON integer (of any length) would
#: overflow the float arithmetic the console does with it (a heartbeat's deadline, a runtime).
MAX_INT = 2 ** 53


def _real(value: Any) -> bool:
    kind = type(value)
    if kind is float:  # what most events carry: one test
        return math.isfinite(value)
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and kind is not bool and -MAX_INT <= value <= MAX_INT


def _repr(name: str, value: Any) -> str:
    try:
        return repr(value)
    except RecursionError as exc:  # JSON nested deeper than repr() can follow
        raise BadEvent(f"{name} is nested too deep to show") from exc
