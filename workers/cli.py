"""``qtui run-worker``: the worker's command-line options and how they become a Worker.

The ``qtui`` command declares its ``run-worker`` subcommand with :func:`add_parser`: these
options (:func:`add_arguments`), then :func:`run`; :func:`main` is the same worker as a command
of its own (``python -m qtui.workers.cli -A tasks``), handy in scripts and tests.
"""

from __future__ import annotations

import argparse
import importlib
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from qtui.core.exceptions import ConfigError, QtuiError
from qtui.core.files import PRIVATE_MODE
from qtui.core.interrupts import honour_stop_signals

from . import autoscale, log, shutdown
from .pools import POOLS

if TYPE_CHECKING:
    from qtui.core.app import App


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``run-worker`` on the ``qtui`` command's subcommands."""
    worker = commands.add_parser(
        "run-worker",
        description="Start a worker: consume the queues, run the tasks, store the results.")
    add_arguments(worker)
    worker.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The run-worker options (Celery's names and meanings)."""
    parser.add_argument("-l", "--loglevel", default="WARNING", metavar="LEVEL",
                        help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default: WARNING)")
    parser.add_argument("-c", "--concurrency", type=int, metavar="N",
                        help="pool size (default: worker_concurrency, else the number of CPUs)")
    parser.add_argument("-P", "--pool", choices=sorted(POOLS),
                        help="where tasks run: prefork (child processes), threads, or solo (the "
                             "worker's own thread) (default: worker_pool, prefork)")
    parser.add_argument("-Q", "--queues", metavar="NAME[,NAME...]",
                        help="queues to consume, comma-separated (default: task_default_queue)")
    parser.add_argument("-n", "--hostname", metavar="NAME",
                        help="node name; %%h is the host name, %%n its first part, %%d the "
                             "domain (default: qtui@%%h)")
    parser.add_argument("--prefetch-multiplier", type=int, metavar="N",
                        help="messages reserved per pool slot; 0 for no limit "
                             "(default: worker_prefetch_multiplier, 4)")
    parser.add_argument("--max-tasks-per-child", type=int, metavar="N",
                        help="replace a prefork child after N tasks (default: never)")
    parser.add_argument("--autoscale", metavar="MAX,MIN",
                        help="grow the pool up to MAX slots while tasks wait, shrink it back to "
                             "MIN when idle (prefork and threads pools)")
    parser.add_argument("--max-memory-per-child", type=int, metavar="KIB",
                        help="replace a prefork child after a task leaves its resident memory "
                             "above KIB kibibytes (default: worker_max_memory_per_child, never)")
    parser.add_argument("--time-limit", type=float, metavar="SECONDS",
                        help="hard time limit of every task: its process is killed "
                             "(default: task_time_limit)")
    parser.add_argument("--soft-time-limit", type=float, metavar="SECONDS",
                        help="soft time limit: SoftTimeLimitExceeded is raised in the task "
                             "(default: task_soft_time_limit)")
    parser.add_argument("--pidfile", metavar="FILE",
                        help="write the worker's pid here; refuse to start if that worker runs")
    parser.add_argument("--logfile", metavar="FILE", help="log here instead of stderr")
    parser.add_argument("--statedb", metavar="FILE",
                        help="keep the revoked task ids in this file across restarts")
    parser.add_argument("--without-heartbeat", action="store_true",
                        help="send no worker heartbeat events")
    parser.add_argument("--without-events", action="store_true",
                        help="send no task events (the console then sees no task activity)")
    parser.add_argument("-B", "--beat", action="store_true",
                        help="also run a beat process (periodic tasks of beat_schedule) in a "
                             "thread of this worker; it leads or stands by like `qtui beat`")


def expand_hostname(template: str | None) -> str:
    """``%h`` -> ``host.example.com``, ``%n`` -> ``host``, ``%d`` -> ``example.com``."""
    host = socket.gethostname()
    name, _, domain = host.partition(".")
    text = template or "qtui@%h"
    if "@" not in text:
        text = f"{text}@%h"
    return (text.replace("%%", "\0").replace("%h", host).replace("%n", name)
            .replace("%d", domain).replace("\0", "%"))


#: Create, never open an existing file or follow a symbolic link (Celery's pidfile flags).
PIDFILE_FLAGS = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW


@contextmanager
def pidfile(path: str | None) -> Iterator[None]:
    """Hold ``path`` with this process's pid for the block; refuse if a live worker holds it.

    Created with O_EXCL, mode 0600: a file (or link) planted at the path is never written
    through. A stale pidfile (its process is gone, or it holds no pid) is removed first.
    """
    if not path:
        yield
        return
    file = Path(path).expanduser()
    file.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(file, PIDFILE_FLAGS, PRIVATE_MODE)
    except FileExistsError:
        _remove_if_stale(file)
        try:
            fd = os.open(file, PIDFILE_FLAGS, PRIVATE_MODE)
        except FileExistsError:
            raise ConfigError(f"pidfile {file} was created by another process meanwhile; "
                              "is another worker starting with it?") from None
    with os.fdopen(fd, "w") as out:
        out.write(f"{os.getpid()}\n")
    try:
        yield
    finally:
        try:
            ours = _read_pid(file) == os.getpid()
        except ConfigError:
            ours = False  # replaced by a link meanwhile: not ours to remove
        if ours:
            file.unlink(missing_ok=True)


def _read_pid(file: Path) -> int | None:
    """The pid in ``file``, read without following a link; None if there is none to read."""
    try:
        with os.fdopen(os.open(file, os.O_RDONLY | os.O_NOFOLLOW), "rb") as handle:
            text = handle.read(64).strip()
    except FileNotFoundError:
        return None
    except OSError as exc:  # a symbolic link (ELOOP), a directory, no permission
        raise ConfigError(f"pidfile {file} is a symbolic link or cannot be read ({exc.strerror}); "
                          "remove it or choose another --pidfile") from None
    return int(text) if text.isdigit() else None


def _remove_if_stale(file: Path) -> None:
    """Remove ``file`` if no live process holds it; refuse if one does."""
    pid = _read_pid(file)
    if pid and pid != os.getpid() and _alive(pid):
        raise ConfigError(f"pidfile {file} says a worker already runs as pid {pid}; stop it or "
                          "choose another --pidfile")
    file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _import_task_modules(app: App) -> None:
    for name in app.conf.imports:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"imports: cannot import task module {name!r}: {exc}") from exc


