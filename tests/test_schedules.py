"""Schedules: intervals aligned to the epoch, crontab with Celery's semantics (Celery's own
crontab is the judge, over a year with both DST changes), and schedules in words."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from celery.schedules import crontab as celery_crontab
from celery.schedules import schedule as celery_schedule

from qtui.core.exceptions import ConfigError
from qtui.core.schedules import as_schedule, crontab, latest_at_or_before, schedule, ticks

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")
SPECS = [
    {"minute": "*/15"},
    {"minute": 30, "hour": "2"},  # 02:30 is skipped in March and repeated in October in Paris
    {"minute": "0", "hour": "3", "day_of_week": "mon"},
    {"minute": "5,35", "hour": "*/3", "day_of_week": "mon-fri"},
    {"minute": 0, "hour": 0, "day_of_month": "1,15", "month_of_year": "*/2"},
    {"minute": "10-20/5", "hour": "1-3", "day_of_week": "sat,sun", "day_of_month": "1-7"},
    {"minute": 59, "hour": 23, "day_of_month": 31},
]


def celery_next(spec: dict, last: datetime) -> datetime:
    """When Celery's crontab runs next after a run at ``last`` (its wall-clock arithmetic)."""
    cron = celery_crontab(**spec)
    start, delta, _now = cron.remaining_delta(last, tz=PARIS)
    return (start + delta).astimezone(UTC)


@pytest.mark.parametrize("spec", SPECS, ids=[str(s) for s in SPECS])
def test_crontab_agrees_with_celery_over_a_year_of_minutes_across_dst(spec: dict) -> None:
    ours = crontab(**spec, tz=PARIS)
    rng = random.Random(17)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    checked = 0
    minute = start
    while minute < start + timedelta(days=366):
        # Every minute of both DST-change nights; elsewhere a random minute every ~4 hours.
        local = minute.astimezone(PARIS)
        dst_night = (local.month, local.day) in ((3, 29), (10, 25)) and local.hour < 5
        step = timedelta(minutes=1 if dst_night else rng.randint(1, 480))
        if local.fold == 0 and not _repeated(local):  # Celery has no answer from the 2nd pass
            assert ours.next_after(minute) == celery_next(spec, local), local
            checked += 1
        minute += step
    assert checked > 2000


def _repeated(local: datetime) -> bool:
    """A wall time that happens twice (clocks going back)."""
    return local.replace(fold=1).utcoffset() != local.replace(fold=0).utcoffset()


def test_crontab_runs_once_in_the_repeated_hour_and_after_the_skipped_one() -> None:
    cron = crontab(minute=30, hour=2, tz=PARIS)
    autumn = cron.next_after(datetime(2026, 10, 25, 0, 0, tzinfo=UTC))
    assert autumn == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST, the first one
    assert cron.next_after(autumn) == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)
    spring = cron.next_after(datetime(2026, 3, 28, 12, 0, tzinfo=UTC))
    assert spring == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST, after the jump


def test_an_interval_ticks_at_multiples_of_itself_since_the_epoch() -> None:
    every = schedule(timedelta(minutes=5))
    at = datetime(2026, 5, 1, 10, 7, 12, tzinfo=UTC)
    assert every.next_after(at) == datetime(2026, 5, 1, 10, 10, tzinfo=UTC)
    assert every.next_after(datetime(2026, 5, 1, 10, 10, tzinfo=UTC)) == \
        datetime(2026, 5, 1, 10, 15, tzinfo=UTC)
    assert latest_at_or_before(every, at) == datetime(2026, 5, 1, 10, 5, tzinfo=UTC)


def test_ticks_lists_what_is_due_and_keeps_the_latest_when_limited() -> None:
    every = schedule(1)
    start = datetime(2026, 5, 1, tzinfo=UTC)
    assert len(ticks(every, start, start + timedelta(seconds=10), limit=100)) == 10
    assert ticks(every, start, start + timedelta(seconds=10), limit=2) == [
        start + timedelta(seconds=9), start + timedelta(seconds=10)]


@pytest.mark.parametrize(("sched", "words"), [
    (schedule(1), "every second"),
    (schedule(300), "every 5 minutes"),
    (schedule(90), "every 90 seconds"),
    (schedule(timedelta(hours=2)), "every 2 hours"),
    (crontab(), "every minute"),
    (crontab(minute="*/15"), "every 15 minutes"),
    (crontab(minute=0, hour=3, day_of_week="mon"), "at 03:00 on Mondays"),
    (crontab(minute=0, hour=0, day_of_month=1), "at 00:00 on day 1 of the month"),
    (crontab(minute=0, hour="*/6"), "every 6 hours"),
    (crontab(minute=15), "every hour at minute 15"),
])
def test_schedules_say_themselves_in_words(sched, words: str) -> None:
    assert sched.describe() == words


def test_celery_schedule_objects_become_qtui_schedules_on_the_app_timezone() -> None:
    cron = as_schedule(celery_crontab(minute=0, hour=3, day_of_week="mon"), PARIS, "x")
    assert cron == crontab(minute=0, hour=3, day_of_week="mon")
    assert cron.tz is PARIS
    assert as_schedule(celery_schedule(timedelta(seconds=30)), PARIS, "x") == schedule(30)
    assert as_schedule({"minute": "0", "hour": "3"}, PARIS, "x") == crontab(0, 3)


@pytest.mark.parametrize("bad", [{"minute": 60}, {"hour": "1-x"}, {"day_of_week": "funday"},
                                 {"minute": "*/0"}])
def test_a_wrong_crontab_field_is_a_config_error(bad: dict) -> None:
    with pytest.raises(ConfigError, match="crontab"):
        crontab(**bad)


def test_a_wrong_schedule_is_a_config_error_naming_the_entry() -> None:
    with pytest.raises(ConfigError, match=r"beat_schedule.nightly"):
        as_schedule("3am", UTC, "beat_schedule.nightly")
    with pytest.raises(ConfigError, match="positive"):
        schedule(0)
