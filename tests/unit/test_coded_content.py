"""Pre-compressed origin content (issue 5 item 5) and the policy's coding options: the pure
rules (RFC 9110 sec. 12.5.3, 8.8.3) and the bounded stream decoder."""

from __future__ import annotations

import gzip
import os
import zlib

import brotli
import pytest

from edgeproxy.config import ConfigError, parse_config
from edgeproxy.http.encoding import decoded_headers, must_decode, variant_headers
from edgeproxy.proxy.compress import StreamDecoder, compress_sync, decompress_limited
from tests.unit.test_config import FILE, base, edit

DATA = os.urandom(512) * 4000  # 2 MB, compressible


@pytest.mark.parametrize(
    ("accept", "coded", "expected"),
    [
        (None, "gzip", False),  # no preference: the coded bytes may go out (sec. 12.5.3)
        ("gzip", "gzip", False),
        ("gzip, br", "br", False),
        ("*", "br", False),
        ("identity", "gzip", True),
        ("br", "gzip", True),
        ("gzip;q=0, br", "gzip", True),
        ("", "gzip", True),  # "does not want any content coding"
        ("deflate", "br", True),
    ],
)
def test_must_decode(accept: str | None, coded: str, expected: bool) -> None:
    assert must_decode(accept, coded) is expected


def test_decoded_headers_invert_the_variant() -> None:
    """The decoded form drops the coding and the coded length/digests, gets a tag of its own
    (sec. 8.8.3) and says Vary: Accept-Encoding; other fields stay in order."""
    coded = [
        ("Content-Type", "application/json"),
        ("Content-Encoding", "gzip"),
        ("Content-Length", "123"),
        ("ETag", 'W/"abc"'),
        ("Content-MD5", "xyz"),
        ("Vary", "Origin"),
        ("X-Custom", "1"),
    ]
    out = decoded_headers(coded, "gzip")
    assert out == [
        ("Content-Type", "application/json"),
        ("ETag", 'W/"abc-gzip-identity"'),
        ("Vary", "Origin, Accept-Encoding"),
        ("X-Custom", "1"),
    ]
    # never the same tag as a variant this cache makes itself from identity bytes
    made = dict(variant_headers([("ETag", '"abc"')], "gzip"))
    assert made["ETag"] != dict(decoded_headers([("ETag", '"abc"')], "gzip"))["ETag"]


@pytest.mark.parametrize("coding", ["gzip", "br"])
@pytest.mark.parametrize("step", [1, 777, 65536, None])
def test_stream_decoder_any_chunking(coding: str, step: int | None) -> None:
    body = compress_sync(DATA, coding)
    step = step or len(body)
    if step == 1:
        body, data = compress_sync(DATA[:3000], coding), DATA[:3000]
    else:
        data = DATA
    decoder = StreamDecoder(coding, piece=8192)
    out = bytearray()
    for i in range(0, len(body), step):
        for piece in decoder.decode(body[i : i + step]):
            assert len(piece) <= 32 * 1024  # bounded (Brotli rounds up to 32 KiB)
            out += piece
    decoder.finish()
    assert bytes(out) == data


def test_stream_decoder_bounds_a_bomb() -> None:
    """64 MiB of zeros in ~64 KiB of gzip: every piece stays bounded."""
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 100_000
    decoder = StreamDecoder("gzip")
    total = 0
    for piece in decoder.decode(bomb):
        assert len(piece) <= 256 * 1024
        total += len(piece)
    decoder.finish()
    assert total == 64 * 1024 * 1024
    assert decompress_limited(bomb, "gzip", 1024 * 1024) is None  # refused, not buffered


