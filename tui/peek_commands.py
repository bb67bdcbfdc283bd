"""``qtui peek QUEUE`` (the waiting messages of a queue, from the head) and ``qtui dead
list|requeue|delete`` (the dead letters). Output is for people (one block of lines a message,
readable at 80 columns) unless ``--json`` asks for what scripts read; what changes the cluster
goes to the audit trail.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone

from rich.console import Console
from rich.table import Table
from rich.text import Text

from qtui.core import App, brokers
from qtui.core import deadletters as dead
from qtui.core.display import printable, safe_text
from qtui.core.exceptions import QtuiError
from qtui.core.peek import PAGE, WaitingMessage
from qtui.core.protocol import dead_queue_of
from qtui.core.queues import inspector_for

from . import message_actions
from .audit import LOCAL, record_command
from .query import QueryError, matches, parse

#: Waiting messages ``qtui peek --delete|--move-to`` searches for the ids, from the head.
SEARCHED = 10_000


class FilterError(QtuiError):
    """A ``--filter`` the console's filter language cannot read."""


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``peek`` and ``dead``; each sets ``func(args, app) -> int``."""
    peek = subparsers.add_parser(
        "peek",
        description="List a queue's waiting messages from its head, with a count by task name "
                    "over the first 10,000. On Redis and the embedded broker nothing is taken "
                    "or reordered; on RabbitMQ each message read is taken and requeued (the "
                    "first line says how).")
    peek.add_argument("queue", metavar="QUEUE")
    peek.add_argument("-n", "--limit", type=int, default=PAGE, metavar="N",
                      help=f"at most N messages (default: {PAGE})")
    peek.add_argument("--offset", type=int, default=0, metavar="N",
                      help="skip the first N (default: 0, the head)")
    peek.add_argument("--delete", nargs="+", metavar="ID",
                      help="delete the waiting messages of these task ids instead (audited)")
    peek.add_argument("--move-to", metavar="QUEUE",
                      help="with IDs after --ids: move those messages to the back of QUEUE")
    peek.add_argument("--ids", nargs="+", metavar="ID", help="the task ids --move-to moves")
    _filter_and_json(peek)
    peek.set_defaults(func=peek_command)

    deadletters = subparsers.add_parser(
        "dead",
        description="The messages workers dead-lettered, with why and how often they were "
                    "delivered. A requeued one goes back to the queue it came from with its "
                    "task id and arguments, its delivery count started again.")
    actions = deadletters.add_subparsers(dest="dead_command", required=True, metavar="COMMAND")
    listing = actions.add_parser("list", help="the dead letters of a queue, or of every queue")
    listing.add_argument("queue", nargs="?", metavar="QUEUE",
                         help="a queue (QUEUE or QUEUE.dead); default: every queue")
    _filter_and_json(listing)
    listing.set_defaults(func=dead_list_command)
    for verb, text in (("requeue", "send dead letters back to the queue they came from"),
                       ("delete", "discard dead letters")):
        action = actions.add_parser(verb, help=text)
        action.add_argument("queue", metavar="QUEUE", help="QUEUE or QUEUE.dead")
        action.add_argument("ids", nargs="*", metavar="ID", help="task ids of the dead letters")
        action.add_argument("--all", action="store_true",
                            help="every dead letter of the queue (or every one --filter matches)")
        _filter_and_json(action)
        action.set_defaults(func=dead_action_command, verb=verb)


def _filter_and_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--filter", metavar="QUERY",
                        help="only messages matching QUERY, the console's filter language "
                             "(name:tasks.add, id:, args:, result: for a dead letter's reason)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _filtered(messages: Sequence[WaitingMessage], query: str | None) -> list[WaitingMessage]:
    if not query:
        return list(messages)
    try:
        terms = parse(query)
    except QueryError as exc:
        raise FilterError(f"--filter: {exc}") from None
    return [m for m in messages if matches(terms, m.filter_values())]


def _out() -> Console:
    return Console(soft_wrap=False, highlight=False)


# peek -------------------------------------------------------------------------------------------
def peek_command(args: argparse.Namespace, app: App) -> int:
    """``qtui peek QUEUE``: a page of waiting messages and the summary by task name (or, with
    ``--delete`` or ``--move-to``, the peek view's actions on messages by task id)."""
    if args.delete or args.move_to:
        return _act_on_messages(args, app)
    try:
        with inspector_for(app) as inspector:
            page = inspector.peek(args.queue, max(0, args.offset), max(0, args.limit))
            summary = inspector.summary(args.queue)
    except brokers.broker_errors(app.connection_for_read()) as exc:
        raise QtuiError(f"cannot peek at {args.queue}: {exc}") from exc
    shown = _filtered(page.messages, args.filter)
    if args.json:
        print(json.dumps({"queue": args.queue, "method": page.method,
                          "summary": {"counts": dict(summary.counts), "sampled": summary.sampled,
                                      "whole_queue": summary.whole},
                          "messages": [m.to_json() for m in shown]}))
        return 0
    out = _out()
    out.print(Text.assemble(("How: ", "bold"), page.method))
    out.print(safe_text(summary.words()))
    out.print(_messages_table(shown, dead_letters=False))
    return 0


def _act_on_messages(args: argparse.Namespace, app: App) -> int:
    """``--delete ID...`` or ``--move-to QUEUE --ids ID...``: the messages of those task ids
    among the first ``--limit`` waiting (searched from the head), as the peek view acts."""
    ids = set(args.delete or args.ids or ())
    if args.move_to and not args.ids:
        print("qtui peek --move-to needs --ids ID...", file=sys.stderr)
        return 2
    with inspector_for(app) as inspector:
        found = [m for m in inspector.peek(args.queue, 0, max(args.limit, SEARCHED)).messages
                 if m.task_id in ids]
    if args.move_to:
        outcome = message_actions.move(app, args.queue, found, args.move_to)
    else:
        outcome = message_actions.delete(app, args.queue, found)
    replies = {LOCAL: outcome.message}
    record_command(app, outcome.action, outcome.targets, replies, outcome.ok)
    if args.json:
        print(json.dumps({"queue": args.queue, "ok": outcome.ok, "found": len(found),
                          "said": outcome.message}))
    else:
        _out().print(Text(outcome.message))
    return 0 if outcome.ok else 1


# dead letters -----------------------------------------------------------------------------------
def dead_list_command(args: argparse.Namespace, app: App) -> int:
    """``qtui dead list [QUEUE]``: the dead letters of one queue or of every queue."""
    try:
        with inspector_for(app) as inspector:
            names = ([dead_queue_of(args.queue)] if args.queue
                     else dead.dead_queues(inspector, sorted(app.router.queues)))
            found = {name: _filtered(dead.read(inspector, name), args.filter) for name in names}
    except brokers.broker_errors(app.connection_for_read()) as exc:
        raise QtuiError(f"cannot read the dead letters: {exc}") from exc
    if args.json:
        print(json.dumps({name: [m.to_json() for m in messages]
                          for name, messages in found.items()}))
        return 0
    out = _out()
    if not any(found.values()):
        out.print("No dead letters.")
    for name, messages in found.items():
        out.print(Text.assemble(safe_text(name, "bold"), f": {len(messages)} dead letter"
                                f"{'s' if len(messages) != 1 else ''}"))
        if messages:
            out.print(_messages_table(messages, dead_letters=True))
    return 0


def dead_action_command(args: argparse.Namespace, app: App) -> int:
    """``qtui dead requeue|delete QUEUE [ID...|--all] [--filter QUERY]``."""
    if not args.ids and not args.all and not args.filter:
        print(f"qtui dead {args.verb} needs task ids, --all or --filter", file=sys.stderr)
        return 2
    name = dead_queue_of(args.queue)
    action = f"dead {args.verb}"
    errors: tuple[type[BaseException], ...] = (
        QtuiError, *brokers.broker_errors(app.connection_for_read()))
    try:
        with inspector_for(app) as inspector:
            chosen = _filtered(dead.read(inspector, name), args.filter)
            if args.ids:
                wanted = set(args.ids)
                chosen = [m for m in chosen if m.task_id in wanted]
            if args.verb == "requeue":
                done = dead.requeue(inspector, name, chosen, app.backend)
            else:
                done = inspector.delete(name, chosen)
    except errors as exc:
        record_command(app, action, [name, *args.ids], {LOCAL: str(exc)}, False)
        raise QtuiError(f"cannot {args.verb} dead letters of {name}: {exc}") from exc
    said = f"{args.verb}d {done} of {len(chosen)} dead letter{'s' if len(chosen) != 1 else ''}"
    if done < len(chosen):
        said += f" ({len(chosen) - done} were gone already)"
    record_command(app, action, [name, *(m.task_id for m in chosen)], {LOCAL: said}, True)
    if args.json:
        print(json.dumps({"queue": name, "action": args.verb, "chosen": len(chosen),
                          "done": done, "ids": [m.task_id for m in chosen]}))
    else:
        _out().print(Text(f"{name}: {said}"))
    return 0


# output -----------------------------------------------------------------------------------------
def _messages_table(messages: Sequence[WaitingMessage], dead_letters: bool) -> Table:
    """One row a message: its position, then its id and name over the lines that say the rest
    (args, kwargs, ETA, ...), so that it reads at 80 columns."""
    table = Table(show_edge=False, box=None, pad_edge=False, expand=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("message", overflow="fold")
    for message in messages:
        table.add_row(str(message.position), _details(message, dead_letters))
    return table


def _details(message: WaitingMessage, dead_letter: bool) -> Text:
    task = message.task
    lines = [Text.assemble(safe_text(message.task_id or "(no id)", "bold"), "  ",
                           safe_text(message.name or "(not a task)", "cyan"))]
    if dead_letter:
        lines.append(Text.assemble("reason: ", safe_text(message.reason or "(none given)")))
        lines.append(Text.assemble(f"deliveries: {message.deliveries}  from: ",
                                   safe_text(message.origin_queue or "(unknown)")))
    if task is not None:
        args, kwargs = message.shown_arguments
        lines.append(Text.assemble("args: ", safe_text(args)))
        lines.append(Text.assemble("kwargs: ", safe_text(kwargs)))
        facts = [f"retries: {task.retries}"]
        if task.eta is not None:
            facts.append(f"eta: {task.eta.isoformat(timespec='seconds')}")
        if message.properties.get("priority") is not None:
            facts.append(f"priority: {printable(message.properties.get('priority'))}")
        if message.published_at is not None:
            facts.append("published: " + datetime.fromtimestamp(
                message.published_at, timezone.utc).isoformat(timespec="seconds"))
        lines.append(Text("  ".join(facts)))
        if task.headers:
            lines.append(Text.assemble("headers: ", safe_text(json.dumps(task.headers,
                                                                         default=repr))))
    else:
        lines.append(Text.assemble("unreadable: ", safe_text(message.problem or "")))
    return Text("\n").join(lines)
