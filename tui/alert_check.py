"""``qtui status --check``: the alert rules evaluated once, for cron, Nagios and CI.

The check listens to the cluster for ``--wait`` seconds (workers heartbeat every 2 s and answer
the receiver's wake-up at once; the queues are polled at the end), then evaluates every rule.
A check run from cron is one process per run, so what must outlive it is kept in a small state
file per cluster: the workers seen (a worker that stopped is offline only to someone who saw
it), and each rule's status (so ``for`` spans runs, and ``alert_command`` runs once when a rule
starts firing and once when it clears, not on every run).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from qtui.core import App
from qtui.core.alerts import Alerts, RuleStatus, Transition, format_value
from qtui.core.brokers import data_dir
from qtui.core.config import mask_url
from qtui.core.display import printable, safe_text
from qtui.core.exceptions import BrokerUnavailable, ConfigError

from .alert_command import AlertCommand
from .feed import Feed
from .rows import Snapshot
from .views.format import alert_state

logger = logging.getLogger("qtui.alerts")

#: Seconds the check listens by default: a heartbeat period (2 s) and some.
DEFAULT_WAIT = 3.0
#: Seconds a worker not seen alive is still remembered (and reported offline) by the check: a
#: worker retired on purpose stops alerting after a day.
WORKER_MEMORY = 86_400.0
#: Seconds given to the event thread to stop once the wait is over.
STOP_TIMEOUT = 5.0
#: Exit status when a rule fires (Nagios' CRITICAL).
CHECK_FIRING = 2


def default_state_path() -> Path:
    return data_dir() / "alert-check-state.json"


@dataclass(frozen=True)
class CheckResult:
    statuses: tuple[RuleStatus, ...]

    @property
    def firing(self) -> list[RuleStatus]:
        return [s for s in self.statuses if s.state == "firing"]


class CheckState:
    """What the check remembers of one cluster between runs, in a JSON file shared by every
    cluster checked (keyed by the broker URL, password masked)."""

    def __init__(self, path: Path, cluster: str) -> None:
        self.path = path
        self.cluster = cluster
        self.workers: dict[str, float] = {}
        """Hostname -> when it was last seen alive."""
        self.statuses: dict[str, dict[str, Any]] = {}

    def load(self) -> None:
        try:
            everything = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:  # a damaged file costs the memory, not the check
            logger.warning("alert check state %s unreadable (%s); starting afresh", self.path, exc)
            return
        mine = everything.get(self.cluster) if isinstance(everything, Mapping) else None
        if isinstance(mine, Mapping):
            self.workers = {str(h): float(t) for h, t in dict(mine.get("workers", {})).items()
                            if isinstance(t, (int, float))}
            self.statuses = {str(n): dict(s) for n, s in dict(mine.get("statuses", {})).items()
                             if isinstance(s, Mapping)}

    def previous(self, alerts: Alerts) -> dict[str, RuleStatus]:
        """The statuses remembered for rules still configured the same way."""
        found = {}
        for rule in alerts.rules:
            kept = self.statuses.get(rule.name)
            if kept is None or kept.get("rule") != rule.as_dict():
                continue
            found[rule.name] = RuleStatus(rule, str(kept["state"]), float(kept["since"]),
                                          kept.get("value"), str(kept.get("detail", "")),
                                          kept.get("breached"))
        return found

    def save(self, statuses: tuple[RuleStatus, ...]) -> None:
        self.statuses = {s.rule.name: {"rule": s.rule.as_dict(), "state": s.state,
                                       "since": s.since, "value": s.value, "detail": s.detail,
                                       "breached": s.breached} for s in statuses}
        try:
            everything = json.loads(self.path.read_text())
            if not isinstance(everything, dict):
                everything = {}
        except (OSError, ValueError):
            everything = {}
        everything[self.cluster] = {"workers": self.workers, "statuses": self.statuses}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(everything, sort_keys=True))
        temporary.replace(self.path)  # whole or not at all, even with two checks at once


def run_check(app: App, wait: float = DEFAULT_WAIT, state_path: Path | None = None
              ) -> CheckResult:
    """Listen for ``wait`` seconds, poll the queues, evaluate the rules, remember, and run
    ``alert_command`` for each rule that started or stopped firing."""
    feed = Feed(app, history=None)
    memory = CheckState(state_path or default_state_path(), mask_url(app.broker_url))
    memory.load()
    listener = threading.Thread(target=feed.run, args=(lambda snapshot: None,),
                                kwargs={"interval": 0.25}, name="qtui-check-events",
                                daemon=True)
    listener.start()
    try:
        feed.stopped.wait(wait)
        # Unheard by the end of the wait, the broker fails the check: polling it would only
        # retry the connection (6 s) before saying so.
        connected = feed.connected
        if connected:
            feed.poll_once()
    finally:
        feed.stop()
        listener.join(STOP_TIMEOUT)
    if not connected:
        raise BrokerUnavailable(f"cannot check the alerts: no events from the broker at "
                                f"{mask_url(app.broker_url)} ({feed.error or 'not connected'})")
    now = time.time()
    with feed.lock:
        seen = feed.observe(now)
    # Workers remembered from earlier runs are known too: one that stopped since is offline.
    workers = {host: False for host, last in memory.workers.items()
               if now - last < WORKER_MEMORY}
    workers.update(seen.workers)
    seen = replace(seen, workers=workers)
    memory.workers.update({host: now for host, alive in seen.workers.items() if alive})
    memory.workers = {h: t for h, t in memory.workers.items() if now - t < WORKER_MEMORY}
    alerts = Alerts(feed.alerts.rules, memory.previous(feed.alerts))
    transitions = alerts.update(seen)
    memory.save(alerts.statuses())
    command = AlertCommand.from_app(app)
    if command is not None:
        command.run(transitions)
    return CheckResult(alerts.statuses())



def check_command(args: argparse.Namespace, app: App) -> int:
    """``qtui status --check``: 2 when a rule fires (each named), 0 when none does, 1 on errors
    (no rules, broker unreachable: raised as QtuiError for the CLI to print)."""
    if not app.conf.alerts:
        raise ConfigError("status --check: no alert rules to check; add [[alerts]] tables to "
                          "the config (see config.example.toml)")
    if args.watch:
        return watch(app)
    result = run_check(app, wait=args.wait, state_path=Path(args.state) if args.state else None)
    firing = result.firing
    if args.json:
        print(json.dumps({"cluster": mask_url(app.broker_url),
                          "firing": [s.rule.name for s in firing],
                          "rules": [s.as_dict() for s in result.statuses]}, sort_keys=True))
    else:
        _show(result)
    return CHECK_FIRING if firing else 0



def watch(app: App) -> int:
    """``qtui status --check --watch``: evaluate the rules every second, as the console does,
    printing a line and running ``alert_command`` whenever one starts firing or clears, until
    interrupted. It knows the workers it has seen since it started."""
    feed = Feed(app, history=None)
    out = Console(soft_wrap=True, highlight=False)
    out.print(f"watching {len(feed.alerts.rules)} alert rule(s) on {mask_url(app.broker_url)}; "
              "Ctrl+C stops", markup=False)

    states: dict[str, str] = {}

    def report(snapshot: Snapshot) -> None:
        fired = {t.status.rule.name for t in snapshot.alert_events}
        for transition in snapshot.alert_events:
            out.print(transition_line(transition), markup=False)
        # Every other change of state too (unknown -> ok, ok -> pending): a log to read back.
        for status in snapshot.alerts:
            name = status.rule.name
            if states.get(name) != status.state and name not in fired:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(status.since))
                out.print(printable(f"{when} {name} is {status.state}: {status.detail}"),
                          markup=False)
            states[name] = status.state
        sys.stdout.flush()
    poller = threading.Thread(target=feed.poll, name="qtui-check-poll", daemon=True)
    try:
        poller.start()
        feed.run(report)  # alert_command runs from here, in threads of its own
    except KeyboardInterrupt:
        return 0
    finally:
        feed.stop()
    return 0


def transition_line(transition: Transition) -> str:
    """``2026-11-30 11:12:00 backlog fires: 1500 messages (over 1000 messages) celery``"""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(transition.at))
    return printable(f"{when} {transition.describe()}")


def _show(result: CheckResult) -> None:
    out = Console(soft_wrap=True, highlight=False)
    firing = result.firing
    # The first line is the verdict: Nagios and mail from cron show it alone.
    if firing:
        names = ", ".join(printable(s.rule.name) for s in firing)
        out.print(Text(f"ALERT: {len(firing)} firing: {names}", style="bold red"))
    else:
        out.print(Text(f"OK: no alert firing ({len(result.statuses)} checked)", style="green"))
    table = Table(title_justify="left")
    for column in ("state", "rule", "value", "over", "since", "about"):
        table.add_column(column, no_wrap=column in ("state", "since"))
    for status in result.statuses:
        rule = status.rule
        table.add_row(alert_state(status.state),
                      safe_text(rule.name), format_value(rule.kind, status.value),
                      format_value(rule.kind, rule.over) + (f" for {rule.hold:g} s"
                                                             if rule.hold else ""),
                      time.strftime("%H:%M:%S", time.localtime(status.since)),
                      safe_text(" ".join(filter(None, (rule.selection(), status.detail)))))
    out.print(table)
