"""CPU per task of a qtui worker draining Redis, and of Redis itself: steadier than drain rates on
a shared machine, where the rates move by a third from run to run.

The worker starts on an empty queue and waits idle; the no-op tasks are staged on a list of their
own and RENAMEd onto the queue in one step; from then until the queue and ``unacked`` are empty
the bench counts the CPU time of the worker's process tree (``/proc`` utime + stime, children
included) and of Redis (``INFO cpu``), and the commands Redis ran (``INFO commandstats``, those
inside scripts included). Use a Redis of the bench's own: it is flushed, and its statistics
reset. ``--callgrind`` runs the worker under valgrind's callgrind, instrumented only during the
drain: instruction counts repeat from run to run whatever the machine's load (the worker runs
about 50 times slower, so clock-driven work weighs more). ``--redis-callgrind FILE`` counts Redis's
instructions over the same window, for a Redis started under callgrind (its process id is read
from ``INFO server``):

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/rcg \
        redis-server --port 6392 --save "" --appendonly no
    python -m bench.bench_cpu solo --tasks 1000 --redis redis://127.0.0.1:6392/0 \
        --redis-callgrind /tmp/rcg

    redis-server --port 6391 --save "" --appendonly no --daemonize yes
    python -m bench.bench_cpu solo --tasks 3000 --redis redis://127.0.0.1:6391/0
    python -m bench.bench_cpu prefork -c 2 --tasks 3000 --redis redis://127.0.0.1:6391/0
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import redis

from bench.bench_drain import fill, stop

QUEUE = "bench-cpu"
TASKS = """
from qtui.core import App

app = App("benchtasks", broker="{url}", backend=None, task_default_queue="{queue}",
          task_acks_late={acks_late})

@app.task(name="benchtasks.noop", ignore_result=True)
def noop():
    pass
