"""``qtui beat`` (run a beat process) and ``qtui schedule list|run|pause|resume`` (see and
steer the periodic tasks). Output is for people unless ``--json`` asks for what scripts read."""

from __future__ import annotations

import argparse
import json
import signal
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from qtui.core import App
from qtui.core.beat.service import Beat, default_node_name, run_now
from qtui.core.beat.status import find_entry, status
from qtui.core.beat.store import store_for
from qtui.core.display import safe_text
from qtui.core.exceptions import BrokerUnavailable

from .audit import LOCAL, record_command


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``beat`` and ``schedule``; each sets ``func(args, app) -> int``."""
    beat = subparsers.add_parser(
        "beat",
        description="Send each entry of beat_schedule at its times. Several beat processes "
                    "may run: one leads, the others stand by and take over when it dies.")
    beat.add_argument("-n", "--name", metavar="NAME",
                      help="this beat process's name (default: beat-PID@HOST)")
    beat.add_argument("-l", "--loglevel", default="INFO", metavar="LEVEL",
                      help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default: INFO)")
    beat.set_defaults(func=beat_command)

    schedule = subparsers.add_parser(
        "schedule",
        description="See and steer the entries of beat_schedule; pauses last until resumed, "
                    "across beat restarts.")
    schedule.add_argument("action", choices=("list", "run", "pause", "resume"))
    schedule.add_argument("entry", nargs="?", metavar="ENTRY",
                          help="the entry's name (run, pause, resume)")
    schedule.add_argument("--json", action="store_true", help="print JSON for scripts")
    schedule.set_defaults(func=schedule_command)


def beat_command(args: argparse.Namespace, app: App) -> int:
    from qtui.core.exceptions import ConfigError
    from qtui.workers import log

    try:
        log.setup(args.loglevel)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    beat = Beat(app, node=args.name or default_node_name())
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: beat.stop())
    print(f"qtui beat {beat.node}: {len(beat.entries)} entries, ready", flush=True)
    beat.run()
    return 0


def schedule_command(args: argparse.Namespace, app: App) -> int:
    out = Console(soft_wrap=True, highlight=False)
    if args.action != "list" and not args.entry:
        out.print(f"qtui schedule {args.action} needs the entry's name")
        return 2
    store = store_for(app)
    try:
        if args.action == "list":
            found = status(app, store)
            if args.json:
                print(json.dumps(found.to_json()))
            else:
                _show(out, found)
            return 0
        entry = find_entry(app, args.entry)
        result: dict[str, Any] = {"entry": entry.name, "action": args.action}
        if args.action == "run":
            run = run_now(app, store, entry, by="qtui schedule run")
            result["task_id"] = run.task_id
            words = f"sent {entry.task} [{run.task_id}]"
        else:
            store.set_paused(entry.name, args.action == "pause")
            words = "paused" if args.action == "pause" else "resumed"
        record_command(app, f"schedule {args.action}", [entry.name], {LOCAL: words}, True)
        if args.json:
            print(json.dumps(result))
        else:
            out.print(Text.assemble(safe_text(entry.name), f": {words}"))
        return 0
    except store.errors as exc:
        raise BrokerUnavailable(f"cannot reach the beat's store at {store.where}: {exc}") from exc
    finally:
        store.close()


def _clock(stamp: float | None) -> str:
    if not stamp:
        return "-"
    return datetime.fromtimestamp(stamp).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _show(out: Console, found: Any) -> None:
    table = Table(title="Periodic tasks", title_justify="left")
    for column in ("entry", "task", "schedule", "next run", "last run", "last task id"):
        table.add_column(column)
    for item in found.entries:
        last = item.last_run
        table.add_row(safe_text(item.entry.name), safe_text(item.entry.task), item.words,
                      "paused" if item.paused else _clock(item.next_run),
                      _clock(last.sent if last else None), last.task_id if last else "-")
    out.print(table)
    if not found.beats:
        out.print("No beat process is running (start one with `qtui beat`).")
    for node in found.beats:
        role = "leader" if node.leader else "standby"
        out.print(Text.assemble(safe_text(node.name),
                                f": {role}, seen {found.checked - node.seen:.1f}s ago"))
