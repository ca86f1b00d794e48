"""Client path -> S3 object -> path-style origin URL; S3 error bodies -> client status."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.proxy.s3 import (
    S3Target,
    canonical_uri,
    map_drop_in,
    map_fixed_bucket,
    map_s3_status,
    normalize_key,
    object_url,
    s3_error_code,
)

# ---- map_fixed_bucket ----------------------------------------------------------------------


def test_fixed_bucket_maps_the_whole_path_to_a_key() -> None:
    assert map_fixed_bucket("/audio/x.mp3", "music") == S3Target("music", "audio/x.mp3")
    assert map_fixed_bucket("/x", "music") == S3Target("music", "x")


@pytest.mark.parametrize("path", ["", "/"])
def test_fixed_bucket_root_is_no_object(path: str) -> None:
    assert map_fixed_bucket(path, "music") is None


def test_fixed_bucket_key_is_normalized_percent_encoding() -> None:
    assert map_fixed_bucket("/a%20b/%7Ec(1).mp3", "m") == S3Target("m", "a%20b/~c%281%29.mp3")
    assert map_fixed_bucket("/a%2fb", "m") == S3Target("m", "a/b")  # %2F is a separator to S3
    assert map_fixed_bucket("/caf%C3%A9", "m") == S3Target("m", "caf%C3%A9")
    assert map_fixed_bucket("/a+b", "m") == S3Target("m", "a%2Bb")  # '+' is literal in a path
    assert map_fixed_bucket("/dir/", "m") == S3Target("m", "dir/")  # folder marker object


@pytest.mark.parametrize(
    "path",
    ["/..", "/a/../b", "/a/./b", "/%2e%2e/secret", "/a/%2E", "//a", "/a//b", "/a%2F%2Fb"],
)
def test_fixed_bucket_refuses_dot_and_empty_segments(path: str) -> None:
    assert map_fixed_bucket(path, "m") is None


# ---- map_drop_in ---------------------------------------------------------------------------


def test_drop_in_maps_an_allow_listed_bucket() -> None:
    buckets = frozenset({"music", "video"})
    assert map_drop_in("/music/audio/x.mp3", buckets) == S3Target("music", "audio/x.mp3")
    assert map_drop_in("/video/a%20b.mp4", buckets) == S3Target("video", "a%20b.mp4")


@pytest.mark.parametrize(
    "path",
    [
        "/other/x.mp3",  # not allow-listed
        "/music",  # bucket, no key
        "/music/",  # a listing, not an object
        "/",
        "",
        "/mus%69c/x.mp3",  # escaped bucket name is not decoded into an allowed one
        "/music/../other/x.mp3",  # dot segments cannot step out of the bucket
        "/music/%2E%2E/other/x.mp3",
        "/music%2Fx.mp3",  # the bucket must be a whole segment
    ],
)
def test_drop_in_refuses(path: str) -> None:
    assert map_drop_in(path, {"music"}) is None


# ---- object_url ----------------------------------------------------------------------------


def test_object_url_is_path_style() -> None:
    target = S3Target("music", "audio/x%20y.mp3")
    assert object_url("http://127.0.0.1:8333", target) == (
        "http://127.0.0.1:8333/music/audio/x%20y.mp3"
    )
    assert object_url("http://127.0.0.1:8333/", target, "versionId=3") == (
        "http://127.0.0.1:8333/music/audio/x%20y.mp3?versionId=3"
    )


@given(st.text(min_size=1, max_size=40))
def test_normalized_key_is_its_own_canonical_uri(raw: str) -> None:
    """What the proxy puts on the wire is exactly what gets signed: a normalized key is a
    fixed point of both normalize_key and the S3 canonical URI."""
    key = normalize_key(raw)
    if key is None:
        return
    assert normalize_key(key) == key
    assert canonical_uri("/bucket/" + key) == "/bucket/" + key


# ---- s3_error_code -------------------------------------------------------------------------

NO_SUCH_KEY = b"""<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message>
<Key>audio/x.mp3</Key><RequestId>4442587FB7D0A2F9</RequestId></Error>"""


def test_error_code_parsed() -> None:
    assert s3_error_code(NO_SUCH_KEY) == "NoSuchKey"
    assert s3_error_code(b"<Error>\n  <Code> AccessDenied </Code></Error>") == "AccessDenied"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml at all",
        b"<html><body>502 Bad Gateway</body></html>",
        b"<Code>NoSuchKey</Code>",  # a Code outside an Error element
        b"<Error><Code>&lol9;</Code></Error>",  # entities are never expanded
        b"<Error>" + b" " * 20_000 + b"<Code>Late</Code></Error>",  # beyond the scan limit
    ],
)
def test_error_code_absent(body: bytes) -> None:
    assert s3_error_code(body) is None


def test_error_code_billion_laughs_is_harmless() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + b"".join(
            b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
            for i in range(1, 10)
        )
        + b"]><Error><Code>SlowDown</Code><Message>&lol9;</Message></Error>"
    )
    assert s3_error_code(bomb) == "SlowDown"


# ---- map_s3_status -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "client"),
    [
        (200, None, 200),
        (206, None, 206),
        (304, None, 304),
        (404, "NoSuchKey", 404),
        (404, None, 404),  # HEAD: no body, no code
        (404, "NoSuchBucket", 404),
        (403, "SignatureDoesNotMatch", 502),
        (403, "InvalidAccessKeyId", 502),
        (403, "AccessDenied", 502),
        (403, "RequestTimeTooSkewed", 502),
        (403, None, 502),
        (412, "PreconditionFailed", 412),
        (416, "InvalidRange", 416),
        (500, "InternalError", 502),
        (503, "SlowDown", 502),
        (400, "InvalidRequest", 502),
        (301, "PermanentRedirect", 502),
    ],
)
def test_status_mapping(status: int, code: str | None, client: int) -> None:
    assert map_s3_status(status, code)[0] == client


def test_status_reasons_name_the_code() -> None:
    assert "SignatureDoesNotMatch" in map_s3_status(403, "SignatureDoesNotMatch")[1]
    assert "credentials" in map_s3_status(403, "InvalidAccessKeyId")[1]
    assert "bucket missing" in map_s3_status(404, "NoSuchBucket")[1]
    assert "SlowDown" in map_s3_status(503, "SlowDown")[1]
    assert "PermanentRedirect" in map_s3_status(301, "PermanentRedirect")[1]
