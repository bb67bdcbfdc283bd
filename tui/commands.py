"""The scripted subcommands: ``inspect``, ``control``, ``status``, ``purge``, ``eta list``,
``eta release``, ``events`` and ``call``. Those that change the cluster are recorded in the
audit trail (:mod:`.audit`).

Output is for people (rich tables, one ``worker: OK`` line per reply) unless ``--json`` asks for
what scripts read. Exit status: 0 when every worker asked answered, 1 when one answered with an
error or a named worker did not answer, 69 (EX_UNAVAILABLE, as ``celery inspect``) when no worker
answered at all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from qtui.core import App, brokers
from qtui.core.config import mask_url
from qtui.core.control import COMMANDS, Command, Replies
from qtui.core.delayed import delayed_for
from qtui.core.display import printable, reprs_only, safe_text
from qtui.core.events import EventReceiver
from qtui.core.exceptions import BrokerUnavailable
from qtui.core.queues import QueueInfo, inspector_for

from . import scheduled_commands
from .alert_check import DEFAULT_WAIT, check_command
from .audit import LOCAL, audit_log_for, record_command
from .feed import consumed_queues
from .tables import table_or_records

NO_REPLY = 69
"""Exit status when no worker answered (sysexits' EX_UNAVAILABLE, as Celery's CLI uses)."""
ARGUMENT_COMMANDS = ("active", "reserved", "scheduled", "query_task")
"""The inspect commands whose replies carry tasks' arguments: asked in safe mode by default."""


def _out() -> Console:
    return Console(soft_wrap=True, highlight=False)


def _err() -> Console:
    return Console(stderr=True, soft_wrap=True, highlight=False)


