"""The console under load: events ingested per second, key-to-repaint latency while ingesting,
and memory with 100,000 tasks in its state.

A publisher process sends Celery task events (task-received, task-started, task-succeeded for
each task, batched as ``task.multi`` lists of 100 as workers batch them) to Redis at a target
rate. The console runs headless (Textual's ``run_test``) on the tasks view with its real feed
attached to the same Redis database. While the events flow, a key (``down``/``up``, which moves
the table cursor) is pressed every 50-600 ms and the time until the screen has handled it and
repainted is recorded. At the end: events applied per second, the lag behind the publisher, the
key latency percentiles and the process's resident memory.

    python -m bench.bench_console [--tasks 100000] [--rate 10000] [--redis URL]

``--views``: view switches while events flow (300 events/s on top of 20,000 tasks): from the
number key to the first repaint of the new view, and to the repaint after that view has redrawn
itself from the current data (what an operator waits for). ``--quit``: a real ``qtui`` process
in a pseudo-terminal, against Redis with a live worker for it to poll; from ``q`` to the
process's exit (the shell's prompt back).

    python -m bench.bench_console --views [--tasks 20000]
    python -m bench.bench_console --quit

``--metrics``: the ingest run twice in one process, with the history file on, first with
``console_metrics = false`` and then with it on. ``--history-size``: what a day of ``--tasks``
tasks (20 names, 2% failing) adds to the history file, their events made here with timestamps
spread over the last 24 hours and fed through the console's own ingest path (``Feed.ingest``:
state, task history, metrics), without a broker.

    python -m bench.bench_console --metrics
    python -m bench.bench_console --history-size --tasks 1000000

``--ui-only``: the UI thread's part of the live run alone (no broker, no event thread): the
snapshots ``--rate`` events a second would bring, made here and handed to the console holding
``--tasks`` tasks, while keys move the cursor; key latency, and the thread CPU time of each data
redraw of the tasks view (choosing and writing its rows; Textual's measure, layout and render).

    python -m bench.bench_console --ui-only

``--data-layer``: the console's memory without the event stream's noise (a backlog of events
waiting in the receiver is counted in the live run's resident set): ``--tasks`` of the live
run's tasks, JSON-decoded as the receiver decodes them, through ``Feed.ingest`` (history file
and metrics on) into the console's model, as fast as it goes; the resident set after a full
collection and the allocator's trim, and its peak. Each event has a ``local_received`` of its
own, where the receiver stamps a message's events with one (2 MB more here at 100,000 tasks).

    python -m bench.bench_console --data-layer
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import random
import statistics
import tempfile
import time
import uuid
from typing import Any

import redis

EVENTS_PER_TASK = 3
BATCH = 100


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def publish(url: str, tasks: int, rate: float, start: Any) -> None:
    """Send ``tasks`` tasks' events at ``rate`` events per second, in task.multi batches."""
    from kombu import Connection, Producer

    from qtui.core.events import EventDispatcher, event_exchange

    with Connection(url) as conn:
        producer = Producer(conn.default_channel, auto_declare=False)
        exchange = event_exchange(conn)
        dispatcher = EventDispatcher(conn, hostname="bench@worker")
        start.wait()
        began = time.perf_counter()
        sent = 0
        batch: list[dict[str, Any]] = []
        for n in range(tasks):
            task_id = str(uuid.uuid4())
            batch.append(dispatcher.event("task-received", {
                "uuid": task_id, "name": f"bench.task{n % 20}", "args": f"({n}, {n * 2})",
                "kwargs": "{}", "retries": 0, "eta": None, "expires": None,
                "root_id": task_id, "parent_id": None}))
            batch.append(dispatcher.event("task-started", {"uuid": task_id, "pid": 1}))
            batch.append(dispatcher.event("task-succeeded", {
                "uuid": task_id, "result": str(n * 3), "runtime": 0.001}))
            if len(batch) >= BATCH or n == tasks - 1:
                producer.publish(batch, exchange=exchange.name, routing_key="task.multi",
                                 serializer="json", delivery_mode=1, declare=[exchange])
                sent += len(batch)
                batch = []
                ahead = sent / rate - (time.perf_counter() - began)
                if ahead > 0:
                    time.sleep(ahead)
        took = time.perf_counter() - began
        print(f"publisher: {sent:,} events in {took:.1f}s ({sent / took:,.0f}/s)", flush=True)


