"""Content codings (RFC 9110 sec. 8.4, 12.5.3): negotiation buckets, what may be compressed,
and the header section of a compressed variant."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.http import encoding
from edgeproxy.http.encoding import (
    BUCKETS,
    acceptable_codings,
    add_vary_accept_encoding,
    coding_of,
    identity_headers,
    is_compressible_type,
    key_variant,
    negotiate,
    should_compress,
    variant_etag,
    variant_headers,
)

# --- sec. 12.5.3 Accept-Encoding: every bucket ------------------------------------------------


@pytest.mark.parametrize(
    ("value", "bucket"),
    [
        # what browsers and tools send
        ("gzip, deflate, br, zstd", "br"),
        ("gzip, deflate, br", "br"),
        ("br, gzip", "br"),
        ("gzip, deflate", "gzip"),
        ("gzip", "gzip"),
        ("br", "br"),
        ("deflate", "identity"),  # nothing we produce: no coding
        ("zstd", "identity"),
        ("identity", "identity"),
        # ties are broken br > gzip > identity, whatever the order of the members
        ("gzip, br", "br"),
        ("identity, gzip", "gzip"),
        ("identity, br, gzip", "br"),
        ("gzip;q=0.5, br;q=0.5", "br"),
        ("identity;q=0.5, gzip;q=0.5", "gzip"),
        # q-values (sec. 12.4.2) decide before the tie-break
        ("br;q=0.5, gzip", "gzip"),
        ("br;q=0.9, gzip;q=1.0", "gzip"),
        ("gzip;q=0.8, br;q=0.9", "br"),
        ("br;q=0.1, identity", "identity"),
        ("br;q=0.001, gzip;q=0", "br"),
        ("gzip;q=1.000", "gzip"),
        ("br;q=0", "identity"),  # br refused; identity acceptable by default
        ("br;q=0, gzip", "gzip"),
        ("gzip;q=0, br;q=0", "identity"),
        ("gzip; q=0.7 , br ; q = 0.3", "gzip"),  # OWS around ";" (and, leniently, "=")
        # "*" matches every coding not listed
        ("*", "br"),
        ("*;q=0.5", "br"),
        ("gzip, *;q=0.5", "gzip"),
        ("br;q=0, *", "gzip"),
        ("br;q=0, gzip;q=0, *", "identity"),
        ("*;q=0.2, identity;q=0.5", "identity"),
        ("*;q=0, gzip", "gzip"),
        ("*;q=0, identity", "identity"),
        ("*;q=0, identity;q=0.1", "identity"),
        # identity;q=0: compressed only
        ("gzip, identity;q=0", "gzip"),
        ("br, gzip, identity;q=0", "br"),
        ("br;q=0, gzip, identity;q=0", "gzip"),
        # x-gzip is gzip (sec. 8.4.1.3); codings are case-insensitive
        ("x-gzip", "gzip"),
        ("X-GZIP;q=0.5, identity;q=0.1", "gzip"),
        ("GZIP, BR", "br"),
        ("Gzip;Q=0.4, Br;Q=0.3", "gzip"),
        # listed twice: the higher weight counts
        ("gzip;q=0, gzip;q=0.5", "gzip"),
        ("x-gzip;q=0, gzip", "gzip"),
    ],
)
def test_negotiate_buckets(value: str, bucket: str) -> None:
    assert negotiate(value) == bucket


@pytest.mark.parametrize(
    "value",
    [
        "identity;q=0",
        "*;q=0",
        "br;q=0, gzip;q=0, identity;q=0",
        "deflate, identity;q=0",
        "zstd, *;q=0",
        "br;q=0, *;q=0",
        "IDENTITY;Q=0",
        "identity;q=0.000",
    ],
)
def test_nothing_acceptable_is_none(value: str) -> None:
    """Sec. 12.5.3 / 15.5.7: nothing acceptable -> None (406 if the policy asks, else
    identity, the caller's choice)."""
    assert negotiate(value) is None
    assert acceptable_codings(value) == frozenset()


def test_absent_and_empty_mean_identity() -> None:
    """Absent: "no preferences" -> identity; empty: "does not want any content coding"."""
    assert negotiate(None) == "identity"
    assert negotiate("") == "identity"
    assert negotiate("   ") == "identity"
    assert negotiate(" , ,, ") == "identity"


@pytest.mark.parametrize(
    ("value", "bucket"),
    [
        ("gzip;q=abc", "identity"),  # member with a garbage weight is ignored
        ("gzip;q=abc, br", "br"),
        ("br;q=, gzip", "gzip"),
        ("br;q=-1, gzip", "gzip"),
        ("br;q=nan, gzip;q=0.2", "gzip"),
        ("br;q=1.5, gzip", "br"),  # numeric but out of range: clamped to 1 -> tie -> br
        ("br;q=0.0001", "br"),  # more than 3 decimals: read as a number
        ("gzip;level=9", "gzip"),  # unknown parameter ignored
        ("gzip;foo;q=0.5, identity;q=0.4", "gzip"),
        (";q=1, gzip", "gzip"),  # empty coding skipped
        ("gzip,,,br", "br"),
        ("\tgzip\t,\tbr\t", "br"),
        ("compress, x-compress", "identity"),
        ("b r, g zip", "identity"),
        ("br;q=0.5;q=0.9", "br"),
        ('gzip;q="0.5"', "identity"),
        ("ünïcødé, gzip", "gzip"),
    ],
)
def test_garbage_tolerant(value: str, bucket: str) -> None:
    assert negotiate(value) == bucket


def test_acceptable_codings() -> None:
    assert acceptable_codings("br, gzip") == {"br", "gzip", "identity"}
    assert acceptable_codings("gzip, identity;q=0") == {"gzip"}
    assert acceptable_codings("*;q=0, br") == {"br"}
    assert acceptable_codings(None) == {"identity"}
    assert acceptable_codings("deflate") == {"identity"}


@given(st.text(max_size=80))
def test_negotiate_never_raises_and_stays_in_buckets(value: str) -> None:
    result = negotiate(value)
    assert result is None or result in BUCKETS
    assert (result is None) == (not acceptable_codings(value))
    if result is not None:
        assert result in acceptable_codings(value)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["br", "gzip", "x-gzip", "identity", "*", "deflate"]),
            st.one_of(st.none(), st.integers(0, 1000)),
        ),
        max_size=6,
    )
)
def test_negotiate_picks_a_highest_weight(members: list[tuple[str, int | None]]) -> None:
    """Property: the chosen bucket has the highest effective weight; no acceptable bucket
    is skipped for a lower one."""
    value = ", ".join(c if q is None else f"{c};q={q / 1000:.3f}" for c, q in members)
    weights: dict[str, float] = {}
    star: float | None = None
    for coding, q in members:
        w = 1.0 if q is None else q / 1000
        coding = "gzip" if coding == "x-gzip" else coding
        if coding == "*":
            star = w if star is None else max(star, w)
        elif coding in BUCKETS:
            weights[coding] = max(weights.get(coding, 0.0), w)
    result = negotiate(value)
    if not weights and star is None:
        assert result == "identity"
        return

    def effective(bucket: str) -> float:
        if bucket in weights:
            return weights[bucket]
        if star is not None:
            return star
        return 1e-9 if bucket == "identity" else 0.0

    best = max(effective(b) for b in BUCKETS)
    if best <= 0:
        assert result is None
    else:
        assert result is not None and effective(result) == best
        assert result == next(b for b in BUCKETS if effective(b) == best)  # tie-break order


