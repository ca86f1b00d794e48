"""The signer against a real S3 server (SeaweedFS): what the pipeline will do, end to end.

Objects are uploaded with the test helper (urllib, signed PUT with the payload's SHA-256) and
read back the way the pipeline reads them: map the client path, build the path-style URL,
sign, send with aiohttp.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from edgeproxy.proxy.s3 import (
    Credentials,
    SigV4Signer,
    map_drop_in,
    map_fixed_bucket,
    map_s3_status,
    object_url,
    s3_error_code,
)
from edgeproxy.seaweed import SeaweedServer

pytestmark = pytest.mark.integration

ACCESS_KEY = "edgeproxy-test"
SECRET_KEY = "edgeproxy-test-secret/with+odd=chars"
BUCKET = "music"
KEY = "audio/some track (live) ~1.mp3"  # as stored: space, parentheses, tilde
CLIENT_PATH = "/audio/some%20track%20%28live%29%20~1.mp3"  # as a client would send it
DATA = bytes(range(256)) * 64 + b"tail"


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"), ACCESS_KEY, SECRET_KEY)
    server.start()
    try:
        server.create_bucket(BUCKET)
        server.put_object(BUCKET, KEY, DATA, "audio/mpeg")
        server.put_object(BUCKET, "text/hello.txt", b"hello", "text/plain")
        yield server
    finally:
        server.stop()


async def fetch(
    method: str,
    url: str,
    *,
    signer: SigV4Signer | None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Mapping[str, str], bytes]:
    """Sign (unless ``signer`` is None) and send like the pipeline: the URL is passed
    pre-encoded so the path on the wire is exactly the one signed."""
    all_headers = dict(headers or {})
    if signer is not None:
        all_headers.update(signer.sign(method, url, all_headers, now=time.time()))
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.request(method, URL(url, encoded=True), headers=all_headers) as response,
    ):
        return response.status, response.headers.copy(), await response.read()


def signer_for(access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> SigV4Signer:
    return SigV4Signer(Credentials(access_key, secret_key), "us-east-1")


def object_for(seaweed: SeaweedServer, client_path: str = CLIENT_PATH) -> str:
    target = map_fixed_bucket(client_path, BUCKET)
    assert target is not None
    return object_url(seaweed.endpoint, target)


async def test_signed_get_round_trip(seaweed: SeaweedServer) -> None:
    status, headers, body = await fetch("GET", object_for(seaweed), signer=signer_for())
    assert status == 200
    assert body == DATA
    assert headers["Content-Type"] == "audio/mpeg"
    assert headers["ETag"].strip('"') == hashlib.md5(DATA).hexdigest()


async def test_equivalent_client_spellings_reach_the_same_object(seaweed: SeaweedServer) -> None:
    """Escapes normalized by the mapping (%7E vs ~, ( vs %28) still sign correctly."""
    for spelling in (
        "/audio/some%20track%20(live)%20%7E1.mp3",
        "/audio/some%20track%20%28live%29%20%7e1.mp3",
    ):
        status, _, body = await fetch("GET", object_for(seaweed, spelling), signer=signer_for())
        assert (status, body) == (200, DATA)


async def test_drop_in_mapping_round_trip(seaweed: SeaweedServer) -> None:
    target = map_drop_in("/music/text/hello.txt", {BUCKET})
    assert target is not None
    status, _, body = await fetch("GET", object_url(seaweed.endpoint, target), signer=signer_for())
    assert (status, body) == (200, b"hello")


async def test_signed_range_request(seaweed: SeaweedServer) -> None:
    status, headers, body = await fetch(
        "GET", object_for(seaweed), signer=signer_for(), headers={"Range": "bytes=256-511"}
    )
    assert status == 206
    assert body == DATA[256:512]
    assert headers["Content-Range"] == f"bytes 256-511/{len(DATA)}"


async def test_signed_head(seaweed: SeaweedServer) -> None:
    status, headers, body = await fetch("HEAD", object_for(seaweed), signer=signer_for())
    assert status == 200
    assert int(headers["Content-Length"]) == len(DATA)
    assert body == b""


async def test_unsigned_conditional_header_does_not_break_the_signature(
    seaweed: SeaweedServer,
) -> None:
    url = object_for(seaweed)
    _, headers, _ = await fetch("HEAD", url, signer=signer_for())
    status, _, _ = await fetch(
        "GET", url, signer=signer_for(), headers={"If-None-Match": headers["ETag"]}
    )
    assert map_s3_status(status, None) == (304, "not modified")


async def test_signed_query_string(seaweed: SeaweedServer) -> None:
    """A ListObjectsV2 with parameters out of order and an escaped prefix: the canonical query
    string (sorted, re-encoded) must match the server's."""
    url = f"{seaweed.endpoint}/{BUCKET}?prefix=audio%2Fsome%20track&list-type=2&max-keys=5"
    status, _, body = await fetch("GET", url, signer=signer_for())
    assert status == 200, body
    assert b"<Key>audio/some track (live) ~1.mp3</Key>" in body


async def test_wrong_secret_is_signature_does_not_match(seaweed: SeaweedServer) -> None:
    status, _, body = await fetch(
        "GET", object_for(seaweed), signer=signer_for(secret_key="not-the-secret")
    )
    assert status == 403
    code = s3_error_code(body)
    assert code == "SignatureDoesNotMatch"
    client_status, reason = map_s3_status(status, code)
    assert client_status == 502 and "SignatureDoesNotMatch" in reason


async def test_unknown_access_key(seaweed: SeaweedServer) -> None:
    status, _, body = await fetch(
        "GET", object_for(seaweed), signer=signer_for(access_key="AKIDUNKNOWN")
    )
    assert status == 403
    assert s3_error_code(body) in ("InvalidAccessKeyId", "SignatureDoesNotMatch")
    assert map_s3_status(status, s3_error_code(body))[0] == 502


async def test_anonymous_get_is_access_denied(seaweed: SeaweedServer) -> None:
    status, _, body = await fetch("GET", object_for(seaweed), signer=None)
    assert status == 403
    assert s3_error_code(body) == "AccessDenied"
    assert map_s3_status(status, "AccessDenied")[0] == 502


async def test_missing_key_and_bucket(seaweed: SeaweedServer) -> None:
    status, _, body = await fetch("GET", object_for(seaweed, "/nope.mp3"), signer=signer_for())
    assert (status, s3_error_code(body)) == (404, "NoSuchKey")
    assert map_s3_status(status, "NoSuchKey")[0] == 404

    url = f"{seaweed.endpoint}/no-such-bucket/x.mp3"
    status, _, body = await fetch("GET", url, signer=signer_for())
    assert (status, s3_error_code(body)) == (404, "NoSuchBucket")


def test_helper_round_trip_and_stop_by_pid(tmp_path: Path) -> None:
    """The launcher alone: start, helpers, stop (the process is gone afterwards)."""
    with SeaweedServer(tmp_path, "k", "s") as server:
        pid = server.pid
        assert pid is not None
        server.create_bucket("bkt")
        server.create_bucket("bkt")  # idempotent
        etag = server.put_object("bkt", "x y/z.bin", b"abc")
        assert etag.strip('"') == hashlib.md5(b"abc").hexdigest()
        assert server.get_object("bkt", "x y/z.bin") == b"abc"
        process = server._process
    assert server.pid is None
    assert process is not None and process.poll() is not None
