"""Celery's ``compression`` send option (``apply_async(compression=...)``, ``task_compression``,
``Task.compression``): the body compressed with kombu's registry and the ``compression`` header
naming its content type, as Celery sends it; run by qtui's worker on every broker, and by and
from a real Celery worker."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import zlib
from collections.abc import Iterator

import pytest
import redis
from kombu import compression as registry

from qtui.core import App
from qtui.core.compression import CODEC_ERRORS, DECODERS, BodyTooLarge, decompress

from .processes import celery_worker, write_module
from .worker_helpers import REDIS_URL, ModuleWorkers, Setup, module_workers  # noqa: F401


def _stored(url: str, queue: str) -> dict[str, object]:
    """The one envelope waiting in ``queue`` on Redis, as stored."""
    stored = redis.Redis.from_url(url).lrange(queue, 0, -1)
    assert len(stored) == 1
    envelope: dict[str, object] = json.loads(stored[0])
    return envelope


@pytest.fixture
def redis_app(redis_url, unique) -> Iterator[App]:
    app = App("compressing", broker=redis_url, task_default_queue=f"qz-{unique}")
    yield app
    redis.Redis.from_url(redis_url).delete(f"qz-{unique}")
    app.close()


def test_apply_async_compression_compresses_the_body_and_names_it_in_the_header(redis_app):
    task = redis_app.task(name="tasks.add")(lambda x, y: x + y)
    task.apply_async((2, 3), compression="zlib")
    envelope = _stored(REDIS_URL, redis_app.conf.task_default_queue)
    assert envelope["headers"]["compression"] == "application/x-gzip"  # type: ignore[index]
    body = zlib.decompress(base64.b64decode(envelope["body"]))  # type: ignore[arg-type]
    assert json.loads(body)[0] == [2, 3]


@pytest.mark.parametrize("where", ["config", "task"])
def test_task_compression_and_the_tasks_own_compression_are_used(redis_app, where):
    if where == "config":
        redis_app.conf.update(task_compression="bzip2")
        task = redis_app.task(name="tasks.add")(lambda x, y: x + y)
    else:
        task = redis_app.task(name="tasks.add", compression="bzip2")(lambda x, y: x + y)
    task.delay(2, 3)
    envelope = _stored(REDIS_URL, redis_app.conf.task_default_queue)
    assert envelope["headers"]["compression"] == "application/x-bz2"  # type: ignore[index]


def test_an_unknown_compression_is_refused_before_anything_is_sent(redis_app):
    with pytest.raises(ValueError, match="unknown compression 'zip'"):
        redis_app.send_task("tasks.add", (2, 3), compression="zip")
    assert redis.Redis.from_url(REDIS_URL).llen(redis_app.conf.task_default_queue) == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("broker", ["redis", "rabbitmq", "sqlite"])
@pytest.mark.parametrize("compression", ["zlib", "lzma"])
def test_a_qtui_worker_runs_a_compressed_task(module_workers: ModuleWorkers, broker,
                                              compression):
    setup, _ = module_workers.get(broker, "-P", "threads")
    app = setup.app()
    try:
        result = app.send_task("tasks.add", (20, 22), compression=compression)
        assert result.get(timeout=30) == 42
    finally:
        app.close()


CELERY_TASKS = """
from celery import Celery

app = Celery("ctasks", broker={broker!r}, backend={backend!r})
app.conf.task_default_queue = {queue!r}


@app.task(name="tasks.add")
def add(x, y):
    return x + y
"""

CELERY_CLIENT = """
import sys
from celery import Celery

