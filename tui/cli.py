"""The ``qtui`` command: global options, then a subcommand."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from rich.console import Console
from rich.text import Text

from qtui.core.display import safe_text
from qtui.core.exceptions import QtuiError
from qtui.core.interrupts import honour_stop_signals

if TYPE_CHECKING:
    from qtui.core.app import App

err = Console(stderr=True)


def build_parser() -> argparse.ArgumentParser:
    from qtui.workers import cli as worker_cli

    from . import commands as scripted
    from . import (
        demo,
        exporter,
        peek_commands,
        queue_commands,
        schedule_commands,
        scheduled_commands,
    )

    parser = argparse.ArgumentParser(
        prog="qtui",
        description="A task queue you can see and steer from the terminal. "
                    "Speaks Celery's protocols.")
    parser.add_argument("-A", "--app", metavar="MODULE[:ATTR]",
                        help="module defining the qtui App (as with celery -A)")
    parser.add_argument("--config", metavar="FILE",
                        help="TOML config file (default: $QTUI_CONFIG, else ./qtui.toml)")
    parser.add_argument("-b", "--broker", metavar="URL", help="broker URL (overrides config)")
    console = parser.add_argument_group("console (qtui with no command)")
    console.add_argument("--context", metavar="NAME",
                         help="start on the cluster [contexts.NAME] of the config")
    console.add_argument("--read-only", action="store_true",
                         help="hide and refuse every action that changes the cluster")
    console.add_argument("--no-history", action="store_true",
                         help="neither read nor write the console's history file")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND",
        description="With no command, qtui opens the console on the configured cluster.")
    worker = commands.add_parser(
        "run-worker", help="start a worker that runs tasks",
        description="Start a worker: consume the queues, run the tasks, store the results.")
    worker_cli.add_arguments(worker)
    scripted.add_parsers(commands)
    schedule_commands.add_parsers(commands)
    peek_commands.add_parsers(commands)
    scheduled_commands.add_parsers(commands)
    queue_commands.add_parsers(commands)
    demo.add_parser(commands)
    exporter.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    honour_stop_signals()
    parser = build_parser()
    args = parser.parse_args(argv)
    from qtui.core.loader import load_app

    warnings.simplefilter("default")
    try:
        app = load_app(args.app, args.config, args.broker)
        if args.command is None:
            leave(open_console(args, app))
        if args.command == "run-worker":
            from qtui.workers import cli as worker_cli
            return worker_cli.run(args, app)
        if hasattr(args, "func"):
            return args.func(args, app)
    except QtuiError as exc:
        err.print(Text.assemble(("error:", "bold red"), " ", safe_text(str(exc), multiline=True)),
                  highlight=False)
        return 1
    parser.error(f"unknown command {args.command!r}")
    return 2


def leave(status: int) -> NoReturn:
    """Exit at once once the console has closed: its threads are done and its files closed,
    and Python's own teardown of an interpreter with Textual and kombu loaded (0.3-0.8 s
    measured, bench/RESULTS.md) would only keep the shell's prompt waiting."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def open_console(args: argparse.Namespace, app: App) -> int:
    """Run the console full-screen until the user leaves it."""
    from .console import Console
    from .contexts import context_app, context_apps

    contexts = context_apps(app)
    if args.context:
        app = context_app(app, args.context)
    Console(app, read_only=args.read_only, context=args.context, contexts=contexts,
            history=False if args.no_history else None).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
