"""Bounded request-body decoding (events/body.py; spec §3.1 to §3.3)."""

from __future__ import annotations

import gzip
import itertools
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import brotli
import pytest
import zstandard

from events.body import (
    OUTPUT_PIECE_BYTES,
    ZSTD_MAX_PIECE_BYTES,
    BodyDecoder,
    BodyLimits,
    FirstLineProbe,
    decode_body,
    parse_content_encoding,
)
from events.errors import BadRequest, PayloadTooLarge

MIB = 1024 * 1024
LIMITS = BodyLimits(max_request_bytes=20_000_000, max_decompressed_bytes=100_000_000)
SAMPLE = (
    b'{"event_id":"9f1c0de5a1b24e46b9d3cf0d2b6f7a10"}\n{"type":"event"}\n{"message":"hi"}\n' * 50
)


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstandard.ZstdCompressor().compress,
    "identity": lambda data: data,
}


def _feed_in_chunks(decoder: BodyDecoder, data: bytes, size: int) -> None:
    for start in range(0, len(data), size):
        decoder.feed(data[start : start + size])


def _compressed_zeros(encoding: str, total_bytes: int) -> bytes:
    """``total_bytes`` of zeros compressed in 1 MiB steps, so building the bomb stays small."""
    block = bytes(MIB)
    steps = total_bytes // MIB
    if encoding == "gzip":
        gz = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
        return b"".join([*(gz.compress(block) for _ in range(steps)), gz.flush()])
    if encoding == "br":
        br = brotli.Compressor(quality=5)
        return b"".join([*(br.process(block) for _ in range(steps)), br.finish()])
    zs = zstandard.ZstdCompressor().compressobj()
    return b"".join([*(zs.compress(block) for _ in range(steps)), zs.flush()])


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


# --- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("encoding", sorted(COMPRESSORS))
@pytest.mark.parametrize("chunk_size", [1, 7, 65536])
def test_each_supported_encoding_round_trips_when_fed_in_chunks(
    encoding: str, chunk_size: int
) -> None:
    decoder = BodyDecoder(encoding, LIMITS)
    _feed_in_chunks(decoder, COMPRESSORS[encoding](SAMPLE), chunk_size)
    assert decoder.finish() == SAMPLE


def test_gzip_corpus_bodies_decode_to_the_captured_envelopes(
    corpus_name: str, corpus_dir: Path
) -> None:
    envelope = (corpus_dir / f"{corpus_name}.envelope").read_bytes()
    assert decode_body(gzip.compress(envelope), "gzip", LIMITS) == envelope


def test_absent_empty_and_identity_encodings_pass_the_body_through() -> None:
    for header in (None, "", "identity", " Identity "):
        assert decode_body(SAMPLE, header, LIMITS) == SAMPLE


def test_deflate_accepts_raw_deflate_without_zlib_header() -> None:
    assert decode_body(_raw_deflate(SAMPLE), "deflate", LIMITS) == SAMPLE


def test_gzip_with_several_members_decodes_all_of_them() -> None:
    body = gzip.compress(SAMPLE[:100]) + gzip.compress(SAMPLE[100:])
    assert decode_body(body, "gzip", LIMITS) == SAMPLE


def test_zstd_with_several_frames_decodes_all_of_them() -> None:
    compress = zstandard.ZstdCompressor().compress
    assert decode_body(compress(SAMPLE[:100]) + compress(SAMPLE[100:]), "zstd", LIMITS) == SAMPLE


def test_encoding_names_are_case_insensitive_and_x_gzip_is_gzip() -> None:
    assert parse_content_encoding("GZIP") == "gzip"
    assert parse_content_encoding("x-gzip") == "gzip"
    assert parse_content_encoding("gzip, identity") == "gzip"
    assert decode_body(gzip.compress(SAMPLE), "X-Gzip", LIMITS) == SAMPLE


# --- refused encodings and corrupt data -------------------------------------------------


def test_unknown_encoding_is_a_400_naming_it() -> None:
    with pytest.raises(BadRequest) as caught:
        BodyDecoder("compress", LIMITS)
    assert caught.value.status == 400
    assert "'compress'" in caught.value.detail


