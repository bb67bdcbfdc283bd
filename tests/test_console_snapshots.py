"""The layout of each view, compared with the accepted SVG snapshots in
``tests/__snapshots__/`` (update them with ``--snapshot-update`` after a deliberate change, and
look at the new SVGs before committing them)."""

from __future__ import annotations

import pytest

from .console_data import FixedConsole

SIZE = (140, 36)


pytestmark = pytest.mark.usefixtures("utc")  # times shown the same on every machine


def test_overview_layout(snap_compare):
    assert snap_compare(FixedConsole(), terminal_size=SIZE)


def test_workers_layout(snap_compare):
    assert snap_compare(FixedConsole(), press=["2"], terminal_size=SIZE)


def test_tasks_layout(snap_compare):
    assert snap_compare(FixedConsole(), press=["3"], terminal_size=SIZE)


def test_tasks_filtered_layout(snap_compare):
    assert snap_compare(FixedConsole(), press=["3", "slash", *"state:FAILURE,RETRY", "enter"],
                        terminal_size=SIZE)


def test_task_detail_layout(snap_compare):
    assert snap_compare(FixedConsole(), press=["colon", *"tasks args:19.99", "enter", "enter"],
                        terminal_size=SIZE)


def test_queues_layout(snap_compare):
    assert snap_compare(FixedConsole(), press=["4"], terminal_size=SIZE)


def test_help_layout(snap_compare):
    assert snap_compare(FixedConsole(), press=["3", "question_mark"], terminal_size=(140, 60))


def test_read_only_tasks_layout(snap_compare):
    assert snap_compare(FixedConsole(read_only=True), press=["3"], terminal_size=SIZE)
