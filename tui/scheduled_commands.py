"""``qtui scheduled`` (every ETA task not yet due, broker-held and worker-held: the console's
Scheduled view as text) and ``qtui eta run|delete ID...`` (run now or discard broker-held ones
by id). Run-now and delete are recorded in the audit trail."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from rich.table import Table
from rich.text import Text

from qtui.core import App, brokers
from qtui.core.delayed import NotByTask
from qtui.core.display import printable
from qtui.core.scheduled import (
    BROKER,
    ScheduledTask,
    delete_from_store,
    from_broker,
    read,
    run_now_in_store,
)

from .audit import LOCAL, record_command
from .query import QueryError, matches, parse
from .tables import table_or_records
from .views.format import date_time, time_left


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``scheduled``; it sets ``func(args, app) -> int``."""
    scheduled = subparsers.add_parser(
        "scheduled",
        description="List every ETA/countdown task not yet due, soonest first: those the "
                    "broker's delayed store holds and those workers hold in memory (`inspect "
                    "scheduled`, qtui and Celery workers alike), with where each waits.")
    scheduled.add_argument("--filter", metavar="QUERY", default="",
                           help="only tasks matching QUERY (the console's filter language; "
                                "worker:broker for broker-held ones)")
    scheduled.add_argument("-Q", "--queues", action="append", metavar="QUEUE[,QUEUE]",
                           help="also read the delayed store of these queues (the app's task "
                                "queues and those workers consume are always read)")
    scheduled.add_argument("-t", "--timeout", type=float, default=1.0, metavar="SECONDS",
                           help="how long to wait for the workers' replies (default: 1.0)")
    scheduled.add_argument("--json", action="store_true", help="a JSON object, for scripts")
    scheduled.set_defaults(func=scheduled_command)


def add_eta_parsers(eta_commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``qtui eta run ID...`` and ``qtui eta delete ID...``, beside ``eta list|release``."""
    for verb, func, help_text in (
            ("run", eta_run_command, "run held ETA tasks now: hand them to their queue "
                                      "without their ETA (the same ids)"),
            ("delete", eta_delete_command, "discard held ETA tasks")):
        parser = eta_commands.add_parser(
            verb, help=f"{help_text}, by id",
            description=f"{help_text[0].upper()}{help_text[1:]}, by task id, from the broker's "
                        "delayed store (the app's task queues unless -Q). A task a worker holds "
                        "in memory is not there: revoke it (`qtui control revoke ID`).")
        parser.add_argument("ids", metavar="ID", nargs="+", help="task ids")
        parser.add_argument("-Q", "--queues", action="append", metavar="QUEUE[,QUEUE]",
                            help="queues whose held tasks to look in (comma-separated, "
                                 "repeatable)")
        parser.set_defaults(func=func)


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def scheduled_command(args: argparse.Namespace, app: App) -> int:
    """``qtui scheduled [--json] [--filter QUERY]``."""
    try:
        terms = parse(args.filter)
    except QueryError as exc:
        print(f"error: {exc}")
        return 2
    try:
        found = read(app, _split(args.queues), timeout=args.timeout)
    except brokers.broker_errors(app.connection_for_read()) as exc:
        from .commands import _unavailable
        raise _unavailable(app, "cannot read scheduled tasks", exc) from exc
    tasks = [t for t in found.tasks if matches(terms, t.filter_values())]
    if args.json:
        print(json.dumps({"tasks": [t.to_json() for t in tasks],
                          "unlisted": found.unlisted, "no_reply": found.no_reply},
                         sort_keys=True))
        return 0
    from .commands import _out
    out = _out()
    now = time.time()
    if tasks:
        out.print(scheduled_table(tasks, now, out.width))
    else:
        out.print(f"No scheduled task{' matches ' + repr(args.filter) if args.filter else ''}.",
                  markup=False)
    for queue, count in sorted(found.unlisted.items()):
        out.print(f"{printable(queue)}: {count} more held in the broker, which cannot show "
                  "them without taking them (`qtui eta release` hands them back)", markup=False)
    return 0


def scheduled_table(tasks: list[ScheduledTask], now: float, width: int) -> Table | Text:
    """The scheduled tasks as a table, or a record each where the table would not fit."""
    rows = [(time_left(t.due, now), date_time(t.due), t.holder, t.queue, t.id, t.name,
             f"{t.args} {t.kwargs}".strip()) for t in tasks]
    columns = ("due in", "eta", "held by", "queue", "id", "name", "args")
    return table_or_records(f"{len(tasks)} scheduled", columns, rows, width)


def eta_run_command(args: argparse.Namespace, app: App) -> int:
    """``qtui eta run ID... [-Q queues]``: the held tasks go to their queues without ETA."""
    return _by_id(args, app, "eta run", "run now", run_now_in_store)


def eta_delete_command(args: argparse.Namespace, app: App) -> int:
    """``qtui eta delete ID... [-Q queues]``: the held tasks are discarded."""
    return _by_id(args, app, "eta delete", "deleted", delete_from_store)


def _by_id(args: argparse.Namespace, app: App, action: str, done_word: str, verb: Any) -> int:
    from .commands import _out, _unavailable
    names = _split(args.queues) or sorted(app.router.queues)
    out = _out()
    try:
        with app.connection_for_write() as connection:
            held, unlisted = from_broker(connection, names, limit=-1)
            wanted = [t for t in held if t.id in set(args.ids)]
            # Where the store cannot show its tasks, ask it anyway: it says what it can do.
            wanted += [ScheduledTask(i, "", None, queue, "", "", BROKER)
                       for queue in unlisted for i in args.ids]
            done = verb(connection, wanted)
    except NotByTask as exc:
        record_command(app, action, args.ids, {LOCAL: str(exc)}, False)
        out.print(f"error: {exc}", markup=False)
        return 1
    except brokers.broker_errors(app.connection_for_read()) as exc:
        record_command(app, action, args.ids, {LOCAL: str(exc)}, False)
        raise _unavailable(app, f"cannot {action}", exc) from exc
    missing = [i for i in args.ids if i not in done]
    replies = {i: done_word for i in done}
    replies.update(dict.fromkeys(missing, "not held in the broker's delayed store"))
    record_command(app, action, args.ids, replies, not missing)
    for task_id in args.ids:
        out.print(f"{printable(task_id)}: {replies[task_id]}", markup=False)
    return 1 if missing else 0
