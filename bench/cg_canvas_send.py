"""The client's cost of canvas sends with nothing put on a broker (``sending.send`` replaced),
for instruction counts under callgrind: ``none`` is the setup alone, to subtract from
``group`` (5 groups of 1,000 members) and ``signature`` (5,000 ``sig.apply_async()``).

    PYTHONHASHSEED=0 valgrind --tool=callgrind python -m bench.cg_canvas_send signature
"""

from __future__ import annotations

import sys

from qtui.core import App, group, sending


def main(way: str) -> None:
    sending.send = lambda _app, batch, *_: None  # type: ignore[assignment]
    app = App("cg", broker="memory://", backend=None, task_default_queue="cg")

    @app.task(name="tasks.add", ignore_result=True)
    def add(x: int, y: int = 0) -> int:
        return x + y

    members = [add.s(i) for i in range(1000)]
    group(members[:10]).apply_async()  # warm: plans, fitted argument shapes
    members[0].apply_async()
    for _ in range(5):
        if way == "group":
            group(members).apply_async()
        elif way == "signature":
            for sig in members:
                sig.apply_async()


if __name__ == "__main__":
    main(sys.argv[1])
