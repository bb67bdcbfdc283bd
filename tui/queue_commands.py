"""``qtui queues`` (the Queues view's figures), ``qtui pause QUEUE [--watch]`` and ``qtui resume
QUEUE`` (see :mod:`qtui.core.pauses`). Pauses and resumes are recorded in the audit trail.
Output is for people, readable at 80 columns when piped, unless ``--json`` asks for what
scripts read."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from qtui.core import App
from qtui.core.display import safe_text
from qtui.core.events import EventReceiver
from qtui.core.pauses import Pause, pause_queue, paused_queues, reapply, resume_queue
from qtui.core.queue_rates import QueueRates, Rate
from qtui.core.queues import Age, QueuePoll, inspector_for, oldest_wait
from qtui.core.state import State

from .actions import pause_told, reapplied
from .audit import LOCAL, current_user, record_command
from .feed import consumed_queues
from .views.format import per_second, waited

#: Tasks ``qtui queues --listen`` remembers (to place a Celery worker's task-received by the
#: queue of its task-sent).
LISTEN_TASKS = 10_000
#: Seconds ``qtui pause --watch`` waits for events before it checks the pause still lasts.
WATCH_CHECK = 5.0


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``queues``, ``pause`` and ``resume``; each sets ``func(args, app) -> int``."""
    queues = subparsers.add_parser(
        "queues",
        description="Every queue the broker lists, and those the app routes to: messages "
                    "waiting, how long the oldest has waited (exact from qtui's publish time "
                    "or the embedded broker's record; '?' when unknown: a Celery client's "
                    "message, or RabbitMQ, whose queues cannot be read without taking), "
                    "scheduled (ETA) tasks the broker holds, dead letters, consumers, pauses. "
                    "Tasks in and out per second only with --listen: they are counted from "
                    "the event stream.")
    queues.add_argument("--json", action="store_true", help="print JSON for scripts")
    queues.add_argument("--listen", type=float, default=0.0, metavar="SECONDS",
                        help="first listen to the event stream this long and count tasks in "
                             "and out of each queue per second, as the console does (without "
                             "it they are unknown)")
    queues.add_argument("-t", "--timeout", type=float, default=1.0, metavar="SECONDS",
                        help="how long to wait for the workers to say what they consume "
                             "(default: 1)")
    queues.set_defaults(func=queues_command)

    pause = subparsers.add_parser(
        "pause",
        description="Store the pause in the broker (qtui workers that start later leave the "
                    "queue out too) and tell every running worker, qtui's and Celery's, to "
                    "stop consuming it (cancel_consumer).")
    pause.add_argument("queue", metavar="QUEUE")
    pause.add_argument("--watch", action="store_true",
                       help="then keep listening, and tell each worker that comes online to "
                            "stop consuming the queue too (a Celery worker started while the "
                            "pause lasts); stops when the queue is resumed or on Ctrl-C")
    pause.add_argument("-t", "--timeout", type=float, default=1.0, metavar="SECONDS",
                       help="how long to wait for the workers' replies (default: 1)")
    pause.set_defaults(func=pause_command)

    resume = subparsers.add_parser(
        "resume",
        description="Remove the pause and send add_consumer to the workers that consumed "
                    "the queue when it was paused, or would have since.")
    resume.add_argument("queue", metavar="QUEUE")
    resume.add_argument("-t", "--timeout", type=float, default=1.0, metavar="SECONDS",
                        help="how long to wait for the workers' replies (default: 1)")
    resume.set_defaults(func=resume_command)


# queues ----------------------------------------------------------------------------------------
def queues_command(args: argparse.Namespace, app: App) -> int:
    """``qtui queues [--json]``: one poll of the broker, and who consumes what."""
    replies = app.control.inspect(timeout=args.timeout).active_queues() or {}
    consumers: dict[str, list[str]] = {}
    for hostname, reply in replies.items():
        for name in consumed_queues(reply):
            consumers.setdefault(name, []).append(hostname)
    rates = listen(app, args.listen) if args.listen > 0 else None
    with inspector_for(app) as inspector:
        poll = inspector.poll(set(app.router.queues) | set(consumers))
    rows = queue_rows(poll, consumers, time.time(), rates)
    try:
        if args.json:
            print(json.dumps({"queues": rows, "pause_error": poll.pause_error or None},
                             sort_keys=True), flush=True)
        else:
            _show_queues(rows, listened=rates is not None, pauses_known=not poll.pause_error)
            if poll.pause_error:  # the depths stand; the paused column says "?"
                Console(stderr=True, highlight=False).print(safe_text(poll.pause_error))
    except BrokenPipeError:  # the reader left (`qtui queues | head`): that is the end
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
    return 0


def listen(app: App, seconds: float) -> QueueRates:
    """Tasks in and out of each queue, counted from the events of the next ``seconds``."""
    rates = QueueRates(window=max(1, math.ceil(seconds)))
    state = State(max_tasks=LISTEN_TASKS, queue_rates=rates)
    deadline = time.monotonic() + seconds
    with EventReceiver(app, wakeup=False) as receiver:
        while (left := deadline - time.monotonic()) > 0:
            state.ingest(receiver.events(timeout=left, limit=1))
    return rates


