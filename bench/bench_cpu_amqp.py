"""CPU per task of a qtui worker draining RabbitMQ, and of RabbitMQ itself: the AMQP companion of
:mod:`bench.bench_cpu`.

The queue (a fresh one) is filled first, without publisher confirms; then the worker starts, and
from the first message it takes until the queue is empty the bench counts the CPU time of the
worker's process tree (``/proc``, children included) and of the broker's process (RabbitMQ's
beam.smp, found by the port it listens on when it runs on this machine; it serves everyone on a
shared node, so its figure is only as quiet as the node). ``--profile FILE`` runs the worker
under cProfile (a pstats file); ``--strace FILE`` counts its system calls (``strace -f -c``, the
whole run: startup included), which repeat from run to run whatever the machine's load. With
either, the worker's CPU time would include their own overhead: it is not printed.

    python -m bench.bench_cpu_amqp solo --tasks 5000
    python -m bench.bench_cpu_amqp solo --tasks 5000 --events off --strace /tmp/solo.strace
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

from kombu import Connection

from bench.bench_cpu import listening_pid, process_cpu, tree_cpu
from bench.bench_drain import stop
from qtui.core.delayed import DUE_QUEUE

TASKS = """
from qtui.core import App

app = App("benchtasks", broker="{url}", backend=None, task_default_queue="{queue}",
          broker_transport_options={{"confirm_publish": False}})

@app.task(name="benchtasks.noop", ignore_result=True)
def noop():
    pass

def fill(count):
    for _ in range(count):
        noop.delay()
    app.close()
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pool", choices=("solo", "threads", "prefork"))
    parser.add_argument("-c", "--concurrency")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--events", choices=("on", "off"), default="on")
    parser.add_argument("--profile", metavar="FILE", help="run the worker under cProfile")
    parser.add_argument("--strace", metavar="FILE", help="count the worker's system calls")
    args = parser.parse_args(argv)
    queue = f"bench-cpu-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="qtui-bench-cpu-") as tmp, \
            Connection(args.amqp) as conn:
        env = {**os.environ, "PYTHONPATH": tmp}
        Path(tmp, "cpu_tasks.py").write_text(textwrap.dedent(TASKS.format(url=args.amqp,
                                                                          queue=queue)))
        subprocess.run([sys.executable, "-c", f"import cpu_tasks; cpu_tasks.fill({args.tasks})"],
                       cwd=tmp, env=env, check=True)
        channel = conn.channel()

        def waiting() -> int:
            return int(channel.queue_declare(queue, passive=True).message_count)

        command = [sys.executable]
        if args.profile:
            command += ["-m", "cProfile", "-o", os.path.abspath(args.profile)]
        command += ["-m", "qtui.workers.cli", "-A", "cpu_tasks", "-l", "WARNING", "-Q", queue,
                    "-n", f"cpu-{uuid.uuid4().hex[:6]}@%h", "-P", args.pool]
        if args.concurrency:
            command += ["-c", args.concurrency]
        if args.events == "off":
            command.append("--without-events")
        if args.strace:
            command = ["strace", "-f", "-c", "-o", os.path.abspath(args.strace), *command]
        try:
            deadline = time.monotonic() + 60
            while waiting() < args.tasks and time.monotonic() < deadline:
                time.sleep(0.05)  # RabbitMQ counts what it routed, a moment late
            host, port = conn.connection.transport.sock.getpeername()[:2]
            broker = listening_pid(port) if ipaddress.ip_address(host).is_loopback else None
            with Path(tmp, "worker.log").open("w") as log:
                worker = subprocess.Popen(command, cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
                                          env=env, start_new_session=True)
            try:
                while waiting() >= args.tasks:
                    if worker.poll() is not None or time.monotonic() > deadline + 120:
                        raise RuntimeError(Path(tmp, "worker.log").read_text()[-3000:])
                    time.sleep(0.001)
                start = time.perf_counter()
                worker_before = tree_cpu(worker.pid)
                broker_before = process_cpu(broker) if broker else 0.0
                while waiting():
                    time.sleep(0.005)
                seconds = time.perf_counter() - start
                worker_cpu = tree_cpu(worker.pid) - worker_before
                broker_cpu = process_cpu(broker) - broker_before if broker else None
            finally:
                stop(worker, 60)
        finally:
            for name in (queue, DUE_QUEUE.format(queue=queue)):  # the worker declared the due one
                channel.queue_delete(name)
            channel.exchange_delete(queue)
    n = args.tasks
    label = args.pool + (f" -c {args.concurrency}" if args.concurrency else "")
    traced = args.strace or args.profile
    print(f"{label}, events {args.events}: worker "
          + ("- (traced)" if traced else f"{1e6 * worker_cpu / n:.0f} us/task") + ", RabbitMQ "
          + ("-" if broker_cpu is None else f"{1e6 * broker_cpu / n:.0f} us/task")
          + f", drain {n / seconds:,.0f}/s, load {os.getloadavg()[0]:.1f}")
    if args.strace:
        for line in Path(args.strace).read_text().splitlines():
            if line.split()[-1:] and line.split()[-1] in ("sendto", "recvfrom", "ioctl", "poll",
                                                          "total"):
                calls = int(line.split()[3])
                print(f"  {line.split()[-1]}: {calls:,} calls ({calls / n:.2f}/task)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
