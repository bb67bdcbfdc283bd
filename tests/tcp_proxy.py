"""TCP proxies on localhost: one that can go silent (the network partition a heartbeat must
notice), and a base for proxies that watch a connection's requests and replies."""

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
        self._closed = False
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
                if self._closed:  # accepted as close() ran: dropped, as a closed proxy would
                    client.close()
                    server.close()
                    return
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
        """Stop accepting and drop every connection. The shutdown wakes the accept thread:
        on Linux close() alone leaves a blocked accept() waiting, so it would forward one
        more connection after the cut."""
        with self._lock:
            self._closed = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:  # not connected: nothing to wake
            pass
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.close()
                except OSError:  # already closed by a pump
                    pass


class Interceptor:
    """A TCP proxy to a local ``port`` whose subclass sees every connection's traffic:
    :meth:`_up` pumps what the client sends, :meth:`_down` what the server answers, both with a
    ``state`` dict of their connection's own. Set the subclass's attributes before calling
    this ``__init__``: connections are accepted from then on."""

    def __init__(self, port: int) -> None:
        self.target = port
        """The port behind the proxy."""
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self._sockets += [client, server]
            state: dict = {}
            threading.Thread(target=self._up, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, state), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, state: dict) -> None:
        raise NotImplementedError

    def _down(self, server: socket.socket, client: socket.socket, state: dict) -> None:
        raise NotImplementedError

    @staticmethod
    def _recv(sock: socket.socket) -> bytes:
        try:
            return sock.recv(65536)
        except OSError:
            return b""

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        """Close now, waking a thread blocked on it (close alone does not send the FIN then)."""
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def close(self) -> None:
        self.listener.close()
        for sock in self._sockets:
            self._shut(sock)


def split_resp(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The whole RESP values (RESP2 or RESP3) at the start of ``buffer`` (requests, or replies:
    several may share one read, and one may span reads), and what is left of it, incomplete."""
    values, start = [], 0
    while (end := _resp_end(buffer, start)) is not None:
        values.append(buffer[start:end])
        start = end
    return values, buffer[start:]


#: RESP types followed by a length and that many bytes: bulk string, verbatim string, error.
_BLOBS = frozenset(b"$=!")
#: RESP types followed by a count of values (a map and an attribute: pairs of them).
_AGGREGATES = {ord("*"): 1, ord("~"): 1, ord(">"): 1, ord("%"): 2, ord("|"): 2}


def _resp_end(buffer: bytes, start: int) -> int | None:
    """Where the RESP value at ``start`` ends; None while it is incomplete."""
    line_end = buffer.find(b"\r\n", start)
    if line_end < 0:
        return None
    kind, end = buffer[start], line_end + 2
    if kind in _BLOBS:  # or nil (-1)
        size = int(buffer[start + 1:line_end])
        end += size + 2 if size >= 0 else 0
        return end if end <= len(buffer) else None
    if kind in _AGGREGATES:  # or nil (-1)
        for _ in range(int(buffer[start + 1:line_end]) * _AGGREGATES[kind]):
            found = _resp_end(buffer, end)
            if found is None:
                return None
            end = found
        if kind == ord("|"):  # an attribute comes before the value it is about
            return _resp_end(buffer, end)
    return end  # a simple string, error, number, double, boolean or null: one line