def test_memo_is_bounded() -> None:
    for i in range(3000):
        negotiate(f"gzip;q=0.{i % 1000:03d}, x{i}")
    assert len(encoding._memo) <= encoding._MEMO_MAX
    assert negotiate("gzip, deflate, br") == "br"


def test_key_variant() -> None:
    """Identity keeps the plain key (variant ""), so the identity entry is the one every other
    code path (fast path, invalidation) already knows."""
    assert key_variant("identity") == ""
    assert key_variant("br") == "br"
    assert key_variant("gzip") == "gzip"


@pytest.mark.parametrize(
    ("value", "bucket"),
    [
        (None, "identity"),
        ("", "identity"),
        ("identity", "identity"),
        ("br", "br"),
        (" BR ", "br"),
        ("gzip", "gzip"),
        ("x-gzip", "gzip"),
        ("deflate", None),
        ("zstd", None),
        ("gzip, br", None),
    ],
)
def test_coding_of(value: str | None, bucket: str | None) -> None:
    assert coding_of(value) == bucket


# --- the compressible-type table -----------------------------------------------------------


@pytest.mark.parametrize(
    "ctype",
    [
        "text/html",
        "text/html; charset=utf-8",
        "TEXT/CSS",
        "text/plain;charset=UTF-8",
        "text/csv",
        "text/javascript",
        "text/xml",
        "text/vtt",
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/javascript",
        "application/x-javascript",
        "application/xml",
        "application/ld+json",
        "application/problem+json",
        "application/vnd.api+json",
        "application/manifest+json",
        "application/rss+xml",
        "application/atom+xml",
        "application/xhtml+xml",
        "application/dash+xml",
        "application/x-ndjson",
        "application/wasm",
        "application/yaml",
        "application/vnd.apple.mpegurl",
        "application/x-mpegURL",
        "image/svg+xml",
        "image/svg+xml; charset=utf-8",
        "font/ttf",
        "font/otf",
        "font/collection",
        "application/vnd.ms-fontobject",
        "application/x-font-ttf",
        "model/gltf+json",
    ],
)
def test_compressible(ctype: str) -> None:
    assert is_compressible_type(ctype)