def record_repaints(console: Any) -> list[float]:
    """A list that gets the time of every repaint of ``console`` from now on. Headless, nothing
    reaches a terminal: a repaint is the compositor handing an update to ``App._display``, which
    in a terminal writes it out."""
    writes: list[float] = []
    original_display = console._display

    def timed_display(screen: Any, renderable: Any) -> None:
        if renderable is not None:
            writes.append(time.perf_counter())
        original_display(screen, renderable)
    console._display = timed_display
    return writes


def time_cursor_moves(table: Any) -> list[float]:
    """A list that gets the time of every cursor move the table makes from now on (the up and
    down keys): :func:`key_to_repaint` waits for the first repaint after it."""
    handled: list[float] = []
    for action in ("action_cursor_down", "action_cursor_up"):
        bound = getattr(table, action)

        def timed(original: Any = bound) -> None:
            original()
            handled.append(time.perf_counter())
        setattr(table, action, timed)
    return handled


async def key_to_repaint(console: Any, key: str, writes: list[float],
                         handled: list[float]) -> float | None:
    """Seconds from a key event arriving to the repaint that shows its effect (the table cursor
    moved), as a user would see it; None if it did not happen within 10 s."""
    from textual import events

    handled.clear()
    start = time.perf_counter()
    console.post_message(events.Key(key, None))
    deadline = start + 10
    while time.perf_counter() < deadline:
        if handled:
            shown = [t for t in writes if t >= handled[0]]
            if shown:
                return shown[0] - start
        await asyncio.sleep(0.0005)
    return None


async def run(url: str, tasks: int, rate: float, history: str | None = None,
              metrics: bool = True) -> dict[str, float]:
    from qtui.core import App
    from qtui.tui.console import Console

    app = App("bench", broker=url)
    app.conf.update(console_max_tasks=max(tasks, 1000), console_history_file=history,
                    console_metrics=metrics, source="bench")
    console = Console(app, history=history is not None)
    start = multiprocessing.Event()
    publisher = multiprocessing.Process(target=publish, args=(url, tasks, rate, start))
    publisher.start()
    total = tasks * EVENTS_PER_TASK
    latencies: list[float] = []
    rss_before = rss_mb()
    async with console.run_test(size=(140, 40)) as pilot:
        writes = record_repaints(console)
        await pilot.press("3")
        from textual.widgets import DataTable
        table = console.screen.query_one(DataTable)
        handled = time_cursor_moves(table)
        deadline = time.monotonic() + 15
        while not console.model.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        base = console.model.events_seen
        start.set()
        while table.row_count < 2:  # a key on an empty table changes nothing on screen
            await asyncio.sleep(0.01)
        began = time.perf_counter()
        key = "down"
        finished_at = None
        publish_deadline = began + total / rate + 120
        while time.perf_counter() < publish_deadline:
            latency = await key_to_repaint(console, key, writes, handled)
            if latency is not None:
                latencies.append(latency)
            key = "up" if key == "down" else "down"
            if console.model.events_seen - base >= total:
                finished_at = time.perf_counter()
                break
            await asyncio.sleep(random.uniform(0.05, 0.6))  # a person, not a metronome
        applied = console.model.events_seen - base
        elapsed = (finished_at or time.perf_counter()) - began
        memory = rss_mb()
        # What the console's idle collector does a second after the last key (tui/collector.py):
        # a full collection, then the allocator's free memory back to the system.
        gc.collect()
        if console.collector.release is not None:
            console.collector.release()
        collected = rss_mb()
        in_memory = len(console.model.tasks)
        state_tasks = len(console.feed.state)
        console.feed.stop()
    publisher.join(30)
    print("slowest keys (ms):", [round(1000 * x) for x in sorted(latencies)[-6:]])
    latencies.sort()
    return {
        "events": applied, "seconds": elapsed, "rate": applied / elapsed,
        "target": rate, "lag": elapsed - total / rate,
        "keys": len(latencies),
        "p50_ms": 1000 * statistics.median(latencies),
        "p90_ms": 1000 * latencies[int(len(latencies) * 0.9)],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "max_ms": 1000 * latencies[-1],
        "rss_mb": memory, "rss_collected_mb": collected, "rss_start_mb": rss_before,
        "tasks_in_view": in_memory,
        "tasks_in_state": state_tasks,
    }