def run(args: argparse.Namespace, app: App) -> int:
    """Start a worker for ``app`` with the parsed run-worker options; returns the exit code."""
    from .worker import Worker

    try:
        log.setup(args.loglevel, args.logfile)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"cannot open the log file {args.logfile}: {exc.strerror}") from None
    overrides = {"task_time_limit": args.time_limit, "task_soft_time_limit": args.soft_time_limit,
                 "worker_max_memory_per_child": args.max_memory_per_child}
    app.conf.update({k: v for k, v in overrides.items() if v is not None},
                    source="qtui run-worker")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    _import_task_modules(app)
    queues = [q.strip() for q in (args.queues or "").split(",") if q.strip()] or None
    with pidfile(args.pidfile):
        worker = Worker(
            app, hostname=expand_hostname(args.hostname), pool=args.pool,
            concurrency=args.concurrency, queues=queues,
            autoscale=autoscale.parse(args.autoscale) if args.autoscale else None,
            prefetch_multiplier=args.prefetch_multiplier,
            max_tasks_per_child=args.max_tasks_per_child, statedb=args.statedb,
            send_events=False if args.without_events else None,
            heartbeat=not args.without_heartbeat)
        with beside(app, worker.hostname, args.beat):
            code = worker.start()
    if worker.shutdown.restart:
        shutdown.restart()
    return code


@contextmanager
def beside(app: App, hostname: str, enabled: bool) -> Iterator[None]:
    """With ``-B``: a beat (:mod:`qtui.core.beat`) in a thread for as long as the worker runs."""
    if not enabled:
        yield
        return
    import threading

    from qtui.core.beat.service import Beat

    beat = Beat(app, node=f"beat-{hostname}")
    thread = threading.Thread(target=beat.run, name="qtui-beat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        beat.stop()
        thread.join(app.conf.beat_lease_ttl)


def main(argv: Sequence[str] | None = None) -> int:
    """The worker as a command of its own: ``python -m qtui.workers.cli -A tasks [options]``."""
    from qtui.core.loader import load_app

    honour_stop_signals()
    parser = argparse.ArgumentParser(prog="qtui-worker", description="Run a qtui worker.")
    parser.add_argument("-A", "--app", metavar="MODULE[:ATTR]",
                        help="module defining the qtui App (as with celery -A)")
    parser.add_argument("--config", metavar="FILE",
                        help="TOML config file (default: $QTUI_CONFIG, else ./qtui.toml)")
    parser.add_argument("-b", "--broker", metavar="URL", help="broker URL (overrides config)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args, load_app(args.app, args.config, args.broker))
    except QtuiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    from qtui.core.exit import exit_program
    exit_program(main())
