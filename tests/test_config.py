"""Configuration: app.conf, loading from objects and TOML files, checks, discovery, the example."""

from __future__ import annotations

import re
import sys
import types
import warnings
from pathlib import Path

import pytest

from qtui.core import App
from qtui.core.config import (
    SETTINGS,
    Conf,
    UnknownSettingWarning,
    censor,
    discover_config_file,
    load_toml,
    mask_url,
)
from qtui.core.exceptions import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_conf_reads_as_attributes_and_as_a_mapping():
    conf = Conf()
    assert conf.task_default_queue == "celery"
    assert conf["task_serializer"] == "json"
    conf.update(task_default_queue="jobs")
    assert conf.task_default_queue == conf["task_default_queue"] == "jobs"
    conf.result_expires = 60
    assert conf["result_expires"] == 60
    assert conf.changes() == {"task_default_queue": "jobs", "result_expires": 60}


def test_defaults_are_not_shared_between_apps():
    first = Conf()
    first.accept_content.append("pickle")
    assert Conf().accept_content == ["json"]


def test_unknown_key_warns_with_a_did_you_mean():
    with pytest.warns(UnknownSettingWarning,
                      match="'task_serialiser'.*Did you mean 'task_serializer'"):
        Conf().update(task_serialiser="json")


def test_wrong_type_fails_with_the_key_and_what_was_expected():
    with pytest.raises(ConfigError, match="'worker_prefetch_multiplier' must be a whole number"):
        Conf().update(worker_prefetch_multiplier="four")


