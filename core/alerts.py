"""Alert rules (the ``alerts`` setting) and their evaluation. Pure: no I/O, no clock of its own.

A rule names a kind of measurement, the objects it looks at (glob selectors) and a threshold;
:class:`Alerts` turns successive :class:`Observation` s (what the console or ``qtui status
--check`` saw, and when) into each rule's state: ``ok``, ``pending`` (over the threshold, for
less than the rule's ``for``), ``firing``, or ``unknown`` (nothing to measure yet), with the
time that state began. What each kind measures: :data:`MEASURES` below, and the README's
"Alerts" section.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .exceptions import ConfigError

OK, PENDING, FIRING, UNKNOWN = "ok", "pending", "firing", "unknown"

#: The selectors each kind takes (globs: ``*``, ``?``, ``[abc]``).
SELECTORS: dict[str, tuple[str, ...]] = {
    "worker_offline": ("worker",),
    "queue_depth": ("queue",),
    "queue_age": ("queue",),
    "failure_rate": ("task", "worker"),
    "no_events": (),
}
#: Keys only some kinds take, besides their selectors.
KIND_OPTIONS: dict[str, tuple[str, ...]] = {"failure_rate": ("window", "min_finished")}
COMMON_KEYS = ("name", "kind", "over", "for")
ALL_KEYS = frozenset(COMMON_KEYS) | {s for kind in SELECTORS.values() for s in kind} \
    | {o for kind in KIND_OPTIONS.values() for o in kind}

#: failure_rate's defaults: failures among the tasks finished in the last 5 minutes, and it
#: cannot fire before 20 tasks finished there (one failure of three is no outage).
DEFAULT_WINDOW = 300.0
DEFAULT_MIN_FINISHED = 20
#: Where ``over`` may be left out: a worker_offline rule fires for any matching worker offline.
DEFAULT_OVER = {"worker_offline": 0.0}
#: What ``over`` counts, for messages.
UNITS = {"worker_offline": "workers", "queue_depth": "messages", "queue_age": "s",
         "failure_rate": "", "no_events": "s"}


@dataclass(frozen=True)
class Rule:
    """One ``[[alerts]]`` table, checked. ``hold`` is the table's ``for``."""

    name: str
    kind: str
    over: float
    hold: float = 0.0
    queue: str | None = None
    task: str | None = None
    worker: str | None = None
    window: float = DEFAULT_WINDOW
    min_finished: int = DEFAULT_MIN_FINISHED

    def selection(self) -> str:
        """``queue=celery``, ``task=reports.* worker=w1@*``, or '' for the whole cluster."""
        return " ".join(f"{key}={value}" for key in SELECTORS[self.kind]
                        if (value := getattr(self, key)) is not None)

    def as_dict(self) -> dict[str, Any]:
        """The rule as configured (``for``, not ``hold``), for JSON."""
        found: dict[str, Any] = {"name": self.name, "kind": self.kind, "over": self.over,
                                 "for": self.hold}
        found.update({key: getattr(self, key) for key in SELECTORS[self.kind]
                      if getattr(self, key) is not None})
        found.update({key: getattr(self, key) for key in KIND_OPTIONS.get(self.kind, ())})
        return found


def format_value(kind: str, value: float | None, short: bool = False) -> str:
    """A measured value or threshold in the kind's unit: ``1200 messages``, ``7.5%``, ``61 s``;
    ``short``: counts bare and seconds glued (``1200``, ``7.5%``, ``61s``)."""
    if value is None:
        return "?"
    if kind == "failure_rate":
        return f"{value * 100:.3g}%"
    counted = kind in ("worker_offline", "queue_depth")
    number = f"{value:.0f}" if counted else f"{value:.3g}"
    if short:
        return number if counted else f"{number}s"
    unit = UNITS[kind].removesuffix("s") if counted and value == 1 else UNITS[kind]
    return f"{number} {unit}"


# checking the setting ---------------------------------------------------------------------------
def parse_rules(value: Any, source: str = "alerts") -> tuple[Rule, ...]:
    """The ``alerts`` setting as rules; a ConfigError names the rule, the key and what is wrong."""
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{source}: setting 'alerts' must be a list of tables "
                          f"([[alerts]] in TOML), got {type(value).__name__}")
    rules: list[Rule] = []
    for index, table in enumerate(value):
        rule = _parse_rule(table, f"{source}: alerts[{index}]")
        if any(r.name == rule.name for r in rules):
            raise ConfigError(f"{source}: alerts[{index}]: the name {rule.name!r} is taken by an "
                              "earlier rule; each rule needs its own name")
        rules.append(rule)
    return tuple(rules)