# parsers --------------------------------------------------------------------------------------
def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare the subcommands on the ``qtui`` parser; each sets ``func(args, app) -> int``."""
    for kind, func, verb in (("inspect", inspect_command, "Ask the workers"),
                             ("control", control_command, "Tell the workers")):
        commands = {name: c for name, c in COMMANDS.items() if c.kind == kind}
        parser = subparsers.add_parser(
            kind,
            description=f"{verb} through the remote-control mailbox and show each one's reply.",
            epilog=_command_list(commands.values()),
            formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("method", metavar="COMMAND", choices=sorted(commands),
                            help="one of the commands below")
        parser.add_argument("arguments", metavar="ARG", nargs="*", help="the command's arguments")
        if kind == "control":
            parser.add_argument("--terminate", action="store_true",
                                help="revoke only: also kill the process running the task")
            parser.add_argument("--signal", metavar="SIGNAL",
                                help="revoke --terminate only: the signal (default: SIGTERM)")
        else:
            parser.add_argument("--unsafe", action="store_true",
                                help=f"{', '.join(ARGUMENT_COMMANDS)} only: the tasks' real "
                                     "arguments, not the reprs their senders wrote (masks "
                                     "included)")
        _remote_options(parser)
        parser.set_defaults(func=func)

    status = subparsers.add_parser(
        "status",
        description="Ping the workers, then show the broker and every queue it can list.")
    _remote_options(status, destination=False)
    status.add_argument("--check", action="store_true",
                        help="evaluate the alert rules once instead: exit 2 naming each rule "
                             "that fires, 0 when none does, 1 on errors")
    status.add_argument("--wait", type=float, default=DEFAULT_WAIT, metavar="SECONDS",
                        help="with --check: seconds to listen to the cluster first "
                             f"(default: {DEFAULT_WAIT:g})")
    status.add_argument("--watch", action="store_true",
                        help="with --check: keep evaluating every second, printing a line (and "
                             "running alert_command) whenever a rule fires or clears")
    status.add_argument("--state", metavar="FILE",
                        help="with --check: what to remember between checks (default: "
                             "alert-check-state.json in the data directory)")
    status.set_defaults(func=status_command)

    purge = subparsers.add_parser(
        "purge",
        description="Delete the messages waiting in queues (the app's task queues unless -Q).")
    purge.add_argument("-Q", "--queues", action="append", metavar="QUEUE[,QUEUE]",
                       help="queues to purge (comma-separated, repeatable)")
    purge.add_argument("-f", "--force", action="store_true", help="do not ask first")
    purge.set_defaults(func=purge_command)

    eta = subparsers.add_parser(
        "eta",
        description="Hand the ETA tasks held in the broker's delayed store back to their queues.")
    eta_commands = eta.add_subparsers(dest="eta_command", required=True, metavar="COMMAND")
    release = eta_commands.add_parser(
        "release", help="hand every held ETA task back to its queue, with its ETA",
        description="Move every ETA task the broker's delayed store holds for some queues (the "
                    "app's task queues unless -Q) back to its queue as a plain message with its "
                    "eta header, so any worker takes it: a Celery worker holds it until due, a "
                    "qtui worker stores it again if it is still far off.")
    release.add_argument("-Q", "--queues", action="append", metavar="QUEUE[,QUEUE]",
                         help="queues whose held tasks to release (comma-separated, repeatable)")
    release.set_defaults(func=eta_release_command)
    listing = eta_commands.add_parser(
        "list", help="the ETA tasks held in the broker's delayed store, by due time",
        description="List the ETA tasks the broker's delayed store holds for some queues (the "
                    "app's task queues unless -Q). RabbitMQ cannot show a queued message "
                    "without taking it: there, only how many.")
    listing.add_argument("-Q", "--queues", action="append", metavar="QUEUE[,QUEUE]",
                         help="queues whose held tasks to list (comma-separated, repeatable)")
    listing.add_argument("-n", "--limit", type=int, default=100, metavar="N",
                         help="at most N tasks per queue (default: 100)")
    listing.set_defaults(func=eta_list_command)
    scheduled_commands.add_eta_parsers(eta_commands)

    events = subparsers.add_parser(
        "events",
        description="Print events as they arrive, until Ctrl-C (the console is plain `qtui`).")
    events.add_argument("--dump", action="store_true", required=True,
                        help="print every event as one line")
    events.add_argument("-n", "--count", type=int, metavar="N",
                        help="exit after N events")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.set_defaults(func=events_command)

    call = subparsers.add_parser(
        "call",
        description="Send one task by its name and print its id. The console's retry is this "
                    "command with the task's full original arguments and route.")
    call.add_argument("name", metavar="TASK", help="the task's name (tasks.add)")
    call.add_argument("-a", "--args", default="[]", metavar="JSON",
                      help="positional arguments as a JSON list (default: [])")
    call.add_argument("-k", "--kwargs", default="{}", metavar="JSON",
                      help="keyword arguments as a JSON object (default: {})")
    call.add_argument("--queue", metavar="QUEUE", help="route to this queue")
    call.add_argument("--exchange", metavar="EXCHANGE", help="publish to this exchange")
    call.add_argument("--routing-key", metavar="KEY", help="with this routing key")
    call.set_defaults(func=call_command)

    audit = subparsers.add_parser(
        "audit",
        description="Every action taken on the cluster from the console or a scripted command "
                    "(who, when, what, each worker's reply), newest first.")
    audit.add_argument("-n", "--limit", type=int, default=50, metavar="N",
                       help="at most N entries (default: 50)")
    audit.add_argument("--since", metavar="WHEN",
                       help="only entries since WHEN: an ISO time (2026-11-30T09:00) or an age "
                            "(90s, 30m, 2h, 7d)")
    audit.add_argument("--all-clusters", action="store_true",
                       help="entries of every cluster, not only this one")
    audit.add_argument("--json", action="store_true", help="a JSON list, for scripts")
    audit.set_defaults(func=audit_command)


def _remote_options(parser: argparse.ArgumentParser, destination: bool = True) -> None:
    if destination:
        parser.add_argument("-d", "--destination", action="append", metavar="WORKER[,WORKER]",
                            help="only these workers (comma-separated, repeatable)")
    parser.add_argument("-t", "--timeout", type=float, default=1.0, metavar="SECONDS",
                        help="how long to wait for replies (default: 1.0)")
    parser.add_argument("--json", action="store_true", help="print the replies as JSON")


def _command_list(commands: Iterable[Command]) -> str:
    lines = ["commands:"]
    for command in commands:
        lines.append(f"  {command.name} {command.signature}".rstrip())
        lines.append(f"      {command.help}")
    return "\n".join(lines)


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


# inspect and control ---------------------------------------------------------------------------
def inspect_command(args: argparse.Namespace, app: App) -> int:
    """``qtui inspect COMMAND [ARG...]``: ask the workers and show every reply."""
    return _remote(args, app)


def control_command(args: argparse.Namespace, app: App) -> int:
    """``qtui control COMMAND [ARG...]``: tell the workers and show every reply."""
    return _remote(args, app)


def _remote(args: argparse.Namespace, app: App) -> int:
    command = COMMANDS[args.method]
    try:
        arguments = command.arguments(args.arguments)
        arguments.update(_revoke_options(command, args))
        arguments.update(_safe_option(command, args))
    except ValueError as exc:
        _err().print(f"error: {exc}", markup=False)
        return 2
    destination = _split(args.destination) or None
    replies = app.control.broadcast(command.name, arguments, destination=destination, reply=True,
                                    timeout=args.timeout)
    assert replies is not None
    if command.kind == "control":
        answers = {**replies.by_worker(), **dict.fromkeys(replies.no_reply, "no reply")}
        record_command(app, f"control {command.name}", args.arguments, answers,
                       not replies.no_reply and not _failed(replies))
    if not command.replies and not replies:
        _err().print(f"{command.name} sent to {', '.join(destination or ['every worker'])} "
                     "(workers exit without replying; `qtui status` shows who is left)",
                     markup=False)
        if args.json:
            print("{}")
        return 0
    unsafe = getattr(args, "unsafe", False)
    if args.json:
        print(json.dumps(shown_replies(command.name, replies, unsafe), default=str,
                         sort_keys=True))
    else:
        show_replies(_out(), command.name, replies, unsafe)
    return _exit_status(replies, args.timeout)


def _exit_status(replies: Replies, timeout: float) -> int:
    err = _err()
    for hostname in replies.no_reply:
        err.print(f"{printable(hostname)}: no reply within {timeout:g} s", markup=False)
    if not replies:
        err.print(f"No worker replied within {timeout:g} s.", markup=False)
        return NO_REPLY
    return 1 if _failed(replies) or replies.no_reply else 0


def _failed(replies: Replies) -> bool:
    """Whether a worker answered with an error."""
    return any(isinstance(r, Mapping) and "error" in r for r in replies.by_worker().values())


def _revoke_options(command: Command, args: argparse.Namespace) -> dict[str, Any]:
    """``revoke``'s --terminate and --signal, as the console sends them (the same message, so
    the command its dialogs show does what the console does); refused with other commands."""
    terminate, signal = getattr(args, "terminate", False), getattr(args, "signal", None)
    if command.name != "revoke":
        if terminate or signal:
            raise ValueError("--terminate and --signal go with revoke only")
        return {}
    if signal and not terminate:
        raise ValueError("--signal needs --terminate (a revoke alone signals nothing)")
    return {"terminate": terminate, "signal": signal or "SIGTERM"}


def _safe_option(command: Command, args: argparse.Namespace) -> dict[str, Any]:
    """``safe`` for the commands that list tasks (the reprs their senders wrote, never the
    arguments they masked) unless ``--unsafe``; ``--unsafe`` refused with other commands."""
    unsafe = getattr(args, "unsafe", False)
    if command.name not in ARGUMENT_COMMANDS:
        if unsafe:
            raise ValueError(f"--unsafe goes with {', '.join(ARGUMENT_COMMANDS)} only")
        return {}
    return {"safe": not unsafe}


def shown_replies(command: str, replies: Replies, unsafe: bool = False) -> dict[str, Any]:
    """Each worker's reply as it may be shown: the tasks' args and kwargs as reprs only
    (:func:`~qtui.core.display.reprs_only`: a worker that ignores ``safe`` sends the arguments
    themselves), or as they came with ``unsafe``."""
    by_worker = replies.by_worker()
    if unsafe or command not in ARGUMENT_COMMANDS:
        return by_worker
    return {hostname: _reply_reprs_only(command, reply) for hostname, reply in by_worker.items()}


def _reply_reprs_only(command: str, reply: Any) -> Any:
    if command == "query_task" and isinstance(reply, Mapping):
        return {task_id: [found[0], _info_reprs_only(found[1])]
                if isinstance(found, list) and len(found) == 2 else found
                for task_id, found in reply.items()}
    if command == "scheduled" and isinstance(reply, list):
        return [{**item, "request": _info_reprs_only(item.get("request"))}
                if isinstance(item, Mapping) else item for item in reply]
    if isinstance(reply, list):
        return [_info_reprs_only(item) for item in reply]
    return reply


def _info_reprs_only(info: Any) -> Any:
    if not isinstance(info, Mapping):
        return info
    return {**info, **{key: reprs_only(info[key]) for key in ("args", "kwargs") if key in info}}


def show_replies(console: Console, command: str, replies: Replies, unsafe: bool = False
                 ) -> None:
    """Each worker's reply, as Celery's CLI words it (``worker: OK`` then the reply), with
    tables for lists of tasks and queues; tasks' arguments as :func:`shown_replies` gives them."""
    by_worker = shown_replies(command, replies, unsafe)
    if command in ("active", "reserved", "scheduled") and _all_lists(by_worker):
        console.print(_task_table(command, by_worker, console.width))
        return
    if command == "active_queues" and _all_lists(by_worker):
        console.print(_active_queues_table(by_worker))
        return
    for hostname, reply in sorted(by_worker.items()):
        status, body = _describe(reply)
        line = safe_text(f"{hostname}: ", "bold cyan")
        line.append(status, style="green" if status == "OK" else "bold red")
        console.print(line)
        if body:
            console.print(safe_text(_indent(body), multiline=True))


