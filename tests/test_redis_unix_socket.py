"""A Redis reached on a unix socket (``redis+socket:///path``, kombu's and Celery's form) or over
TLS (``rediss://``) serves qtui as one on TCP: the worker's own channel (ownership, liveness),
results, remote control and the scripted commands."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from qtui.core import App
from qtui.core.beat.redis_store import RedisBeatStore
from qtui.core.beat.store import store_for
from qtui.core.brokers.redis.ledger import RedisLedger
from qtui.core.brokers.redis.urls import client_url
from qtui.core.ledger import ledger_for
from qtui.tui import commands

from .redis_server import redis_server, spare_port
from .worker_helpers import Setup, hostname_of, make_setup


@pytest.fixture(scope="module")
def socket_url() -> Iterator[str]:
    """A private redis-server listening on a unix socket only (no TCP port)."""
    # A short directory: a unix socket's path is limited to about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="qtui-sock-") as directory:
        path = Path(directory) / "redis.sock"
        with redis_server(Path(directory), 0, durable=False,
                          extra=("--unixsocket", str(path), "--unixsocketperm", "700")):
            yield f"redis+socket://{path}"


@pytest.fixture(scope="module")
def tls_url(tmp_path_factory) -> Iterator[str]:
    """A private redis-server on a TLS port only, with a self-signed certificate."""
    server = shutil.which("redis-server") or "redis-server"
    if b"libssl" not in subprocess.run(["ldd", server], capture_output=True).stdout:
        pytest.skip("this redis-server is built without TLS")
    directory = tmp_path_factory.mktemp("redis-tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    port = spare_port()
    with redis_server(directory, 0, durable=False, extra=(
            "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no")):
        yield f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}"


@pytest.fixture
def setup(tmp_path, unique, socket_url) -> Iterator[Setup]:
    setup = make_setup(tmp_path, f"qs-{unique}", socket_url, socket_url,
                       broker_transport_options={"visibility_timeout": 2})
    yield setup
    setup.cleanup()


def qtui(app: App, *argv: str) -> int:
    """One scripted command in-process, as ``qtui`` runs it after loading the app."""
    parser = argparse.ArgumentParser(prog="qtui")
    commands.add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args, app))


@pytest.mark.timeout(90)
@pytest.mark.parametrize("pool", ["solo", "threads", "prefork"])
def test_a_worker_on_a_unix_socket_runs_tasks_and_stores_their_results(setup: Setup, pool: str):
    app = setup.app()
    with setup.worker("-P", pool, "-c", "2"):
        results = [app.send_task("tasks.add", args=[n, n]) for n in range(5)]
        assert [r.get(timeout=30) for r in results] == [n + n for n in range(5)]


@pytest.mark.timeout(90)
def test_a_worker_over_tls_runs_tasks_and_stores_their_results(tmp_path, unique, tls_url):
    setup = make_setup(tmp_path, f"qt-{unique}", tls_url, tls_url)
    try:
        with setup.worker("-P", "threads", "-c", "2"):
            results = [setup.app().send_task("tasks.add", args=[n, 1]) for n in range(5)]
            assert [r.get(timeout=30) for r in results] == [n + 1 for n in range(5)]
    finally:
        setup.cleanup()


@pytest.mark.timeout(90)
def test_a_task_of_a_worker_killed_on_a_unix_socket_is_run_by_the_next(setup: Setup):
    app = setup.app()
    with setup.worker("-P", "solo", name="a") as first:
        app.send_task("tasks.slow", args=[60, "held"])
        assert setup.wait_records("started", 1)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    with setup.worker("-P", "solo", name="b"):
        app.send_task("tasks.mark", args=["after"])
        assert setup.wait_records("mark", 1)
        started = setup.wait_records("started", 2)
    assert [r["tag"] for r in started] == ["held", "held"]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("query", ["", "?virtual_host=3"])
def test_a_live_workers_task_on_a_unix_socket_is_not_run_by_another(tmp_path, unique,
                                                                    socket_url, query):
    """The liveness helper keeps the owner alive past the visibility timeout (2 s)."""
    url = socket_url + query
    setup = make_setup(tmp_path, f"qs-{unique}", url, url,
                       broker_transport_options={"visibility_timeout": 2})
    try:
        live_worker_runs_once(setup)
    finally:
        setup.cleanup()


def live_worker_runs_once(setup: Setup) -> None:
    """A worker's 8 s task is not run again by a second worker (visibility timeout 2 s)."""
    app = setup.app()
    with setup.worker("-P", "solo", name="a"):
        app.send_task("tasks.slow", args=[8, "long"])
        assert setup.wait_records("started", 1)
        with setup.worker("-P", "solo", name="b"):
            assert setup.wait_records("done", 1)
    assert [r["tag"] for r in setup.records("started")] == ["long"]


@pytest.mark.timeout(90)
def test_inspect_ping_and_status_reach_a_worker_on_a_unix_socket(setup: Setup, capsys,
                                                                 monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    app = setup.app()
    with setup.worker("-P", "solo"):
        hostname = hostname_of(setup)
        assert qtui(app, "inspect", "ping", "-d", hostname, "-t", "10") == 0
        assert f"{hostname}: OK" in capsys.readouterr().out
        assert qtui(app, "status", "-t", "5") == 0
        out = capsys.readouterr().out
        assert hostname in out and setup.queue in out


@pytest.mark.parametrize(("url", "expected"), [
    ("redis+socket:///run/redis.sock?virtual_host=3", "unix:///run/redis.sock?db=3"),
    ("redis://:secret@host:6379/2", "redis://:secret@host:6379/2"),
    ("redis://h1:6379/5;redis://h2:6379/5", "redis://h1:6379/5"),
])
def test_a_unix_socket_url_reaches_redis_py_with_its_database(url: str, expected: str):
    assert client_url(url) == expected


def test_a_unix_socket_result_backend_holds_the_ledger_and_the_beat_store(socket_url: str):
    backend = client_url(socket_url)
    app = App("sock", broker="amqp://guest:guest@127.0.0.1:5672//", backend=backend)
    ledger = store = None
    try:
        ledger, store = ledger_for(app), store_for(app)
        assert isinstance(ledger, RedisLedger) and isinstance(store, RedisBeatStore)
    finally:
        if ledger is not None:
            ledger.close()
        if store is not None:
            store.close()


def test_the_ledger_and_the_beat_store_live_on_a_unix_socket_broker(socket_url: str,
                                                                    unique: str):
    app = App("sock", broker=socket_url, backend=None)
    ledger = store = None
    try:
        ledger, store = ledger_for(app), store_for(app)
        assert isinstance(ledger, RedisLedger) and isinstance(store, RedisBeatStore)
        ledger.put(f"sock-{unique}", {"task": 1e12})
        assert ledger.present(f"sock-{unique}", ["task", "other"]) == {"task"}
        assert store.hold_lease(f"node-{unique}", 10)
    finally:
        if ledger is not None:
            ledger.close()
        if store is not None:
            store.close()