@pytest.mark.parametrize(
    "ctype",
    [
        None,
        "",
        "audio/mpeg",
        "audio/mp4",
        "audio/aac",
        "audio/ogg; codecs=opus",
        "audio/wav",  # uncompressed audio: still never (the rule is simple)
        "audio/mpegurl",
        "audio/x-mpegurl",
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/avif",
        "image/gif",
        "image/bmp",
        "image/x-icon",
        "image/svg",  # not the registered SVG type
        "video/mp4",
        "video/mp2t",
        "video/webm",
        "application/zip",
        "application/gzip",
        "application/x-gzip",
        "application/x-tar",
        "application/x-7z-compressed",
        "application/x-bzip2",
        "application/x-xz",
        "application/zstd",
        "application/vnd.rar",
        "application/java-archive",
        "application/epub+zip",
        "application/octet-stream",
        "application/pdf",
        "font/woff",
        "font/woff2",
        "application/font-woff",
        "text/event-stream",
        "multipart/form-data; boundary=x",
        "garbage",
        "/json",
        "text/",
        ";charset=utf-8",
    ],
)
def test_not_compressible(ctype: str | None) -> None:
    assert not is_compressible_type(ctype)


# --- should_compress: policy, status, size limits, coding, no-transform, Range --------------

BASE = dict(
    policy_compress=True,
    status=200,
    content_type="application/json",
    content_encoding=None,
    content_length=50 * 1024,
    resp_cc_no_transform=False,
    has_range=False,
)


def test_should_compress_base_case() -> None:
    assert should_compress(**BASE)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"policy_compress": False}, False),
        ({"status": 403}, True),
        ({"status": 404}, True),
        ({"status": 206}, False),
        ({"status": 301}, False),
        ({"status": 304}, False),
        ({"status": 500}, False),
        ({"content_type": "audio/mpeg"}, False),
        ({"content_type": "image/jpeg"}, False),
        ({"content_type": "image/svg+xml"}, True),
        ({"content_type": "video/mp4"}, False),
        ({"content_type": None}, False),
        ({"content_encoding": "gzip"}, False),  # never double-compress
        ({"content_encoding": "br"}, False),
        ({"content_encoding": "deflate"}, False),
        ({"content_encoding": "identity"}, True),
        ({"content_encoding": ""}, True),
        ({"resp_cc_no_transform": True}, False),  # RFC 9111 sec. 5.2.2.6
        ({"has_range": True}, False),
        # size limits: 1,000 B - 10 MiB inclusive
        ({"content_length": 999}, False),
        ({"content_length": 1000}, True),
        ({"content_length": 10 * 1024 * 1024}, True),
        ({"content_length": 10 * 1024 * 1024 + 1}, False),
        ({"content_length": 0}, False),
        ({"content_length": None}, True),  # unknown: the caller re-checks the final size
    ],
)
def test_should_compress_conditions(change: dict[str, object], expected: bool) -> None:
    assert should_compress(**{**BASE, **change}) is expected  # type: ignore[arg-type]


def test_should_compress_configurable_limits() -> None:
    kw = {**BASE, "content_length": 500}
    assert not should_compress(**kw)  # type: ignore[arg-type]
    assert should_compress(**kw, min_size=100)  # type: ignore[arg-type]
    kw = {**BASE, "content_length": 2_000_000}
    assert not should_compress(**kw, max_size=1_000_000)  # type: ignore[arg-type]


def test_unknown_length_still_needs_everything_else() -> None:
    kw = {**BASE, "content_length": None}
    assert not should_compress(**{**kw, "content_type": "image/png"})  # type: ignore[arg-type]
    assert not should_compress(**{**kw, "has_range": True})  # type: ignore[arg-type]