def _all_lists(by_worker: Mapping[str, Any]) -> bool:
    return all(isinstance(reply, list) for reply in by_worker.values())


def _describe(reply: Any) -> tuple[str, str]:
    """("OK" or "ERROR", the text to show below it)."""
    if isinstance(reply, Mapping) and ("ok" in reply or "error" in reply) and len(reply) == 1:
        if "error" in reply:
            return "ERROR", _text(reply["error"])
        return "OK", _text(reply["ok"])
    return "OK", _text(reply)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip("\n")
    if isinstance(value, list):
        return "\n".join(f"* {_text(item)}" for item in value) if value else "- empty -"
    return json.dumps(value, indent=4, sort_keys=True, default=str)


def _indent(text: str, by: int = 4) -> str:
    return "\n".join(" " * by + line for line in text.splitlines())


def _task_table(command: str, by_worker: Mapping[str, list[Any]],
                width: int = 200) -> Table | Text:
    """One row per task, as a table when it fits ``width``, else a record per task (piped at 80
    columns, a table left args, kwargs and eta one character wide)."""
    when_column = "eta" if command == "scheduled" else "started"
    rows = []
    for hostname, items in sorted(by_worker.items()):
        if not items:
            rows.append((hostname, "- empty -", "", "", "", ""))
        for item in items:
            item = _mapping(item)
            info = _mapping(item.get("request", item))
            when = item.get("eta") if command == "scheduled" else info.get("time_start")
            if isinstance(when, (int, float)):
                when = _isotime(when, "seconds")
            rows.append((hostname, str(info.get("id", "")), str(info.get("name", "")),
                         _short(info.get("args")), _short(info.get("kwargs")), str(when or "")))
    return table_or_records(f"{command} tasks",
                            ("worker", "id", "name", "args", "kwargs", when_column), rows, width)


