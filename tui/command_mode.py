"""The ``:`` commands (k9s's command mode): their names, aliases, argument and help.

One table serves the console (which word runs what), the help screen (which aliases exist) and
the prompt's Tab completion, so none of them can drift from the others.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ColonCommand:
    name: str
    help: str
    aliases: tuple[str, ...] = ()
    argument: str = ""
    """What follows the name (``QUERY``, ``NAME``), or '' when it takes nothing."""

    def usage(self) -> str:
        return f":{self.name} {self.argument}".rstrip()


COMMANDS = (
    ColonCommand("overview", "overview", ("o", "ov")),
    ColonCommand("workers", "workers", ("w", "wo")),
    ColonCommand("tasks", "tasks, filtered", ("t", "ta"), "QUERY"),
    ColonCommand("queues", "queues", ("qu",)),
    ColonCommand("schedules", "periodic tasks", ("sc",)),
    ColonCommand("metrics", "task metrics", ("m", "me")),
    ColonCommand("scheduled", "ETA tasks, filtered", ("eta",), "QUERY"),
    ColonCommand("notifications", "notification log", ("log", "n")),
    ColonCommand("audit", "actions taken (audit)", ("au",)),
    ColonCommand("dead", "dead letters", ("de",)),
    ColonCommand("alerts", "alert rules", ("al",)),
    ColonCommand("context", "switch cluster", ("ctx",), "NAME"),
    ColonCommand("help", "keys and commands", ("h",)),
    ColonCommand("quit", "leave", ("q", "exit")),
)

_BY_WORD = {word: c for c in COMMANDS for word in (c.name, *c.aliases)}


def resolve(word: str) -> ColonCommand | None:
    """The command a typed word names (its name or an alias, any case), if any."""
    return _BY_WORD.get(word.lower())


def completions(contexts: list[str]) -> list[str]:
    """What Tab completes to: each command's name (with a space when it takes an argument),
    and ``context NAME`` for each configured context."""
    words = [f"{c.name} " if c.argument else c.name for c in COMMANDS]
    return words + [f"context {name}" for name in contexts]
