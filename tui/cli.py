"""The ``qtui`` command: global options, then a subcommand."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from rich.console import Console

from qtui.core.exceptions import QtuiError

err = Console(stderr=True)


def build_parser() -> argparse.ArgumentParser:
    from qtui.workers import cli as worker_cli

    parser = argparse.ArgumentParser(
        prog="qtui",
        description="A task queue you can see and steer from the terminal. "
                    "Speaks Celery's protocols.")
    parser.add_argument("-A", "--app", metavar="MODULE[:ATTR]",
                        help="module defining the qtui App (as with celery -A)")
    parser.add_argument("--config", metavar="FILE",
                        help="TOML config file (default: $QTUI_CONFIG, else ./qtui.toml)")
    parser.add_argument("-b", "--broker", metavar="URL", help="broker URL (overrides config)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    worker = commands.add_parser(
        "run-worker", help="start a worker that runs tasks",
        description="Start a worker: consume the queues, run the tasks, store the results.")
    worker_cli.add_arguments(worker)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from qtui.core.loader import load_app

    warnings.simplefilter("default")
    try:
        app = load_app(args.app, args.config, args.broker)
        if args.command == "run-worker":
            from qtui.workers import cli as worker_cli
            return worker_cli.run(args, app)
    except QtuiError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 1
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
