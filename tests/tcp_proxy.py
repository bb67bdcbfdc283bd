"""A TCP proxy on localhost that can go silent: the network partition a heartbeat must notice."""

from __future__ import annotations

import socket
import threading


class SilentProxy:
    """Forwards every connection to ``upstream``; :meth:`silence` makes the connections open so
    far drop everything both ways while staying open (a half-open connection), and connections
    made afterwards are forwarded as before."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self._silenced: list[threading.Event] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed: the proxy is done
                return
            server = socket.create_connection(self.upstream)
            silenced = threading.Event()
            with self._lock:
                self.connections += 1
                self._silenced.append(silenced)
                self._sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target, silenced),
                                 daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket, silenced: threading.Event) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:  # closed by close()
                return
            if not data:
                if not silenced.is_set():
                    target.close()
                return
            if silenced.is_set():
                continue
            try:
                target.sendall(data)
            except OSError:  # the other side is gone
                return

    def silence(self) -> None:
        with self._lock:
            for silenced in self._silenced:
                silenced.set()

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.close()
                except OSError:  # already closed by a pump
                    pass