def _active_queues_table(by_worker: Mapping[str, list[Any]]) -> Table:
    table = Table(title="queues consumed", title_justify="left")
    for column in ("worker", "queue", "exchange", "routing key"):
        table.add_column(column, overflow="fold")
    for hostname, queues in sorted(by_worker.items()):
        for queue in filter(lambda q: isinstance(q, Mapping), queues):
            exchange = _mapping(queue.get("exchange"))
            table.add_row(*map(safe_text, (hostname, str(queue.get("name", "")),
                                      f"{exchange.get('name', '')} ({exchange.get('type', '')})",
                                      str(queue.get("routing_key", "")))))
    return table


def _mapping(value: Any) -> Mapping[str, Any]:
    """A reply's part as a mapping (an empty one when a worker sent something else)."""
    return value if isinstance(value, Mapping) else {}


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# status -----------------------------------------------------------------------------------------
def status_command(args: argparse.Namespace, app: App) -> int:
    """``qtui status``: workers that answer a ping, the broker, and the queues it can list."""
    if args.check:
        return check_command(args, app)
    replies = app.control.ping(timeout=args.timeout)
    assert replies is not None
    workers = sorted(replies.by_worker())
    consumed: dict[str, list[str]] = {}
    if workers:
        answers = app.control.inspect(destination=workers, timeout=args.timeout).active_queues()
        for hostname, queues in (answers or {}).items():
            for name in consumed_queues(queues):
                consumed.setdefault(name, []).append(hostname)
    with inspector_for(app) as inspector:
        queues = inspector.with_scheduled(inspector.queues(set(app.router.queues) | set(consumed)))
    embedded = None if app.conf.broker_url else str(brokers.default_broker_path())
    if args.json:
        print(json.dumps({
            "broker": mask_url(app.broker_url), "embedded_broker": embedded,
            "workers": replies.by_worker(),
            "queues": [{"name": q.name, "messages": q.messages, "unacked": q.unacked,
                        "scheduled": q.scheduled,
                        "consumers": q.consumers, "workers": sorted(consumed.get(q.name, []))}
                       for q in queues],
        }, default=str, sort_keys=True))
    else:
        _show_status(app, embedded, workers, queues, consumed)
    if not workers:
        _err().print(f"No worker replied within {args.timeout:g} s.", markup=False)
        return NO_REPLY
    return 0