def test_config_from_object_takes_a_module_name(tmp_path, monkeypatch):
    (tmp_path / "celeryconfig.py").write_text(
        "broker_url = 'redis://127.0.0.1:6379/3'\nresult_expires = 30\nimport os\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = App("t")
    app.config_from_object("celeryconfig")
    assert app.conf.broker_url == "redis://127.0.0.1:6379/3"
    assert app.conf.result_expires == 30
    sys.modules.pop("celeryconfig", None)


def test_config_from_object_takes_an_object_and_ignores_private_and_upper_names():
    settings = types.SimpleNamespace(task_default_queue="objq", _private=1, CONSTANT=2)
    app = App("t", config_source=settings)
    assert app.conf.task_default_queue == "objq"
    assert "CONSTANT" not in app.conf.changes()


def test_config_from_file_loads_toml_tables(tmp_path):
    path = tmp_path / "qtui.toml"
    path.write_text('broker_url = "redis://127.0.0.1:6379/1"\n'
                    '[task_routes]\n"tasks.add" = { queue = "hipri" }\n')
    app = App("t")
    app.config_from_file(path)
    assert app.conf.task_routes == {"tasks.add": {"queue": "hipri"}}


@pytest.mark.parametrize(("text", "words"), [
    ("broker_url = 'redis://\n", "is not valid TOML"),
    ("[task_routes\n", "is not valid TOML"),
    ("worker_concurrency = 'many'\n", "setting 'worker_concurrency' must be a whole number"),
    ("accept_content = 'json'\n", "setting 'accept_content' must be a list of serializer names"),
    ("accept_content = ['jsn']\n", "setting 'accept_content' must be a list of serializer names"),
    ("task_serializer = 'nope'\n", "setting 'task_serializer' must be a serializer name"),
    ("worker_concurrency = 0\n", "setting 'worker_concurrency' must be a whole number >= 1"),
    ("worker_prefetch_multiplier = -1\n", "must be a whole number >= 0"),
    ("broker_connection_timeout = nan\n", "must be a number > 0"),
    ("broker_publish_timeout = 0\n", "must be a number > 0"),
    ("task_default_priority = 300\n", "must be a whole number from 0 to 255"),
    ("worker_pool = 'gevent'\n",
     "setting 'worker_pool' must be one of 'prefork', 'threads', 'solo'"),
    ("task_default_exchange_type = 'fanoutx'\n", "must be one of 'direct', 'topic'"),
    ("[task_publish_retry_policy]\nmax_retires = 3\n",
     "must be a table with errback, interval_max"),
    ("result_expires = -5\n", "setting 'result_expires' must be a number >= 0 or nothing"),
    ("enable_utc = 1\n", "setting 'enable_utc' must be true or false"),
    ("task_default_rate_limit = 'fast'\n", "must be a rate such as"),
    ("task_default_rate_limit = -1\n", "must be a rate such as"),
])
def test_malformed_config_files_name_the_file_and_the_problem(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        App("t").config_from_file(path)
    assert str(path) in str(info.value)
    assert words in str(info.value)


def test_a_typo_in_a_config_file_warns_with_the_file_and_a_suggestion(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text("result_backendd = 'redis://'\n")
    with pytest.warns(UnknownSettingWarning) as caught:
        App("t").config_from_file(path)
    message = str(caught[0].message)
    assert str(path) in message and "Did you mean 'result_backend'" in message


def test_missing_unreadable_and_binary_config_files_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_toml(tmp_path)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not"):
        load_toml(binary)


def test_discovery_prefers_the_flag_then_the_environment_then_the_working_directory(
        tmp_path, monkeypatch):
    local = tmp_path / "qtui.toml"
    monkeypatch.delenv("QTUI_CONFIG", raising=False)
    assert discover_config_file(cwd=tmp_path) is None
    local.write_text("")
    assert discover_config_file(cwd=tmp_path) == local
    monkeypatch.setenv("QTUI_CONFIG", "/etc/from-env.toml")
    assert discover_config_file(cwd=tmp_path) == Path("/etc/from-env.toml")
    assert discover_config_file("/x/flag.toml", cwd=tmp_path) == Path("/x/flag.toml")


def test_a_password_in_a_url_query_is_masked():
    assert mask_url("redis+socket:///r.sock?password=secret&virtual_host=2") == \
        "redis+socket:///r.sock?password=**&virtual_host=2"


def test_secrets_are_censored():
    assert mask_url("redis://:hunter2@host:6379/0") == "redis://:**@host:6379/0"
    assert mask_url("amqp://guest:guest@h//") == "amqp://guest:**@h//"
    assert mask_url("amqp://user:p@ss@host//") == "amqp://user:**@host//"
    assert mask_url("redis://:a@h1/0 and amqp://u:p@ss@h2:5672//") == \
        "redis://:**@h1/0 and amqp://u:**@h2:5672//"
    assert mask_url("redis://h:6379/0") == "redis://h:6379/0"
    conf = Conf({"broker_url": "amqp://u:pw@h//", "broker_transport_options": {"password": "x"}})
    censored = conf.censored()
    assert censored["broker_url"] == "amqp://u:**@h//"
    assert censored["broker_transport_options"] == {"password": "********"}
    assert censor("my_api_token", "abc") == "********"
    assert censor("task_default_routing_key", "celery") == "celery"


@pytest.mark.parametrize("key", ["smtp_pw", "db_pwd", "auth", "sentry_dsn", "aws_credentials",
                                 "oauth_client", "session_cookie", "private_pem"])
def test_every_value_of_a_key_that_names_a_credential_is_masked(key):
    """Issue 14.14: ``smtp_pw`` and a Bearer token under ``auth`` leaked from inspect conf."""
    assert censor(key, "hunter2") == "********"
    assert censor("options", {key: ["hunter2"]}) == {key: "********"}


@pytest.mark.parametrize("value, masked", [
    ("https://0123abcd@o42.ingest.sentry.io/7", "https://**@o42.ingest.sentry.io/7"),
    ("Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc", "Bearer **"),
    ("Basic dXNlcjpodW50ZXIy", "Basic **"),
    ("https://hooks.example.com/x?v=1&access_token=hunter2#top",
     "https://hooks.example.com/x?v=1&access_token=**#top"),
    ("host=db user=me password=hunter2 dbname=app", "host=db user=me password=** dbname=app"),
    ("Server=db;Uid=me;Pwd=hunter2;", "Server=db;Uid=me;Pwd=**;"),
    ("postgresql://me:hunter2@db/app", "postgresql://me:**@db/app"),
])
def test_secrets_are_masked_by_their_shape_under_any_key(value, masked):
    assert censor("notes", value) == masked
    assert censor("notes", [value]) == [masked]
    # A secret setting keeps a URL's shape (password masked) and is masked whole otherwise.
    assert censor("broker_url", value) == (masked if "://" in value else "********")


@pytest.mark.parametrize("key, value", [("author", "Jo"), ("task_default_routing_key", "celery"),
                                        ("notes", "redis://h:6379/0"), ("notes", "Token 12"),
                                        ("upward", "password")])
def test_what_is_no_secret_is_shown_as_it_is(key, value):
    assert censor(key, value) == value


def _example() -> dict:
    from qtui.core.config import tomllib
    return tomllib.loads((REPO / "config.example.toml").read_text())


def test_config_example_documents_every_setting_with_its_default():
    text = (REPO / "config.example.toml").read_text()
    for name in SETTINGS:
        assert re.search(rf"^(# )?(\[{name}[\].]|{name} =)", text, re.M), \
            f"{name} is not documented"
    example = _example()
    for name, value in example.items():
        if name in SETTINGS:
            assert value == SETTINGS[name].default, f"{name}: example differs from the default"


def test_config_example_loads_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        App("t").conf.update(_example(), source="config.example.toml")
