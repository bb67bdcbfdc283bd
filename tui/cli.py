"""The ``qtui`` command: global options, then a subcommand.

Each subcommand is declared here by name and one line of help (:data:`SUBCOMMANDS`); its module,
which adds its options and handler, is imported only when it runs: ``qtui run-worker`` does not
import the console or the scripted commands, and ``qtui --help`` none of them, nor the library.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, cast

if TYPE_CHECKING:
    from qtui.core.app import App


class Subcommand(NamedTuple):
    """A subcommand, and the function (``module:function``) that adds its parser to the
    subcommands (``add_parser(name, ...)``, with its options and ``func(args, app) -> int``)."""

    name: str
    declared_by: str
    help: str


SUBCOMMANDS = (
    Subcommand("run-worker", "qtui.workers.cli:add_parser", "start a worker that runs tasks"),
    Subcommand("inspect", "qtui.tui.commands:add_parsers",
               "ask the workers what they hold and run (`qtui inspect -h` lists the commands)"),
    Subcommand("control", "qtui.tui.commands:add_parsers",
               "tell the workers to change what they do (`qtui control -h` lists the commands)"),
    Subcommand("status", "qtui.tui.commands:add_parsers",
               "workers online, the broker, queues and their depths"),
    Subcommand("purge", "qtui.tui.commands:add_parsers",
               "discard every waiting task of some queues"),
    Subcommand("eta", "qtui.tui.commands:add_parsers",
               "the ETA tasks qtui workers left in the broker's delayed store"),
    Subcommand("events", "qtui.tui.commands:add_parsers",
               "print the cluster's events as they arrive"),
    Subcommand("call", "qtui.tui.commands:add_parsers",
               "send a task by name, with JSON arguments (as `celery call`)"),
    Subcommand("audit", "qtui.tui.commands:add_parsers",
               "the audit trail: actions taken on this cluster, newest first"),
    Subcommand("beat", "qtui.tui.schedule_commands:add_parsers",
               "send the periodic tasks of beat_schedule (run as many as you like)"),
    Subcommand("schedule", "qtui.tui.schedule_commands:add_parsers",
               "list, run now, pause or resume periodic tasks"),
    Subcommand("peek", "qtui.tui.peek_commands:add_parsers",
               "the messages waiting in a queue, from the next to be delivered"),
    Subcommand("dead", "qtui.tui.peek_commands:add_parsers",
               "list, requeue or delete dead letters (the <queue>.dead queues)"),
    Subcommand("scheduled", "qtui.tui.scheduled_commands:add_parsers",
               "every ETA/countdown task not yet due: broker-held and worker-held"),
    Subcommand("queues", "qtui.tui.queue_commands:add_parsers",
               "every queue: depth, oldest message's age, consumers, paused"),
    Subcommand("pause", "qtui.tui.queue_commands:add_parsers",
               "stop every worker consuming a queue, until `qtui resume`"),
    Subcommand("resume", "qtui.tui.queue_commands:add_parsers",
               "give a paused queue back to the workers that consumed it"),
    Subcommand("demo", "qtui.tui.demo:add_parser",
               "start a demo worker and producer, and open the console on them"),
    Subcommand("exporter", "qtui.tui.exporter:add_parser",
               "serve the cluster's metrics to Prometheus (celery-exporter's names)"),
)
"""Every subcommand, in the order ``qtui --help`` lists them."""


if TYPE_CHECKING:
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    _Subparsers = argparse._SubParsersAction


class LazySubcommands(_Subparsers):
    """Subcommands whose parsers are filled in by their module once one of them is chosen.

    :meth:`declare` makes a subcommand's parser with its help (all ``qtui --help`` needs); when
    argparse reaches the subcommand, the function that declares it is imported and called with
    these subcommands, and its ``add_parser(name, **options)`` fills in the declared parser.
    """

    #: What a module may set on its declared parser: attributes argparse reads when it formats
    #: help, not ones it only reads when it builds a parser (``prefix_chars``, ``add_help``, ...).
    SETTABLE = frozenset({"description", "epilog", "formatter_class", "usage"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._declared_by: dict[str, str] = {}
        self._filled: set[str] = set()

    def declare(self, command: Subcommand) -> None:
        super().add_parser(command.name, help=command.help)
        self._declared_by[command.name] = command.declared_by

    def add_parser(self, name: str, **options: Any) -> argparse.ArgumentParser:
        """The declared parser of ``name``, given ``options`` (description, epilog, ...); its
        help is :data:`SUBCOMMANDS`'."""
        parser: argparse.ArgumentParser = self._name_parser_map[name]
        for option, value in options.items():
            if option not in self.SETTABLE:
                raise TypeError(f"qtui {name}: {option}= is not a parser's to set (help is "
                                f"in SUBCOMMANDS; settable: {', '.join(sorted(self.SETTABLE))})")
            setattr(parser, option, value)
        self._filled.add(name)
        return parser

    def load(self, name: str) -> None:
        """Fill in ``name``'s parser, and those its module declares with it."""
        declared_by = self._declared_by[name]
        module, _, function = declared_by.partition(":")
        getattr(importlib.import_module(module), function)(self)
        for other, by in list(self._declared_by.items()):
            if by == declared_by:
                if other not in self._filled:
                    raise RuntimeError(f"{declared_by} did not add the parser of qtui {other}, "
                                       "which SUBCOMMANDS says it does")
                del self._declared_by[other]

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if values[0] in self._declared_by:
            self.load(values[0])
        super().__call__(parser, namespace, values, option_string)


def build_parser() -> argparse.ArgumentParser:
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
    commands = cast(LazySubcommands, parser.add_subparsers(
        dest="command", metavar="COMMAND", action=LazySubcommands,
        description="With no command, qtui opens the console on the configured cluster."))
    for command in SUBCOMMANDS:
        commands.declare(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from qtui.core.exceptions import QtuiError
    from qtui.core.interrupts import honour_stop_signals
    from qtui.core.loader import load_app

    honour_stop_signals()
    warnings.simplefilter("default")
    try:
        app = load_app(args.app, args.config, args.broker)
        if args.command is None:
            leave(open_console(args, app))
        if hasattr(args, "func"):
            return args.func(args, app)
    except QtuiError as exc:
        from rich.console import Console
        from rich.text import Text

        from qtui.core.display import safe_text

        Console(stderr=True).print(
            Text.assemble(("error:", "bold red"), " ", safe_text(str(exc), multiline=True)),
            highlight=False)
        return 1
    parser.error(f"unknown command {args.command!r}")
    return 2


def program() -> NoReturn:
    """The ``qtui`` command (and ``python -m qtui.tui.cli``): :func:`main`, then a quick exit
    (:mod:`qtui.core.exit`); tests call :func:`main` in their own process."""
    status = main()
    from qtui.core.exit import exit_program
    exit_program(status)


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
    program()