def _show_status(app: App, embedded: str | None, workers: list[str], queues: list[QueueInfo],
                 consumed: Mapping[str, list[str]]) -> None:
    out = _out()
    out.print(Text.assemble(("broker: ", "bold"), mask_url(app.broker_url)))
    if embedded:
        out.print(Text.assemble(("embedded broker file: ", "bold"), embedded))
    title = f"{_counted(len(workers), 'worker')} online"
    if workers:
        table = Table(title=title, title_justify="left")
        for column in ("worker", "status", "queues"):
            table.add_column(column)
        for hostname in workers:
            mine = sorted(name for name, consumers in consumed.items() if hostname in consumers)
            table.add_row(safe_text(hostname), Text("OK", style="green"),
                          safe_text(", ".join(mine)))
        out.print(table)
    else:
        out.print(title)
    table = Table(title="queues", title_justify="left")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("queue", "left"), ("messages", "right"), ("unacked", "right"), ("scheduled", "right"),
        ("consumers", "right"), ("consumed by", "left"))
    for column, justify in columns:
        table.add_column(column, justify=justify)
    for queue in queues:
        table.add_row(safe_text(queue.name), _count(queue.messages), _count(queue.unacked),
                      "-" if queue.scheduled is None else str(queue.scheduled),
                      _count(queue.consumers),
                      safe_text(", ".join(sorted(consumed.get(queue.name, []))) or "-"))
    out.print(table)


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def _counted(number: int, noun: str) -> str:
    """``3 queues``, ``1 queue``: a count and its noun, plural unless one."""
    return f"{number} {noun}{'s' if number != 1 else ''}"


# purge ------------------------------------------------------------------------------------------
def purge_command(args: argparse.Namespace, app: App) -> int:
    """``qtui purge [-Q queues] [-f]``: discard waiting messages, after asking unless ``-f``."""
    names = _split(args.queues) or sorted(app.router.queues)
    where = mask_url(app.broker_url)
    if not args.force:
        sys.stdout.write(f"Discard every waiting message in {_counted(len(names), 'queue')} "
                         f"({', '.join(names)}) on {where}? "
                         "This cannot be undone. [y/N] ")
        sys.stdout.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            print("Nothing purged.")
            return 1
    out = _out()
    total = 0
    done: dict[str, str] = {}
    try:
        with inspector_for(app) as inspector:
            for name in names:
                count = inspector.purge(name)
                scheduled = inspector.purge_scheduled(name)
                total += count + scheduled
                held = f" and {_counted(scheduled, 'scheduled (ETA) task')}" if scheduled else ""
                said = f"purged {_counted(count, 'message')}{held}"
                out.print(f"{printable(name)}: {said}", markup=False)
                done[name] = said
    except brokers.broker_errors(app.connection_for_read()) as exc:
        record_command(app, "purge", names, {**done, LOCAL: str(exc)}, False)
        raise _unavailable(app, "cannot purge", exc) from exc
    record_command(app, "purge", names, done, True)
    out.print(f"Purged {_counted(total, 'message')} from {_counted(len(names), 'queue')}.",
              markup=False)
    return 0


