"""``qtui inspect active|reserved|scheduled|query_task`` never print arguments their sender
masked: workers are asked in safe mode (the reprs the sender wrote), and where a worker sends
the arguments anyway (Celery's reserved, scheduled and query_task ignore ``safe``) they are not
shown; ``--unsafe`` asks for and shows the real values (a live qtui worker on database 13)."""

from __future__ import annotations

import json

import pytest

from qtui.core import App
from qtui.core.control import Replies
from qtui.core.display import UNSHOWN
from qtui.tui.commands import show_replies

from .test_commands import qtui
from .test_console_actions_live import extras  # noqa: F401 - fixture
from .worker_helpers import Setup, hostname_of

SECRET = "hunter2-SECRET"
MASK = "('alice', '***')"


def _held(setup: Setup, hostname: str) -> str:
    """The id of a countdown task with a masked secret, once ``hostname`` holds it."""
    app = setup.app()
    result = app.send_task("tasks.add", ("alice", SECRET), countdown=600, argsrepr=MASK)
    inspect = app.control.inspect(destination=[hostname], timeout=1.0)
    for _ in range(60):
        held = (inspect.scheduled(safe=True) or {}).get(hostname) or []
        if any(item["request"]["id"] == result.id for item in held):
            return result.id
    raise AssertionError(f"{hostname} never held {result.id}")


@pytest.mark.timeout(120)
def test_inspect_shows_the_senders_mask_and_unsafe_the_arguments(extras, capsys):
    setup = extras
    setup.conf["worker_eta_horizon"] = 3600  # the worker holds the countdown task itself
    hostname = hostname_of(setup, "mk")
    with setup.worker("-P", "solo", name="mk"):
        task_id = _held(setup, hostname)
        app = setup.app()
        for argv in (("scheduled",), ("scheduled", "--json"), ("query_task", task_id),
                     ("query_task", task_id, "--json")):
            assert qtui(app, "inspect", *argv, "-d", hostname, "-t", "5") == 0
            out = capsys.readouterr().out
            assert task_id in out and SECRET not in out, argv
            assert "***" in out, argv
        assert qtui(app, "inspect", "scheduled", "--unsafe", "--json", "-d", hostname,
                    "-t", "5") == 0
        [entry] = json.loads(capsys.readouterr().out)[hostname]
        assert entry["request"]["args"] == ["alice", SECRET]


CELERY_REQUEST = {"id": "t1", "name": "tasks.login", "args": ["alice", SECRET],
                  "kwargs": {"token": SECRET}, "delivery_info": {"routing_key": "q"}}
"""A Celery worker's task info where it ignores ``safe``: the arguments themselves."""


@pytest.mark.parametrize("command, reply", [
    ("active", [CELERY_REQUEST]),
    ("reserved", [CELERY_REQUEST]),
    ("scheduled", [{"eta": "2030-01-01T00:00:00+00:00", "priority": 0,
                    "request": CELERY_REQUEST}]),
    ("query_task", {"t1": ["scheduled", CELERY_REQUEST]}),
])
def test_arguments_a_worker_sent_despite_safe_are_not_shown(command, reply):
    from rich.console import Console
    rich = Console(record=True, width=200)
    show_replies(rich, command, Replies([{"celery@h": reply}]))
    text = rich.export_text()
    assert SECRET not in text and UNSHOWN in text


def test_unsafe_goes_with_the_commands_that_list_tasks_only(capsys):
    assert qtui(App("t", broker="memory://"), "inspect", "ping", "--unsafe") == 2
    assert "--unsafe goes with active, reserved, scheduled, query_task only" in \
        capsys.readouterr().err