def test_two_stacked_encodings_are_a_400() -> None:
    with pytest.raises(BadRequest) as caught:
        BodyDecoder("gzip, br", LIMITS)
    assert "'gzip, br'" in caught.value.detail
    assert "more than one content encoding" in caught.value.causes[0]


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_garbage_labelled_as_compressed_is_failed_to_read_request_body(encoding: str) -> None:
    with pytest.raises(BadRequest) as caught:
        decode_body(b"this is not compressed at all, not even a little" * 3, encoding, LIMITS)
    assert caught.value.status == 400
    assert caught.value.detail == "failed to read request body"
    assert caught.value.causes[0] == f"failed to decode {encoding} payload"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_truncated_compressed_stream_is_a_400(encoding: str) -> None:
    truncated = COMPRESSORS[encoding](SAMPLE)[:-4]
    with pytest.raises(BadRequest) as caught:
        decode_body(truncated, encoding, LIMITS)
    assert caught.value.detail == "failed to read request body"


def test_garbage_after_the_gzip_stream_is_a_400() -> None:
    with pytest.raises(BadRequest) as caught:
        decode_body(gzip.compress(SAMPLE) + b"trailing", "gzip", LIMITS)
    assert "unexpected data after the end of the gzip stream" in caught.value.causes[1]


def test_empty_body_is_empty_request_body_for_every_encoding() -> None:
    for encoding in ("identity", "gzip", "br", "zstd", "deflate"):
        with pytest.raises(BadRequest) as caught:
            decode_body(b"", encoding, LIMITS)
        assert caught.value.detail == "empty request body"


def test_compressed_empty_content_is_empty_request_body() -> None:
    with pytest.raises(BadRequest) as caught:
        decode_body(gzip.compress(b""), "gzip", LIMITS)
    assert caught.value.detail == "empty request body"


# --- limits -------------------------------------------------------------------------------


def test_compressed_size_over_limit_is_413_naming_setting_and_limit() -> None:
    decoder = BodyDecoder("identity", BodyLimits(max_request_bytes=1000))
    decoder.feed(b"x" * 1000)
    with pytest.raises(PayloadTooLarge) as caught:
        decoder.feed(b"x")
    assert caught.value.status == 413
    assert caught.value.detail == "request body exceeds CRASHRAY_MAX_REQUEST_BYTES (1000 bytes)"
    assert "1001 bytes" in caught.value.causes[0]


def test_compressed_size_limit_counts_wire_bytes_not_decoded_bytes() -> None:
    body = gzip.compress(bytes(100_000))
    limits = BodyLimits(max_request_bytes=len(body) - 1)
    with pytest.raises(PayloadTooLarge) as caught:
        decode_body(body, "gzip", limits)
    assert "CRASHRAY_MAX_REQUEST_BYTES" in caught.value.detail


def test_decompressed_limit_error_cites_the_configured_setting_name() -> None:
    limits = BodyLimits(
        max_request_bytes=MIB,
        max_decompressed_bytes=1000,
        decompressed_setting="CRASHRAY_MAX_EVENT_BYTES",
    )
    with pytest.raises(PayloadTooLarge) as caught:
        decode_body(gzip.compress(bytes(5000)), "gzip", limits)
    assert caught.value.detail == (
        "decompressed request body exceeds CRASHRAY_MAX_EVENT_BYTES (1000 bytes)"
    )


def test_identity_body_over_decoded_limit_is_413() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        decode_body(b"x" * 11, None, BodyLimits(max_decompressed_bytes=10))
    assert caught.value.detail == "request body exceeds CRASHRAY_MAX_ENVELOPE_BYTES (10 bytes)"


def test_body_exactly_at_both_limits_is_accepted() -> None:
    limits = BodyLimits(max_request_bytes=len(SAMPLE), max_decompressed_bytes=len(SAMPLE))
    assert decode_body(SAMPLE, None, limits) == SAMPLE


def test_decoder_keeps_failing_after_a_limit_error_and_drops_its_buffer() -> None:
    decoder = BodyDecoder("identity", BodyLimits(max_decompressed_bytes=10))
    decoder.feed(b"12345")
    with pytest.raises(PayloadTooLarge):
        decoder.feed(b"123456")
    assert decoder.decompressed_bytes == 0
    with pytest.raises(PayloadTooLarge):
        decoder.finish()


def test_feeding_after_finish_is_a_programming_error() -> None:
    decoder = BodyDecoder(None, LIMITS)
    decoder.feed(b"{}")
    decoder.finish()
    with pytest.raises(RuntimeError):
        decoder.feed(b"more")