async def view_switches(url: str, tasks: int, rate: float = 300.0, switches: int = 40
                        ) -> dict[str, list[float]]:
    """Milliseconds from a number key to the new view's first repaint ("shown") and to the
    repaint after it redrew from the model ("current"), ``switches`` times."""
    from textual import events

    from qtui.core import App
    from qtui.tui.console import Console

    app = App("bench", broker=url)
    app.conf.update(console_max_tasks=max(tasks, 1000), source="bench")
    console = Console(app, history=False)
    start = multiprocessing.Event()
    publisher = multiprocessing.Process(target=publish, args=(url, tasks, rate * 50, start))
    publisher.start()
    shown: list[float] = []
    current: list[float] = []
    async with console.run_test(size=(200, 50)) as pilot:
        writes = record_repaints(console)
        redraws: list[tuple[float, type]] = []
        costs: dict[str, list[float]] = {}
        deadline = time.monotonic() + 15
        while not console.model.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        start.set()  # events sent before the console listens are lost
        while console.model.events_seen < tasks * EVENTS_PER_TASK * 0.9:
            await asyncio.sleep(0.2)  # the tasks first (publisher at 50x), then switch
        publisher.terminate()
        publisher.join()
        trickle = multiprocessing.Process(target=publish, args=(url, 10**6, rate, start))
        trickle.start()
        screens = {}
        for key in "2341":  # every view mounted once: what is measured is a switch
            await pilot.press(key)
            await pilot.pause(0.5)
            screens[key] = console.screen
        for screen in screens.values():
            def timed_refresh(original: Any = screen.refresh_view,
                              kind: type = type(screen),  # noqa: B008 - this screen's class
                              ) -> None:
                began = time.perf_counter()
                original()
                redraws.append((time.perf_counter(), kind))
                costs.setdefault(kind.__name__, []).append(1000 * (redraws[-1][0] - began))
            screen.refresh_view = timed_refresh  # type: ignore[method-assign]
        keys = "2341"
        for n in range(switches):
            key = keys[n % 4]
            await asyncio.sleep(random.uniform(0.5, 1.5))
            began = time.perf_counter()
            console.post_message(events.Key(key, key))
            target = screens[key]
            deadline = began + 10
            first = redrawn = None
            while time.perf_counter() < deadline and (first is None or redrawn is None):
                await asyncio.sleep(0.001)
                if console.screen is not target:
                    continue
                if first is None:
                    after = [w for w in writes if w > began]
                    first = after[0] if after else None
                drawn = [t for t, kind in redraws if t > began and kind is type(target)]
                if drawn:
                    after = [w for w in writes if w > drawn[0]]
                    redrawn = after[0] if after else None
            if first is not None and redrawn is not None:
                shown.append(1000 * (first - began))
                current.append(1000 * (redrawn - began))
        trickle.terminate()
        trickle.join()
        console.feed.stop()
    print("redraw (refresh_view) ms, median by view:",
          {name: round(statistics.median(values)) for name, values in costs.items()})
    return {"shown": shown, "current": current}


