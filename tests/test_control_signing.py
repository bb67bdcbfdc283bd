"""Signed remote control: with ``control_secret``, qtui's clients sign every command and a qtui
worker that holds the secret refuses unsigned (except the allowed read-only inspect commands),
badly signed, stale and replayed ones, logging each refusal and answering with an error.
Celery's own ``celery inspect`` still reads such a worker; ``celery control shutdown`` cannot
stop it, and a real Celery worker obeys signed commands (it ignores the signature). The
verifier is checked alone first, then a real worker on Redis and the real ``celery`` program."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kombu import Producer
from kombu.common import maybe_declare

from qtui.core import App
from qtui.core.config import Conf
from qtui.core.control import _collect
from qtui.core.exceptions import ConfigError
from qtui.core.signing import SIGNATURE_FIELD, Verifier, secret_of, sign

from .test_control import HOST, delete_queues, need_broker, start_celery
from .test_interop_celery_cli import CeleryCLI
from .worker_helpers import (  # noqa: F401 - fixtures
    ModuleWorkers,
    hostname_of,
    module_workers,
    wait_for,
)

SECRET = "a-control-secret-for-tests-0123456789"
OTHER_SECRET = "another-secret-nobody-configured-987"
ALLOWED = ("ping", "stats")
NOW = 1_800_000_000.0


def command(method: str = "shutdown", **arguments: Any) -> dict[str, Any]:
    return {"method": method, "arguments": arguments, "destination": ["w@host"],
            "pattern": None, "matcher": None, "ticket": "t-1",
            "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "oid"}}


@pytest.fixture
def verifier() -> Verifier:
    return Verifier(SECRET.encode(), window=60.0, allow_unsigned=ALLOWED)


# the verifier ------------------------------------------------------------------------------------
def test_a_signed_command_passes(verifier):
    assert verifier.refusal(sign(command(), SECRET.encode(), now=NOW), now=NOW + 1) is None


def test_an_unsigned_command_is_refused_unless_allowed(verifier):
    assert "unsigned" in verifier.refusal(command("shutdown"), now=NOW)
    assert verifier.refusal(command("ping"), now=NOW) is None


def test_a_command_signed_with_another_secret_is_refused(verifier):
    body = sign(command(), OTHER_SECRET.encode(), now=NOW)
    assert "bad signature" in verifier.refusal(body, now=NOW)


@pytest.mark.parametrize("field, value", [
    ("method", "pool_grow"), ("arguments", {"n": 2000}), ("destination", None),
    ("pattern", ".*"), ("matcher", "pcre"), ("ticket", "t-2"),
    ("reply_to", {"exchange": "reply.celery.pidbox", "routing_key": "mine"})])
def test_changing_any_signed_field_breaks_the_signature(verifier, field, value):
    body = sign(command(), SECRET.encode(), now=NOW)
    body[field] = value
    assert "bad signature" in verifier.refusal(body, now=NOW)


def test_a_command_signed_outside_the_replay_window_is_refused(verifier):
    body = sign(command(), SECRET.encode(), now=NOW)
    assert "stale" in verifier.refusal(body, now=NOW + 61)
    assert "stale" in verifier.refusal(sign(command(), SECRET.encode(), now=NOW + 61), now=NOW)


def test_a_replayed_command_is_refused(verifier):
    body = sign(command(), SECRET.encode(), now=NOW)
    assert verifier.refusal(dict(body), now=NOW) is None
    assert "replayed" in verifier.refusal(dict(body), now=NOW + 30)


@pytest.mark.parametrize("signature", [
    "x", [], {"timestamp": "now", "nonce": "n", "hmac": "h"},
    {"timestamp": float("nan"), "nonce": "n", "hmac": "h"},
    {"timestamp": NOW, "nonce": 5, "hmac": "h"}, {"timestamp": NOW, "nonce": "n"}])
def test_a_malformed_signature_is_refused_even_for_allowed_commands(verifier, signature):
    assert "malformed" in verifier.refusal({**command("ping"), SIGNATURE_FIELD: signature},
                                           now=NOW)


def test_signing_covers_what_the_worker_receives_after_json():
    body = sign(command("revoke", task_id=("a", "b")), SECRET.encode(), now=NOW)
    verifier = Verifier(SECRET.encode(), 60.0, ())
    assert body["arguments"]["task_id"] == ["a", "b"]
    assert verifier.refusal(body, now=NOW) is None


# the settings ------------------------------------------------------------------------------------
def test_no_secret_means_no_signing():
    assert secret_of(Conf()) is None


def test_the_secret_can_come_from_a_file(tmp_path):
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    assert secret_of(Conf({"control_secret_file": str(path)})) == SECRET.encode()


@pytest.mark.parametrize("settings, message", [
    ({"control_secret": "short"}, "at least 16 characters"),
    ({"control_secret": SECRET, "control_secret_file": "/x"}, "not both"),
    ({"control_secret_file": "/nonexistent/qtui-secret"}, "cannot be read"),
])
def test_a_bad_secret_setting_is_a_clear_error(settings, message):
    with pytest.raises(ConfigError, match=message):
        secret_of(Conf(settings))


@pytest.mark.parametrize("methods", [["task_arguments"], ["ping", "shutdown"], ["hello"]])
def test_only_read_only_inspect_commands_may_be_allowed_unsigned(methods):
    with pytest.raises(ConfigError, match="control_allow_unsigned"):
        Conf({"control_allow_unsigned": methods})


def test_the_secret_is_masked_in_the_configuration_a_worker_shows():
    assert Conf({"control_secret": SECRET}).censored()["control_secret"] == "********"


# a real worker -----------------------------------------------------------------------------------
class Signed:
    """The shared worker that holds the secret, a client with it and one without."""

    def __init__(self, module_workers: ModuleWorkers) -> None:
        self.setup, self.process = module_workers.get("redis", "-P", "threads", "-c", "2",
                                                      control_secret=SECRET)
        self.hostname = hostname_of(self.setup)
        self.signed = self.setup.app()
        self.unsigned = self.setup.app(control_secret=None)
        self.wrong = self.setup.app(control_secret=OTHER_SECRET)

    def ask(self, app: App, method: str, **arguments: Any) -> Any:
        replies = app.control.broadcast(method, arguments=arguments, reply=True,
                                        destination=[self.hostname], timeout=10)
        assert replies, f"{self.hostname} did not answer {method}"
        return replies.by_worker()[self.hostname]

    def log(self) -> str:
        return self.process.log_path.read_text()

    def close(self) -> None:
        for app in (self.signed, self.unsigned, self.wrong):
            app.close()


@pytest.fixture(scope="module")
def signed(module_workers: ModuleWorkers):
    node = Signed(module_workers)
    yield node
    node.close()


def test_a_signed_worker_obeys_a_signed_client(signed):
    assert signed.ask(signed.signed, "rate_limit", task_name="tasks.add",
                      rate_limit="100/s") == {"ok": "new rate limit set successfully"}
    assert "tasks.add [rate_limit=100/s]" in signed.ask(signed.signed, "registered")
    signed.ask(signed.signed, "rate_limit", task_name="tasks.add", rate_limit=None)


@pytest.mark.parametrize("client", ["unsigned", "wrong"])
def test_a_signed_worker_refuses_unsigned_and_badly_signed_commands(signed, client):
    app = getattr(signed, client)
    reply = signed.ask(app, "shutdown")
    assert "'shutdown' refused" in reply["error"]
    assert signed.ask(signed.signed, "ping") == {"ok": "pong"}  # still running
    assert wait_for(lambda: "Refused remote-control command 'shutdown'" in signed.log(), 10)


def test_a_signed_worker_answers_the_allowed_inspect_commands_unsigned(signed):
    assert signed.ask(signed.unsigned, "ping") == {"ok": "pong"}
    assert "tasks.add" in " ".join(signed.ask(signed.unsigned, "registered"))


def test_task_arguments_needs_a_signed_request(signed):
    result = signed.signed.send_task("tasks.add", args=(20, 22))
    assert result.get(timeout=30) == 42
    refused = signed.ask(signed.unsigned, "task_arguments", ids=[result.id])
    assert "'task_arguments' refused" in refused["error"]
    known = signed.ask(signed.signed, "task_arguments", ids=[result.id])
    assert known[result.id]["args"] == [20, 22]


def test_the_worker_shows_its_secret_masked(signed):
    assert signed.ask(signed.signed, "conf")["control_secret"] == "********"


@pytest.mark.timeout(120)
def test_celery_inspect_reads_a_signed_worker_but_celery_control_cannot_stop_it(
        signed, tmp_path):
    celery = CeleryCLI(tmp_path, signed.setup.broker, signed.hostname)
    out = celery.run("inspect", "ping").stdout
    assert f"{signed.hostname}: OK" in out and "pong" in out
    out = celery.run("control", "shutdown").stdout
    assert "'shutdown' refused: unsigned command" in out
    assert signed.process.poll() is None
    assert signed.ask(signed.signed, "ping") == {"ok": "pong"}


@pytest.mark.timeout(120)
def test_a_celery_worker_obeys_signed_commands(tmp_path, unique):
    broker = need_broker("redis")
    queue = f"signed-celery-{unique}"
    hostname = f"celery-{queue}@{HOST}"
    app = App("client", broker=broker, task_default_queue=queue, control_secret=SECRET)
    try:
        with start_celery(tmp_path, broker, queue, pool="solo"):
            assert app.control.ping(destination=[hostname], timeout=10).by_worker() == {
                hostname: {"ok": "pong"}}
            replies = app.control.rate_limit("tasks.add", "10/m", destination=[hostname],
                                             reply=True, timeout=10)
            assert replies.by_worker()[hostname] == {"ok": "new rate limit set successfully"}
    finally:
        app.close()
        delete_queues(broker, queue)


def test_a_signed_worker_refuses_a_replayed_command(signed):
    """The same signed message published twice (as anyone reading the broker could): the
    first one runs, the copy is refused."""
    with signed.signed.connection_for_write() as conn:
        mailbox = signed.signed.control.mailbox(conn)
        channel = conn.default_channel
        maybe_declare(mailbox.reply_queue(channel))
        ticket = uuid.uuid4().hex
        body = sign({"method": "clock", "arguments": {}, "destination": [signed.hostname],
                     "pattern": None, "matcher": None, "ticket": ticket,
                     "reply_to": {"exchange": mailbox.reply_exchange.name,
                                  "routing_key": mailbox.oid}}, SECRET.encode())
        producer = Producer(channel)
        for _ in range(2):
            producer.publish(body, exchange=mailbox.exchange.name, declare=[mailbox.exchange],
                             serializer="json")
        replies = _collect(mailbox, conn, ticket, 10, 2, None)
    first, second = (reply[signed.hostname] for reply in replies)
    assert "clock" in first
    assert "replayed command" in second["error"]