broker, backend, queue = sys.argv[1:4]
app = Celery("client", broker=broker, backend=backend)
app.conf.task_default_queue = queue
print("add:", app.send_task("tasks.add", args=[2, 3], compression="zlib").get(timeout=30))
# retried by the qtui worker: the retry's body is its own, sent without the compression header
print("flaky:", app.send_task("tasks.flaky", args=[1], compression="zlib").get(timeout=30))
"""


@pytest.mark.timeout(120)
def test_a_celery_worker_runs_a_task_qtui_compressed(tmp_path, unique, redis_url):
    pytest.importorskip("celery")
    queue = f"qz-{unique}"
    write_module(tmp_path, "ctasks", CELERY_TASKS.format(broker=redis_url, backend=redis_url,
                                                         queue=queue))
    app = App("client", broker=redis_url, backend=redis_url, task_default_queue=queue)
    try:
        with celery_worker(tmp_path, "ctasks", queue):
            result = app.send_task("tasks.add", (2, 3), compression="zlib")
            assert result.get(timeout=30) == 5
    finally:
        app.close()
        redis.Redis.from_url(redis_url).delete(queue)


@pytest.mark.timeout(120)
def test_a_qtui_worker_runs_a_task_celery_compressed(module_workers: ModuleWorkers):
    pytest.importorskip("celery")
    setup: Setup = module_workers.get("redis", "-P", "threads")[0]
    write_module(setup.directory, "celery_client", CELERY_CLIENT)
    out = subprocess.run([sys.executable, "celery_client.py", setup.broker, str(setup.backend),
                          setup.queue], cwd=setup.directory, capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "add: 5" in out.stdout
    assert "flaky: 1" in out.stdout


def test_send_task_by_name_uses_task_compression(redis_app):
    redis_app.conf.update(task_compression="zlib")
    redis_app.send_task("tasks.add", (2, 3))
    envelope = _stored(REDIS_URL, redis_app.conf.task_default_queue)
    assert envelope["headers"]["compression"] == "application/x-gzip"  # type: ignore[index]


# Capped decompression (qtui.core.compression) ----------------------------------------------
CODECS = ["zlib", "bzip2", "lzma", "brotli", "zstd"]


def _encoder(name: str):
    try:
        return registry.get_encoder(name)
    except KeyError:
        pytest.skip(f"{name} is not installed")


@pytest.mark.parametrize("name", CODECS)
def test_a_body_within_the_cap_decompresses_as_kombu_does(name):
    encode, content_type = _encoder(name)
    body = b"[[1, 2], {}, {}]" * 1000
    assert content_type in DECODERS
    assert decompress(encode(body), content_type, len(body)) == body
    assert decompress(encode(body), name, len(body)) == registry.decompress(encode(body), name)


@pytest.mark.parametrize("name", CODECS)
def test_a_body_inflating_past_the_cap_stops_there(name):
    encode, content_type = _encoder(name)
    with pytest.raises(BodyTooLarge, match="decompressed body exceeds 999 bytes"):
        decompress(encode(b"\0" * 100_000), content_type, 999)


@pytest.mark.parametrize("name", ["bzip2", "lzma", "zstd"])
def test_concatenated_streams_count_together_against_the_cap(name):
    encode, content_type = _encoder(name)
    stream = encode(b"\0" * 600)
    assert decompress(stream * 2, content_type, 1200) == b"\0" * 1200
    with pytest.raises(BodyTooLarge):
        decompress(stream * 3, content_type, 1200)


@pytest.mark.parametrize("name", CODECS)
def test_a_truncated_body_is_a_codec_error(name):
    encode, content_type = _encoder(name)
    with pytest.raises(CODEC_ERRORS):
        decompress(encode(bytes(range(256)) * 40)[:-8], content_type, 1 << 20)


@pytest.mark.parametrize("name", CODECS)
def test_a_body_inflated_in_many_steps_comes_out_whole(name, monkeypatch):
    monkeypatch.setattr("qtui.core.compression.STEP", 64)
    encode, content_type = _encoder(name)
    body = bytes(range(256)) * 40
    assert decompress(encode(body), content_type, len(body)) == body
    with pytest.raises(BodyTooLarge):
        decompress(encode(body), content_type, len(body) - 1)