async def ui_only(tasks: int, rate: float, seconds: float = 30.0) -> dict[str, Any]:
    """The UI thread's own part of the live run, without a broker or an event thread: the
    console holds ``tasks`` tasks and is handed, every refresh interval (0.25 s), a snapshot of
    the tasks ``rate`` events a second would bring (a third of it new tasks, the oldest as many
    forgotten), while a key moves the cursor every 50-600 ms. Returns the key latencies (ms)
    and the thread CPU time (ms) of each data redraw of the tasks view, split into choosing and
    writing its rows (``page``) and Textual's measuring, layout and render that follow
    (``render``). CPU time moves less with the machine's load than wall time."""
    from textual.screen import Screen
    from textual.widgets import DataTable

    from qtui.core import App
    from qtui.core.state import TaskState
    from qtui.tui.console import Console
    from qtui.tui.rows import Snapshot, TaskRow
    from qtui.tui.views.tasks import TasksScreen

    began = time.time() - tasks / (rate / EVENTS_PER_TASK)

    def task(n: int) -> TaskRow:
        at = began + n / (rate / EVENTS_PER_TASK)
        return TaskRow(TaskState(f"{n:08x}-0000-4000-8000-{n:012d}", name=f"bench.task{n % 20}",
                                 state="SUCCESS", worker="bench@worker", received=at,
                                 started=at + 0.001, runtime=0.001, args=f"({n}, {n * 2})",
                                 kwargs="{}", timeline=(), updated=at))

    class Held(Console):
        def initial_snapshot(self) -> Snapshot:
            return Snapshot(tasks=tuple(task(n) for n in range(tasks)), connected=True)

    app = App("bench", broker="memory://")
    app.conf.update(console_max_tasks=tasks, source="bench")
    console = Held(app, start_feed=False, history=False)
    page_ms: list[float] = []
    render_ms: list[float] = []
    """Per redraw, the measuring, layout and render that followed it (until the next one)."""
    redraw = TasksScreen._redraw
    refresh_layout = Screen._refresh_layout
    on_idle = DataTable._on_idle

    def timed_redraw(screen: TasksScreen, *args: Any, **kwargs: Any) -> None:
        start = time.thread_time()
        redraw(screen, *args, **kwargs)
        page_ms.append(1000 * (time.thread_time() - start))
        render_ms.append(0.0)  # what Textual does for it comes next

    def timed_layout(screen: Screen[Any], *args: Any, **kwargs: Any) -> None:
        start = time.thread_time()
        refresh_layout(screen, *args, **kwargs)
        if render_ms:
            render_ms[-1] += 1000 * (time.thread_time() - start)

    async def timed_idle(table: DataTable[Any], event: Any) -> None:
        start = time.thread_time()
        await on_idle(table, event)
        if render_ms:
            render_ms[-1] += 1000 * (time.thread_time() - start)

    TasksScreen._redraw = timed_redraw  # type: ignore[method-assign]
    Screen._refresh_layout = timed_layout  # type: ignore[method-assign]
    DataTable._on_idle = timed_idle  # type: ignore[method-assign]
    latencies: list[float] = []
    try:
        async with console.run_test(size=(140, 40)) as pilot:
            writes = record_repaints(console)
            await pilot.press("3")
            await pilot.pause(0.5)
            handled = time_cursor_moves(console.screen.query_one(DataTable))
            page_ms.clear()
            render_ms.clear()
            per_snapshot = int(rate / EVENTS_PER_TASK * 0.25)
            sent = tasks

            async def feed() -> None:
                nonlocal sent
                while True:
                    console.post_message(console.SnapshotReady(Snapshot(
                        tasks=tuple(task(n) for n in range(sent, sent + per_snapshot)),
                        removed=tuple(task(n - tasks).id
                                      for n in range(sent, sent + per_snapshot)),
                        connected=True)))
                    sent += per_snapshot
                    await asyncio.sleep(0.25)
            feeding = asyncio.create_task(feed())
            end = time.perf_counter() + seconds
            key = "down"
            while time.perf_counter() < end:
                latency = await key_to_repaint(console, key, writes, handled)
                if latency is not None:
                    latencies.append(1000 * latency)
                key = "up" if key == "down" else "down"
                await asyncio.sleep(random.uniform(0.05, 0.6))
            feeding.cancel()
    finally:
        TasksScreen._redraw = redraw  # type: ignore[method-assign]
        Screen._refresh_layout = refresh_layout  # type: ignore[method-assign]
        DataTable._on_idle = on_idle  # type: ignore[method-assign]
    return {"keys": sorted(latencies), "page": page_ms, "render": render_ms}


