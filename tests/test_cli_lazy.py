"""The ``qtui`` command imports only what the chosen subcommand needs, and says the same."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qtui.tui.cli import SUBCOMMANDS, LazySubcommands, Subcommand, build_parser

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


#: ``python -c`` code that runs qtui's command line with the arguments after it, and writes every
#: module loaded by its end to stderr (``sys.modules``: ``-X importtime`` would not report the
#: modules the lazy subcommands load through ``importlib.import_module``).
RUNS_QTUI = ("import atexit, runpy, sys\n"
             "atexit.register(lambda: sys.stderr.write(''.join(\n"
             "    f'\\nloaded: {name}' for name in sorted(sys.modules)) + '\\n'))\n"
             "runpy.run_module('qtui.tui.cli', run_name='__main__', alter_sys=True)\n")


def loaded(stderr: str) -> set[str]:
    """The modules a command run by :data:`RUNS_QTUI` had loaded when it exited."""
    return set(re.findall(r"^loaded: (\S+)$", stderr, re.MULTILINE))


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


def subcommands_of(parser: Any) -> LazySubcommands:
    return next(a for a in parser._actions if isinstance(a, LazySubcommands))


@pytest.mark.parametrize("command", [c.name for c in SUBCOMMANDS])
def test_each_subcommand_once_loaded_has_what_runs_it(command):
    subcommands = subcommands_of(build_parser())
    subcommands.load(command)
    assert runs(subcommands._name_parser_map[command])


def runs(parser: Any) -> bool:
    """Whether ``parser`` has what runs it, or each of its own subcommands has."""
    nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if parser.get_default("func") is not None:
        return True
    return bool(nested) and all(runs(p) for a in nested for p in a.choices.values())


def test_a_subcommand_its_module_does_not_add_is_refused_when_loaded():
    subcommands = subcommands_of(build_parser())
    subcommands.declare(Subcommand("ghost", "qtui.tui.queue_commands:add_parsers", "nothing"))
    with pytest.raises(RuntimeError, match="did not add the parser of qtui ghost"):
        subcommands.load("ghost")


def test_an_option_argparse_reads_only_when_it_builds_a_parser_is_refused():
    subcommands = subcommands_of(build_parser())
    with pytest.raises(TypeError, match="prefix_chars= is not a parser's to set"):
        subcommands.add_parser("audit", prefix_chars="+")


def run_importing(cwd: Path, *argv: str) -> tuple[str, set[str]]:
    """The real ``qtui`` command's output, and the modules it imported."""
    out = subprocess.run([sys.executable, "-c", RUNS_QTUI, *argv],
                         cwd=cwd, capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    return out.stdout, loaded(out.stderr)


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
    argv = [sys.executable, "-c", RUNS_QTUI, "-A", "tasks", "run-worker", "-P", "solo"]
    with running(argv, tmp_path, ready="ready.", timeout=60.0,
                 env={"QTUI_TEST_BROKER": broker}) as proc:
        pass  # stopped (warm shutdown) as the block ends: the modules are written as it exits
    modules = loaded(proc.log_path.read_text())
    assert "qtui.workers.worker" in modules
    assert modules.isdisjoint(NOT_THE_WORKERS), sorted(modules & set(NOT_THE_WORKERS))
