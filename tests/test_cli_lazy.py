"""The ``qtui`` command imports only what the chosen subcommand needs, and says the same."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qtui.tui.cli import SUBCOMMANDS, build_parser

from .processes import running, write_module

TASKS = """
import os

from qtui.core import App

app = App("tasks", broker=os.environ["QTUI_TEST_BROKER"])


@app.task
def add(x, y):
    return x + y
"""

#: The modules of every subcommand but the worker's, and the console's toolkit.
NOT_THE_WORKERS = sorted({c.declared_by.partition(":")[0] for c in SUBCOMMANDS
                          if c.name != "run-worker"} | {"textual", "qtui.tui.console"})


def help_of(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*argv, "--help"])
    assert exit_.value.code == 0
    return out.getvalue()


def imported(importtime_output: str) -> set[str]:
    """The modules ``python -X importtime`` reported importing (by an import statement: the
    module ``importlib.import_module`` itself loads is not reported, what it imports is)."""
    return set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", importtime_output,
                          re.MULTILINE))


def test_qtui_help_lists_every_subcommand_with_its_help(monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    text = help_of()
    for command in SUBCOMMANDS:
        assert re.search(rf"^ +{re.escape(command.name)} +{re.escape(command.help)}$", text,
                         re.MULTILINE), command.name


@pytest.mark.parametrize("command", [c.name for c in SUBCOMMANDS])
def test_each_subcommand_has_its_own_help(command):
    text = help_of(command)
    assert text.startswith(f"usage: qtui {command} ")
    assert "\noptions:\n" in text


def run_importing(cwd: Path, *argv: str) -> tuple[str, set[str]]:
    """The real ``qtui`` command's output, and the modules it imported."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "qtui.tui.cli", *argv],
                         cwd=cwd, capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    return out.stdout, imported(out.stderr)


@pytest.mark.timeout(60)
def test_qtui_help_imports_neither_the_library_nor_a_subcommand(tmp_path):
    text, modules = run_importing(tmp_path, "--help")
    assert "run-worker" in text
    assert not {m for m in modules if m.startswith(("qtui.core", "kombu", "rich"))}
    assert modules.isdisjoint(NOT_THE_WORKERS) and "qtui.workers.cli" not in modules


@pytest.mark.timeout(60)
def test_run_worker_help_imports_no_other_subcommand(tmp_path):
    text, modules = run_importing(tmp_path, "run-worker", "--help")
    assert "usage: qtui run-worker" in text
    assert "qtui.workers.pools" in modules  # the -P choices
    assert modules.isdisjoint(NOT_THE_WORKERS), sorted(modules & set(NOT_THE_WORKERS))


@pytest.mark.timeout(90)
def test_a_started_worker_imports_no_other_subcommand(tmp_path: Path):
    write_module(tmp_path, "tasks", TASKS)
    broker = f"sqlite://{tmp_path / 'broker.sqlite'}"
    argv = [sys.executable, "-X", "importtime", "-m", "qtui.tui.cli", "-A", "tasks",
            "run-worker", "-P", "solo"]
    with running(argv, tmp_path, ready="ready.", timeout=60.0,
                 env={"QTUI_TEST_BROKER": broker}) as proc:
        modules = imported(proc.log_path.read_text())
    assert "qtui.workers.worker" in modules
    assert modules.isdisjoint(NOT_THE_WORKERS), sorted(modules & set(NOT_THE_WORKERS))