# eta release and list ---------------------------------------------------------------------------
def eta_release_command(args: argparse.Namespace, app: App) -> int:
    """``qtui eta release [-Q queues]``: hand the held ETA tasks back to their queues."""
    names = _split(args.queues) or sorted(app.router.queues)
    out = _out()
    total = 0
    done: dict[str, str] = {}
    try:
        with app.connection_for_write() as connection:
            reader = delayed_for(connection)
            if reader is None:
                out.print(f"{mask_url(app.broker_url)} has no delayed store: qtui workers hold "
                          "ETA tasks there themselves. Nothing to release.", markup=False)
                return 0
            for name in names:
                count = reader.release(name)
                total += count
                done[name] = f"released {_counted(count, 'ETA task')}"
                out.print(f"{printable(name)}: {done[name]}", markup=False)
    except brokers.broker_errors(app.connection_for_read()) as exc:
        record_command(app, "eta release", names, {**done, LOCAL: str(exc)}, False)
        raise _unavailable(app, "cannot release ETA tasks", exc) from exc
    record_command(app, "eta release", names, done, True)
    out.print(f"Released {_counted(total, 'ETA task')} to {_counted(len(names), 'queue')}.",
              markup=False)
    return 0


def eta_list_command(args: argparse.Namespace, app: App) -> int:
    """``qtui eta list [-Q queues] [-n N]``: the held ETA tasks, or how many where the broker
    cannot show them."""
    names = _split(args.queues) or sorted(app.router.queues)
    out = _out()
    try:
        with app.connection_for_write() as connection:
            reader = delayed_for(connection)
            if reader is None:
                out.print(f"{mask_url(app.broker_url)} has no delayed store: `qtui inspect "
                          "scheduled` shows the ETA tasks workers hold.", markup=False)
                return 0
            for name in names:
                count = reader.count(name)
                tasks = reader.tasks(name, args.limit)
                table = Table(title=Text(f"{printable(name)}: {_counted(count, 'held ETA task')}"),
                              title_justify="left")
                for column in ("eta", "id", "task", "args", "kwargs"):
                    table.add_column(column)
                for task in tasks or ():
                    table.add_row(*(safe_text(value) for value in (
                        task.eta, task.id, task.name, task.args, task.kwargs)))
                out.print(table if tasks else table.title)
    except brokers.broker_errors(app.connection_for_read()) as exc:
        raise _unavailable(app, "cannot list ETA tasks", exc) from exc
    return 0


# call -------------------------------------------------------------------------------------------
def call_command(args: argparse.Namespace, app: App) -> int:
    """``qtui call TASK [--args JSON] [--kwargs JSON] [--queue Q]``: send one task, print its
    id."""
    try:
        task_args, task_kwargs = json.loads(args.args), json.loads(args.kwargs)
    except ValueError as exc:
        _err().print(f"error: --args and --kwargs take JSON: {exc}", markup=False)
        return 2
    if not isinstance(task_args, list) or not isinstance(task_kwargs, dict):
        _err().print("error: --args takes a JSON list, --kwargs a JSON object", markup=False)
        return 2
    result = app.send_task(args.name, args=task_args, kwargs=task_kwargs, queue=args.queue,
                           exchange=args.exchange, routing_key=args.routing_key)
    record_command(app, "call", [args.name], {LOCAL: f"sent as {result.id}"}, True)
    print(result.id)
    return 0