def _parse_rule(table: Any, where: str) -> Rule:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table with name, kind and over, "
                          f"got {type(table).__name__}")
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where} needs a name (a non-empty string), got {name!r}")
    where = f"{where} ({name!r})"
    kind = table.get("kind")
    if kind not in SELECTORS:
        raise ConfigError(f"{where}: kind must be one of {', '.join(SELECTORS)}, got {kind!r}"
                          f"{_did_you_mean(str(kind), SELECTORS)}")
    allowed = (*COMMON_KEYS, *SELECTORS[kind], *KIND_OPTIONS.get(kind, ()))
    for key in table:
        if key in allowed:
            continue
        if key in ALL_KEYS:
            applies = ", ".join(k for k, keys in SELECTORS.items() if key in keys) \
                or ", ".join(k for k, keys in KIND_OPTIONS.items() if key in keys)
            takes = ", ".join(SELECTORS[kind]) or "none"
            raise ConfigError(f"{where}: {key!r} does not apply to kind {kind!r} (it applies "
                              f"to {applies}); the selectors of {kind}: {takes}")
        raise ConfigError(f"{where}: unknown key {key!r}.{_did_you_mean(str(key), allowed)} "
                          f"A {kind} rule takes {', '.join(allowed)}")
    for key in SELECTORS[kind]:
        selector = table.get(key)
        if selector is not None and (not isinstance(selector, str) or not selector):
            raise ConfigError(f"{where}: {key} must be a name or glob (a non-empty string), "
                              f"got {selector!r}")
    over = table.get("over", DEFAULT_OVER.get(kind))
    if over is None:
        raise ConfigError(f"{where}: over (the threshold, in {_unit_words(kind)}) is missing")
    _number(where, "over", over, low=0.0)
    if kind == "failure_rate" and over >= 1:
        raise ConfigError(f"{where}: over must be a rate below 1 (0.05 is 5%), got {over!r}")
    hold = table.get("for", 0.0)
    _number(where, "for", hold, low=0.0)
    window = table.get("window", DEFAULT_WINDOW)
    _number(where, "window", window, low=0.0, above=True)
    min_finished = table.get("min_finished", DEFAULT_MIN_FINISHED)
    if not isinstance(min_finished, int) or isinstance(min_finished, bool) or min_finished < 1:
        raise ConfigError(f"{where}: min_finished must be a whole number >= 1, "
                          f"got {min_finished!r}")
    return Rule(name=name, kind=kind, over=float(over), hold=float(hold),
                queue=table.get("queue"), task=table.get("task"), worker=table.get("worker"),
                window=float(window), min_finished=min_finished)


