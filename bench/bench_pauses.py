"""What keeping the pauses in a RabbitMQ stream costs (issue 16, item 5): reading the pause set
(each worker connect, each Queues poll), a pause plus a resume, and a Queues poll of named
queues with and without reading the pauses, interleaved.

The stream is one of the bench's own (a unique name, deleted at the end), so the cluster's
``qtui.paused`` is never touched; the reads are timed with 1 record in the stream and again
after ``--records`` more, to show a read does not grow with the log.

    python -m bench.bench_pauses [--broker amqp://guest:guest@127.0.0.1:5672//]
                                 [--repeat 50] [--records 1000] [--queues 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from kombu import Connection

from qtui.core import App
from qtui.core.brokers.amqp.pauses import PauseStream
from qtui.core.brokers.amqp.queues import AmqpQueues
from qtui.core.pauses import Pause, PauseUnsupported
from qtui.core.queues import inspector_for


def timings(call: Callable[[], Any], repeat: int) -> list[float]:
    """Seconds each of ``repeat`` calls took."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def spread(times: list[float]) -> str:
    """Median and range, in milliseconds."""
    return (f"median {statistics.median(times) * 1000:.1f} ms "
            f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f})")


def no_pauses(self: AmqpQueues) -> dict[str, Pause]:
    """The poll as it was before RabbitMQ kept pauses: none are read."""
    raise PauseUnsupported("not read")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--queues", type=int, default=20)
    args = parser.parse_args()
    token = uuid.uuid4().hex[:8]
    name = f"bench-paused-{token}"
    with Connection(args.broker) as conn:
        # Segments large enough never to roll here: the bench measures reads of a long log, not
        # truncation (and a stream deleted just after a roll crashed RabbitMQ 3.10's retention).
        stream = PauseStream(conn, name, max_bytes=20_000_000, segment_bytes=10_000_000)
        try:
            stream.change(lambda pauses: {"q": Pause("q", time.time(), "bench")})
            print(f"read, 1 record: {spread(timings(stream.read, args.repeat))}")
            for n in range(args.records):
                stream.change(lambda pauses, n=n: {**pauses, "q": Pause("q", float(n), "b")})
            print(f"read, {args.records + 1} records: "
                  f"{spread(timings(stream.read, args.repeat))}")

            def pause_and_resume() -> None:
                stream.change(lambda pauses: {**pauses, "r": Pause("r", 0.0, "bench")})
                stream.change(lambda pauses: {k: v for k, v in pauses.items() if k != "r"})
            print(f"pause + resume (two locked appends): "
                  f"{spread(timings(pause_and_resume, args.repeat))}")
            poll_interleaved(args.broker, name, args.queues, args.repeat)
        finally:
            stream.delete()


def poll_interleaved(broker: str, stream: str, queues: int, repeat: int) -> None:
    """A Queues poll of ``queues`` named queues, reading the pauses or not, turn about."""
    app = App("bench", broker=broker)
    names = [f"bench-pq-{n}-{uuid.uuid4().hex[:6]}" for n in range(queues)]
    reading: list[float] = []
    skipping: list[float] = []
    kept, AmqpQueues.pause_stream = AmqpQueues.pause_stream, stream
    try:
        for _ in range(repeat):
            for times, pauses in ((reading, AmqpQueues.pauses), (skipping, no_pauses)):
                with inspector_for(app) as inspector:
                    inspector.pauses = pauses.__get__(inspector)  # type: ignore[method-assign]
                    start = time.perf_counter()
                    inspector.poll(names)
                    times.append(time.perf_counter() - start)
    finally:
        AmqpQueues.pause_stream = kept
        app.close()
    print(f"poll of {queues} named queues, reading the pauses: {spread(reading)}")
    print(f"poll of {queues} named queues, not reading them:   {spread(skipping)}")


if __name__ == "__main__":
    main()
