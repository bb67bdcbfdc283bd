"""Bulk sends hold the cyclic garbage collector off while they build and send their calls
(core/gcpause.py), and leave it as they found it."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qtui.core import App, gcpause
from qtui.core.canvas import chunks, group

CALLS = 3000


@pytest.fixture
def noop(tmp_path: Path) -> Iterator[Any]:
    app = App("gcpause", broker=f"sqlite://{tmp_path / 'broker.sqlite'}", backend=None,
              task_default_queue="gcpause")

    @app.task(name="gcpause.noop", ignore_result=True)
    def noop(i: Any) -> None:
        """Never run: only sent."""

    yield noop
    app.close()


@pytest.fixture
def passes() -> Iterator[list[int]]:
    """The collector's passes from here on: one item per pass started."""
    started: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.collect()
    gc.callbacks.append(count)
    yield started
    gc.callbacks.remove(count)


@pytest.mark.parametrize("way", ["send_many", "group", "chunks"])
def test_no_collection_runs_while_a_bulk_send_builds_and_sends_its_calls(
        noop: Any, passes: list[int], way: str):
    parts = [(i,) for i in range(CALLS)]
    passes.clear()  # the parts above are the caller's own
    if way == "send_many":
        noop.app.send_many(noop.s(i) for i in range(CALLS))
    elif way == "group":
        group(noop.s(i) for i in range(CALLS)).apply_async()
    else:
        chunks(noop.s(), parts, 10).apply_async()
    # at most the pass the allocations made meanwhile set off once it is on again, after each
    # step of the send (a group is built, then sent)
    assert len(passes) <= 2
    assert gc.isenabled()


def test_the_collector_is_on_again_after_a_bulk_send_that_failed(noop: Any):
    with pytest.raises(TypeError, match="cannot be serialized"):
        noop.app.send_many([noop.s(1), noop.s(object())])
    assert gc.isenabled()


def test_a_collector_the_program_turned_off_stays_off_after_a_bulk_send(noop: Any):
    gc.disable()
    try:
        noop.app.send_many(noop.s(i) for i in range(10))
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_overlapping_pauses_turn_the_collector_on_when_the_last_one_ends():
    first, second = gcpause.paused(), gcpause.paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # another thread's send ends first
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_child_forked_during_a_pause_collects_again():
    with gcpause.paused():
        pid = os.fork()
        if pid == 0:  # the child: the send that paused it is its parent's
            os._exit(0 if gc.isenabled() else 1)
        _, status = os.waitpid(pid, 0)
        assert not gc.isenabled()
    assert os.waitstatus_to_exitcode(status) == 0
    assert gc.isenabled()