"""
#: What the bench itself sends Redis while it watches: left out of the command counts.
OWN_COMMANDS = {"llen", "hlen", "info", "config|resetstat", "rename", "client|list"}


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and every process below it (their waited-for children too)."""
    children: dict[int, list[tuple[int, list[str]]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        children.setdefault(int(fields[1]), []).append((int(entry), fields))
    own = Path(f"/proc/{root}/stat").read_text().rsplit(")", 1)[1].split()
    ticks, todo = sum(int(x) for x in own[11:15]), [root]
    while todo:
        for pid, fields in children.get(todo.pop(), []):
            ticks += sum(int(x) for x in fields[11:15])
            todo.append(pid)
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` alone (the worker's main process, without its pool children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:13]) / os.sysconf("SC_CLK_TCK")


def main_thread_schedule(pid: int) -> tuple[int, int, int]:
    """The scheduler's account of the main thread of ``pid`` (``/proc/PID/schedstat``):
    nanoseconds on a CPU, nanoseconds runnable but waiting for one, timeslices run. The wait
    is what a loaded machine adds to each wake-up of a thread that all tasks pass through."""
    on_cpu, waiting, slices = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(on_cpu), int(waiting), int(slices)


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def process_cpu(pid: int) -> float:
    """CPU seconds of the one process ``pid`` (a broker's: RabbitMQ's beam.smp), threads
    included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:13]) / os.sysconf("SC_CLK_TCK")


def listening_pid(port: int) -> int | None:
    """The process listening on local TCP ``port`` (the broker serving it), or None when it
    cannot be seen (another user's process without the rights to read its sockets)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") in inodes
                   for fd in os.listdir(f"/proc/{entry}/fd")):
                return int(entry)
        except OSError:
            continue  # exited meanwhile, or not ours to read
    return None


def callgrind(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def dumped_instructions(path: Path) -> int:
    """The instruction count of a callgrind dump."""
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise ValueError(f"no totals in {path}")


def worker_options(parser: argparse.ArgumentParser) -> None:
    """The options that say which worker drains: pool, concurrency, tasks, events, acks,
    callgrind (this bench's and :mod:`bench.bench_cpu_sqlite`'s)."""
    parser.add_argument("pool", choices=("solo", "threads", "prefork"))
    parser.add_argument("-c", "--concurrency")
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--events", choices=("on", "off"), default="on")
    parser.add_argument("--acks-early", action="store_true", help="task_acks_late=False")
    parser.add_argument("--callgrind", metavar="FILE",
                        help="run the worker under callgrind, its drain dumped to FILE.1")


def worker_command(args: argparse.Namespace, url: str, folder: str,
                   python: tuple[str, ...] = ()) -> list[str]:
    """Write the tasks module on ``url`` into ``folder`` and return the command of the worker
    that :func:`worker_options` describe (``python``: options for the interpreter)."""
    Path(folder, "cpu_tasks.py").write_text(textwrap.dedent(TASKS.format(
        url=url, queue=QUEUE, acks_late=not args.acks_early)))
    command = [sys.executable, *python, "-m", "qtui.workers.cli", "-A", "cpu_tasks",
               "-l", "WARNING", "-Q", QUEUE, "-n", f"cpu-{uuid.uuid4().hex[:6]}@%h",
               "-P", args.pool]
    if args.concurrency:
        command += ["-c", args.concurrency]
    if args.events == "off":
        command.append("--without-events")
    if args.callgrind:
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={args.callgrind}", *command]
    return command


def print_worker_details(args: argparse.Namespace, parent_cpu: float) -> None:
    """What follows the summary line: the prefork main process's own CPU, the instructions."""
    n = args.tasks
    if args.pool == "prefork":
        print(f"  worker main process alone (without its children): "
              f"{1e6 * parent_cpu / n:.0f} us/task")
    if args.callgrind:
        print(f"  callgrind: {dumped_instructions(Path(f'{args.callgrind}.1')) / n:,.0f} "
              f"instructions/task")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    worker_options(parser)
    parser.add_argument("--redis", default="redis://127.0.0.1:6391/0",
                        help="a Redis the bench may flush (a private redis-server)")
    parser.add_argument("--redis-callgrind", metavar="FILE",
                        help="Redis runs under callgrind with --callgrind-out-file=FILE: count "
                             "its instructions during the drain")
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(args.redis)
    client.flushall()
    fill(args.redis, args.tasks, QUEUE, onto="staging")
    with tempfile.TemporaryDirectory(prefix="qtui-bench-cpu-") as tmp:
        command = worker_command(args, args.redis, tmp)
        with Path(tmp, "worker.log").open("w") as log:
            worker = subprocess.Popen(command, cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
                                      env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                          [tmp, *filter(None, [os.environ.get("PYTHONPATH")])])},
                                      start_new_session=True)
        try:
            deadline = time.monotonic() + 600
            while not any(c.get("cmd") in ("brpop", "blmove", "brpoplpush")
                          for c in client.client_list()):  # idle: waiting for a message
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(Path(tmp, "worker.log").read_text()[-3000:])
                time.sleep(0.05)
            time.sleep(1.0)
            if args.callgrind:
                callgrind("-i", "on", str(worker.pid))
            redis_pid = str(client.info("server")["process_id"])
            if args.redis_callgrind:  # counts from zero: the dumps of earlier runs are not
                callgrind("-i", "on", redis_pid)  # subtracted reliably after "-i off"
                callgrind("--zero", redis_pid)
            client.config_resetstat()
            worker_before, redis_before = tree_cpu(worker.pid), redis_cpu(client)
            parent_before = own_cpu(worker.pid)
            schedule_before = main_thread_schedule(worker.pid)
            start = time.perf_counter()
            client.rename("staging", QUEUE)
            while client.llen(QUEUE) or client.hlen("unacked"):
                time.sleep(0.01)
            seconds = time.perf_counter() - start
            worker_cpu = tree_cpu(worker.pid) - worker_before
            parent_cpu = own_cpu(worker.pid) - parent_before
            on_cpu, waiting, slices = (after - before for after, before in zip(
                main_thread_schedule(worker.pid), schedule_before, strict=True))
            redis_used = redis_cpu(client) - redis_before
            if args.callgrind:
                callgrind("--dump=drain", str(worker.pid))
            if args.redis_callgrind:
                callgrind("--dump=drain", redis_pid)
                callgrind("-i", "off", redis_pid)
            stats = client.info("commandstats")
        finally:
            stop(worker, 60)
    n = args.tasks
    calls = {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()}
    calls = {name: count for name, count in calls.items() if name not in OWN_COMMANDS}
    label = args.pool + (f" -c {args.concurrency}" if args.concurrency else "")
    print(f"{label}: worker {1e6 * worker_cpu / n:.0f} us/task, Redis {1e6 * redis_used / n:.0f} "
          f"us/task, drain {n / seconds:,.0f}/s, commands run {sum(calls.values()) / n:.2f}/task "
          f"(scripts {calls.get('evalsha', 0) / n:.2f}), load {os.getloadavg()[0]:.1f}")
    print("  per task:", ", ".join(f"{name} {count / n:.2f}"
                                   for name, count in sorted(calls.items()) if count / n >= 0.01))
    print_worker_details(args, parent_cpu)
    print(f"  worker main thread: on a CPU {on_cpu / 1e3 / n:.0f} us/task, runnable and waiting "
          f"for a CPU {waiting / 1e3 / n:.0f} us/task, {slices / n:.2f} timeslices/task")
    if args.redis_callgrind:
        out = Path(args.redis_callgrind)
        dump = max(out.parent.glob(f"{out.name}.*"), key=lambda path: path.stat().st_mtime)
        print(f"  Redis callgrind: {dumped_instructions(dump) / n:,.0f} instructions/task")
    return 0


if __name__ == "__main__":
    sys.exit(main())