def _number(where: str, key: str, value: Any, low: float, above: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and (value > low if above else value >= low)
    if not ok:
        raise ConfigError(f"{where}: {key} must be a number {'>' if above else '>='} {low:g}, "
                          f"got {value!r}")


def _unit_words(kind: str) -> str:
    return {"failure_rate": "a rate: 0.05 is 5%", "queue_age": "seconds",
            "no_events": "seconds"}.get(kind, UNITS[kind])


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


# what is observed -------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueLevel:
    """A queue as the last poll saw it; None where the broker could not tell."""

    depth: int | None
    age: float | None = None
    """Seconds the oldest waiting message has waited (:func:`qtui.core.queues.oldest_wait`);
    None where unknown."""


@dataclass(frozen=True)
class Finished:
    """A task that ended (SUCCESS or FAILURE) at ``when`` (the observer's clock)."""

    name: str
    worker: str
    failed: bool
    when: float


#: Buckets a failure_rate rule's window is counted in (each window/300 seconds long).
WINDOW_BUCKETS = 300


class FinishedCounts:
    """Finished and failed tasks counted per failure_rate rule, in a ring of
    :data:`WINDOW_BUCKETS` buckets over the rule's window: adding a task costs a few steps per
    rule and reading a rule sums 300 numbers, however many tasks a window holds (reading
    100,000 kept tasks instead took most of a second)."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(r for r in rules if r.kind == "failure_rate")
        self._width = {r.name: r.window / WINDOW_BUCKETS for r in self.rules}
        # Per rule and slot: [bucket number held, finished, failed].
        self._slots = {r.name: [[-1, 0, 0] for _ in range(WINDOW_BUCKETS)] for r in self.rules}
        self._matches: dict[tuple[str, str], tuple[Rule, ...]] = {}
        """(task name, worker) -> the rules it counts for (globs are matched once per pair)."""

    def add(self, task: Finished) -> None:
        key = (task.name, task.worker)
        rules = self._matches.get(key)
        if rules is None:
            if len(self._matches) > 100_000:  # made-up names by the million stay bounded
                self._matches.clear()
            rules = self._matches[key] = tuple(
                r for r in self.rules
                if _matches(r.task, task.name) and _matches(r.worker, task.worker))
        for rule in rules:
            bucket = int(task.when // self._width[rule.name])
            slot = self._slots[rule.name][bucket % WINDOW_BUCKETS]
            if slot[0] != bucket:
                if slot[0] > bucket:
                    continue  # older than the ring holds
                slot[:] = [bucket, 0, 0]
            slot[1] += 1
            slot[2] += task.failed

    def counts(self, now: float) -> dict[str, tuple[int, int]]:
        """(finished, failed) of each rule within its window up to ``now``."""
        found = {}
        for rule in self.rules:
            newest = int(now // self._width[rule.name])
            held = [s for s in self._slots[rule.name] if newest - WINDOW_BUCKETS < s[0] <= newest]
            found[rule.name] = (sum(s[1] for s in held), sum(s[2] for s in held))
        return found


@dataclass(frozen=True)
class Observation:
    """What an observer knows at ``now`` (one clock for every time here)."""

    now: float
    listening_since: float
    """When the observer started receiving events (no_events counts from it before any)."""
    last_event: float | None = None
    workers: Mapping[str, bool] = field(default_factory=dict)
    """Every worker known (seen at some point), and whether it is alive now."""
    queues: Mapping[str, QueueLevel] | None = None
    """The queues of the last poll; None before the first poll answered."""
    finished: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """(finished, failed) within each failure_rate rule's window, by rule name
    (:meth:`FinishedCounts.counts`)."""


@dataclass(frozen=True)
class Measurement:
    """A rule's value now (None: unknown), what it is about, and whether it may fire at all."""

    value: float | None
    detail: str
    may_fire: bool = True


def _matches(pattern: str | None, name: str) -> bool:
    return pattern is None or fnmatch.fnmatchcase(name, pattern)


def _worker_offline(rule: Rule, seen: Observation) -> Measurement:
    matching = {host: alive for host, alive in seen.workers.items()
                if _matches(rule.worker, host)}
    if not matching:
        return Measurement(None, "no matching worker seen yet")
    offline = sorted(host for host, alive in matching.items() if not alive)
    return Measurement(float(len(offline)),
                       ", ".join(offline) or f"{len(matching)} matching, all alive")


def _queue_level(attribute: str) -> Callable[[Rule, Observation], Measurement]:
    def measure_queue(rule: Rule, seen: Observation) -> Measurement:
        if seen.queues is None:
            return Measurement(None, "queues not polled yet")
        levels = {name: getattr(level, attribute) for name, level in seen.queues.items()
                  if _matches(rule.queue, name)}
        if not levels:
            return Measurement(None, "no queue matches")
        known = {name: value for name, value in levels.items() if value is not None}
        if not known:
            # queue_age: the broker gives no date (RabbitMQ), or a Celery client's message on
            # Redis without its task-sent event.
            what = "oldest message's age" if attribute == "age" else "depth"
            return Measurement(None, f"the {what} is not known")
        worst = max(known, key=lambda name: known[name])
        return Measurement(float(known[worst]), worst)
    return measure_queue


def _failure_rate(rule: Rule, seen: Observation) -> Measurement:
    finished, failed = seen.finished.get(rule.name, (0, 0))
    window = f"in the last {rule.window:g} s"
    if not finished:
        return Measurement(None, f"no task finished {window}", may_fire=False)
    detail = f"{failed} of {finished} failed {window}"
    if finished < rule.min_finished:
        detail += f" (fires from {rule.min_finished} finished)"
    return Measurement(failed / finished, detail, may_fire=finished >= rule.min_finished)


def _no_events(rule: Rule, seen: Observation) -> Measurement:
    last = seen.last_event if seen.last_event is not None else seen.listening_since
    what = "since the last event" if seen.last_event is not None else "no event since listening"
    return Measurement(max(0.0, seen.now - last), what)


MEASURES: dict[str, Callable[[Rule, Observation], Measurement]] = {
    # Known workers matching `worker` that are not alive now (no heartbeat within 2 x its
    # frequency, or they said worker-offline).
    "worker_offline": _worker_offline,
    # Messages waiting (ready, not delivered) in the deepest matching queue.
    "queue_depth": _queue_level("depth"),
    # Seconds the oldest waiting message of the matching queues has waited.
    "queue_age": _queue_level("age"),
    # FAILURE / (SUCCESS + FAILURE) among matching tasks finished within `window`.
    "failure_rate": _failure_rate,
    # Seconds since the last event of any kind (heartbeats included) from the cluster.
    "no_events": _no_events,
}


def measure(rule: Rule, seen: Observation) -> Measurement:
    return MEASURES[rule.kind](rule, seen)


# evaluating -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RuleStatus:
    """Where a rule stands: its state since ``since``, the value and what it was about."""

    rule: Rule
    state: str
    since: float
    value: float | None = None
    detail: str = ""
    breached: float | None = None
    """When the value went over the threshold (pending and firing rules)."""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.rule.name, "kind": self.rule.kind, "state": self.state,
                "since": self.since, "value": self.value, "detail": self.detail,
                "threshold": self.rule.over, "for": self.rule.hold,
                "selection": self.rule.selection()}


