"""Signed remote control: an HMAC over each ``celery.pidbox`` command, so a worker that holds the
secret obeys only clients that hold it too.

Anyone who can publish to the broker can send control commands; Celery has no answer to that.
With ``control_secret`` (or ``control_secret_file``) set, qtui's client adds a
:data:`SIGNATURE_FIELD` to every command's body: an HMAC-SHA256 over a canonical JSON form of
the command's fields, a timestamp and a random nonce. Celery workers ignore the extra body key,
so they still obey. A qtui worker with the secret (:class:`Verifier`) refuses a command that is
unsigned (unless its method is listed in ``control_allow_unsigned``), badly signed, signed
outside the replay window, or whose nonce it has already seen.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import math
import secrets
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from kombu.utils.json import dumps, loads

from .config import Conf
from .exceptions import ConfigError

#: The body key carrying ``{"timestamp", "nonce", "hmac"}``.
SIGNATURE_FIELD = "qtui_signature"
#: The command's fields the HMAC covers: what it does, to whom, and where its reply goes.
SIGNED_FIELDS = ("method", "arguments", "destination", "pattern", "matcher", "ticket", "reply_to")
#: Shorter secrets can be found by brute force from one signed command seen on the broker.
MIN_SECRET_LENGTH = 16
#: Nonces remembered at most (each only until its command leaves the replay window).
MAX_NONCES = 100_000


def secret_of(conf: Conf) -> bytes | None:
    """The control secret from ``control_secret`` or the file ``control_secret_file``; None
    when neither is set (commands go unsigned and workers check nothing)."""
    text: str | None = conf.control_secret
    file: str | None = conf.control_secret_file
    if text and file:
        raise ConfigError("set control_secret or control_secret_file, not both")
    if file:
        path = Path(file).expanduser()
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"control_secret_file {path} cannot be read: {exc}") from None
    if not text:
        if file:
            raise ConfigError(f"control_secret_file {file} is empty")
        return None
    if len(text) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"the control secret must be at least {MIN_SECRET_LENGTH} characters; make one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return text.encode("utf-8")


def _digest(secret: bytes, body: Mapping[str, Any], timestamp: Any, nonce: Any) -> str:
    fields = {name: body.get(name) for name in SIGNED_FIELDS}
    fields.update(timestamp=timestamp, nonce=nonce)
    canonical = dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(secret, canonical.encode("ascii"), hashlib.sha256).hexdigest()


def sign(body: Mapping[str, Any], secret: bytes, now: float | None = None) -> dict[str, Any]:
    """``body`` with its signature; the fields are first put through JSON, so the worker
    computes the HMAC over exactly what it receives (tuples become lists, and so on)."""
    signed: dict[str, Any] = loads(dumps(dict(body)))
    timestamp, nonce = time.time() if now is None else now, secrets.token_hex(16)
    signed[SIGNATURE_FIELD] = {"timestamp": timestamp, "nonce": nonce,
                               "hmac": _digest(secret, signed, timestamp, nonce)}
    return signed


class Verifier:
    """A worker's check of the commands it receives; remembers nonces for the replay window."""

    def __init__(self, secret: bytes, window: float, allow_unsigned: Collection[str]) -> None:
        self.secret = secret
        self.window = window
        self.allow_unsigned = frozenset(allow_unsigned)
        self._seen: set[str] = set()
        self._expiries: list[tuple[float, str]] = []

    def refusal(self, body: Mapping[str, Any], now: float | None = None) -> str | None:
        """Why this command must not run, or None when it may."""
        signature = body.get(SIGNATURE_FIELD)
        if signature is None:
            if body.get("method") in self.allow_unsigned:
                return None
            return "unsigned command (this worker obeys only commands signed with its " \
                   "control secret)"
        if not isinstance(signature, Mapping):
            return "malformed signature"
        timestamp, nonce, digest = (signature.get(k) for k in ("timestamp", "nonce", "hmac"))
        if not (isinstance(timestamp, (int, float)) and not isinstance(timestamp, bool)
                and math.isfinite(timestamp) and isinstance(nonce, str) and 0 < len(nonce) <= 64
                and isinstance(digest, str)):
            return "malformed signature"
        if not hmac.compare_digest(digest, _digest(self.secret, body, timestamp, nonce)):
            return "bad signature (not signed with this worker's control secret)"
        now = time.time() if now is None else now
        if abs(now - timestamp) > self.window:
            return (f"stale signature: its timestamp is {abs(now - timestamp):.0f} s from this "
                    f"worker's clock, outside the replay window of {self.window:g} s (a replay, "
                    "or clocks that disagree)")
        self._forget(now)
        if nonce in self._seen:
            return "replayed command (its nonce was seen already)"
        self._remember(nonce, timestamp + self.window)
        return None

    def _forget(self, now: float) -> None:
        while self._expiries and (self._expiries[0][0] < now or len(self._seen) >= MAX_NONCES):
            self._seen.discard(heapq.heappop(self._expiries)[1])

    def _remember(self, nonce: str, expiry: float) -> None:
        self._seen.add(nonce)
        heapq.heappush(self._expiries, (expiry, nonce))


def verifier_for(conf: Conf) -> Verifier | None:
    """The worker's :class:`Verifier`, or None when no control secret is configured."""
    secret = secret_of(conf)
    if secret is None:
        return None
    return Verifier(secret, conf.control_replay_window, conf.control_allow_unsigned)
