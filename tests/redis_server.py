"""A private redis-server on a spare port, for tests (and bench/faults.py) that stop, restart or
cut off a broker without touching the shared one."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def spare_port() -> int:
    """A local TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def socket_listening(path: Path) -> bool:
    """Whether a server accepts connections on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
            return True
        except OSError:
            return False


@contextmanager
def redis_server(directory: Path, port: int, durable: bool = True, extra: tuple[str, ...] = ()
                 ) -> Iterator[subprocess.Popen[bytes]]:
    """redis-server on ``port`` with its data in ``directory`` (append-only, fsync always, so a
    restart keeps what was acknowledged; nothing on disk unless ``durable``), ``extra`` added to
    its arguments; terminated on exit. Port 0 with ``--unixsocket PATH`` or ``--tls-port N`` in
    ``extra``: on that unix socket or TLS port only."""
    keep = ["--appendonly", "yes", "--appendfsync", "always"] if durable \
        else ["--appendonly", "no"]
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--dir", str(directory),
                             *keep, "--save", "", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        unix = extra[extra.index("--unixsocket") + 1] if "--unixsocket" in extra else None
        if "--tls-port" in extra:
            port = int(extra[extra.index("--tls-port") + 1])
        while not (socket_listening(Path(unix)) if unix else listening(port)):
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