# --- decompression bombs --------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "bomb_bytes"),
    [("gzip", 200 * MIB), ("zstd", 200 * MIB), ("br", 50 * MIB)],
)
def test_decompression_bomb_is_cut_off_at_the_limit_without_inflating_it(
    encoding: str, bomb_bytes: int
) -> None:
    bomb = _compressed_zeros(encoding, bomb_bytes)
    limit = 1 * MIB
    # Beyond the limit a decoder holds one piece of output (built by the library, so up to
    # twice that transiently), its output buffer's over-allocation (BytesIO grows by 1/8)
    # and a few copies of the 64 KiB input chunk.
    piece = ZSTD_MAX_PIECE_BYTES if encoding == "zstd" else 2 * OUTPUT_PIECE_BYTES
    allowed_peak = limit + limit // 4 + 2 * piece + 4 * 64 * 1024
    decoder = BodyDecoder(encoding, BodyLimits(max_decompressed_bytes=limit))
    fed = 0
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge) as caught:
            for chunk in _chunks(bomb, 64 * 1024):
                decoder.feed(chunk)
                fed += len(chunk)
                assert decoder.decompressed_bytes <= limit
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.detail == (
        f"decompressed request body exceeds CRASHRAY_MAX_ENVELOPE_BYTES ({limit} bytes)"
    )
    # The decoder stopped early and never held more than the limit plus one piece (and the
    # bytes it was handed), while the bomb would have inflated to bomb_bytes.
    assert fed < len(bomb) or len(bomb) <= 64 * 1024
    assert peak_bytes < allowed_peak
    assert peak_bytes < bomb_bytes // 20


# --- the first line before the key is known ---------------------------------------------

PROBE_LIMIT = 64 * 1024
HEADER = b'{"dsn":"https://abc@errors.example.org/1","sent_at":"2026-01-01T00:00:00Z"}'


@pytest.mark.parametrize("encoding", sorted(COMPRESSORS))
@pytest.mark.parametrize("chunk_size", [1, 100, 65536])
def test_the_probe_finds_the_envelope_header_line_in_any_encoding(
    encoding: str, chunk_size: int
) -> None:
    body = COMPRESSORS[encoding](b"\n " + HEADER + b"\n" + bytes(range(256)) * 4000)
    probe = FirstLineProbe(encoding, PROBE_LIMIT)
    fed = 0
    for chunk in _chunks(body, chunk_size):
        fed += len(chunk)
        if probe.feed(chunk):
            break
    assert probe.first_line == HEADER  # leading whitespace skipped, as parse_envelope does
    assert probe.decoded_bytes <= PROBE_LIMIT + ZSTD_MAX_PIECE_BYTES


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_the_probe_gives_up_on_a_bomb_after_its_limit(encoding: str) -> None:
    bomb = _compressed_zeros(encoding, 200 * MIB)
    probe = FirstLineProbe(encoding, PROBE_LIMIT)
    fed = 0
    for chunk in _chunks(bomb, 64 * 1024):
        fed += len(chunk)
        if probe.feed(chunk):
            break
    else:
        pytest.fail("the probe read the whole bomb")
    assert probe.first_line is None
    assert probe.decoded_bytes <= PROBE_LIMIT + ZSTD_MAX_PIECE_BYTES
    assert fed <= 2 * 64 * 1024


def test_the_probe_gives_up_after_its_limit_of_bytes_on_the_wire() -> None:
    probe = FirstLineProbe(None, PROBE_LIMIT)
    chunks = _chunks(b" " * (PROBE_LIMIT + 1), 1000)
    assert not any(probe.feed(chunk) for chunk in itertools.islice(chunks, 65))
    assert probe.feed(next(chunks)) and probe.first_line is None


def test_a_body_without_newline_is_all_first_line() -> None:
    probe = FirstLineProbe("gzip", PROBE_LIMIT)
    assert not probe.feed(gzip.compress(HEADER))
    probe.finish()
    assert probe.first_line == HEADER


def test_the_probe_refuses_corrupt_data_as_the_decoder_does() -> None:
    probe = FirstLineProbe("gzip", PROBE_LIMIT)
    with pytest.raises(BadRequest) as caught:
        probe.feed(b"\x1f\x8b not gzip at all")
    assert caught.value.detail == "failed to read request body"