def evaluate(rule: Rule, seen: Observation, previous: RuleStatus | None = None) -> RuleStatus:
    """The rule's status at ``seen.now``, following on from ``previous``.

    Over the threshold, a rule is pending until it has been over it for ``for`` seconds, then
    firing. A firing rule whose value turns unknown (a failed poll) stays firing: clearing needs
    a measurement under the threshold.
    """
    now = seen.now
    measured = measure(rule, seen)

    def status(state: str, breached: float | None = None) -> RuleStatus:
        keep = previous is not None and previous.state == state and previous.rule == rule
        since = previous.since if keep and previous is not None else now
        return RuleStatus(rule, state, since, measured.value, measured.detail, breached)

    if measured.value is None:
        if previous is not None and previous.state == FIRING:
            return replace(previous, value=None, detail=measured.detail)
        return status(UNKNOWN if measured.may_fire else OK)
    if not measured.may_fire or measured.value <= rule.over:
        return status(OK)
    breached = previous.breached if previous is not None and previous.breached is not None \
        else now
    return status(FIRING if now - breached >= rule.hold else PENDING, breached)


@dataclass(frozen=True)
class Transition:
    """A rule that started firing (``event == "firing"``) or stopped (``"cleared"``)."""

    event: str
    status: RuleStatus
    at: float

    def describe(self) -> str:
        """``backlog fires: 1500 messages (over 1000 messages) celery``"""
        status, rule = self.status, self.status.rule
        verb = "fires" if self.event == FIRING else "cleared"
        return (f"{rule.name} {verb}: {format_value(rule.kind, status.value)} "
                f"(over {format_value(rule.kind, rule.over)}) {status.detail}")

    def as_dict(self) -> dict[str, Any]:
        """What ``alert_command`` reads on its standard input (the README lists the fields)."""
        return {"event": self.event, "at": self.at, **self.status.as_dict(),
                "rule": self.status.rule.as_dict()}


class Alerts:
    """The statuses of a set of rules, carried from one observation to the next."""

    def __init__(self, rules: Sequence[Rule],
                 previous: Mapping[str, RuleStatus] | None = None) -> None:
        self.rules = tuple(rules)
        self._statuses: dict[str, RuleStatus] = dict(previous or {})

    def update(self, seen: Observation) -> list[Transition]:
        """Evaluate every rule; returns the rules that started or stopped firing."""
        transitions = []
        for rule in self.rules:
            before = self._statuses.get(rule.name)
            after = evaluate(rule, seen, before)
            self._statuses[rule.name] = after
            was_firing = before is not None and before.state == FIRING
            if (after.state == FIRING) != was_firing:
                transitions.append(Transition(FIRING if after.state == FIRING else "cleared",
                                              after, seen.now))
        return transitions

    def statuses(self) -> tuple[RuleStatus, ...]:
        """Every rule's status, in the order of the rules (only those evaluated yet)."""
        return tuple(self._statuses[r.name] for r in self.rules if r.name in self._statuses)