def run_with_history(url: str, tasks: int, rate: float, metrics: bool) -> dict[str, float]:
    """:func:`run` with a fresh history file, metrics on or off."""
    with tempfile.TemporaryDirectory() as directory:
        return asyncio.run(run(url, tasks, rate, os.path.join(directory, "history.sqlite"),
                               metrics))


def history_size(tasks: int, names: int = 20) -> dict[str, float]:
    """Megabytes of the history file after a day of ``tasks`` tasks, in all and per table."""
    import sqlite3

    from qtui.core import App
    from qtui.tui.feed import Feed
    from qtui.tui.history import History

    rng = random.Random(18)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "history.sqlite")
        app = App("bench", broker="memory://")
        feed = Feed(app, history=History(path, cluster="bench"))
        end = time.time()
        began = time.perf_counter()
        batch: list[dict[str, Any]] = []
        for n in range(tasks):
            at = end - 86400 + 86400 * n / tasks
            task_id = str(uuid.uuid4())
            runtime = rng.lognormvariate(-4, 1.5)
            common = {"uuid": task_id, "hostname": f"bench@worker{n % 4}", "utcoffset": 0,
                      "pid": 1, "clock": n}
            final = ("task-failed", {"exception": "ValueError('boom')"}) if n % 50 == 0 \
                else ("task-succeeded", {"result": str(n * 3), "runtime": runtime})
            for kind, when, fields in (
                    ("task-received", at, {"name": f"bench.task{n % names}", "queue": "celery",
                                           "args": f"({n}, {n * 2})", "kwargs": "{}",
                                           "root_id": task_id}),
                    ("task-started", at + 0.002, {}),
                    (final[0], at + 0.002 + runtime, final[1])):
                batch.append({**common, "type": kind, "timestamp": when, "local_received": when,
                              **fields})
            if len(batch) >= 3000:
                feed.ingest(batch)
                batch = []
        feed.ingest(batch)
        took = time.perf_counter() - began
        history = feed.history
        assert history is not None

        def measure() -> tuple[dict[str, int], int]:
            with sqlite3.connect(path) as db:
                return (dict(db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")),
                        db.execute("SELECT count(*) FROM metrics").fetchone()[0])
        tables, rows = measure()
        size = os.path.getsize(path)
        history.clock = lambda: end + 3 * 86400  # the day is past console_metrics_hours
        history.trim_metrics()
        coarse, coarse_rows = measure()
        history.close()
        mb = 1024 * 1024
        return {"file_mb": size / mb, "metrics_mb": tables["metrics"] / mb,
                "tasks_mb": (tables["tasks"] + tables.get("tasks_age", 0)) / mb,
                "metrics_rows": rows, "coarse_mb": coarse["metrics"] / mb,
                "coarse_rows": coarse_rows, "events_per_s": 3 * tasks / took}


def data_layer(tasks: int) -> dict[str, float]:
    """Resident megabytes of the console's data layer (feed state, history, metrics and model)
    holding ``tasks`` of the live run's tasks, and events applied per second."""
    import json

    from qtui.core import App
    from qtui.tui.feed import Feed
    from qtui.tui.history import History
    from qtui.tui.idle_gc import malloc_trim
    from qtui.tui.model import ConsoleModel

    with tempfile.TemporaryDirectory() as directory:
        app = App("bench", broker="memory://")
        app.conf.update(console_max_tasks=tasks, console_metrics=True)
        feed = Feed(app, max_tasks=tasks, history=History(os.path.join(directory, "h.sqlite"),
                                                          cluster="bench"))
        model = ConsoleModel(tasks)
        gc.collect()
        start = rss_mb()
        began = time.perf_counter()
        now = time.time()
        batch: list[dict[str, Any]] = []
        for n in range(tasks):
            task_id = str(uuid.uuid4())
            common = {"uuid": task_id, "hostname": "bench@worker", "utcoffset": 0, "pid": 1}
            for step, (kind, fields) in enumerate((
                    ("task-received", {"name": f"bench.task{n % 20}", "args": f"({n}, {n * 2})",
                                       "kwargs": "{}", "retries": 0, "eta": None,
                                       "expires": None, "root_id": task_id,
                                       "parent_id": None}),
                    ("task-started", {}),
                    ("task-succeeded", {"result": str(n * 3), "runtime": 0.001}))):
                at = now + n / 10_000 + step / 1000
                batch.append({**common, "type": kind, "clock": 3 * n + step, "timestamp": at,
                              "local_received": at, **fields})
            if len(batch) >= BATCH * EVENTS_PER_TASK or n == tasks - 1:
                model.apply(feed.ingest(json.loads(json.dumps(batch))))
                batch = []
        took = time.perf_counter() - began
        gc.collect()
        trim = malloc_trim()
        if trim is not None:
            trim()
        resident = rss_mb()
        with open("/proc/self/status") as f:
            peak = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
        assert len(model.tasks) == len(feed.state) == tasks
        feed.stop()
        if feed.history is not None:
            feed.history.close()
    return {"start_mb": start, "rss_mb": resident, "peak_mb": peak,
            "events_per_s": EVENTS_PER_TASK * tasks / took}


def quit_times(url: str, runs: int = 5) -> list[float]:
    """Seconds from ``q`` to the exit of a real console process in a pseudo-terminal (80x24),
    with a live worker on the same broker (so the console's poll thread is asking it)."""
    import fcntl
    import pty
    import select
    import signal
    import struct
    import subprocess
    import sys
    import termios

    queue = f"bench-quit-{os.getpid()}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "qtui.workers.cli", "-A", "qtui.tui.demo_tasks", "-P", "threads",
         "-c", "2", "-Q", queue, "-n", f"{queue}@%h", "-b", url, "--loglevel", "WARNING"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times = []
    try:
        time.sleep(3)
        for _ in range(runs):
            pid, fd = pty.fork()
            if pid == 0:
                os.environ.pop("COLUMNS", None)
                os.environ.pop("LINES", None)
                os.environ["TERM"] = "xterm-256color"
                os.execv(sys.executable, [sys.executable, "-m", "qtui.tui.cli", "-b", url,
                                          "--no-history"])
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
            seen = b""
            deadline = time.monotonic() + 30
            while b"online" not in seen and time.monotonic() < deadline:
                if select.select([fd], [], [], 0.2)[0]:
                    seen = (seen + os.read(fd, 65536))[-200_000:]
            time.sleep(random.uniform(2.0, 4.0))  # the poll thread is somewhere in its cycle
            began = time.perf_counter()
            os.write(fd, b"q")
            while True:
                if select.select([fd], [], [], 0.05)[0]:
                    try:
                        os.read(fd, 65536)
                    except OSError:
                        pass
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.perf_counter() - began > 30:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
            times.append(time.perf_counter() - began)
            os.close(fd)
    finally:
        worker.terminate()
        worker.wait(15)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=10_000, help="events per second")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--history", action="store_true",
                        help="with the console's history file on (a fresh temporary file)")
    parser.add_argument("--views", action="store_true", help="measure view switches")
    parser.add_argument("--quit", action="store_true", help="measure quitting")
    parser.add_argument("--metrics", action="store_true",
                        help="the ingest with the history on, metrics off then on")
    parser.add_argument("--history-size", action="store_true",
                        help="what a day of --tasks tasks adds to the history file")
    parser.add_argument("--data-layer", action="store_true",
                        help="the data layer's memory at --tasks tasks, without a broker")
    parser.add_argument("--ui-only", action="store_true",
                        help="the UI thread's part alone: snapshots made here, no broker")
    args = parser.parse_args()
    if args.ui_only:
        ui = asyncio.run(ui_only(args.tasks, args.rate))
        keys = ui["keys"]
        print(f"key-to-repaint, UI thread alone: p50 {statistics.median(keys):.1f} ms, "
              f"p90 {keys[int(len(keys) * 0.9)]:.1f} ms, p99 "
              f"{keys[min(len(keys) - 1, int(len(keys) * 0.99))]:.1f} ms, max {keys[-1]:.1f} ms "
              f"over {len(keys)} keys")
        for part in ("page", "render"):
            values = sorted(ui[part])
            print(f"data redraw of the tasks view, {part}: CPU median "
                  f"{statistics.median(values):.1f} ms, max {values[-1]:.1f} ms "
                  f"over {len(values)} redraws")
        return
    if args.data_layer:
        found = data_layer(args.tasks)
        print(f"data layer with {args.tasks:,} tasks: {found['rss_mb']:.0f} MB resident after a "
              f"full collection and trim (started at {found['start_mb']:.0f} MB), peak "
              f"{found['peak_mb']:.0f} MB; applied {found['events_per_s']:,.0f} events/s")
        return
    if args.history_size:
        size = history_size(args.tasks)
        print(f"history file after a day of {args.tasks:,} tasks: {size['file_mb']:.1f} MB; "
              f"metrics {size['metrics_mb']:.2f} MB ({size['metrics_rows']:,} rows; in "
              f"ten-minute rows {size['coarse_mb']:.2f} MB, {size['coarse_rows']:,} rows), tasks "
              f"{size['tasks_mb']:.1f} MB (at most console_max_tasks); ingested "
              f"{size['events_per_s']:,.0f} events/s")
        return
    redis.Redis.from_url(args.redis).flushdb()
    if args.views:
        found = asyncio.run(view_switches(args.redis, min(args.tasks, 20_000)))
        for name, values in found.items():
            values.sort()
            print(f"view switch, key to {name} view: p50 {statistics.median(values):.0f} ms, "
                  f"p90 {values[int(len(values) * 0.9)]:.0f} ms, max {values[-1]:.0f} ms "
                  f"over {len(values)} switches")
        return
    if args.quit:
        times = quit_times(args.redis)
        print("quit, q to process exit (s):", " ".join(f"{t:.2f}" for t in times))
        return
    if args.metrics:
        from concurrent.futures import ProcessPoolExecutor
        for metrics in (False, True):
            redis.Redis.from_url(args.redis).flushdb()
            # Each in a process of its own: the memory of one is not the other's.
            with ProcessPoolExecutor(1, multiprocessing.get_context("spawn")) as pool:
                found = pool.submit(run_with_history, args.redis, args.tasks, args.rate,
                                    metrics).result()
            print(f"metrics {'on' if metrics else 'off'}: {found['rate']:,.0f} events/s "
                  f"({found['lag']:+.1f}s after the publisher's schedule), "
                  f"{found['rss_mb']:.0f} MB ({found['rss_collected_mb']:.0f} MB collected), "
                  f"key p99 {found['p99_ms']:.0f} ms", flush=True)
        return
    with tempfile.TemporaryDirectory() as directory:
        history = os.path.join(directory, "history.sqlite") if args.history else None
        result = asyncio.run(run(args.redis, args.tasks, args.rate, history))
    print(f"ingested {result['events']:,} events in {result['seconds']:.1f}s: "
          f"{result['rate']:,.0f} events/s (target {result['target']:,.0f}/s, "
          f"finished {result['lag']:+.1f}s after the publisher's schedule)")
    print(f"key-to-repaint while ingesting: p50 {result['p50_ms']:.1f} ms, "
          f"p90 {result['p90_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
          f"max {result['max_ms']:.1f} ms over {result['keys']} keys")
    print(f"memory: {result['rss_mb']:.0f} MB resident with {result['tasks_in_state']:,} tasks "
          f"in state and {result['tasks_in_view']:,} in the console model "
          f"(started at {result['rss_start_mb']:.0f} MB); pid {os.getpid()}")
    print(f"memory after a full collection (the console's, once keys pause): "
          f"{result['rss_collected_mb']:.0f} MB")


if __name__ == "__main__":
    main()