# --- variant header sections (sec. 8.8.3, 12.5.5) ------------------------------------------


@pytest.mark.parametrize(
    ("etag", "coding", "expected"),
    [
        ('"abc"', "br", '"abc-br"'),
        ('"abc"', "gzip", '"abc-gzip"'),
        ('W/"abc"', "br", 'W/"abc-br"'),
        ('w/"abc"', "gzip", 'W/"abc-gzip"'),
        (' "abc" ', "br", '"abc-br"'),
        ('"d41d8cd98f00b204e9800998ecf8427e"', "br", '"d41d8cd98f00b204e9800998ecf8427e-br"'),
        ('""', "br", '"-br"'),
        ("abc", "br", '"abc-br"'),  # malformed (unquoted): quoted
        ('"v-br"', "br", '"v-br-br"'),  # never equal to the identity's tag
        ('"abc"', "identity", '"abc"'),
        (None, "br", None),
        ("", "gzip", None),
    ],
)
def test_variant_etag(etag: str | None, coding: str, expected: str | None) -> None:
    assert variant_etag(etag, coding) == expected


@given(st.text(min_size=1, max_size=30), st.sampled_from(["br", "gzip"]))
def test_variant_etag_differs_from_identity(opaque: str, coding: str) -> None:
    """Sec. 8.8.3: two representations never share an entity-tag."""
    opaque = opaque.replace('"', "")
    for tag in (f'"{opaque}"', f'W/"{opaque}"'):
        out = variant_etag(tag, coding)
        assert out is not None and out != tag
        assert out.startswith("W/") == tag.startswith("W/")
        assert out.endswith(f'-{coding}"')


@pytest.mark.parametrize(
    ("vary", "expected"),
    [
        (None, "Accept-Encoding"),
        ("", "Accept-Encoding"),
        (" , ", "Accept-Encoding"),
        ("Accept-Encoding", "Accept-Encoding"),
        ("accept-encoding", "accept-encoding"),
        ("Origin", "Origin, Accept-Encoding"),
        ("Origin, Accept", "Origin, Accept, Accept-Encoding"),
        ("Origin,", "Origin, Accept-Encoding"),
        ("Origin, ACCEPT-ENCODING", "Origin, ACCEPT-ENCODING"),
        ("*", "*"),
    ],
)
def test_add_vary_accept_encoding(vary: str | None, expected: str) -> None:
    assert add_vary_accept_encoding(vary) == expected


def test_variant_headers() -> None:
    stored = [
        ("Content-Type", "application/json"),
        ("ETag", '"abc"'),
        ("Content-Length", "51200"),
        ("Accept-Ranges", "bytes"),
        ("Vary", "Origin"),
        ("Cache-Control", "max-age=300"),
        ("Vary", "Accept"),
        ("Content-MD5", "xyz"),
        ("Last-Modified", "Tue, 01 Dec 2026 10:00:00 GMT"),
    ]
    assert variant_headers(stored, "br") == [
        ("Content-Type", "application/json"),
        ("ETag", '"abc-br"'),
        ("Vary", "Origin, Accept, Accept-Encoding"),
        ("Cache-Control", "max-age=300"),
        ("Last-Modified", "Tue, 01 Dec 2026 10:00:00 GMT"),
        ("Content-Encoding", "br"),
    ]


def test_variant_headers_without_vary_or_etag() -> None:
    out = variant_headers([("Content-Type", "text/css")], "gzip")
    assert out == [
        ("Content-Type", "text/css"),
        ("Vary", "Accept-Encoding"),
        ("Content-Encoding", "gzip"),
    ]


def test_identity_headers_carry_the_same_vary() -> None:
    """Sec. 12.5.5: the identity answer of a compressible resource varies too."""
    assert identity_headers([("Content-Type", "text/css"), ("ETag", '"a"')]) == [
        ("Content-Type", "text/css"),
        ("ETag", '"a"'),
        ("Vary", "Accept-Encoding"),
    ]
    assert identity_headers([("vary", "Origin"), ("X", "1"), ("Vary", "accept-encoding")]) == [
        ("vary", "Origin, accept-encoding"),
        ("X", "1"),
    ]
    stored = [("Content-Type", "text/css"), ("Vary", "Origin")]
    ident = dict(identity_headers(stored))
    variant = dict(variant_headers(stored, "br"))
    assert ident["Vary"] == variant["Vary"]
