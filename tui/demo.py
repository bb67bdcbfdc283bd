"""``qtui demo``: a live cluster in seconds. Starts a worker with the demo tasks in the
background, a producer that keeps sending them, and the console; stops all of it on exit."""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from rich.console import Console

from qtui.core import App
from qtui.core.config import mask_url
from qtui.core.loader import load_app

from . import demo_tasks

#: Seconds the demo worker gets to finish its running tasks when the console closes.
STOP_TIMEOUT = 10.0
PR_SET_PDEATHSIG = 1


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "demo",
        description="Start a worker running demo tasks (fast, slow, failing, retrying, "
                    "scheduled, rate-limited) and a producer in the background, then open the "
                    "console. Everything stops when you leave the console. Uses the configured "
                    "broker, the embedded one by default; the demo keeps to the queue 'demo'.")
    parser.add_argument("--no-console", action="store_true",
                        help="run only the worker and the producer, until Ctrl+C")
    parser.set_defaults(func=run)


def start_worker(args: argparse.Namespace, logfile: Path) -> subprocess.Popen[bytes]:
    """The demo worker, with the same --config and --broker as this command."""
    command = [sys.executable, "-m", "qtui.workers.cli", "-A", demo_tasks.__name__,
               "-P", "threads", "-c", "4", "-Q", demo_tasks.QUEUE, "-n", "demo@%h",
               "--loglevel", "INFO", "--logfile", str(logfile)]
    if args.config:
        command += ["--config", args.config]
    if args.broker:
        command += ["-b", args.broker]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=_end_with_parent)


def _end_with_parent() -> None:
    """In the worker before it starts (Linux): SIGTERM it when the demo process dies, however
    it dies, so a closed terminal leaves no demo worker behind."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _exit_on(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def run(args: argparse.Namespace, app: App) -> int:
    load_app(demo_tasks.__name__, args.config, args.broker)  # the producer's side
    demo_tasks.app.conf.update(task_default_queue=demo_tasks.QUEUE, source="qtui demo")
    console = Console(stderr=True)
    logfile = Path(tempfile.gettempdir()) / f"qtui-demo-worker-{os.getpid()}.log"
    console.print(f"Starting the demo worker on {mask_url(app.broker_url)} (log: {logfile})")
    worker = start_worker(args, logfile)
    for signum in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, _exit_on)
    stop = threading.Event()
    producer = threading.Thread(target=demo_tasks.produce, args=(stop,), daemon=True,
                                name="demo-producer")
    producer.start()
    keep_log = False
    try:
        if args.no_console:
            console.print("Demo running; Ctrl+C stops it.")
            while worker.poll() is None:
                stop.wait(0.5)
            console.print(f"[red]The demo worker exited ({worker.returncode}); see {logfile}")
            keep_log = True
            return 1
        from .cli import open_console
        return open_console(args, app)
    except KeyboardInterrupt:
        return 0
    finally:
        stop.set()
        producer.join(2)
        stop_worker(worker)
        if not keep_log:  # a demo leaves nothing behind, unless its worker failed
            logfile.unlink(missing_ok=True)
