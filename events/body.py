"""Bounded reading and decompression of request bodies (spec §3.1 to §3.3, §10 step 3).

An SDK body arrives in chunks (``Transfer-Encoding: chunked`` has no ``Content-Length``),
possibly compressed. ``BodyDecoder`` counts the bytes on the wire against
``max_request_bytes`` and the decoded bytes against ``max_decompressed_bytes`` *while* it
streams, and never asks a decompressor for more output than one bounded piece at a time, so a
decompression bomb is cut off at the limit instead of being inflated into memory first
(Relay does the same with a byte-limited sink: relay-server/src/extractors/decoder.rs).

Errors (all from ``events.errors``):

* a limit is exceeded              → ``PayloadTooLarge`` naming the setting and the limit;
* corrupt or truncated compressed  → ``BadRequest("failed to read request body", causes)``;
* unknown ``Content-Encoding``     → ``BadRequest`` naming the encoding;
* nothing decoded at all           → ``BadRequest("empty request body")`` (spec §3.4).

Multiple encodings (``Content-Encoding: gzip, br``) are rejected with a 400: no SDK sends
them (spec §3.1 lists one encoding per request), and decoding a chain would need a bounded
buffer between every pair of stages for no real client.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import brotli
import zstandard

from events.errors import BadRequest, CrashrayError, PayloadTooLarge

__all__ = [
    "DEFAULT_MAX_DECOMPRESSED_BYTES",
    "DEFAULT_MAX_REQUEST_BYTES",
    "SUPPORTED_ENCODINGS",
    "BodyDecoder",
    "BodyLimits",
    "FirstLineProbe",
    "decode_body",
]

MIB = 1024 * 1024
MB = 1000 * 1000

# The develop docs' figures for Relay's defaults (spec §3.2): 20 MB on the wire, 100 MB decoded;
# the same defaults as CRASHRAY_MAX_REQUEST_BYTES / CRASHRAY_MAX_ENVELOPE_BYTES.
DEFAULT_MAX_REQUEST_BYTES = 20 * MB
DEFAULT_MAX_DECOMPRESSED_BYTES = 100 * MB

# Largest piece of output requested from a decompressor per call. It bounds how far past a
# limit the decoder can get before noticing: at most one piece.
OUTPUT_PIECE_BYTES = 64 * 1024

# zstd's format caps a block's output at 128 KiB and a block costs at least 4 input bytes
# (3-byte header + 1 byte of RLE content), so one input byte yields at most 32 KiB of output.
# python-zstandard's decompressobj has no max_length, so we bound its output by feeding it
# input slices sized so that one slice can produce at most a quarter of the remaining budget,
# and never less than 4 bytes (at most two blocks, 256 KiB). See _ZstdInflater.
_ZSTD_MAX_OUTPUT_PER_INPUT_BYTE = 32 * 1024
_ZSTD_BUDGET_SHARE_PER_SLICE = 4
_ZSTD_MIN_SLICE_BYTES = 4
ZSTD_MAX_PIECE_BYTES = 2 * 128 * 1024
# A frame may ask for a window of up to 2 GiB, which the decompressor allocates up front.
# 16 MiB covers every standard level (19 uses 8 MiB); larger windows (--ultra levels, --long)
# are refused as corrupt data rather than allocated.
_ZSTD_MAX_WINDOW_BYTES = 16 * MIB

SUPPORTED_ENCODINGS = ("gzip", "deflate", "br", "zstd", "identity")
# RFC 9110 §8.4.1.3: recipients SHOULD treat x-gzip as gzip.
_ENCODING_ALIASES = {"x-gzip": "gzip"}


@dataclass(frozen=True)
class BodyLimits:
    """Byte limits for one request body, with the settings they come from (for messages)."""

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES
    request_setting: str = "CRASHRAY_MAX_REQUEST_BYTES"
    decompressed_setting: str = "CRASHRAY_MAX_ENVELOPE_BYTES"


class _CorruptStream(Exception):
    """Raised by an inflater for structural problems its library does not report."""


class _Inflater(Protocol):
    def inflate(self, data: bytes, budget: int) -> Iterator[bytes]:
        """Decode ``data``, yielding pieces; ``budget`` is how many more bytes may be kept."""
        ...

    def drain(self, budget: int) -> Iterator[bytes]:
        """Yield output still held inside the decompressor, then check the stream ended."""
        ...


class _IdentityInflater:
    def inflate(self, data: bytes, budget: int) -> Iterator[bytes]:
        yield data

    def drain(self, budget: int) -> Iterator[bytes]:
        return iter(())


class _ZlibInflater:
    """gzip (RFC 1952) and deflate (RFC 1950 zlib-wrapped, or raw RFC 1951 deflate)."""

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        self._obj: zlib._Decompress | None = None
        # deflate needs two bytes to tell a zlib header from raw deflate.
        self._prefix = b""
        if encoding == "gzip":
            # 32 + 15: accept a gzip header and, leniently, a mislabelled zlib one.
            self._obj = zlib.decompressobj(32 + zlib.MAX_WBITS)

    def inflate(self, data: bytes, budget: int) -> Iterator[bytes]:
        if self._obj is None:
            self._prefix += data
            if len(self._prefix) < 2:
                return
            data, self._prefix = self._prefix, b""
            self._obj = zlib.decompressobj(_deflate_wbits(data))
        yield from self._pieces(data)

    def _pieces(self, data: bytes) -> Iterator[bytes]:
        obj = self._obj
        while obj is not None:
            piece = obj.decompress(data, OUTPUT_PIECE_BYTES)
            if piece:
                yield piece
            data = obj.unconsumed_tail
            if obj.eof:
                yield from self._after_end(obj.unused_data + data)
                return
            # A full piece may mean zlib still holds output even when all input was consumed.
            if not data and len(piece) < OUTPUT_PIECE_BYTES:
                return

    def _after_end(self, rest: bytes) -> Iterator[bytes]:
        if not rest:
            return
        if self._encoding != "gzip" or not _GZIP_MAGIC.startswith(rest[:2]):
            raise _CorruptStream(
                f"{len(rest)} bytes of unexpected data after the end of the {self._encoding} stream"
            )
        # RFC 1952 §2.2: a gzip file is a series of members; decode the next one.
        self._obj = zlib.decompressobj(32 + zlib.MAX_WBITS)
        yield from self._pieces(rest)

    def drain(self, budget: int) -> Iterator[bytes]:
        if self._obj is None:
            if self._prefix:
                raise _CorruptStream(f"{self._encoding} stream is truncated after 1 byte")
            return
        if not self._obj.eof:
            yield from self._pieces(b"")
        if not self._obj.eof:
            raise _CorruptStream(f"{self._encoding} stream is truncated (no end-of-stream marker)")


_GZIP_MAGIC = b"\x1f\x8b"


def _deflate_wbits(first_bytes: bytes) -> int:
    """zlib-wrapped when the first two bytes are a valid RFC 1950 §2.2 header, else raw.

    "deflate" means zlib-wrapped (RFC 9110 §8.4.1.2, spec §3.1), but some clients send raw
    deflate under that name. Only a raw stream opening with a non-final stored block can pass
    the check by chance; it then fails as corrupt data (400) rather than being misread.
    """
    cmf, flg = first_bytes[0], first_bytes[1]
    is_zlib_header = cmf & 0x0F == 8 and cmf >> 4 <= 7 and ((cmf << 8) | flg) % 31 == 0
    return zlib.MAX_WBITS if is_zlib_header else -zlib.MAX_WBITS


class _BrotliInflater:
    def __init__(self) -> None:
        self._obj = brotli.Decompressor()

    def inflate(self, data: bytes, budget: int) -> Iterator[bytes]:
        # brotli >= 1.2: with output_buffer_limit the decoder stops early and must then be
        # called with empty input until it can accept more data.
        yield self._obj.process(data, output_buffer_limit=OUTPUT_PIECE_BYTES)
        yield from self.drain_pending()

    def drain_pending(self) -> Iterator[bytes]:
        while not self._obj.can_accept_more_data():
            yield self._obj.process(b"", output_buffer_limit=OUTPUT_PIECE_BYTES)

    def drain(self, budget: int) -> Iterator[bytes]:
        yield from self.drain_pending()
        if not self._obj.is_finished():
            raise _CorruptStream("br stream is truncated (no end-of-stream marker)")


class _ZstdInflater:
    def __init__(self) -> None:
        self._dctx = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW_BYTES)
        self._obj = self._dctx.decompressobj()
        self._seen_input = False

    def inflate(self, data: bytes, budget: int) -> Iterator[bytes]:
        self._seen_input = self._seen_input or bool(data)
        # Output per slice <= slice * 32 KiB + one pending block: at most a quarter of the
        # remaining budget, or ZSTD_MAX_PIECE_BYTES near the limit. A bomb is stopped within
        # a few slices of crossing it.
        step = max(
            _ZSTD_MIN_SLICE_BYTES,
            budget // (_ZSTD_BUDGET_SHARE_PER_SLICE * _ZSTD_MAX_OUTPUT_PER_INPUT_BYTE),
        )
        view = memoryview(data)
        for start in range(0, len(data), step):
            yield from self._frames(bytes(view[start : start + step]))

    def _frames(self, chunk: bytes) -> Iterator[bytes]:
        while True:
            yield self._obj.decompress(chunk)
            if not (self._obj.eof and self._obj.unused_data):
                return
            # Several frames back to back are one valid zstd stream (RFC 8878 §3.1); whatever
            # follows a frame must itself be a frame, or the next decompress() reports it.
            chunk = self._obj.unused_data
            self._obj = self._dctx.decompressobj()

    def drain(self, budget: int) -> Iterator[bytes]:
        if self._seen_input and not self._obj.eof:
            raise _CorruptStream("zstd stream is truncated (frame is incomplete)")
        return iter(())


def _inflater_for(encoding: str) -> _Inflater:
    if encoding in ("gzip", "deflate"):
        return _ZlibInflater(encoding)
    if encoding == "br":
        return _BrotliInflater()
    if encoding == "zstd":
        return _ZstdInflater()
    return _IdentityInflater()


def parse_content_encoding(header_value: str | None) -> str:
    """The one encoding named by a ``Content-Encoding`` header, lower-cased.

    Absent, empty and ``identity`` mean no encoding. A list of several real encodings is
    refused (see module docstring), as is any name outside ``SUPPORTED_ENCODINGS``.
    """
    names = [
        _ENCODING_ALIASES.get(name, name)
        for name in (part.strip().lower() for part in (header_value or "").split(","))
        if name not in ("", "identity")
    ]
    if not names:
        return "identity"
    if len(names) > 1:
        raise BadRequest(
            f"unsupported content encoding: {header_value!r}",
            [
                "more than one content encoding is not supported; "
                "compress the body once with one of gzip, deflate, br, zstd"
            ],
        )
    if names[0] not in SUPPORTED_ENCODINGS:
        raise BadRequest(
            f"unsupported content encoding: {names[0]!r}",
            [f"supported encodings: {', '.join(SUPPORTED_ENCODINGS)}"],
        )
    return names[0]


class BodyDecoder:
    """Incremental, bounded decoder of one request body.

    Call ``feed`` with each chunk as it arrives and ``finish`` once at the end. At any time it
    holds at most ``max_decompressed_bytes`` of decoded output plus one piece of decompressor
    output (``OUTPUT_PIECE_BYTES``, about 1.5x that for brotli; for zstd at most a quarter of
    the remaining budget or ``ZSTD_MAX_PIECE_BYTES``). After a
    limit or decoding error it drops what it held and re-raises that error on every call.
    """

    def __init__(self, content_encoding: str | None, limits: BodyLimits) -> None:
        self.encoding = parse_content_encoding(content_encoding)
        self.limits = limits
        self._inflater = _inflater_for(self.encoding)
        self._output = io.BytesIO()
        self._compressed_bytes = 0
        self._decompressed_bytes = 0
        self._error: CrashrayError | None = None
        self._finished = False

    @property
    def compressed_bytes(self) -> int:
        """Bytes received so far, as sent on the wire."""
        return self._compressed_bytes

    @property
    def decompressed_bytes(self) -> int:
        """Decoded bytes currently held (what ``finish`` will return so far)."""
        return self._decompressed_bytes

    def feed(self, chunk: bytes) -> None:
        """Decode one chunk of the body; raises as soon as a limit is crossed."""
        self._check_usable()
        self._compressed_bytes += len(chunk)
        if self._compressed_bytes > self.limits.max_request_bytes:
            self._fail(self._request_too_large())
        self._consume(lambda budget: self._inflater.inflate(chunk, budget))

    def finish(self) -> bytes:
        """End of body: flush the decompressor, check the stream ended, return the bytes."""
        self._check_usable()
        self._finished = True
        if self._compressed_bytes == 0:
            self._fail(BadRequest("empty request body"))
        self._consume(self._inflater.drain)
        if self._decompressed_bytes == 0:
            self._fail(BadRequest("empty request body"))
        body = self._output.getvalue()
        self._output = io.BytesIO()
        return body

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._finished:
            raise RuntimeError("BodyDecoder used after finish()")

    def _consume(self, pieces_for_budget: Callable[[int], Iterator[bytes]]) -> None:
        # The one place decompressor errors are translated (STYLE: third-party errors are
        # translated in one place); spec §3.4 gives the "failed to read request body" shape.
        try:
            for piece in pieces_for_budget(self._budget()):
                self._keep(piece)
        except (zlib.error, brotli.error, zstandard.ZstdError, _CorruptStream) as exc:
            self._fail(
                BadRequest(
                    "failed to read request body",
                    [f"failed to decode {self.encoding} payload", str(exc)],
                )
            )

    def _budget(self) -> int:
        return self.limits.max_decompressed_bytes - self._decompressed_bytes

    def _keep(self, piece: bytes) -> None:
        seen = self._decompressed_bytes + len(piece)
        if seen > self.limits.max_decompressed_bytes:
            self._fail(self._decompressed_too_large(seen))
        self._output.write(piece)
        self._decompressed_bytes = seen

    def _fail(self, error: CrashrayError) -> None:
        self._error = error
        self._output = io.BytesIO()
        self._decompressed_bytes = 0
        raise error

    def _request_too_large(self) -> PayloadTooLarge:
        limit, setting = self.limits.max_request_bytes, self.limits.request_setting
        return PayloadTooLarge(
            f"request body exceeds {setting} ({limit} bytes)",
            [
                f"received at least {self._compressed_bytes} bytes ({self.encoding}); "
                f"send a smaller envelope or raise {setting}"
            ],
        )

    def _decompressed_too_large(self, seen: int) -> PayloadTooLarge:
        limit, setting = self.limits.max_decompressed_bytes, self.limits.decompressed_setting
        what = "request body" if self.encoding == "identity" else "decompressed request body"
        return PayloadTooLarge(
            f"{what} exceeds {setting} ({limit} bytes)",
            [
                f"decoding stopped at {seen} bytes of output from {self._compressed_bytes} "
                f"bytes of {self.encoding} input; send a smaller envelope or raise {setting}"
            ],
        )


#: What may come before an envelope's header line (JSON whitespace, spec §2.1 rule 8).
_LEADING_WHITESPACE = b" \t\r\n"


class FirstLineProbe:
    """The first line of a body (its envelope header), decoded from at most ``max_bytes``
    on the wire into at most ``max_bytes`` (plus one decompressor piece).

    For a request whose key is only inside the envelope (the ``dsn`` header, spec §1.2 #6):
    ingest learns the key from this line before it reads, holds or inflates the rest of an
    unknown sender's body. Leading whitespace is skipped as ``parse_envelope`` skips it. The
    probe reads its own copy; ingest then decodes the body from its first byte with a
    ``BodyDecoder``. Corrupt compressed data is refused as ``BodyDecoder`` refuses it.
    """

    def __init__(self, content_encoding: str | None, max_bytes: int) -> None:
        self.encoding = parse_content_encoding(content_encoding)
        self._inflater = _inflater_for(self.encoding)
        self._max_bytes = max_bytes
        self._wire_bytes = 0
        self._decoded_bytes = 0
        self._line = bytearray()
        self._started = False
        self._done = False
        #: The line without its newline once found; None while unknown or after giving up.
        self.first_line: bytes | None = None

    @property
    def decoded_bytes(self) -> int:
        return self._decoded_bytes

    def feed(self, chunk: bytes) -> bool:
        """Take the next chunk; True once probing is over: the line was found
        (``first_line``) or the limit passed without it (``first_line`` is None)."""
        if self._done:
            return True
        self._wire_bytes += len(chunk)
        self._take(lambda budget: self._inflater.inflate(chunk, budget))
        if self.first_line is None and max(self._wire_bytes,
                                           self._decoded_bytes) > self._max_bytes:
            self._done = True
        return self._done

    def finish(self) -> None:
        """The body ended before a newline: the first line is all of it (an envelope of
        headers only). Raises ``BadRequest`` for an empty body, as ``BodyDecoder`` does."""
        if not self._done:
            self._take(self._inflater.drain)
        if not self._done:
            self._done = True
            self.first_line = bytes(self._line)
        if self._decoded_bytes == 0:
            raise BadRequest("empty request body")

    def _take(self, pieces_for_budget: Callable[[int], Iterator[bytes]]) -> None:
        try:
            for piece in pieces_for_budget(max(self._max_bytes - self._decoded_bytes, 1)):
                self._decoded_bytes += len(piece)
                if self._line_ends_in(piece) or self._decoded_bytes > self._max_bytes:
                    return  # stop inflating: the rest of this chunk is not needed
        except (zlib.error, brotli.error, zstandard.ZstdError, _CorruptStream) as exc:
            raise BadRequest("failed to read request body",
                             [f"failed to decode {self.encoding} payload", str(exc)]) from None

    def _line_ends_in(self, piece: bytes) -> bool:
        if not self._started:
            piece = piece.lstrip(_LEADING_WHITESPACE)
            self._started = bool(piece)
        end = piece.find(b"\n")
        self._line += piece if end < 0 else piece[:end]
        if end >= 0:
            self.first_line, self._done = bytes(self._line), True
        return end >= 0


def decode_body(data: bytes, content_encoding: str | None, limits: BodyLimits) -> bytes:
    """Decode a body that is already fully in memory (tests, the legacy /store/ path)."""
    decoder = BodyDecoder(content_encoding, limits)
    decoder.feed(data)
    return decoder.finish()
