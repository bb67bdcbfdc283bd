"""The scripted command that does what a console action does, for its confirmation dialog to
show, ready to copy: ``qtui control revoke 3f2a… --terminate --signal SIGKILL``.

One function per action, each building the same arguments the console sends (tests run the
command and compare), so a dialog never shows a command that does something else.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

#: Characters of a command a dialog shows; the rest is summed up (``c`` copies it whole).
SHOWN_MAX = 160


@dataclass(frozen=True)
class Equivalent:
    """One or more ``qtui`` command lines, each as its words after ``qtui`` (a bulk retry is
    one ``qtui call`` per task)."""

    commands: tuple[tuple[str, ...], ...]

    @classmethod
    def of(cls, *argv: str) -> Equivalent:
        return cls((argv,))

    @property
    def argv(self) -> tuple[str, ...]:
        """The first command's words."""
        return self.commands[0]

    def text(self) -> str:
        """Every command, one a line, quoted for a POSIX shell."""
        return "\n".join(shlex.join(("qtui", *argv)) for argv in self.commands)

    def shown(self, limit: int = SHOWN_MAX) -> str:
        """The first command cut at a word before ``limit`` characters, saying how many words
        (a bulk revoke names every id) and commands are left out."""
        words: list[str] = []
        used = 0
        full = ["qtui", *self.argv]
        for word in map(shlex.quote, full):
            if used + len(word) > limit and words:
                break
            words.append(word)
            used += len(word) + 1
        left = len(full) - len(words)
        more = len(self.commands) - 1
        return " ".join(words) + (f" … (+{left} more words)" if left else "") + (
            f" (and {more} more command{'s' if more != 1 else ''} like it)" if more else "")


def _destination(workers: Sequence[str] | None) -> tuple[str, ...]:
    return ("-d", ",".join(workers)) if workers else ()


def revoke(task_ids: Sequence[str]) -> Equivalent:
    return Equivalent.of("control", "revoke", *task_ids)


def terminate(task_ids: Sequence[str], signal: str) -> Equivalent:
    return Equivalent.of("control", "revoke", *task_ids, "--terminate", "--signal", signal)


def retries(commands: Sequence[Equivalent]) -> Equivalent:
    """Several retries as one script, a ``qtui call`` a line."""
    return Equivalent(tuple(c.argv for c in commands))


def retry(name: str, args: Any, kwargs: Any, queue: str | None = None,
          exchange: str | None = None, routing_key: str | None = None) -> Equivalent | None:
    """``qtui call`` with the task's arguments as JSON, or None when they are not JSON (a
    Python literal such as a set or bytes: only the console can send those again)."""
    try:
        words = ["call", name, "--args", json.dumps(list(args)), "--kwargs",
                 json.dumps(dict(kwargs))]
    except (TypeError, ValueError):
        return None
    for option, value in (("--queue", queue), ("--exchange", exchange),
                          ("--routing-key", routing_key)):
        if value:
            words += [option, value]
    return Equivalent.of(*words)


def shutdown(worker: str) -> Equivalent:
    return Equivalent.of("control", "shutdown", *_destination([worker]))


def cancel_consumer(queue: str, workers: Sequence[str] | None) -> Equivalent:
    return Equivalent.of("control", "cancel_consumer", queue, *_destination(workers))


def purge(queue: str) -> Equivalent:
    return Equivalent.of("purge", "-Q", queue, "-f")


def pause(queue: str) -> Equivalent:
    return Equivalent.of("pause", queue)


def resume(queue: str) -> Equivalent:
    return Equivalent.of("resume", queue)


def schedule(verb: str, entry: str) -> Equivalent:
    """``qtui schedule run|pause|resume ENTRY``."""
    return Equivalent.of("schedule", verb, entry)


def dead_letters(verb: str, letters: dict[str, list[str]], query: str = "",
                 whole: Collection[str] = ()) -> Equivalent:
    """``qtui dead requeue|delete QUEUE ID...`` a dead-letter queue; ``--all`` with the filter
    ("everything matching") for the queues in ``whole``, those whose every letter was read, so
    that it names the same letters as the ids."""
    return Equivalent(tuple(
        ("dead", verb, queue, *(("--all",) if queue in whole else ids),
         *(("--filter", query) if query and queue in whole else ()))
        for queue, ids in letters.items()))


def peek_delete(queue: str, task_ids: Sequence[str]) -> Equivalent:
    return Equivalent.of("peek", queue, "--delete", *task_ids)


def peek_move(queue: str, to: str, task_ids: Sequence[str]) -> Equivalent:
    return Equivalent.of("peek", queue, "--move-to", to, "--ids", *task_ids)


def eta_run(task_ids: Sequence[str], queues: Sequence[str]) -> Equivalent:
    """``qtui eta run ID... -Q QUEUE,...``: broker-held tasks run now."""
    return Equivalent.of("eta", "run", *task_ids, "-Q", ",".join(sorted(set(queues))))


def eta_delete(task_ids: Sequence[str], queues: Sequence[str]) -> Equivalent:
    """``qtui eta delete ID... -Q QUEUE,...``: broker-held tasks discarded."""
    return Equivalent.of("eta", "delete", *task_ids, "-Q", ",".join(sorted(set(queues))))


def script(*parts: Equivalent | None) -> Equivalent | None:
    """Several commands as one script (None when one of them has no scripted equivalent)."""
    if any(part is None for part in parts):
        return None
    return Equivalent(tuple(argv for part in parts if part is not None
                            for argv in part.commands))