# audit ------------------------------------------------------------------------------------------
def audit_command(args: argparse.Namespace, app: App) -> int:
    """``qtui audit [--json] [--limit N] [--since WHEN]``: the newest audit entries."""
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        _err().print(f"error: {exc}", markup=False)
        return 2
    log = audit_log_for(app)
    if log is None:
        _err().print("The audit trail is off (audit = false).", markup=False)
        return 1
    try:
        found = log.entries(args.limit, since,
                            None if args.all_clusters else mask_url(app.broker_url))
    finally:
        log.close()
    if args.json:
        print(json.dumps([e.to_json() for e in found], sort_keys=True))
        return 0
    table = Table(title=f"audit trail: {_counted(len(found), 'entry')}", title_justify="left")
    for column in ("time", "who", "source", "action", "targets", "replies"):
        table.add_column(column, overflow="fold")
    for item in found:
        table.add_row(_isotime(item.time, "seconds"), safe_text(item.who), item.source,
                      Text(printable(item.action), style="" if item.ok else "bold red"),
                      safe_text(_sample(item.targets)),
                      safe_text("\n".join(f"{w}: {_short(r)}" for w, r in item.replies),
                                multiline=True))
    _out().print(table)
    return 0


def parse_since(text: str) -> float:
    """A timestamp from ``--since``: an ISO time (local unless it says), or an age back from
    now (``90s``, ``30m``, ``2h``, ``7d``)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(text[:-1]) * units[text[-1]]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"--since {text!r}: give an ISO time (2026-11-30T09:00) or an age "
                         "(90s, 30m, 2h, 7d)") from None


def _sample(items: tuple[str, ...], shown: int = 3) -> str:
    """The first few of many (a bulk revoke's ids), and how many more."""
    more = f" (+{len(items) - shown} more)" if len(items) > shown else ""
    return " ".join(items[:shown]) + more


# events -----------------------------------------------------------------------------------------
def events_command(args: argparse.Namespace, app: App) -> int:
    """``qtui events --dump [--count N]``: print events until Ctrl-C or N of them."""
    try:
        with EventReceiver(app) as receiver:
            for event in receiver.events(limit=args.count):
                line = json.dumps(event, default=str, sort_keys=True) if args.json \
                    else format_event(event)
                print(line, flush=True)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # the reader left (`qtui events --dump | head`): that is the end
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
        return 0
    except brokers.broker_errors(app.connection_for_read()) as exc:
        raise _unavailable(app, "cannot read events", exc) from exc
    return 0


def _unavailable(app: App, what: str, exc: BaseException) -> BrokerUnavailable:
    """The error to show for ``exc``, the broker's password masked."""
    where = mask_url(app.broker_url)
    reason = str(exc).replace(app.broker_url, where) or type(exc).__name__
    if isinstance(exc, app.connection_for_read().channel_errors):
        return BrokerUnavailable(f"{what}: the broker at {where} refused ({reason})")
    return BrokerUnavailable(f"{what}: the broker at {where} is unreachable ({reason}). "
                             "Is it running?")


#: Fields every event has; a dump line shows them in its head, not in the key=value list.
_COMMON = frozenset({"type", "hostname", "timestamp", "utcoffset", "pid", "clock",
                     "local_received"})


def format_event(event: Mapping[str, Any]) -> str:
    """``hostname [time] type key=value ...`` (Celery's ``events --dump`` order), on one line
    with every control character made visible: the fields are whatever a sender put there."""
    fields = " ".join(f"{key}={value if isinstance(value, (int, float)) else _short(value, 120)}"
                      for key, value in sorted(event.items()) if key not in _COMMON)
    stamp = event.get("timestamp") or event.get("local_received") or 0
    return printable(f"{event.get('hostname', '?')} [{_isotime(stamp)}] {event.get('type')} "
                     f"{fields}".rstrip())


def _isotime(stamp: Any, timespec: str = "milliseconds") -> str:
    """A timestamp as local ISO time, or its raw value when it is no time a calendar holds."""
    try:
        return datetime.fromtimestamp(stamp).isoformat(sep=" ", timespec=timespec)
    except (OverflowError, ValueError, OSError, TypeError):
        return f"bad timestamp {stamp!r}"