def queue_rows(poll: QueuePoll, consumers: Mapping[str, list[str]], now: float,
               rates: QueueRates | None = None) -> list[dict[str, Any]]:
    """One dict per queue: what ``qtui queues --json`` prints. Ages here come from the broker or
    the message alone (no event stream is read): a message without qtui's publish time is of
    unknown age. Tasks in and out per second come from ``rates`` (None: unknown)."""
    rows = []
    for queue in poll.queues:
        inflow = None if rates is None else rates.inflow(queue.name, now)
        outflow = None if rates is None else rates.outflow(
            queue.name, consumers.get(queue.name, ()), now)
        wait = oldest_wait(queue.messages, poll.heads.get(queue.name, ()), _unseen, now)
        hosts = sorted(consumers.get(queue.name, ()))
        pause = poll.paused.get(queue.name)
        rows.append({
            "name": queue.name, "messages": queue.messages,
            "oldest_age": None if wait is None else round(wait.seconds, 3),
            "oldest_age_exact": None if wait is None else wait.exact,
            "consumers": queue.consumers if queue.consumers is not None else len(hosts),
            "workers": hosts, "unacked": queue.unacked, "scheduled": queue.scheduled,
            "dead": poll.dead.get(queue.name),
            "paused": None if pause is None else {"since": pause.since, "by": pause.by},
            "in_per_second": None if inflow is None else round(inflow.per_second, 3),
            "in_exact": None if inflow is None else inflow.exact,
            "out_per_second": None if outflow is None else round(outflow.per_second, 3),
            "out_exact": None if outflow is None else outflow.exact,
        })
    return rows


def _unseen(task_id: str) -> float | None:
    return None


def _show_queues(rows: list[dict[str, Any]], listened: bool = False,
                 pauses_known: bool = True) -> None:
    table = Table(title="queues", title_justify="left")
    table.add_column("queue", overflow="fold")
    rates = ("in/s", "out/s") if listened else ()
    for column in ("depth", "oldest", "sched", "dead", "consumers", *rates):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("paused", no_wrap=True)
    for row in rows:
        age = "" if row["messages"] == 0 else waited(
            None if row["oldest_age"] is None else Age(row["oldest_age"], row["oldest_age_exact"]))
        flows = [per_second(None if row[f"{way}_per_second"] is None
                            else Rate(row[f"{way}_per_second"], row[f"{way}_exact"]))
                 for way in ("in", "out")] if listened else []
        table.add_row(
            safe_text(row["name"]), _figure(row["messages"]), age, _figure(row["scheduled"], ""),
            _figure(row["dead"], ""), _figure(row["consumers"]), *flows,
            Text("paused", style="bold yellow") if row["paused"] else
            "" if pauses_known else "?")
    Console(soft_wrap=False, highlight=False).print(table)


def _figure(value: int | None, unknown: str = "?") -> str:
    return unknown if value is None else str(value)


# pause and resume ------------------------------------------------------------------------------
def pause_command(args: argparse.Namespace, app: App) -> int:
    """``qtui pause QUEUE [--watch]``."""
    outcome = pause_queue(app, args.queue, current_user(), args.timeout)
    told = pause_told("pause", outcome)
    record_command(app, "pause", [args.queue], dict(told.replies) or {LOCAL: "no worker to tell"},
                   told.ok)
    out = Console(soft_wrap=True, highlight=False)
    assert outcome.pause is not None
    out.print(Text.assemble(safe_text(args.queue), f": {_paused_line(outcome.pause)}"))
    _print_replies(out, outcome.replies)
    if args.watch:
        return _watch(app, args.queue, out, args.timeout)
    return 0


def resume_command(args: argparse.Namespace, app: App) -> int:
    """``qtui resume QUEUE``."""
    outcome = resume_queue(app, args.queue, args.timeout)
    out = Console(soft_wrap=True, highlight=False)
    if outcome.pause is None:
        out.print(Text.assemble(safe_text(args.queue), ": was not paused; nothing to resume"))
        return 1
    told = pause_told("resume", outcome)
    record_command(app, "resume", [args.queue], dict(told.replies) or {LOCAL: "no worker to ask"},
                   told.ok)
    given = ", ".join(outcome.pause.consumers) or "no worker (none consumed it)"
    out.print(Text.assemble(safe_text(args.queue), ": resumed; given back to ",
                            safe_text(given)))
    _print_replies(out, outcome.replies)
    return 0


def _watch(app: App, queue: str, out: Console, timeout: float) -> int:
    """Re-apply the pause to each worker that comes online, until the queue is resumed."""
    out.print(Text.assemble("watching for workers coming online while ", safe_text(queue),
                            " is paused (Ctrl-C to stop)"))
    try:
        with EventReceiver(app, wakeup=False) as receiver:
            checked = time.monotonic()
            while True:
                if time.monotonic() - checked >= WATCH_CHECK:
                    if queue not in paused_queues(app):
                        break
                    checked = time.monotonic()
                for event in receiver.events(timeout=WATCH_CHECK, limit=1):
                    hostname = event.get("hostname")
                    if event.get("type") == "worker-online" and isinstance(hostname, str):
                        _reapply(app, hostname, out, timeout)
    except KeyboardInterrupt:
        return 0
    out.print(Text.assemble(safe_text(queue), " was resumed: stopped watching"))
    return 0


def _reapply(app: App, hostname: str, out: Console, timeout: float) -> None:
    done = reapply(app, hostname, timeout)
    if done:
        told = reapplied(hostname, done)
        record_command(app, told.action, told.targets, dict(told.replies), told.ok)
        out.print(Text.assemble(safe_text(hostname), ": told to stop consuming ",
                                safe_text(", ".join(sorted(done)))))


def _paused_line(pause: Pause) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(pause.since))
    return f"paused since {since} by {pause.by}"


def _print_replies(out: Console, replies: Mapping[str, Any]) -> None:
    for hostname, reply in sorted(replies.items()):
        said = reply.get("ok") or reply.get("error") if isinstance(reply, Mapping) else reply
        out.print(Text.assemble(safe_text(hostname), ": ", safe_text(str(said))))
