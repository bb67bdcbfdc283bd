"""``qtui schedule`` and ``qtui beat`` from the command line, in-process on the embedded broker:
list (people and --json), pause, resume and run now, and the errors a user can make."""

from __future__ import annotations

import json

import pytest

from qtui.core.beat.store import store_for
from qtui.tui.cli import main

from .beat_helpers import app_for, write_config


@pytest.fixture
def config(tmp_path, unique: str):
    return write_config(tmp_path, f"sqlite://{tmp_path / 'broker.sqlite'}", "cli", unique,
                        every=300)


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_schedule_list_json_has_each_entry_in_words_and_no_beat(config, capsys) -> None:
    assert main(["--config", str(config), "schedule", "list", "--json"]) == 0
    listed = _json(capsys)
    assert [(e["name"], e["task"], e["schedule"], e["paused"], e["last_run"])
            for e in listed["entries"]] == [("tick", "tasks.tick", "every 5 minutes", False,
                                             None)]
    assert listed["entries"][0]["next_run"] % 300 == 0
    assert listed["beats"] == []


def test_pause_resume_and_run_now_change_what_list_shows(config, capsys) -> None:
    assert main(["--config", str(config), "schedule", "pause", "tick"]) == 0
    assert "tick: paused" in capsys.readouterr().out
    main(["--config", str(config), "schedule", "list", "--json"])
    entry = _json(capsys)["entries"][0]
    assert entry["paused"] and entry["next_run"] is None
    assert main(["--config", str(config), "schedule", "resume", "tick", "--json"]) == 0
    assert _json(capsys) == {"entry": "tick", "action": "resume"}
    assert main(["--config", str(config), "schedule", "run", "tick", "--json"]) == 0
    task_id = _json(capsys)["task_id"]
    main(["--config", str(config), "schedule", "list"])
    out = capsys.readouterr().out
    assert "tick" in out and "No beat process is running" in out
    store = store_for(app_for(config))
    assert [(r.task_id, r.manual) for r in store.runs("tick")] == [(task_id, True)]
    assert store.paused() == set()
    store.close()


def test_an_unknown_entry_is_one_line_that_lists_the_entries(config, capsys) -> None:
    assert main(["--config", str(config), "schedule", "pause", "nightly"]) == 1
    err = capsys.readouterr().err
    assert "no entry 'nightly' in beat_schedule (entries: tick)" in err
    assert "Traceback" not in err


def test_a_steering_command_without_an_entry_says_so(config, capsys) -> None:
    assert main(["--config", str(config), "schedule", "run"]) == 2
    assert "needs the entry's name" in capsys.readouterr().out


def test_beat_on_rabbitmq_with_rpc_results_refuses_in_one_line(tmp_path, capsys) -> None:
    config = write_config(tmp_path, "amqp://guest:guest@127.0.0.1:5672//", "rpc", "q",
                          extra='result_backend = "rpc://"')
    assert main(["--config", str(config), "beat"]) == 1
    err = capsys.readouterr().err
    assert "qtui beat needs a place every beat process shares" in err
    assert "Traceback" not in err


def test_an_unreachable_store_is_one_line_naming_it(tmp_path, capsys) -> None:
    config = write_config(tmp_path, "redis://127.0.0.1:1/0", "down", "q")
    assert main(["--config", str(config), "schedule", "list"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the beat's store at redis://127.0.0.1:1/0" in err
    assert "Traceback" not in err
