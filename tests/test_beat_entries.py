"""beat_schedule entries: Celery's shape, the TOML form, errors that name the entry, and a
Celery app's schedule (celery.schedules objects, its timezone) through -A."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from celery import Celery
from celery.schedules import crontab as celery_crontab

from qtui.core import App
from qtui.core.beat.entries import entries
from qtui.core.celery_app import CeleryApp
from qtui.core.exceptions import ConfigError
from qtui.core.schedules import crontab, schedule


def test_entries_read_celerys_shape_and_the_toml_form_on_the_app_timezone() -> None:
    app = App("t", timezone="Europe/Paris", beat_schedule={
        "b-report": {"task": "tasks.report", "schedule": {"minute": "0", "hour": "3"},
                     "args": ["weekly"], "kwargs": {"to": "ops"}, "options": {"queue": "r"}},
        "a-cleanup": {"task": "tasks.cleanup", "schedule": timedelta(minutes=5)},
    })
    cleanup, report = entries(app)
    assert (cleanup.name, cleanup.task, cleanup.schedule) == ("a-cleanup", "tasks.cleanup",
                                                             schedule(300))
    assert report.schedule == crontab(minute=0, hour=3)
    assert report.schedule.tz == ZoneInfo("Europe/Paris")
    assert (report.args, report.kwargs, report.options) == (("weekly",), {"to": "ops"},
                                                            {"queue": "r"})


@pytest.mark.parametrize(("spec", "words"), [
    ({"schedule": 5}, "needs task"),
    ({"task": "t.x"}, "needs a schedule"),
    ({"task": "t.x", "schedule": 5, "optons": {}}, "unknown key"),
    ({"task": "t.x", "schedule": 5, "options": {"link": "x"}}, "not supported"),
    ({"task": "t.x", "schedule": {"minute": "99"}}, "outside 0-59"),
])
def test_a_wrong_entry_is_a_config_error_naming_it(spec: dict, words: str) -> None:
    app = App("t", beat_schedule={"nightly": spec})
    with pytest.raises(ConfigError, match=words) as raised:
        entries(app)
    assert "beat_schedule.nightly" in str(raised.value)


def test_a_celery_apps_beat_schedule_and_timezone_come_through() -> None:
    celery_app = Celery("proj", broker="memory://", set_as_current=False)
    celery_app.conf.timezone = "America/New_York"
    celery_app.conf.beat_schedule = {
        "hourly": {"task": "proj.hourly", "schedule": celery_crontab(minute=15)},
        "often": {"task": "proj.often", "schedule": 30.0, "options": {"queue": "q"}},
    }
    hourly, often = entries(CeleryApp(celery_app))
    assert hourly.schedule == crontab(minute=15)
    assert hourly.schedule.tz == ZoneInfo("America/New_York")
    assert often.schedule == schedule(30) and often.options == {"queue": "q"}