def test_stream_decoder_gzip_members_and_errors() -> None:
    two = gzip.compress(b"first ", mtime=0) + gzip.compress(b"second", mtime=0)
    assert decompress_limited(two, "gzip", 100) == b"first second"
    with pytest.raises(ValueError, match="truncated"):
        coded = gzip.compress(DATA)
        decompress_limited(coded[: len(coded) // 2], "gzip", len(DATA))
    with pytest.raises(ValueError, match="truncated"):
        coded = brotli.compress(DATA)
        decompress_limited(coded[: len(coded) // 2], "br", len(DATA))
    with pytest.raises(ValueError, match="bad gzip"):
        decompress_limited(b"not gzip at all", "gzip", 100)
    assert zlib  # the decoder raises ValueError, never zlib.error


def test_policy_coding_options_parse_and_fail_clearly() -> None:
    data = edit(base(), "policy.0.unacceptable_encoding", "406")
    data = edit(data, "policy.0.compress_min_size", "2KiB")
    data = edit(data, "policy.0.compress_max_size", "1MiB")
    policy = parse_config(data, FILE).policies[0]
    assert (policy.unacceptable_encoding, policy.compress_min_size) == ("406", 2048)
    assert policy.compress_max_size == 1024 * 1024
    default = parse_config(base(), FILE).policies[0]
    assert default.unacceptable_encoding == "identity"
    with pytest.raises(ConfigError, match="unacceptable_encoding"):
        parse_config(edit(base(), "policy.0.unacceptable_encoding", "410"), FILE)
    with pytest.raises(ConfigError, match="compress_min_size"):
        parse_config(edit(base(), "policy.0.compress_min_size", "20MiB"), FILE)


def test_store_budget_settings_parse_and_fail_clearly() -> None:
    """[store] min_free (a size or a share of the file system) and max_object_share."""
    store = parse_config(edit(base(), "store.min_free", "1GiB"), FILE).store
    assert (store.min_free, store.min_free_percent) == (1024**3, 0.0)
    store = parse_config(edit(base(), "store.min_free", "5%"), FILE).store
    assert (store.min_free, store.min_free_percent) == (0, 5.0)
    store = parse_config(edit(base(), "store.max_object_share", 0.25), FILE).store
    assert store.max_object_share == 0.25
    assert parse_config(base(), FILE).store.max_object_share == 0.5
    for value in ("x%", "lots", "150%"):
        with pytest.raises(ConfigError, match="min_free"):
            parse_config(edit(base(), "store.min_free", value), FILE)
    for value in (0, 1.5, "half"):
        with pytest.raises(ConfigError, match="max_object_share"):
            parse_config(edit(base(), "store.max_object_share", value), FILE)


def test_eviction_settings_parse_and_fail_clearly() -> None:
    """[store] eviction ("popularity" | "lru") and object_weight (0..1)."""
    store = parse_config(base(), FILE).store
    assert (store.eviction, store.object_weight) == ("popularity", 0.8)
    store = parse_config(
        edit(edit(base(), "store.eviction", "lru"), "store.object_weight", 0), FILE
    )
    assert (store.store.eviction, store.store.object_weight) == ("lru", 0.0)
    with pytest.raises(ConfigError, match="eviction"):
        parse_config(edit(base(), "store.eviction", "fifo"), FILE)
    for value in (-0.1, 1.5, "high", True):
        with pytest.raises(ConfigError, match="object_weight"):
            parse_config(edit(base(), "store.object_weight", value), FILE)


async def test_store_uses_the_configured_policy(tmp_path) -> None:
    from edgeproxy.cache.eviction import LruPolicy, PopularityPolicy
    from edgeproxy.cache.store import DiskStore

    lru = DiskStore(tmp_path / "a", max_size=1 << 20, ram_size=0, ram_object_max=0, eviction="lru")
    weighted = DiskStore(
        tmp_path / "b", max_size=1 << 20, ram_size=0, ram_object_max=0, object_weight=0.3
    )
    try:
        assert isinstance(lru.policy, LruPolicy)
        assert isinstance(weighted.policy, PopularityPolicy) and weighted.policy.alpha == 0.3
    finally:
        await lru.close()
        await weighted.close()
