"""Decompressing message bodies with a size cap, so a small compressed message cannot inflate
into gigabytes (a decompression bomb).

kombu decompresses a received body itself, through its compression registry, before any qtui
code sees the message. :func:`cap_decompression` registers, for every codec of that registry, a
decoder that inflates in steps with each module's incremental decompressor (``max_length``) and
raises :class:`BodyTooLarge` past the cap: kombu then keeps the raw compressed body and the error,
and the worker dead-letters the message as it came. The cap is one per process (the worker's
``worker_max_body_size``).
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from typing import Any

from kombu import compression as registry

from .exceptions import QtuiError

#: ``worker_max_body_size``'s default, and the cap where no worker setting applies (peek).
DEFAULT_MAX_BODY_SIZE = 128 << 20


class BodyTooLarge(QtuiError):
    """A message body is larger than the cap (once decompressed, where it is compressed)."""

    def __init__(self, limit: int, compressed: bool = True) -> None:
        what = "decompressed body" if compressed else "body"
        super().__init__(f"{what} exceeds {limit} bytes (worker_max_body_size)")
        self.limit = limit


#: Bytes inflated at a time: the body grows in place, never beside a copy of itself.
STEP = 1 << 20


def _step(out: bytes | bytearray, limit: int) -> int:
    """How much the next step may inflate: up to one byte past the cap, to tell it was passed."""
    return min(STEP, limit + 1 - len(out))


def _zlib(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj()
    out = bytearray()
    data = body
    while not inflater.eof:
        out += inflater.decompress(data, _step(out, limit))
        data = inflater.unconsumed_tail
        if len(out) > limit:
            raise BodyTooLarge(limit)
        if not data and not inflater.eof:
            out += inflater.flush()
            if not inflater.eof:
                raise zlib.error("incomplete or truncated stream")
    return bytes(out)


def _streams(make: Callable[[], Any]) -> Callable[[bytes, int], bytes]:
    """A capped decoder for a codec whose one-shot ``decompress`` reads concatenated streams
    (bz2, lzma, zstd): each stream through a new incremental decompressor."""
    def decode(body: bytes, limit: int) -> bytes:
        out = bytearray()
        data = body
        while True:
            inflater = make()
            while not inflater.eof:
                out += inflater.decompress(data, _step(out, limit))
                data = b""
                if len(out) > limit:
                    raise BodyTooLarge(limit)
                if inflater.needs_input and not inflater.eof:
                    raise EOFError("compressed data ended before the end-of-stream marker")
            data = inflater.unused_data
            if not data:
                return bytes(out)
    return decode


def _brotli(module: Any) -> Callable[[bytes, int], bytes]:
    """brotli's output limit is a buffer size it may pass by one block: the total is checked."""
    def decode(body: bytes, limit: int) -> bytes:
        inflater = module.Decompressor()
        out = bytearray(inflater.process(body, output_buffer_limit=_step(b"", limit)))
        while len(out) <= limit and not inflater.is_finished():
            more = inflater.process(b"", output_buffer_limit=_step(out, limit))
            if not more:
                raise module.error("compressed data ended before the end of the stream")
            out += more
        if len(out) > limit:
            raise BodyTooLarge(limit)
        return bytes(out)
    return decode


def _decoders() -> tuple[dict[str, Callable[[bytes, int], bytes]], tuple[type[Exception], ...]]:
    """Capped decoders by the content type kombu's registry has for each codec installed, and
    the errors those codecs raise on a corrupt or truncated body."""
    errors: list[type[Exception]] = [zlib.error, OSError, EOFError, lzma.LZMAError]
    found: dict[str, Callable[[bytes, int], bytes]] = {
        "application/x-gzip": _zlib,
        "application/x-bz2": _streams(bz2.BZ2Decompressor),
        "application/x-lzma": _streams(lzma.LZMADecompressor),
    }
    try:
        import brotli
    except ImportError:
        pass  # kombu registers brotli only where it is installed
    else:
        found["application/x-brotli"] = _brotli(brotli)
        errors.append(brotli.error)
    try:
        from backports import zstd
    except ImportError:
        pass  # likewise zstd
    else:
        found["application/zstd"] = _streams(zstd.ZstdDecompressor)
        errors.append(zstd.ZstdError)
    return found, tuple(errors)


DECODERS, CODEC_ERRORS = _decoders()


def decompress(body: bytes, content_type: str, limit: int) -> bytes:
    """``body`` decompressed as ``content_type`` (a content type or alias of kombu's registry);
    :class:`BodyTooLarge` past ``limit`` bytes, ``KeyError`` for a codec qtui cannot cap."""
    _, content_type = registry.get_encoder(content_type)  # an alias to its content type
    return DECODERS[content_type](bytes(body), limit)


def cap_decompression(limit: int) -> None:
    """Make kombu's own decompression of received bodies (in this process) stop at ``limit``
    bytes; a codec that cannot be capped is left out, so kombu refuses it as unknown."""
    for content_type in registry.encoders():
        if content_type in DECODERS:
            decoder = DECODERS[content_type]
            registry.register(registry.get_encoder(content_type)[0],
                              lambda body, decoder=decoder: decoder(bytes(body), limit),
                              content_type)
        else:  # the registry has no way to unregister
            registry._decoders.pop(content_type, None)
